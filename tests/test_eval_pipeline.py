"""Base vs finetuned: LoRA via disable_adapter on the same model, others via base_loader; CLI commands."""

import argparse
import json

import pytest
import torch
from _eval_helpers import arith_task, sharp_model, tokenizer
from peft import LoraConfig, get_peft_model

from finetune.eval.commands import add_compare_args, add_eval_args, cmd_compare, cmd_eval, load_for_eval
from finetune.eval.harness import evaluate
from finetune.eval.pipeline import eval_base_and_finetuned
from finetune.eval.records import read_records
from finetune.eval.tasks import load_task


def _lora(model):
    """A LoRA model whose adapter really changes the outputs (random B instead of the zero init)."""
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 2.0)
    return peft_model.eval()


def _outputs(path):
    return [(r["doc_id"], r["prompt"], r["output"]) for r in read_records(path)]


def test_lora_base_is_the_same_model_with_the_adapter_disabled(tmp_path):
    task_path = arith_task(tmp_path)
    tok = tokenizer()
    peft_model = _lora(sharp_model())

    def must_not_load():
        raise AssertionError("a LoRA model must not reload its base")

    res = eval_base_and_finetuned(peft_model, tok, base_loader=must_not_load, task_names=[str(task_path)],
                                  out_dir=tmp_path / "eval", template_name=None, batch_size=4, limit=4, seed=0)
    plain = evaluate(sharp_model(), tok, [load_task(str(task_path))], tmp_path / "plain", limit=4)
    base_out, tuned_out = _outputs(tmp_path / "eval/base/mini_arith.jsonl"), \
        _outputs(tmp_path / "eval/finetuned/mini_arith.jsonl")
    assert base_out == _outputs(tmp_path / "plain/mini_arith.jsonl")  # disabled adapter == the untouched base
    assert [p for _, p, _ in base_out] == [p for _, p, _ in tuned_out]  # identical prompts
    assert [o for *_, o in base_out] != [o for *_, o in tuned_out]  # the adapter is active for "finetuned"
    assert res["tasks"]["mini_arith"]["metrics"]["exact_match:strict"]["a"] == plain["mini_arith"]["exact_match:strict"]
    assert res["warnings"] == []
    for name in ("results.json", "report.md", "report.html"):
        assert (tmp_path / "eval" / name).is_file()
    ids = torch.tensor([tok("Hello", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # the adapter is back on afterwards
        assert not torch.allclose(peft_model(ids).logits, sharp_model()(ids).logits, atol=1e-3)


def test_full_finetune_base_comes_from_the_loader(tmp_path):
    task_path = arith_task(tmp_path)
    tok = tokenizer()
    calls = []

    def loader():
        calls.append(1)
        return sharp_model(seed=0), tok

    res = eval_base_and_finetuned(sharp_model(seed=3), tok, base_loader=loader, task_names=[str(task_path)],
                                  out_dir=tmp_path / "eval", template_name="plain", batch_size=4, limit=3, seed=0)
    assert calls == [1]
    assert read_records(tmp_path / "eval/base/mini_arith.jsonl")[0]["prompt"].startswith("Question: ")
    assert res["tasks"]["mini_arith"]["n"] == 3


def test_no_base_loader_scores_only_the_finetuned_model(tmp_path):
    from finetune.eval.report import format_table

    res = eval_base_and_finetuned(sharp_model(), tokenizer(), base_loader=None,
                                  task_names=[str(arith_task(tmp_path))], out_dir=tmp_path / "eval",
                                  template_name=None, batch_size=4, limit=2, seed=0)
    assert res["a"] is None and not (tmp_path / "eval" / "base").exists()
    assert "exact_match:strict" in format_table(res)


@pytest.fixture
def lora_run_dir(tmp_path):
    """A run directory shaped like `finetune run` writes for LoRA: manifest, adapter/, tokenizer/."""
    base_dir = tmp_path / "base"
    sharp_model().save_pretrained(base_dir)
    tokenizer().save_pretrained(base_dir)
    run = tmp_path / "run"
    peft_model = _lora(sharp_model())
    peft_model.save_pretrained(run / "adapter")
    tokenizer().save_pretrained(run / "tokenizer")
    (run / "manifest.json").write_text(json.dumps({"base_model_path": str(base_dir)}))
    return run, peft_model


def test_load_for_eval_restores_the_adapter_on_its_base(lora_run_dir):
    run, peft_model = lora_run_dir
    model, tok = load_for_eval(run)
    ids = torch.tensor([tok("Hello there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, peft_model(ids).logits, atol=1e-4)


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_eval_and_compare_commands(lora_run_dir, tmp_path, capsys):
    run, _ = lora_run_dir
    task = str(arith_task(tmp_path))
    args = _parse(add_eval_args, [str(run), "--tasks", task, "--limit", "2", "--batch-size", "2", "--with-base"])
    assert cmd_eval(args) == 0
    out = capsys.readouterr().out
    assert "exact_match:strict" in out and "report.html" in out
    assert (run / "eval" / "report.html").is_file() and (run / "eval" / "base" / "mini_arith.jsonl").is_file()
    args = _parse(add_compare_args, [str(run / "eval" / "base"), str(run), "--out", str(tmp_path / "cmp")])
    assert cmd_compare(args) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["comparison"]["b"]["dir"] == str(run / "eval" / "finetuned")  # a run dir means its finetuned eval


def test_evaluating_a_run_with_another_template_is_reported_loudly(lora_run_dir, capsys):
    from finetune.eval.commands import _warn_if_template_differs
    from finetune.resources import resource_dir

    lora_run_dir, _ = lora_run_dir
    (lora_run_dir / "template.yaml").write_text((resource_dir("prompts") / "chat.yaml").read_text())
    _warn_if_template_differs(lora_run_dir, "alpaca")
    err = capsys.readouterr().err
    assert "WARNING" in err and "evaluated with 'alpaca'" in err
    _warn_if_template_differs(lora_run_dir, str(lora_run_dir / "template.yaml"))
    assert capsys.readouterr().err == ""
