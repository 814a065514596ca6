"""The board across runs (issue #18): two short recipes on one tiny base, two tasks (one added later), paired
statistics recomputed by hand from the records, the differing recipe keys, refusal of a run on another base, and
a run's own report that keeps its first task."""

import json
import math

import pytest

from finetune.cli import main
from finetune.eval.board import holm
from finetune.eval.records import read_records
from finetune.testing import tiny_model, tiny_tokenizer

RECIPE = """\
model: {{name: "{base}"}}
method: {{name: lora, r: {r}, alpha: 8}}
data:
  datasets: [{{name: arith_cot, limit: 16}}]
  max_length: 512
train: {{max_steps: 2, batch_size: 4, save_steps: 2, logging_steps: 1, lr: {lr}}}
eval: {{tasks: []}}
output: {{dir: "{out}"}}
"""
MC_TASK = """\
dataset: {generator: arithmetic_cot, generator_args: {n: 24, seed: 0}, split: test}
output_type: multiple_choice
prompt_template: raw
doc_to_text: "{{question}}\\nAnswer:"
doc_to_choice: "[answer ~ ' a', answer ~ ' b', answer ~ ' c']"
doc_to_target: "{{ (answer | int) % 3 }}"
"""
PPL_TASK = """\
dataset: {generator: arithmetic_cot, generator_args: {n: 12, seed: 1}, split: test}
output_type: loglikelihood_rolling
doc_to_text: "{{question}}"
doc_to_target: "{{rationale}}"
metric_list: [perplexity]
"""


def _train(tmp_path, name, base, r, lr):
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPE.format(base=base, r=r, lr=lr, out=tmp_path / "runs" / name))
    assert main(["train", str(path)]) == 0
    return tmp_path / "runs" / name


def _eval(run, task):
    assert main(["eval", str(run), "--tasks", str(task), "--with-base", "--batch-size", "8"]) == 0


@pytest.fixture
def two_runs(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mc.yaml").write_text(MC_TASK)
    a = _train(tmp_path, "a", tiny_dir, r=4, lr=1e-3)
    b = _train(tmp_path, "b", tiny_dir, r=8, lr=5e-2)
    return tmp_path, a, b


def _pairs(base_file, tuned_file, key):
    base = {r["doc_id"]: r["scores"][key] for r in read_records(base_file)}
    tuned = {r["doc_id"]: r["scores"][key] for r in read_records(tuned_file)}
    return [(base[i], tuned[i]) for i in sorted(base)]


def _ppl(path):
    recs = read_records(path)
    return math.exp(sum(r["nll"] for r in recs) / sum(r["n_tokens"] for r in recs))


def _mcnemar(pairs):
    down = sum(1 for x, y in pairs if x == 1 and y == 0)
    up = sum(1 for x, y in pairs if x == 0 and y == 1)
    n = up + down
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2 ** n)


def _check_stats(board, runs):
    mc = board["tasks"]["mc"]
    entries = {e["run"]: e for e in mc["entries"]}
    ps = []
    for run in runs:
        pairs = _pairs(run / "eval/base/mc.jsonl", run / "eval/finetuned/mc.jsonl", "acc")
        m = entries[str(run)]["metrics"]["acc"]
        a, b = sum(x for x, _ in pairs) / len(pairs), sum(y for _, y in pairs) / len(pairs)
        assert (m["a"], m["b"], m["n"]) == (pytest.approx(a), pytest.approx(b), 24)
        assert m["diff"] == pytest.approx(b - a) and m["p_value"] == pytest.approx(_mcnemar(pairs))
        assert m["ci"][0] <= m["diff"] <= m["ci"][1]
        ps.append(m["p_value"])
    lo, hi = sorted(ps)
    adjusted = {p: q for p, q in zip((lo, hi), (min(1, 2 * lo), max(min(1, 2 * lo), hi)))}
    for run in runs:
        assert entries[str(run)]["metrics"]["acc"]["p_holm"] == pytest.approx(adjusted[entries[str(run)]["metrics"]
                                                                                       ["acc"]["p_value"]])
    ppl = {e["run"]: e["metrics"]["perplexity"] for e in board["tasks"]["ppl"]["entries"]}
    for run in runs:
        m = ppl[str(run)]
        assert m["a"] == pytest.approx(_ppl(run / "eval/base/ppl.jsonl"))
        assert m["diff"] == pytest.approx(_ppl(run / "eval/finetuned/ppl.jsonl") - m["a"])
        assert m["test"] == "paired_bootstrap"
    lo, hi = sorted(ppl[str(r)]["p_value"] for r in runs)  # Holm over the two finetunes
    assert sorted(ppl[str(r)]["p_holm"] for r in runs) == pytest.approx([min(1, 2 * lo), max(min(1, 2 * lo), hi)])
    best = board["tasks"]["ppl"]["best_two"]["perplexity"]  # lower is better
    assert best["best"] == min(ppl, key=lambda r: ppl[r]["b"])
    assert best["diff"] == pytest.approx(ppl[best["best"]]["b"] - ppl[best["second"]]["b"])


def test_board_of_two_runs_over_two_tasks(two_runs, capsys):
    tmp_path, a, b = two_runs
    _eval(a, tmp_path / "mc.yaml")
    _eval(b, tmp_path / "mc.yaml")
    out = capsys.readouterr().out
    assert f"base: mc: cached from {a.relative_to(tmp_path)}" in out  # the second run reuses the base records
    assert (a / "eval/base/mc.jsonl").read_text() == (b / "eval/base/mc.jsonl").read_text()
    (tmp_path / "ppl.yaml").write_text(PPL_TASK)  # a task added a week later
    _eval(a, tmp_path / "ppl.yaml")
    assert "wrote: report" in capsys.readouterr().out
    results = json.loads((a / "eval/results.json").read_text())
    assert set(results["comparison"]["tasks"]) == {"mc", "ppl"}  # the first task is still in the run's report
    assert set(results["evaluations"]) == {"mc", "ppl"}
    assert results["evaluations"]["mc"]["at"] <= results["evaluations"]["ppl"]["at"]
    for name in ("report.md", "report.html"):
        text = (a / "eval" / name).read_text()
        assert "mc" in text and "ppl" in text and "Evaluations" in text

    assert main(["compare", str(a), str(b)]) == 0  # b lacks ppl: shown as missing, not computed
    board = json.loads((tmp_path / "runs/board/board.json").read_text())
    assert board["missing"] == {str(b.relative_to(tmp_path)): ["ppl"]} or board["missing"] == {str(b): ["ppl"]}
    assert not (b / "eval/finetuned/ppl.jsonl").exists()
    capsys.readouterr()

    assert main(["compare", str(a), str(b), "--fill", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "base: ppl: cached from" in out and "recipe keys that differ" in out and "Holm" in out
    from finetune.eval.board import build_board, load_run
    board = build_board([load_run(a), load_run(b)])
    assert set(board["tasks"]) == {"mc", "ppl"} and board["missing"] == {}
    assert {e["run"] for t in board["tasks"].values() for e in t["entries"]} == {str(a), str(b)}
    diffs = dict(board["recipe_differences"])
    assert diffs["method.r"] == [4, 8] and diffs["train.lr"] == [1e-3, 5e-2] and "output.dir" not in diffs
    _check_stats(board, [a, b])
    html = (tmp_path / "runs/board/board.html").read_text()
    assert "data:image/png;base64," in html and "method.r" in html and "Holm" in html
    md = (tmp_path / "runs/board/board.md").read_text()
    assert "## mc" in md and "## ppl" in md


def test_board_refuses_a_run_on_another_base(two_runs, capsys):
    tmp_path, a, b = two_runs
    other = tmp_path / "other_base"
    tiny_model(seed=7).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    c = _train(tmp_path, "c", str(other), r=4, lr=1e-3)
    for run in (a, c):
        _eval(run, tmp_path / "mc.yaml")
    capsys.readouterr()
    assert main(["compare", str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert "cannot share one board" in err and "base model" in err and str(c) in err and "other_base" in err


def test_board_refuses_runs_evaluated_with_another_task_file(two_runs, capsys):
    tmp_path, a, b = two_runs
    _eval(a, tmp_path / "mc.yaml")
    (tmp_path / "mc2").mkdir()
    (tmp_path / "mc2/mc.yaml").write_text(MC_TASK.replace("' c'", "' d'"))
    _eval(b, tmp_path / "mc2/mc.yaml")
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "mc: task file differs" in err


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_guard_verdicts_are_read_as_verdict_py_writes_them():
    from types import SimpleNamespace

    from finetune.eval.board import verdict
    run = SimpleNamespace(results={"comparison": {"tasks": {
        "arc_easy_guard": {"role": "guard", "verdicts": {"acc": {"verdict": "no_regression",
                                                                  "label": "no regression beyond δ = 0.02"}}},
        "arith_cot": {"metrics": {}}}}})
    assert verdict(run, "arc_easy_guard") == "acc: no regression beyond δ = 0.02"
    assert verdict(run, "arith_cot") is None and verdict(run, "absent") is None
