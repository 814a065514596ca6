"""The STaR summary: per round, the yield and each eval metric paired against the base; a table and a plot.

    write_star_report(run, recipe, state)   # RUN/results.json, report.md, report.html, plots/star.png

Every number comes from files the run wrote: star.json (each round's eval metrics, from the
paired comparison of finetune/eval/compare.py, and wall times) and round_<r>/yield.json.
"""

import base64
import datetime
import html
from pathlib import Path

from finetune.eval.sections import html_table, md_table
from finetune.rundir import read_json, write_json
from finetune.star import layout

HEADER = ("round", "task", "metric", "score", "base", "B-A", "95% CI (B-A)", "p", "n", "sampled", "kept",
          "yield (kept/sampled)", "questions solved")


def _fmt(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def round_rows(state: dict) -> list[dict]:
    """One dict per finished round: round, metrics ({task: {metric: a, b, diff, ci, p_value, n}}), yield totals,
    wall seconds per stage."""
    out = []
    for r, stages in sorted(state.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
        if "eval" not in stages:
            continue
        out.append({"round": int(r), "metrics": stages["eval"]["metrics"], "yield": stages["eval"]["yield_"],
                    "wall_s": {k: v["s"] for k, v in stages.items()}})
    return out


def table(rows: list[dict]) -> list[tuple]:
    out = []
    for row in rows:
        y = row["yield"]
        for task, metrics in row["metrics"].items():
            for key, m in metrics.items():
                ci = m.get("ci") or [None, None]
                out.append((row["round"], task, key, _fmt(m["b"]), _fmt(m["a"]), _fmt(m["diff"]),
                            f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", _fmt(m["p_value"], 3), m["n"], y["sampled"], y["kept"],
                            _fmt(y["yield"]), f"{y['solved_questions']}/{y['questions']}"))
    return out


def plot(rows: list[dict], out: Path) -> Path | None:
    """Target accuracy (every metric of the first task; round 0 = base) and yield per round."""
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    acc, yld = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    task = next(iter(rows[0]["metrics"]))
    for key in rows[0]["metrics"][task]:
        xs = [0] + [r["round"] for r in rows]
        ys = [rows[0]["metrics"][task][key]["a"]] + [r["metrics"][task][key]["b"] for r in rows]
        acc.plot(xs, ys, "o-", label=key)
    acc.set(xlabel="round (0 = base)", ylabel=task, title="held-out accuracy per round")
    acc.legend(fontsize=8)
    rounds = [r["round"] for r in rows]
    yld.bar([x - 0.2 for x in rounds], [r["yield"]["yield"] for r in rows], 0.4, label="kept / sampled")
    yld.bar([x + 0.2 for x in rounds], [r["yield"]["question_yield"] for r in rows], 0.4, label="questions solved")
    yld.set(xlabel="round", ylabel="fraction", title="yield per round", xticks=rounds)
    yld.legend(fontsize=8)
    for ax in (acc, yld):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_star_report(run: Path, recipe, state: dict) -> dict:
    """Write the summary files; returns results.json's content."""
    run = Path(run)
    rows = round_rows(state)
    png = plot(rows, run / layout.PLOT)
    s = recipe.star
    settings = (f"k {s.k}, temperature {s.temperature}, top_p {s.top_p}, rationalize {s.rationalize}, "
                f"restart {s.restart}, max_per_question {s.max_per_question}, sample_limit {s.sample_limit}")
    summary = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "base_model": recipe.model.name,
               "settings": settings, "base_eval_s": (state.get("base_eval") or {}).get("s"), "rounds": rows,
               "per_round_reports": [str(layout.round_dir(run, r["round"]) / layout.EVAL / "report.md")
                                     for r in rows]}
    write_json(run / layout.RESULTS, summary)
    head = (f"# STaR: {recipe.model.name}, {len(rows)} round(s)\n\n{settings}. Each round is paired against the "
            "base on the same prompts (B-A, McNemar p); yield = kept / sampled rationales.\n\n")
    md = head + "\n".join(md_table(HEADER, table(rows))) + "\n"
    md += "".join(f"\n- round {r['round']}: wall s {r['wall_s']}, report {p}" for r, p in
                  zip(rows, summary["per_round_reports"])) + "\n"
    if png:
        md += f"\n![accuracy and yield per round]({layout.PLOT})\n"
    (run / layout.REPORT_MD).write_text(md, encoding="utf-8")
    img = f'<img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">' if png else ""
    page = (f"<!doctype html><meta charset='utf-8'><title>STaR report</title><h1>STaR: "
            f"{html.escape(recipe.model.name)}</h1><p>{html.escape(settings)}</p>{html_table(HEADER, table(rows))}"
            f"{img}")
    (run / layout.REPORT_HTML).write_text(page, encoding="utf-8")
    return summary


def read_summary(run: Path) -> dict | None:
    return read_json(Path(run) / layout.RESULTS)
