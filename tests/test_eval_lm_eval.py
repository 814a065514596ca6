"""Cross-check with lm-evaluation-harness (optional dependency) on a tiny local model folder."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from _eval_helpers import SHARED_DATA, sharp_model, tokenizer

from finetune.eval.tasks import load_task

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")


@needs_lm_eval
def test_shipped_8shot_prompt_is_lm_evals_gsm8k_cot_prompt():
    """Our exemplars file and layout reproduce lm-eval's gsm8k_cot context exactly (no model needed)."""
    import lm_eval

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k-cot.yaml").read_text())
    shots = "\n\n".join(f"Q: {s['question']}\nA: {s['target']}" for s in spec["fewshot_config"]["samples"])
    doc = {"question": "How many?", "answer": "so\n#### 3"}
    assert load_task("gsm8k_cot_8shot").context(0, doc) == shots + "\n\nQ: How many?\nA:"


@pytest.mark.slow
@needs_lm_eval
@pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file(), reason="shared/data not present")
def test_lm_eval_agrees_on_generations_and_scores(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import lm_eval_agreement

    model_dir = tmp_path / "model"
    sharp_model().save_pretrained(model_dir)
    tokenizer().save_pretrained(model_dir)
    rc = lm_eval_agreement.main(["--model", str(model_dir), "--data-path", str(SHARED_DATA), "--limit", "3",
                                 "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "agreement.json").read_text())
    assert summary["problems"] == [] and rc == 0
    assert summary["identical_generations"] == 3
