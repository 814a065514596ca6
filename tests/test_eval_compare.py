"""Paired comparison and reports: McNemar, bootstrap, flips, self-comparison, report files."""

import json
import math
import re

import numpy as np
import pytest
from _eval_helpers import arith_task, sharp_model, tokenizer, write_task

from finetune.eval.compare import compare
from finetune.eval.harness import evaluate
from finetune.eval.report import format_table, write_report
from finetune.eval.stats import mcnemar_exact, paired_bootstrap
from finetune.eval.tasks import load_task


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)  # two-sided: 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert mcnemar_exact(5, 5) == 1.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(3, 17), (40, 61), (12, 12), (0, 1)]:
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_paired_bootstrap_identical_inputs_give_zero_and_p_one():
    terms = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], dtype=float)
    res = paired_bootstrap(terms, terms.copy(), "exact_match", n_boot=500)
    assert res["diff"] == 0 and res["ci"] == [0.0, 0.0] and res["p_bootstrap"] == 1.0


def test_paired_bootstrap_detects_a_clear_shift_and_covers_it():
    rng = np.random.default_rng(1)
    a = np.stack([rng.normal(2.0, 0.3, 200), np.ones(200)], 1)
    b = a.copy()
    b[:, 0] += 0.5 + rng.normal(0, 0.05, 200)
    res = paired_bootstrap(a, b, "perplexity", n_boot=1000, seed=3)
    assert res["diff"] > 0 and res["ci"][0] < res["diff"] < res["ci"][1] and res["ci"][0] > 0
    assert res["p_bootstrap"] < 0.01
    assert res["b"] == pytest.approx(math.exp(b[:, 0].mean()))
    assert res == paired_bootstrap(a, b, "perplexity", n_boot=1000, seed=3)  # seeded: reproducible


def _fake_eval_dir(path, correct: list[int], outputs: list[str], prompt="P", task="t", label="x"):
    path.mkdir(parents=True)
    with open(path / f"{task}.jsonl", "w") as f:
        for i, (c, o) in enumerate(zip(correct, outputs)):
            f.write(json.dumps({"doc_id": i, "prompt": f"{prompt}{i}", "target": "5", "output": o,
                                "extracted": o, "correct": bool(c), "scores": {"exact_match:strict": float(c)},
                                "config": "c"}) + "\n")
    summary = {"label": label, "seed": 0, "tasks": {task: {
        "scores": {"exact_match:strict": sum(correct) / len(correct)},
        "metrics": {"exact_match:strict": {"higher_is_better": True}}, "records": f"{task}.jsonl",
        "config": "c", "output_type": "generate_until",
        "failures": {"strict": {"correct": sum(correct), "truncated": 0, "no_answer": 0,
                                "wrong": len(correct) - sum(correct)}}}}}
    (path / "scores.json").write_text(json.dumps(summary))
    return path


def test_flips_counts_examples_and_mcnemar(tmp_path):
    a_correct = [0, 0, 0, 0, 0, 1, 1, 1, 0, 1]
    b_correct = [1, 1, 1, 1, 0, 1, 1, 0, 0, 1]  # 4 fail->pass, 1 pass->fail
    a = _fake_eval_dir(tmp_path / "a", a_correct, [f"a{i}" for i in range(10)], label="base")
    b = _fake_eval_dir(tmp_path / "b", b_correct, [f"b{i}" for i in range(10)], label="finetuned")
    res = compare(a, b, n_boot=300)
    m = res["tasks"]["t"]["metrics"]["exact_match:strict"]
    assert (m["a"], m["b"], m["diff"]) == (0.4, 0.7, pytest.approx(0.3))
    assert m["test"] == "mcnemar_exact" and m["p_value"] == pytest.approx(mcnemar_exact(1, 4))
    assert m["ci"][0] <= m["diff"] <= m["ci"][1]
    flips = res["tasks"]["t"]["flips"]["exact_match:strict"]
    assert (flips["fail_to_pass"], flips["pass_to_fail"]) == (4, 1)
    ex = flips["examples"]["fail_to_pass"][0]
    assert (ex["doc_id"], ex["a_output"], ex["b_output"]) == (0, "a0", "b0")
    assert len(flips["examples"]["fail_to_pass"]) == 3  # a few, not all
    assert flips["examples"]["pass_to_fail"][0]["doc_id"] == 7
    assert res["warnings"] == []


def test_different_prompts_are_flagged(tmp_path):
    a = _fake_eval_dir(tmp_path / "a", [1, 0], ["x", "y"], prompt="P")
    b = _fake_eval_dir(tmp_path / "b", [1, 0], ["x", "y"], prompt="Q")
    res = compare(a, b, n_boot=50)
    assert res["tasks"]["t"]["prompt_mismatches"] == 2
    assert any("different prompts" in w for w in res["warnings"])


@pytest.fixture(scope="module")
def real_eval_dir(tmp_path_factory):
    """A real eval folder from the tiny model: generation, multiple choice and perplexity tasks."""
    folder = tmp_path_factory.mktemp("tasks")
    arith_task(folder)
    write_task(folder, "mc", """\
dataset: {generator: arithmetic_cot, generator_args: {n: 8}, split: test}
output_type: multiple_choice
prompt_template: raw
doc_to_text: "{{question}}"
doc_to_choice: "[answer, '7']"
doc_to_target: "0"
""")
    write_task(folder, "ppl", """\
dataset: {generator: arithmetic_cot, generator_args: {n: 4}, split: test}
output_type: loglikelihood_rolling
doc_to_text: "{{question}}"
doc_to_target: "{{rationale}}"
""")
    out = tmp_path_factory.mktemp("eval") / "base"
    tasks = [load_task(str(folder / f"{n}.yaml")) for n in ("mini_arith", "mc", "ppl")]
    evaluate(sharp_model(), tokenizer(), tasks, out, batch_size=4, limit=4)
    return out


def test_comparing_a_results_dir_with_itself_gives_zero_difference_and_p_one(real_eval_dir):
    res = compare(real_eval_dir, real_eval_dir, n_boot=200)
    assert set(res["tasks"]) == {"mini_arith", "mc", "ppl"}
    tests = set()
    for task in res["tasks"].values():
        for m in task["metrics"].values():
            assert m["diff"] == 0 and m["p_value"] == 1.0 and m["ci"] == [0.0, 0.0]
            tests.add(m["test"])
    assert tests == {"mcnemar_exact", "paired_bootstrap"}
    assert res["tasks"]["ppl"]["metrics"]["perplexity"]["higher_is_better"] is False
    assert res["warnings"] == []


def test_report_files_are_written_and_html_is_self_contained(real_eval_dir, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "train_log.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 2.0 / s}) for s in range(1, 6)) + "\n{\"step\": 6, \"eval_loss\": 1}\n")
    res = compare(real_eval_dir, real_eval_dir, n_boot=100)
    paths = write_report(tmp_path / "report", res, run_dir=run_dir, meta={"method": "lora"})
    assert {p.name for p in paths.values()} == {"results.json", "report.md", "report.html"}
    results = json.loads(paths["results"].read_text())
    assert results["comparison"]["a"]["records"]["mini_arith"].endswith("mini_arith.jsonl")
    assert results["comparison"]["a"]["versions"]["torch"] and results["comparison"]["a"]["seed"] == 0
    assert results["comparison"]["configs"]["mini_arith"]["task_spec"]["output_type"] == "generate_until"
    assert results["loss_points"] == 5
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3  # scores with CIs, failure buckets, loss curve
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched from elsewhere
    md = paths["markdown"].read_text()
    assert "| mini_arith | exact_match:strict |" in md and "failure buckets" in md
    table = format_table(res)
    assert table.splitlines()[0].split()[:4] == ["task", "metric", "base", "finetuned"]  # unlabelled: A is base, B finetuned
    assert len(table.splitlines()) == 2 + sum(len(t["metrics"]) for t in res["tasks"].values())


def test_report_without_training_log_has_no_loss_plot(real_eval_dir, tmp_path):
    paths = write_report(tmp_path / "r", compare(real_eval_dir, real_eval_dir, n_boot=50))
    assert paths["html"].read_text().count("data:image/png;base64,") == 2


@pytest.mark.parametrize("diff, p, higher_is_better, shown", [
    (+0.44, 1e-11, True, "+0.44 (better)"),
    (+0.0125, 1.0, True, "+0.0125 (no significant change)"),  # a direction at p = 1 is not "better"
    (-0.2, 0.002, True, "-0.2 (worse)"),
    (-3.3, 0.0005, False, "-3.3 (better)"),               # perplexity: lower is better
    (+0.5, 0.049, False, "+0.5 (worse)"),
    (+0.5, 0.05, False, "+0.5 (no significant change)"),
    (0.0, 1.0, True, "+0"),
])
def test_the_change_column_names_a_direction_only_when_significant(diff, p, higher_is_better, shown):
    from finetune.eval.report import table_rows
    m = {"a": 0.1, "b": 0.1 + diff, "diff": diff, "ci": (diff - 0.1, diff + 0.1), "p_value": p, "test": "t",
         "n": 10, "higher_is_better": higher_is_better}
    assert table_rows({"tasks": {"t": {"metrics": {"m": m}}}})[0][4] == shown
