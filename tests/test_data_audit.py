"""Label audit (the checks before step 1) and `finetune preview` output."""

import argparse
import io
import json

import pytest
from datasets import Dataset

from finetune.data.audit import audit
from finetune.data.build import build_datasets
from finetune.data.errors import DataError
from finetune.data.preview import GREEN, GREY, RED, add_preview_args, cmd_preview, print_preview
from finetune.data.tokenize import IGNORE
from finetune.recipe import DataConfig, DatasetSpec
from finetune.testing import tiny_tokenizer

TOK = tiny_tokenizer()
EOS = TOK.eos_token_id


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))


def arith(max_length=512, **kw):
    cfg = DataConfig(datasets=[DatasetSpec(name="arith_cot", limit=20)], max_length=max_length, **kw)
    return build_datasets(cfg, TOK, seed=0)


def test_audit_counts_real_tokens_only():
    bundle = arith()
    stats = audit(bundle, TOK, max_length=512)
    lengths = [len(ids) for ids in bundle.train["input_ids"]]
    assert stats["examples"] == 20 and stats["tokens"] == sum(lengths) == stats["tokens_kept"]
    trained = sum(sum(1 for t in lab[1:] if t != IGNORE) for lab in bundle.train["labels"])
    assert stats["trained_tokens"] == trained and 0 < stats["trained_fraction"] < 1
    assert stats["examples_with_end_trained"] == 20 and stats["cot_examples"] == 20
    assert stats["truncated_examples"] == stats["cot_answers_cut"] == 0
    assert bundle.stats["tokens"] == stats["tokens"], "build reports the same totals"


def test_audit_fails_when_nothing_is_trained():
    ds = Dataset.from_list([{"input_ids": [5, 6, EOS], "labels": [IGNORE] * 3}])
    with pytest.raises(DataError, match="no token is trained: every label is -100 within max_length 64"):
        audit(ds, TOK, max_length=64)


def test_audit_fails_when_eos_is_never_trained():
    ds = Dataset.from_list([{"input_ids": [5, 6, 7, EOS], "labels": [IGNORE, 6, 7, IGNORE]}] * 3)
    with pytest.raises(DataError, match=r"end-of-sequence token \(<\|im_end\|>\) is never trained"):
        audit(ds, TOK, max_length=64)
    cut = Dataset.from_list([{"input_ids": [5, 6, 7, EOS], "labels": [IGNORE, 6, 7, EOS]}])
    with pytest.raises(DataError, match="never trained"):  # EOS beyond max_length counts as not trained
        audit(cut, TOK, max_length=3)
    audit(cut, TOK, max_length=4)


def test_audit_fails_when_too_many_cot_answers_are_cut():
    bundle = arith(max_length=300)
    with pytest.raises(DataError) as e:
        audit(bundle, TOK, max_length=300)
    cut = bundle.stats["cot_answers_cut"]
    assert f"{cut} of 20 CoT answers ({cut / 20:.0%}) are cut off by max_length 300 (limit 10%)" in str(e.value)
    assert "raise data.max_length (95% of examples fit in" in str(e.value)
    assert audit(bundle, TOK, max_length=300, max_cut_answers=1.0)["cot_answers_cut"] == cut
    audit(bundle, TOK, max_length=512)


def test_preview_colours_masks_and_prints_totals():
    bundle = arith(max_length=200)
    out = io.StringIO()
    problems = print_preview(bundle, TOK, 200, n=2, color=True, out=out)
    text = out.getvalue()
    assert f"{GREY}<|im_start|>user\n" in text and f"{GREEN}" in text and "── example 2 of 20" in text
    assert "── example 3" not in text
    for label in ("examples            20", "trained tokens", "truncated examples", "CoT answers cut off",
                  "arith_cot: 20 rows from builtin:arithmetic_cot", "label audit"):
        assert label in text
    if bundle.stats["truncated_examples"]:
        assert RED in text or "✂" in text
    assert bool(problems) == (bundle.stats["cot_answers_cut"] > 2)
    plain = io.StringIO()
    print_preview(arith(), TOK, 512, n=1, color=False, out=plain)
    assert "\033[" not in plain.getvalue() and "«" in plain.getvalue()
    assert "<|im_start|>assistant\n«" in plain.getvalue() and "#### " in plain.getvalue()


def test_cmd_preview_on_a_recipe(tmp_path, tiny_dir, capsys):
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"q": f"What is {i}+1?", "a": str(i + 1)}) + "\n" for i in range(6)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {tiny_dir}}}\ndata:\n  datasets:\n    - source: {rows}\n"
                      "      format: prompt_completion\n      columns: {prompt: q, completion: a}\n")
    args = add_preview_args(argparse.ArgumentParser()).parse_args([str(recipe), "data.max_length=64", "-n", "1"])
    assert cmd_preview(args) == 0
    out = capsys.readouterr().out
    assert "example 1 of 6" in out and GREEN in out and "label audit         " in out and "OK" in out
    args = add_preview_args(argparse.ArgumentParser()).parse_args(
        [str(recipe), "data.train_on_prompt=true", "--no-color"])
    assert cmd_preview(args) == 0 and "\033[" not in capsys.readouterr().out
    args = add_preview_args(argparse.ArgumentParser()).parse_args([str(recipe), "data.max_length=20"])
    assert cmd_preview(args) == 1, "the audit fails: prompts fill max_length, nothing is trained"
    assert "no token is trained" in capsys.readouterr().out
