"""Task accuracy during training (eval.every_steps): the curve, its cost, the best checkpoint, resume.

The tiny model (full finetuning, lr 2e-2) learns a one-answer CoT set ("#### 7") in about 20 steps, so
the curve really rises from 0; scoring is a real generation pass except where a test dictates the values.
"""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from finetune.eval import during
from finetune.eval.harness import evaluate
from finetune.prompts import load_template
from finetune.recipe import EvalConfig, RecipeError, load_recipe
from finetune.rundir import RunDir
from finetune.train import train
from finetune.trainer import TaskEval

RECIPE = """\
model: {name: "{tiny}"}
method: {name: full}
data:
  datasets: [{name: sevens, format: cot, source: "{data}/train.jsonl"}]
  max_length: 256
  val_size: 6
train: {max_steps: 12, batch_size: 4, save_steps: 4, logging_steps: 1, lr: 2.0e-2, scheduler: constant}
eval: {every_steps: 4, every_limit: 4, batch_size: 4}
output: {dir: "{out}"}
"""

TASK = """\
task: sevens
dataset: {file: "{data}/{split}.jsonl", split: test}
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: [], max_new_tokens: 24}
filter_list:
  - name: strict
    filter: [{function: answer_format, format: "#### {answer}"}, {function: take_first}]
"""


@pytest.fixture
def setup(tmp_path, tiny_dir):
    """write(extra overrides) -> loaded recipe; the data folder holds train / validation / test rows and a task."""
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 40), ("validation", 8), ("test", 8)):
        rows = [{"question": f"Item {split[0]}{i}: what is it?", "rationale": "", "answer": "7"} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "sevens.yaml").write_text(TASK.replace("{data}", str(data)))
    path = tmp_path / "recipe.yaml"
    text = RECIPE.replace("{tiny}", tiny_dir).replace("{data}", str(data)).replace("{out}", str(tmp_path / "run"))

    def load(*overrides, answer_format="#### {answer}"):
        path.write_text(text.replace('train.jsonl"}', f'train.jsonl", answer_format: "{answer_format}"}}'))
        return load_recipe(path, list(overrides))
    return SimpleNamespace(load=load, task=str(data / "sevens.yaml"), path=path)


def scored(run_dir) -> list[dict]:
    return [r for r in RunDir(run_dir).train_log() if during.VALUE in r]


def weights(folder):
    return load_file(folder / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_off_by_default(setup):
    e = EvalConfig()
    assert (e.every_steps, e.keep_best) == (0, False)
    recipe = setup.load("eval.every_steps=0")
    assert TaskEval.for_recipe(recipe, None, None, None) == []


def test_curve_at_the_right_steps_and_equal_to_scoring_the_checkpoint(setup, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM
    from finetune.eval.tasks import load_task
    from finetune.model import load_model
    recipe = setup.load(f"eval.every_task={setup.task}", "train.max_steps=26", "eval.every_steps=8",
                        "train.save_steps=8")
    run_dir, *_ = train(recipe)
    rows = scored(run_dir)
    assert [r["step"] for r in rows] == [8, 16, 24, 26], "every 8 steps and at the last"
    assert all(r["task_source"] == "sevens (validation)" and r["task_n"] == 4 and r[during.SECONDS] > 0 for r in rows)
    assert rows[0][during.VALUE] == 0 and rows[-1][during.VALUE] > 0, "the tiny model learns the answer"
    task = load_task(setup.task)
    task.spec["dataset"]["split"] = "validation"
    _, tok = load_model(tiny_dir)
    for row in rows[2:]:  # checkpoints 24 and 26 are kept (save_total_limit 2)
        step, out = row["step"], tmp_path / f"direct-{row['step']}"
        model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / f"checkpoint-{step}")
        direct = evaluate(model, tok, [task], out, template_name="chat", limit=4, batch_size=4,
                          seed=recipe.train.seed)["sevens"]
        assert direct == row[during.SCORES], f"step {step}"
        ours = (run_dir / RunDir.TASK_EVAL / f"step-{step}.jsonl").read_text().splitlines()
        theirs = (out / "sevens.jsonl").read_text().splitlines()
        assert sorted((r["doc_id"], r["output"]) for r in map(json.loads, ours)) == \
            sorted((r["doc_id"], r["output"]) for r in map(json.loads, theirs)), f"step {step}"


def dictate(monkeypatch, values):
    """Probe.score returns these values in turn (as every metric): the test decides where the best is."""
    it = iter(values)

    def score(self, model, tokenizer):
        v = next(it)
        return {k: v for k in self.parts[0][0].metric_keys()}, []
    monkeypatch.setattr(during.Probe, "score", score)


@pytest.mark.parametrize("values, best", [([0.25, 0.75, 0.5], 8), ([0.5, 0.5, 0.25], 4)])
def test_keep_best_keeps_the_argmax_of_the_logged_curve(setup, monkeypatch, values, best):
    dictate(monkeypatch, values)
    run_dir, *_, manifest = train(setup.load("eval.keep_best=true", "train.save_steps=100"))
    curve = during.curve(RunDir(run_dir).train_log())
    assert [s for s, _ in curve] == [4, 8, 12]
    argmax = max(curve, key=lambda p: (p[1], -p[0]))[0]  # the highest value, the first on ties
    assert argmax == best == manifest["train_metrics"]["task_eval"]["kept_step"]
    ckpts = run_dir / "checkpoints"
    assert (ckpts / f"checkpoint-{best}").is_dir(), "the best checkpoint survives rotation"
    assert same(weights(run_dir / "model"), weights(ckpts / f"checkpoint-{best}"))
    assert not same(weights(run_dir / "model"), weights(ckpts / "checkpoint-12"))


def test_resume_keeps_the_curve_and_the_best_from_before_the_kill(setup, monkeypatch):
    values = iter([0.25, 0.75])

    def score(self, model, tokenizer):
        v = next(values, None)
        if v is None:
            raise RuntimeError("killed")  # dies at step 12, after checkpoint 8
        return {k: v for k in self.parts[0][0].metric_keys()}, []
    monkeypatch.setattr(during.Probe, "score", score)
    recipe = setup.load("eval.keep_best=true")
    with pytest.raises(RuntimeError, match="killed"):
        train(recipe)
    run_dir = recipe.run_dir()
    assert RunDir(run_dir).status() == "failed" and during.curve(RunDir(run_dir).train_log()) == [(4, 0.25), (8, 0.75)]
    dictate(monkeypatch, [0.5])
    train(recipe)
    assert during.curve(RunDir(run_dir).train_log()) == [(4, 0.25), (8, 0.75), (12, 0.5)]
    assert RunDir(run_dir).manifest()["train_metrics"]["task_eval"]["kept_step"] == 8, "the best from before the kill"
    assert same(weights(run_dir / "model"), weights(run_dir / "checkpoints" / "checkpoint-8"))


def test_held_out_rows_are_scored_with_their_answer_format(setup):
    from finetune.data.build import build_datasets
    from finetune.testing import tiny_tokenizer
    recipe = setup.load(answer_format="The answer is {answer}.")
    tok = tiny_tokenizer()
    bundle = build_datasets(recipe.data, tok, seed=recipe.train.seed)
    probe = during.build_probe(recipe, bundle, tok)
    assert probe.n == 4 and probe.metric == "exact_match:strict" and probe.label == "held-out rows"
    task, todo = probe.parts[0]
    assert [d["target"] for _, d in todo] == ["7"] * 4
    assert {d["prompt"] for _, d in todo} <= {r["prompt"] for r in bundle.val_records}
    assert dict(task.filters)["strict"][0] == {"function": "answer_format", "format": "The answer is {answer}."}
    from finetune.eval.scoring import score_generation
    assert score_generation(task, ["Seven.\nThe answer is 7."], [False], "7")["correct"]
    assert not score_generation(task, ["Seven.\n#### 7"], [False], "7")["correct"]


def test_test_split_and_missing_sources_are_refused(setup, tmp_path):
    with pytest.raises(RecipeError, match=r"eval\.every_split=test.*eval\.every_split: the test split is the final"):
        setup.load(f"eval.every_task={setup.task}", "eval.every_split=test")
    with pytest.raises(RecipeError, match=r"eval\.every_steps.*data\.val_size is 0"):
        setup.load("data.val_size=0")
    with pytest.raises(RecipeError, match=r"eval\.keep_best.*eval\.every_steps is 0"):
        setup.load("eval.every_steps=0", "eval.keep_best=true")
    own = tmp_path / "own.yaml"  # a task scored on its validation split: that split is the final eval's
    own.write_text(open(setup.task).read().replace("split: test", "split: validation").replace("task: sevens",
                                                                                                 "task: own"))
    recipe = setup.load(f"eval.every_task={own}")
    with pytest.raises(during.DuringError, match="'validation' is the split own is scored on"):
        during.build_probe(recipe, SimpleNamespace(template=load_template("chat"), val_records=[]), None)
    out = subprocess.run([sys.executable, "-m", "finetune.cli", "validate", str(setup.path), "eval.every_split=test"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "test split" in out.stderr and "Traceback" not in out.stderr


def test_end_to_end_report_and_plot(setup, capsys):
    from finetune.eval.run import evaluate_run
    recipe = setup.load(f"eval.tasks=[{setup.task}]", "eval.limit=4", "eval.compare_base=false", "eval.keep_best=true")
    run_dir, model, tok, manifest = train(recipe)
    said = capsys.readouterr().out
    assert "scored in" in said and "task accuracy during training: 3 passes" in said
    evaluate_run(recipe, run_dir, model, tok, manifest)
    report = (run_dir / "eval" / "report.md").read_text()
    assert "## Task accuracy during training" in report and "exact_match:strict on 4 documents of held-out rows" in report
    assert "<h2>Task accuracy during training</h2>" in (run_dir / "eval" / "report.html").read_text()
    assert (run_dir / RunDir.LOSS_PLOT).stat().st_size > 0
