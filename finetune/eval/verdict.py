"""Guard tasks: did finetuning hurt? A verdict per guard task and metric from the paired CI of B - A.

    add_verdicts(comparison, guard_tasks=["arc_easy_guard", "ifeval_guard"], delta=0.02)

Each guard metric's 95% paired bootstrap CI of B - A (compare.py), oriented so that
"better" is positive (perplexity: A - B), gives one of three verdicts:

- `regression` when the CI's upper bound is below 0 (even when its lower bound is above -δ:
  a change that is surely negative is reported, its label says "within δ");
- `no regression beyond δ` when, otherwise, the CI's lower bound is above -δ (non-inferiority);
- `inconclusive at n = N` otherwise, N being the documents needed to decide (below).

δ (eval.guard_delta) is on the metric's own 0-1 scale (0.02 = 2 points of accuracy); for a
lower-is-better metric (perplexity, bits per byte) it is relative: B may be at most δ·A worse.
"""

import math
from pathlib import Path

DEFAULT_DELTA = 0.02
SIGNIFICANCE = 0.05  # a target task's change is better / worse at p below this, else no significant change
NO_REGRESSION, REGRESSION, INCONCLUSIVE = "no regression beyond δ", "regression", "inconclusive"


def outcome(diff: float, p: float, higher_is_better: bool = True) -> str:
    """A target task's word for B - A: better / worse at p < SIGNIFICANCE, else no significant change."""
    if p >= SIGNIFICANCE:
        return "no significant change"
    return "better" if (diff > 0) == higher_is_better else "worse"


def n_to_decide(n: int, diff: float, ci: tuple[float, float], delta: float) -> int | None:
    """Documents needed for the CI to clear a threshold, at the observed difference and variance.

    A paired CI's half-width shrinks as 1/sqrt(n): at n documents the lower half-width
    h_lo = diff - ci[0] becomes h_lo * sqrt(n0 / n). Non-inferiority is shown once it is
    below the margin m = diff + δ, that is at

        n = n0 * (h_lo / (diff + δ))**2          (needs diff > -δ)

    and a regression once the upper half-width h_hi = ci[1] - diff is below -diff:

        n = n0 * (h_hi / -diff)**2               (needs diff < 0)

    The smaller of the two that apply, rounded up. For a normal-approximation CI,
    h = z_{0.975} * s / sqrt(n0) with s the SD of the per-document differences, and this is
    the textbook n = (z_{0.975} * s / m)**2. It is the n at which the CI's bound would just
    clear the threshold if the observed difference and SD held (50% power); for 80% power
    multiply by ((1.96 + 0.84) / 1.96)**2 ≈ 2.04. None: no n decides (diff exactly -δ, no spread).
    """
    needed = []
    h_lo, h_hi = max(diff - ci[0], 0.0), max(ci[1] - diff, 0.0)
    if diff + delta > 0:
        needed.append(n * (h_lo / (diff + delta)) ** 2)
    if diff < 0:
        needed.append(n * (h_hi / -diff) ** 2)
    needed = [x for x in needed if math.isfinite(x)]
    return max(n + 1, math.ceil(min(needed) - 1e-9)) if needed else None


def verdict(diff: float, ci: tuple[float, float], n: int, delta: float, *, higher_is_better: bool = True,
            base: float | None = None) -> dict:
    """The verdict of one guard metric; `diff` and `ci` are B - A as compare() reports them."""
    if not higher_is_better:  # orient so that better is positive; δ relative to the base score
        diff, ci = -diff, (-ci[1], -ci[0])
        delta = delta * abs(base) if base is not None and math.isfinite(base) else delta
    out = {"delta": delta, "gain": diff, "gain_ci": [ci[0], ci[1]], "n": n, "n_needed": None}
    if ci[1] < 0:  # worse for sure, even when by less than δ: a user asking "did it hurt?" hears yes
        within = f", within δ = {delta:.3g}" if ci[0] > -delta else ""
        return {**out, "verdict": REGRESSION, "label": f"regression (CI of the change [{ci[0]:+.3g}, {ci[1]:+.3g}]"
                                                        f"{within})"}
    if ci[0] > -delta:
        return {**out, "verdict": NO_REGRESSION, "label": f"no regression beyond δ = {delta:.3g}"}
    need = n_to_decide(n, diff, ci, delta)
    label = f"inconclusive at n = {n}" + (f"; about {need:,} documents would decide" if need else "")
    return {**out, "verdict": INCONCLUSIVE, "n_needed": need, "label": label}


def add_verdicts(comparison: dict, guard_tasks: list[str], delta: float = DEFAULT_DELTA) -> dict:
    """Mark each guard task of a comparison (role: guard) and give each of its metrics a verdict, in place."""
    # a guard given as a task file path is known by its file name, as load_task names it
    names = list(dict.fromkeys(Path(g).stem if g.endswith((".yaml", ".yml")) else g for g in guard_tasks))
    comparison["guards"] = {"delta": delta, "tasks": names}
    if comparison.get("a") is None:  # only the finetuned model was scored: nothing to compare
        comparison["guards"]["not_judged"] = "the base model was not evaluated"
        return comparison
    for name in names:
        task = comparison["tasks"].get(name)
        if task is None:
            continue
        task["role"] = "guard"
        task["verdicts"] = {key: verdict(m["diff"], m["ci"], m["n"], delta, higher_is_better=m["higher_is_better"],
                                         base=m.get("a"))
                            for key, m in task["metrics"].items() if m.get("ci") is not None}
    return comparison


def guard_rows(comparison: dict) -> list[tuple[str, str, str]]:
    """(task, metric, verdict label) for every guard metric, for the printed table and the reports."""
    return [(t, key, v["label"]) for t, res in comparison.get("tasks", {}).items()
            for key, v in (res.get("verdicts") or {}).items()]
