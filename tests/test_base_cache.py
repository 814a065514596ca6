"""The base model is scored once (issue #14 s4): base records are reused across runs under a key of everything
that shapes them, and recomputed when the key changes (here: the task file)."""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _eval_helpers import arith_task, sharp_model, tokenizer  # noqa: E402
from test_eval_pipeline import _lora  # noqa: E402

from finetune.cli import main  # noqa: E402
from finetune.eval.basecache import weights_fingerprint  # noqa: E402


def _run(tmp_path, name, base_dir, seed):
    run = tmp_path / name
    _lora(sharp_model(seed=seed)).save_pretrained(run / "adapter")
    tokenizer().save_pretrained(run / "tokenizer")
    (run / "manifest.json").write_text(json.dumps({"base_model_path": str(base_dir), "base_model": "tiny"}))
    return run


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    base_dir = tmp_path / "base"
    sharp_model().save_pretrained(base_dir)
    tokenizer().save_pretrained(base_dir)
    return base_dir, _run(tmp_path, "x", base_dir, 0), _run(tmp_path, "y", base_dir, 0)


def _scored(err: str) -> int:
    """How many models generated on mini_arith (one throughput line per scored model)."""
    return len(re.findall(r"\[eval\] mini_arith: \d+ tokens generated", err))


def _eval(run, task, *extra):
    assert main(["eval", str(run), "--tasks", str(task), "--limit", "3", "--batch-size", "3", "--with-base",
                 *extra]) == 0


def test_second_run_reuses_the_base_and_a_changed_task_file_recomputes(runs, tmp_path, capsys):
    _, x, y = runs
    task = arith_task(tmp_path)
    _eval(x, task)
    first, err = capsys.readouterr()
    assert _scored(err) == 2  # finetuned and base
    assert "base: mini_arith: computed" in first and "(cached for later runs)" in first
    key = first.split("key ")[1].split()[0]
    _eval(y, task)
    out, err = capsys.readouterr()
    assert f"base: mini_arith: cached from {x}, key {key}" in out
    assert _scored(err) == 1  # only the finetuned model was scored
    assert (x / "eval/base/mini_arith.jsonl").read_text() == (y / "eval/base/mini_arith.jsonl").read_text()
    results = json.loads((y / "eval/results.json").read_text())
    assert results["evaluations"]["mini_arith"]["base"] == f"cached from {x}, key {key}"
    assert results["comparison"]["tasks"]["mini_arith"]["n"] == 3

    arith_task(tmp_path, max_new=9)  # the same task file, edited: another key, the base is scored again
    z = _run(tmp_path, "z", runs[0], 0)
    _eval(z, task)
    out = capsys.readouterr().out
    assert "base: mini_arith: computed" in out and key not in out
    _eval(z, task, "--limit", "2")  # another limit: another key (and a fresh out folder is not needed)


def test_another_eval_batch_size_recomputes_the_base(runs, tmp_path, capsys):
    _, x, y = runs
    task = arith_task(tmp_path)
    _eval(x, task)
    capsys.readouterr()
    _eval(y, task, "--batch-size", "2")  # the batch shapes the kernels (bf16 argmaxes can change): another key
    assert "base: mini_arith: computed" in capsys.readouterr().out


def test_no_base_cache_flag_scores_the_base(runs, tmp_path, capsys):
    _, x, y = runs
    task = arith_task(tmp_path)
    _eval(x, task)
    _eval(y, task, "--no-base-cache")
    assert "cached from" not in capsys.readouterr().out


def test_weights_fingerprint_follows_the_weights(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sharp_model(seed=0).save_pretrained(a)
    sharp_model(seed=0).save_pretrained(b)
    assert weights_fingerprint(a) == weights_fingerprint(b)  # content, not path or mtime
    sharp_model(seed=1).save_pretrained(b)
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert weights_fingerprint("org/some-model") == "id:org/some-model"
