"""Guard verdicts (finetune/eval/verdict.py): each verdict from hand-made CIs, the n that would decide, and that
the n formula predicts when the real paired bootstrap starts to decide."""

import math

import numpy as np
import pytest

from finetune.eval.report import format_table
from finetune.eval.stats import paired_bootstrap
from finetune.eval.verdict import INCONCLUSIVE, NO_REGRESSION, REGRESSION, add_verdicts, n_to_decide, verdict

Z = 1.959963984540054  # z_{0.975}

CASES = [  # (diff, ci, n, delta, verdict, n_needed)
    (0.01, (-0.01, 0.03), 200, 0.02, NO_REGRESSION, None),
    (0.0, (0.0, 0.0), 50, 0.02, NO_REGRESSION, None),  # identical outputs
    (-0.03, (-0.05, -0.01), 200, 0.02, REGRESSION, None),
    (-0.01, (-0.015, -0.005), 2000, 0.02, REGRESSION, None),  # surely worse, though by less than δ
    # inconclusive: non-inferiority needs n0 (h_lo / (diff + δ))^2 = 200 (0.03 / 0.015)^2 = 800,
    # a regression n0 (h_hi / -diff)^2 = 200 (0.03 / 0.005)^2 = 7200: the smaller decides
    (-0.005, (-0.035, 0.025), 200, 0.02, INCONCLUSIVE, 800),
    (0.01, (-0.04, 0.06), 200, 0.02, INCONCLUSIVE, 556),  # 200 (0.05 / 0.03)^2 = 555.6; no regression possible
    (-0.02, (-0.05, 0.01), 200, 0.02, INCONCLUSIVE, 450),  # diff = -δ: only a regression can be shown, 200 1.5^2
    (-0.01, (-0.06, 0.04), 100, 0.05, INCONCLUSIVE, 157),  # wider δ: 100 (0.05 / 0.04)^2 = 156.25 < 2500
]


@pytest.mark.parametrize("diff,ci,n,delta,expected,needed", CASES)
def test_verdict_table(diff, ci, n, delta, expected, needed):
    v = verdict(diff, ci, n, delta)
    assert v["verdict"] == expected
    assert v["n_needed"] == (needed if expected == INCONCLUSIVE else None)
    if expected == INCONCLUSIVE:
        assert v["label"].startswith(f"inconclusive at n = {n}") and f"{needed:,}" in v["label"]
    elif expected == NO_REGRESSION:
        assert v["label"] == f"no regression beyond δ = {delta:g}"
    else:
        assert v["label"].startswith("regression") and ("within δ" in v["label"]) == (ci[0] > -delta)


def test_lower_is_better_metrics_are_oriented_and_delta_is_relative():
    # perplexity 10 -> 10.1: worse by 0.1, CI [0.05, 0.15]; δ = 2% of 10 = 0.2, surely worse: a regression within δ
    v = verdict(0.1, (0.05, 0.15), 300, 0.02, higher_is_better=False, base=10.0)
    assert v["verdict"] == REGRESSION and v["delta"] == pytest.approx(0.2) and "within δ" in v["label"]
    assert v["gain_ci"] == [-0.15, -0.05]
    v = verdict(-0.5, (-0.9, 0.1), 300, 0.02, higher_is_better=False, base=10.0)  # better, CI reaches +0.1 < 0.2
    assert v["verdict"] == NO_REGRESSION


@pytest.mark.parametrize("diff,sd,n,delta", [(0.0, 0.3, 100, 0.02), (-0.01, 0.25, 400, 0.02), (0.005, 0.4, 50, 0.03)])
def test_n_formula_is_the_textbook_one_for_a_normal_ci(diff, sd, n, delta):
    """With h = z s / sqrt(n0), n0 (h / m)^2 is (z s / m)^2: the n at which diff - z s / sqrt(n) = -δ."""
    h = Z * sd / math.sqrt(n)
    need = n_to_decide(n, diff, (diff - h, diff + h), delta)
    n_ni = (Z * sd / (diff + delta)) ** 2
    n_reg = (Z * sd / -diff) ** 2 if diff < 0 else math.inf
    assert need == math.ceil(min(n_ni, n_reg) - 1e-9)


def _pairs(n0: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired pass/fail outcomes: 10% of documents flip each way, 1% more flip to fail (diff -0.01)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n0).astype(float)
    b = a.copy()
    idx = rng.permutation(n0)
    down, up = idx[: int(0.11 * n0)], idx[int(0.11 * n0): int(0.21 * n0)]
    a[down], b[down] = 1, 0
    a[up], b[up] = 0, 1
    return a, b


def _verdict_at(a: np.ndarray, b: np.ndarray, delta: float) -> dict:
    terms = lambda x: np.stack([x, np.ones_like(x)], 1)  # noqa: E731
    res = paired_bootstrap(terms(a), terms(b), "acc", n_boot=2000, seed=0)
    return verdict(res["diff"], res["ci"], len(a), delta)


def test_n_needed_predicts_when_the_bootstrap_decides():
    """At the predicted n (the same documents repeated, so the difference and spread stay) the CI decides;
    well below it, it does not."""
    a, b = _pairs(200)
    first = _verdict_at(a, b, 0.05)
    assert first["verdict"] == INCONCLUSIVE
    need = first["n_needed"]
    for factor, decided in ((0.6, False), (1.5, True)):
        k = max(1, round(factor * need / len(a)))
        later = _verdict_at(np.tile(a, k), np.tile(b, k), 0.05)
        assert (later["verdict"] == NO_REGRESSION) == decided, (factor, k, later)


def _comparison() -> dict:
    metric = {"a": 0.6, "b": 0.55, "diff": -0.05, "ci": [-0.08, -0.02], "higher_is_better": True, "n": 300,
              "p_value": 0.01, "test": "mcnemar_exact"}
    return {"a": {"label": "base"}, "b": {"label": "finetuned"}, "warnings": [], "n_boot": 2000, "seed": 0,
            "tasks": {"target": {"metrics": {"acc": {**metric, "diff": 0.1, "ci": [0.05, 0.15]}}},
                      "arc_easy_guard": {"metrics": {"acc": metric}}}}


def test_add_verdicts_marks_guards_only_and_the_table_prints_them():
    comparison = add_verdicts(_comparison(), ["arc_easy_guard", "missing_guard"], delta=0.02)
    assert comparison["guards"] == {"delta": 0.02, "tasks": ["arc_easy_guard", "missing_guard"]}
    guard = comparison["tasks"]["arc_easy_guard"]
    assert guard["role"] == "guard" and guard["verdicts"]["acc"]["verdict"] == REGRESSION
    assert "verdicts" not in comparison["tasks"]["target"]
    table = format_table(comparison)
    assert "Guards: did it hurt? δ = 0.02" in table
    assert "arc_easy_guard  acc: regression (CI of the change [-0.08, -0.02])" in table


def test_no_base_means_no_verdict():
    comparison = add_verdicts({"a": None, "b": {}, "tasks": {"g": {"metrics": {"acc": {"b": 0.5}}}}}, ["g"])
    assert comparison["guards"]["not_judged"] == "the base model was not evaluated"
    assert "verdicts" not in comparison["tasks"]["g"]
