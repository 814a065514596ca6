"""The two sides of a run's eval: eval.compare_base is honoured for every method, and reports name the
models as the user knows them (the recipe's model.name; the run directory and its method), with no
machine-local absolute paths."""

import argparse
import json
from pathlib import Path

import pytest
from _eval_helpers import arith_task

from finetune.eval import run as evaluation
from finetune.eval.commands import add_compare_args, add_eval_args, cmd_compare, cmd_eval
from finetune.methods import apply_method
from finetune.recipe import MethodConfig, load_recipe
from finetune.testing import save_tiny, tiny_model, tiny_tokenizer

B_NAMES = {
    "lora": "runs/quickstart (smollm2-135m-instruct + LoRA adapter)",
    "freeze": "runs/quickstart (smollm2-135m-instruct, trained weights, freeze: last 1 block trained)",
    "full": "runs/quickstart (smollm2-135m-instruct, trained weights, full finetune)",
}
REPORTS = ("results.json", "report.md", "report.html")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's home as the working folder, with the model cache inside it (~/.cache/finetune)."""
    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FINETUNE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(home)
    return home


def _cached_model(home: Path):
    """A tiny model whose config points at the packaged model's cache folder, as the real one does."""
    model = tiny_model()
    model.config._name_or_path = str(home / ".cache" / "finetune" / "models" / "smollm2-135m-instruct")
    return model


def _run(home: Path, method: str, compare_base: bool, monkeypatch, loads: list):
    task = arith_task(home / "tasks")
    layers = ", layers: 1" if method == "freeze" else ""
    recipe_file = home / "quickstart.yaml"
    recipe_file.write_text(f"model: {{name: smollm2-135m-instruct}}\nmethod: {{name: {method}{layers}}}\n"
                           f"data: {{datasets: [{{name: arith_cot}}]}}\n"
                           f"eval: {{tasks: ['{task}'], limit: 2, batch_size: 2, "
                           f"compare_base: {str(compare_base).lower()}}}\n")
    recipe = load_recipe(recipe_file)
    run_dir = recipe.run_dir()
    run_dir.mkdir(parents=True)

    def load_base(_cfg):
        loads.append(1)
        return _cached_model(home), tiny_tokenizer()

    monkeypatch.setattr(evaluation, "load_base", load_base)
    model = apply_method(_cached_model(home), recipe.method)
    manifest = {}
    comparison = evaluation.evaluate_run(recipe, run_dir, model, tiny_tokenizer(), manifest)
    return run_dir, comparison, manifest


@pytest.mark.parametrize("method", ["lora", "freeze", "full"])
def test_compare_base_false_scores_only_the_finetuned_model(home, method, monkeypatch):
    loads = []
    run_dir, comparison, manifest = _run(home, method, False, monkeypatch, loads)
    assert loads == [] and not (run_dir / "eval" / "base").exists()
    assert (run_dir / "eval" / "finetuned" / "mini_arith.jsonl").is_file()
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["comparison"]["a"] is None
    assert results["comparison"]["base_not_evaluated"] == "eval.compare_base: false"
    assert results["meta"]["base_via"] == "not evaluated"
    md = (run_dir / "eval" / "report.md").read_text()
    assert "- A = base: not evaluated (eval.compare_base: false); no comparison" in md
    assert f"- B = **finetuned**: {B_NAMES[method]}; records: runs/quickstart/eval/finetuned" in md
    assert "not evaluated (eval.compare_base: false)" in (run_dir / "eval" / "report.html").read_text()
    assert manifest["eval"]["mini_arith"]["exact_match:strict"]["a"] is None
    assert comparison["a"] is None


def _no_machine_paths(folder: Path, home: Path) -> str:
    texts = "".join((folder / name).read_text() for name in REPORTS)
    for local in (str(home), str(home.parent), "/.cache/"):
        assert local not in texts
    return texts


@pytest.mark.parametrize("method", ["lora", "freeze", "full"])
def test_report_names_the_sides_as_the_user_knows_them(home, method, monkeypatch):
    loads = []
    run_dir, comparison, _ = _run(home, method, True, monkeypatch, loads)
    assert loads == ([] if method == "lora" else [1])  # LoRA's base is the same model, adapter off
    assert comparison["a"]["name"] == "smollm2-135m-instruct" and comparison["b"]["name"] == B_NAMES[method]
    texts = _no_machine_paths(run_dir / "eval", home)
    assert "- A = **base**: smollm2-135m-instruct; records: runs/quickstart/eval/base" in texts
    assert f"- B = **finetuned**: {B_NAMES[method]}; records: runs/quickstart/eval/finetuned" in texts
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["comparison"]["b"]["model"]["name_or_path"] == "<finetune cache>/models/smollm2-135m-instruct"


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_eval_and_compare_of_a_run_directory_name_the_sides(home):
    base = home / ".cache" / "finetune" / "models" / "smollm2-135m-instruct"
    save_tiny(base)
    run = home / "runs" / "quickstart"
    model = apply_method(tiny_model(), MethodConfig(name="lora", r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(run / "adapter")
    tiny_tokenizer().save_pretrained(run / "tokenizer")
    (run / "manifest.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct",
                                                   "base_model_path": str(base), "method": "lora"}))
    task = str(arith_task(home / "tasks"))
    assert cmd_eval(_parse(add_eval_args, ["runs/quickstart", "--tasks", task, "--limit", "2", "--with-base"])) == 0
    assert cmd_compare(_parse(add_compare_args, [str(run / "eval" / "base"), str(run), "--out", "cmp"])) == 0
    for folder in (run / "eval", home / "cmp"):
        texts = _no_machine_paths(folder, home)
        assert f"- B = **finetuned**: {B_NAMES['lora']}" in texts and "- A = **base**: smollm2-135m-instruct" in texts

