"""Report figures as base64 PNG strings (matplotlib's object API with the Agg canvas, no pyplot state)."""

import base64
import io
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from finetune.eval.scoring import BUCKETS

COLORS = {"a": "#8c8c8c", "b": "#2a6fdb"}
TASK_COLOR = "#3a9d5d"  # the task score during training, beside the loss
BUCKET_COLORS = {"correct": "#3a9d5d", "truncated_think": "#f0d060", "truncated": "#e3a21a", "no_answer": "#c44e52",
                 "wrong": "#7d5ba6"}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, max_cols: int, panel: tuple[float, float]) -> tuple[Figure, int, int]:
    """A figure for n panels, at most max_cols a row, each panel (width, height) inches."""
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    return Figure(figsize=(panel[0] * cols, panel[1] * rows)), rows, cols


def score_bars(comparison: dict, labels: tuple[str, str]) -> str | None:
    """One small panel per (task, metric): A and B with their 95% bootstrap CIs."""
    panels = [(t, k, m) for t, res in comparison["tasks"].items() for k, m in res["metrics"].items()]
    if not panels:
        return None
    fig, rows, cols = _grid(len(panels), 4, (3.2, 2.6))
    for i, (task, key, m) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        vals = [m["a"], m["b"]]
        errs = [[v - ci[0] for v, ci in zip(vals, (m["ci_a"], m["ci_b"]))],
                [ci[1] - v for v, ci in zip(vals, (m["ci_a"], m["ci_b"]))]]
        ax.bar([0, 1], vals, yerr=errs, capsize=4, color=[COLORS["a"], COLORS["b"]])
        ax.set_xticks([0, 1], labels)
        if key.split(":")[0] in ("exact_match", "acc", "acc_norm"):
            ax.set_ylim(0, 1.05)
        arrow = "↑" if m["higher_is_better"] else "↓"
        ax.set_title(f"{task}\n{key} {arrow}  p={m['p_value']:.3g}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def failure_buckets(comparison: dict, labels: tuple[str, str]) -> str | None:
    """Stacked bars of correct / truncated_think / truncated / no_answer / wrong per generation task (primary filter)."""
    rows = []
    for task, res in comparison["tasks"].items():
        fa, fb = res["failures"].get("a") or {}, res["failures"].get("b") or {}
        if fa and fb:
            primary = next(iter(fa))
            rows += [(f"{task}\n{labels[0]}", fa[primary]), (f"{task}\n{labels[1]}", fb.get(primary, {}))]
    if not rows:
        return None
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1))
    ax = fig.add_subplot(1, 1, 1)
    for y, (name, counts) in enumerate(rows):
        total = sum(counts.values()) or 1
        left = 0.0
        for b in BUCKETS:
            share = counts.get(b, 0) / total
            ax.barh(y, share, left=left, color=BUCKET_COLORS[b], label=b if y == 0 else None)
            left += share
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of documents")
    ax.legend(ncol=len(BUCKETS), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return _png(fig)


def read_loss(run_dir: Path | None) -> list[tuple[float, float]]:
    """(step, loss) points of a run's train log (RunDir's one reader); [] without a run."""
    from finetune.rundir import RunDir

    return RunDir(run_dir).loss_points() if run_dir else []


def loss_curve(points: list[tuple[float, float]]) -> str | None:
    if not points:
        return None
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p[0] for p in points], [p[1] for p in points], color=COLORS["b"], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def draw_task_axis(ax, points: list[tuple[int, float]], metric: str) -> None:
    """eval.every_steps' curve on a second y axis of the loss plot `ax` (train.py's plot_loss and the report's)."""
    if not points:
        return
    twin = ax.twinx()
    twin.plot([p[0] for p in points], [p[1] for p in points], "s-", color=TASK_COLOR, lw=1.2, ms=4)
    twin.set_ylabel(f"task {metric}", color=TASK_COLOR)
    twin.tick_params(axis="y", colors=TASK_COLOR)
    if all(0 <= v <= 1 for _, v in points):
        twin.set_ylim(-0.02, 1.02)


def loss_and_task_curve(loss_points: list, task_points: list, metric: str) -> str | None:
    """Training loss and the task score during training (eval.every_steps) on one step axis."""
    if not loss_points and not task_points:
        return None
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    if loss_points:
        ax.plot([p[0] for p in loss_points], [p[1] for p in loss_points], color=COLORS["b"], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color=COLORS["b"])
    ax.grid(alpha=0.3)
    draw_task_axis(ax, task_points, metric)
    fig.tight_layout()
    return _png(fig)


def board_bars(board: dict) -> str | None:
    """One panel per (task, metric): the base and every finetune with 95% CIs (a board across runs)."""
    panels = [(t, k, tb) for t, tb in board["tasks"].items() for k in tb["metrics"]]
    if not panels:
        return None
    fig, rows, cols = _grid(len(panels), 3, (4.2, 3.0))
    for i, (task, key, tb) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        bars = [("base", (tb["base"] or {}).get(key, {}).get("score"), (tb["base"] or {}).get(key, {}).get("ci"))]
        bars += [(Path(e["run"]).name, e["metrics"][key].get("b"), e["metrics"][key].get("ci_b"))
                 for e in tb["entries"] if key in e["metrics"]]
        bars = [b for b in bars if b[1] is not None]
        vals = [b[1] for b in bars]
        errs = [[v - (ci or (v, v))[0] for _, v, ci in bars], [(ci or (v, v))[1] - v for _, v, ci in bars]]
        colors = [COLORS["a"] if name == "base" else COLORS["b"] for name, *_ in bars]
        ax.bar(range(len(bars)), vals, yerr=errs, capsize=4, color=colors)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, ha="right")
        if key.split(":")[0] in ("exact_match", "acc", "acc_norm"):
            ax.set_ylim(0, 1.05)
        ax.set_title(f"{task}\n{key}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)
