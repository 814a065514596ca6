"""Write a comparison as results.json, report.md and a self-contained report.html.

    write_report(Path("runs/x/eval"), compare(base_dir, tuned_dir), run_dir=Path("runs/x"))

results.json holds everything (configs, versions, seeds, per-sample file paths); the
Markdown and HTML reports are views of it. Plots are base64 PNGs inside the HTML, so the
file can be mailed or attached as is.
"""

import datetime
import html
import json
import os
from pathlib import Path

from finetune.eval.during import report_section as during_training
from finetune.eval.harness import write_json
from finetune.eval.plots import failure_buckets, loss_curve, read_loss, score_bars
from finetune.eval.scoring import BUCKETS
from finetune.eval.sections import html_table, md_table, sections
from finetune.eval.verdict import SIGNIFICANCE, outcome
from finetune.resources import cache_dir

COLUMNS = ("task", "metric", "A", "B", "B-A", "95% CI (B-A)", "p", "test", "n")


def _labels(comparison: dict) -> tuple[str, str]:
    return (comparison["a"] or {}).get("label") or "base", comparison["b"].get("label") or "finetuned"


def _path_roots() -> list[tuple[str, str]]:
    """(machine-local folder, what reports write instead), the most specific first."""
    roots = [(cache_dir(), "<finetune cache>"), (Path.cwd(), ""), (Path.home(), "~")]
    out = [(str(Path(os.path.abspath(r))), rep) for r, rep in roots]
    return sorted([r for r in out if len(r[0]) > 1], key=lambda r: -len(r[0]))


def portable(obj, roots: list[tuple[str, str]] | None = None):
    """obj with every string that is a path under the cache, the working folder or home made machine-independent:
    '<finetune cache>/models/x', 'runs/x/eval' (relative to where the command ran), '~/data/y'."""
    roots = _path_roots() if roots is None else roots
    if isinstance(obj, dict):
        return {k: portable(v, roots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v, roots) for v in obj)
    if not isinstance(obj, str):
        return obj
    for root, rep in roots:
        if obj == root:
            return rep or "."
        if obj.startswith(root + os.sep):
            return (rep + "/" if rep else "") + obj[len(root) + 1:]
    return obj


def _describe(side: dict | None, reason: str | None = None) -> str:
    """A side as its user knows it (the recipe's model name, the run and its method), then where its records are."""
    if side is None:
        return f"not evaluated ({reason or 'no base model'})"
    name = side.get("name") or (side.get("model") or {}).get("name_or_path") or side["dir"]
    return f"{name}; records: {side['dir']}"


def _num(x: float) -> str:
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def table_rows(comparison: dict) -> list[tuple[str, ...]]:
    rows = []
    for task, res in comparison["tasks"].items():
        for key, m in res["metrics"].items():
            better = "" if m["diff"] == 0 else f"({outcome(m['diff'], m['p_value'], m['higher_is_better'])})"
            rows.append((task, key, _num(m["a"]), _num(m["b"]), f"{m['diff']:+.4g} {better}".strip(),
                         f"[{m['ci'][0]:+.4g}, {m['ci'][1]:+.4g}]", f"{m['p_value']:.3g}", m["test"], str(m["n"])))
    return rows


def format_table(comparison: dict) -> str:
    """Plain-text table for the terminal: one line per task and metric."""
    if comparison.get("a") is None:  # one model only (no base evaluated)
        header = ("task", "metric", comparison["b"].get("label") or "score")
        rows = [header] + [(t, k, _num(m["b"])) for t, res in comparison["tasks"].items()
                           for k, m in res["metrics"].items()]
    else:
        a, b = _labels(comparison)
        rows = [tuple({"A": a, "B": b}.get(c, c) for c in COLUMNS)] + table_rows(comparison)
    header = rows[0]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += sections(comparison, "text")
    lines += [f"warning: {w}" for w in comparison.get("warnings", [])]
    if comparison.get("a") is None and comparison.get("base_not_evaluated"):
        lines.append(f"base: {_describe(None, comparison['base_not_evaluated'])}")
    return "\n".join(lines)


def _bucket_rows(comparison: dict, labels) -> list[tuple]:
    rows = []
    for task, res in comparison["tasks"].items():
        for side, label in zip(("a", "b"), labels):
            counts = res["failures"].get(side) or {}
            if counts:
                primary = next(iter(counts))
                rows.append((task, primary, label) + tuple(str(counts[primary].get(b, 0)) for b in BUCKETS))
    return rows


def _flip_examples(flips: dict) -> list[tuple[str, dict]]:
    return [(kind, ex) for kind in ("fail_to_pass", "pass_to_fail") for ex in flips["examples"][kind]]


def _all_flips(comparison: dict):
    """(task, metric key, flips) for every pass/fail metric."""
    for task, res in comparison["tasks"].items():
        for key, flips in (res.get("flips") or {}).items():
            yield task, key, flips


def render_markdown(comparison: dict, meta: dict | None, loss_points: list) -> str:
    if comparison["a"] is None:
        return _single_markdown(comparison, meta)
    a, b = _labels(comparison)
    out = [f"# {b} vs {a}", "", f"- A = **{a}**: {_describe(comparison['a'])}",
           f"- B = **{b}**: {_describe(comparison['b'])}",
           f"- identical prompts and decoding for both; differences are B - A with 95% paired bootstrap CIs "
           f"({comparison['n_boot']} resamples, seed {comparison['seed']}); p from the exact McNemar test for "
           f"pass/fail metrics, a paired bootstrap otherwise; B-A says better or worse only at p < {SIGNIFICANCE}.", ""]
    out += [f"> warning: {w}" for w in comparison.get("warnings", [])] + [""] * bool(comparison.get("warnings"))
    out += ["## Scores", ""] + md_table(tuple(c if c not in ("A", "B") else {"A": a, "B": b}[c] for c in COLUMNS),
                                         table_rows(comparison)) + [""]
    out += sections(comparison, "md")
    buckets = _bucket_rows(comparison, (a, b))
    if buckets:
        out += ["## Chain-of-thought failure buckets", "",
                "truncated_think: ran out of max_new_tokens inside the reasoning (an open <think> block, before "
                "</think>); truncated: ran out of max_new_tokens without a stop sequence or EOS (after the reasoning, "
                "or with none); no_answer: the filter found "
                "no answer; wrong: an answer, not the target.", ""]
        out += md_table(("task", "filter", "model") + BUCKETS, buckets) + [""]
    out += ["## Flips", ""]
    for task, key, flips in _all_flips(comparison):
        out.append(f"### {task} ({key}): fail→pass {flips['fail_to_pass']}, pass→fail {flips['pass_to_fail']}")
        for kind, ex in _flip_examples(flips):
            out += ["", f"**{kind.replace('_', ' ')}**, doc {ex['doc_id']}, target `{ex['target']}`", "",
                    f"- {a} (extracted `{ex['a_extracted']}`):", "", "```", str(ex["a_output"]).strip(), "```",
                    f"- {b} (extracted `{ex['b_extracted']}`):", "", "```", str(ex["b_output"]).strip(), "```"]
        out.append("")
    if loss_points:
        out += ["## Training loss", "", f"{len(loss_points)} points: first {loss_points[0][1]:.4g} at step "
                f"{loss_points[0][0]}, last {loss_points[-1][1]:.4g} at step {loss_points[-1][0]}.", ""]
    out += ["## Reproducibility", "", f"- seeds: A {comparison['a'].get('seed')}, B {comparison['b'].get('seed')}",
            f"- versions: {comparison['a'].get('versions')}", "- per-sample records:"]
    for side in ("a", "b"):
        out += [f"  - {t}: `{p}`" for t, p in comparison[side]["records"].items()]
    if meta:
        out += ["", "Run metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items())]
    return "\n".join(out) + "\n"


def render_html(comparison: dict, meta: dict | None, loss_points: list) -> str:
    a, b = _labels(comparison)
    if comparison["a"] is None:
        return _page(b, _single_html(comparison, meta))
    parts = [f"<h1>{html.escape(b)} vs {html.escape(a)}</h1>",
             f"<p>A = <b>{html.escape(a)}</b>: {html.escape(_describe(comparison['a']))}<br>"
             f"B = <b>{html.escape(b)}</b>: {html.escape(_describe(comparison['b']))}<br>"
             "Differences are B − A with 95% paired bootstrap CIs; p: exact McNemar (pass/fail) or paired "
             f"bootstrap; B − A says better or worse only at p &lt; {SIGNIFICANCE}.</p>"]
    parts += [f"<p class=warn>warning: {html.escape(w)}</p>" for w in comparison.get("warnings", [])]
    parts.append("<h2>Scores</h2>" + html_table([{"A": a, "B": b}.get(c, c) for c in COLUMNS],
                                                  table_rows(comparison)))
    parts += sections(comparison, "html")
    for title, png in (("Scores with 95% CIs", score_bars(comparison, (a, b))),
                       ("Chain-of-thought failure buckets", failure_buckets(comparison, (a, b))),
                       ("Training loss", loss_curve(loss_points))):
        if png:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{png}'>")
    buckets = _bucket_rows(comparison, (a, b))
    if buckets:
        parts.append(html_table(("task", "filter", "model") + BUCKETS, buckets))
    parts.append("<h2>Flips</h2>")
    for task, key, flips in _all_flips(comparison):
        parts.append(f"<h3>{html.escape(task)} ({html.escape(key)}): fail→pass {flips['fail_to_pass']}, "
                     f"pass→fail {flips['pass_to_fail']}</h3>")
        for kind, ex in _flip_examples(flips):
            parts.append(
                f"<details><summary>{kind.replace('_', ' ')}: doc {ex['doc_id']}, target "
                f"<code>{html.escape(str(ex['target']))}</code></summary><pre class=prompt>"
                f"{html.escape(str(ex['prompt']))}</pre><div class=pair>"
                f"<div><b>{html.escape(a)}</b> → <code>{html.escape(str(ex['a_extracted']))}</code>"
                f"<pre>{html.escape(str(ex['a_output']))}</pre></div>"
                f"<div><b>{html.escape(b)}</b> → <code>{html.escape(str(ex['b_extracted']))}</code>"
                f"<pre>{html.escape(str(ex['b_output']))}</pre></div></div></details>")
    if meta:
        parts.append("<h2>Run</h2>" + html_table(("key", "value"), [(k, v) for k, v in meta.items()]))
    return _page(f"{b} vs {a}", parts)


def _page(title: str, parts: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;font-size:12px}"
             ".pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}.warn{color:#a33}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _single_rows(comparison: dict) -> list[tuple[str, ...]]:
    return [(t, k, _num(m["b"])) for t, res in comparison["tasks"].items() for k, m in res["metrics"].items()]


def _single_markdown(comparison: dict, meta: dict | None) -> str:
    """The report of a run whose base was not evaluated: the finetuned model's scores and failure buckets."""
    _, b = _labels(comparison)
    out = [f"# {b}", "", f"- A = base: {_describe(None, comparison.get('base_not_evaluated'))}; no comparison",
           f"- B = **{b}**: {_describe(comparison['b'])}", "", "## Scores", ""]
    out += md_table(("task", "metric", b), _single_rows(comparison)) + [""]
    buckets = _bucket_rows(comparison, ("base", b))
    if buckets:
        out += ["## Chain-of-thought failure buckets", ""] + md_table(("task", "filter", "model") + BUCKETS,
                                                                          buckets) + [""]
    if meta:
        out += ["Run metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items())]
    return "\n".join(out) + "\n"


def _single_html(comparison: dict, meta: dict | None) -> list[str]:
    _, b = _labels(comparison)
    parts = [f"<h1>{html.escape(b)}</h1>",
             f"<p>A = base: {html.escape(_describe(None, comparison.get('base_not_evaluated')))}; no comparison<br>"
             f"B = <b>{html.escape(b)}</b>: {html.escape(_describe(comparison['b']))}</p>",
             "<h2>Scores</h2>" + html_table(("task", "metric", b), _single_rows(comparison))]
    buckets = _bucket_rows(comparison, ("base", b))
    if buckets:
        parts.append("<h2>Chain-of-thought failure buckets</h2>" + html_table(("task", "filter", "model") + BUCKETS,
                                                                               buckets))
    if meta:
        parts.append("<h2>Run</h2>" + html_table(("key", "value"), [(k, v) for k, v in meta.items()]))
    return parts


EVAL_COLUMNS = ("task", "evaluated", "template", "limit", "seed", "base")


def _previous_evaluations(path: Path) -> dict:
    try:
        return (json.loads(path.read_text(encoding="utf-8")).get("evaluations") or {}) if path.is_file() else {}
    except (OSError, ValueError, AttributeError):  # an unreadable earlier report: start the history again
        return {}


def evaluation_rows(comparison: dict, evaluations: dict) -> list[tuple[str, ...]]:
    """One row per task in the report: when and how it was evaluated (earlier tasks keep their own row)."""
    return [(t, *(str(evaluations.get(t, {}).get(k, "")) for k in ("at", "template", "limit", "seed", "base")))
            for t in comparison["tasks"]]


def write_report(out_dir: Path, comparison: dict, *, run_dir: Path | None = None, meta: dict | None = None,
                 evaluations: dict | None = None) -> dict:
    """Write results.json, report.md and report.html into out_dir; returns their paths.

    `evaluations` ({task: {at, template, limit, seed, base, ...}}) is merged into the history
    already in out_dir/results.json, so a task evaluated earlier keeps its when/how."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_points = read_loss(run_dir)
    roots = _path_roots()
    comparison, meta = portable(comparison, roots), portable(meta or {}, roots)
    paths = {"results": out_dir / "results.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    history = {**_previous_evaluations(paths["results"]), **portable(evaluations or {}, roots)}
    history = {t: history[t] for t in comparison["tasks"] if t in history}
    write_json(paths["results"], {"created": datetime.datetime.now().isoformat(timespec="seconds"),
                                  "run_dir": portable(str(run_dir), roots) if run_dir else None, "meta": meta,
                                  "evaluations": history, "comparison": comparison, "loss_points": len(loss_points)})
    rows = evaluation_rows(comparison, history) if history else []
    md = render_markdown(comparison, meta, loss_points)
    if rows:
        md += "\n## Evaluations\n\n" + "\n".join(md_table(EVAL_COLUMNS, rows)) + "\n"
    md += during_training(run_dir, "md")  # eval.every_steps: the curve and the step kept
    paths["markdown"].write_text(md, encoding="utf-8")
    page = render_html(comparison, meta, loss_points)
    if rows:
        page = page.replace("</body>", "<h2>Evaluations</h2>" + html_table(EVAL_COLUMNS, rows) + "</body>")
    page = page.replace("</body>", during_training(run_dir, "html") + "</body>")
    paths["html"].write_text(page, encoding="utf-8")
    return paths
