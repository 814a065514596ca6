"""A run with eval.guard_tasks: the guards are scored on both models and every guard metric gets a verdict in
results.json, report.md, report.html and the printed table. Tiny random models; the shipped guards
(arc_easy_guard, ifeval_guard) run when the shared data folder is there."""

import json

import pytest
from _eval_helpers import SHARED_DATA, arith_task
from conftest import TINY_RECIPE

from finetune.eval.run import evaluate_run
from finetune.recipe import load_recipe
from finetune.eval.verdict import INCONCLUSIVE, NO_REGRESSION, REGRESSION
from finetune.train import train

VERDICTS = (NO_REGRESSION, REGRESSION, INCONCLUSIVE)


def _run(write_recipe, eval_yaml: str, capsys):
    recipe = load_recipe(write_recipe(TINY_RECIPE.replace("output:", f"{eval_yaml}\noutput:")))
    run_dir, model, tokenizer, manifest = train(recipe)
    capsys.readouterr()
    evaluate_run(recipe, run_dir, model, tokenizer, manifest)
    printed = capsys.readouterr().out
    return json.loads((run_dir / "eval" / "results.json").read_text())["comparison"], run_dir, printed


def test_a_run_with_a_guard_task_writes_verdicts(write_recipe, tmp_path, capsys):
    guard = arith_task(tmp_path, "mini_guard")
    comparison, run_dir, printed = _run(
        write_recipe, f"eval: {{tasks: [arith_cot], guard_tasks: ['{guard}'], guard_delta: 0.05, limit: 3, "
                      "batch_size: 3}", capsys)
    assert comparison["guards"] == {"delta": 0.05, "tasks": ["mini_guard"]}  # a path: known by its name
    assert set(comparison["tasks"]) == {"arith_cot", "mini_guard"}  # the guard is scored on both sides
    task = comparison["tasks"]["mini_guard"]
    assert task["role"] == "guard" and "verdicts" not in comparison["tasks"]["arith_cot"]
    assert set(task["verdicts"]) == set(task["metrics"]) == {"exact_match:strict", "exact_match:flexible"}
    for key, v in task["verdicts"].items():
        assert v["verdict"] in VERDICTS and v["n"] == 3 and v["delta"] == 0.05
        assert f"mini_guard  {key}: {v['label']}" in printed
    assert "Guards: did it hurt? δ = 0.05" in printed
    md = (run_dir / "eval" / "report.md").read_text()
    assert "## Guards" in md and "| mini_guard | exact_match:strict |" in md
    assert "<h2>Guards</h2>" in (run_dir / "eval" / "report.html").read_text()


@pytest.mark.skipif(not (SHARED_DATA / "ifeval").is_dir() or not (SHARED_DATA / "arc").is_dir(),
                    reason="no shared data (../shared/data/ifeval, arc)")
def test_the_shipped_guards_run_on_a_tiny_model(write_recipe, monkeypatch, capsys):
    monkeypatch.setenv("FINETUNE_DATA_DIR", str(SHARED_DATA))
    comparison, run_dir, _ = _run(write_recipe, "eval: {guard_tasks: [arc_easy_guard, ifeval_guard], limit: 2, "
                                                "batch_size: 2}", capsys)
    arc, ife = comparison["tasks"]["arc_easy_guard"], comparison["tasks"]["ifeval_guard"]
    assert set(arc["verdicts"]) == {"acc", "acc_norm", "acc_centered"}
    assert set(ife["verdicts"]) == {"prompt_level_strict_acc:raw", "inst_level_strict_acc:raw",
                                    "prompt_level_loose_acc:raw", "inst_level_loose_acc:raw"}
    assert all(v["n"] == 2 for t in (arc, ife) for v in t["verdicts"].values())
    record = json.loads((run_dir / "eval" / "finetuned" / "ifeval_guard.jsonl").read_text().splitlines()[0])
    assert record["by_filter"]["raw"]["ifeval"]["checker"]  # which checker scored it is on every record
