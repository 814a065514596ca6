"""The harness on the real packaged SmolLM2-135M-Instruct (slow: loads and generates with a 135M model)."""

import pytest

from finetune.eval.harness import evaluate
from finetune.eval.records import read_records
from finetune.eval.tasks import load_task


@pytest.mark.slow
def test_arith_cot_on_smollm2(tmp_path):
    from finetune.model import ModelError, load_model

    try:
        model, tok = load_model("smollm2-135m-instruct")
    except ModelError as e:  # the packaged wheel could not be fetched here
        pytest.skip(str(e))
    scores = evaluate(model, tok, [load_task("arith_cot")], tmp_path, limit=2, batch_size=2)
    recs = read_records(tmp_path / "arith_cot.jsonl")
    assert len(recs) == 2 and 0 <= scores["arith_cot"]["exact_match:flexible"] <= 1
    for r in recs:
        assert r["prompt"].startswith("<|im_start|>") and r["prompt"].endswith("<|im_start|>assistant\n")
        assert r["output"].strip() and "<|im_end|>" not in r["output"]  # real text, cut at the end of turn
        assert r["truncated"] == (r["output_tokens"][0] == 160)
