"""The board as text (terminal), board.md, board.html (with a plot) and board.json.

    write_board(Path("runs/board"), build_board([load_run("runs/a"), load_run("runs/b")]))
"""

import datetime
import html
from pathlib import Path

from finetune.eval.harness import write_json
from finetune.eval.plots import board_bars
from finetune.eval.report import _num, _page, portable
from finetune.eval.sections import html_table, md_table

COLUMNS = ("model", "metric", "score", "diff vs base", "95% CI (diff)", "p", "p (Holm)", "test", "n", "guard")


def _fmt(x, spec: str = "+.4g") -> str:
    return "" if x is None else format(x, spec)


def task_rows(tb: dict) -> list[tuple[str, ...]]:
    """Per task: the base, then every finetune with its paired difference against the base."""
    rows = [("base", k, _num(m["score"]), "", "", "", "", "", "", "") for k, m in (tb["base"] or {}).items()]
    for e in tb["entries"]:
        for k in tb["metrics"]:
            m = e["metrics"].get(k)
            if m is None:
                continue
            ci = f"[{m['ci'][0]:+.4g}, {m['ci'][1]:+.4g}]" if m.get("ci") else ""
            rows.append((e["run"], k, _num(m["b"]), _fmt(m.get("diff")), ci, _fmt(m.get("p_value"), ".3g"),
                         _fmt(m.get("p_holm"), ".3g"), m.get("test", "no base records"), str(e.get("n") or ""),
                         e.get("verdict") or ""))
    rows += [(run, "(not evaluated: `finetune compare ... --fill`)", *[""] * 8) for run in tb["missing"]]
    return rows


def best_lines(tb: dict) -> list[str]:
    out = []
    for key, m in tb["best_two"].items():
        if m:
            out.append(f"best two on {key}: {m['best']} − {m['second']} = {m['diff']:+.4g} "
                       f"[{m['ci'][0]:+.4g}, {m['ci'][1]:+.4g}], p = {m['p_value']:.3g} ({m['test']}, n = {m['n']})")
    return out


def diff_rows(board: dict) -> list[tuple[str, ...]]:
    return [(k, *(str(v) for v in vals)) for k, vals in board["recipe_differences"]]


def _table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_board(board: dict) -> str:
    """Plain-text board for the terminal."""
    out = []
    for task, tb in board["tasks"].items():
        out += [f"== {task} (base records: {tb['base_from'] or 'none'})", _table(COLUMNS, task_rows(tb))]
        out += best_lines(tb) + [w for e in tb["entries"] for w in e["warnings"]] + [""]
    header = ("recipe key", *(r["run"] for r in board["runs"]))
    out.append("recipe keys that differ:\n" + _table(header, diff_rows(board)) if board["recipe_differences"]
               else "recipe keys that differ: none")
    out.append(f"p (Holm): {board['correction']}")
    return "\n".join(out)


def _intro(board: dict) -> str:
    return (f"Runs: {', '.join(r['run'] for r in board['runs'])}; base model "
            f"{board['runs'][0]['base_model']}. Each finetune is paired document by document with the base "
            f"records of its task; differences are finetune − base with 95% paired bootstrap CIs "
            f"({board['n_boot']} resamples, seed {board['seed']}); p: exact McNemar for pass/fail metrics, "
            f"paired bootstrap otherwise. p (Holm): {board['correction']}.")


def render_markdown(board: dict) -> str:
    out = ["# Board: finetunes of one base", "", _intro(board), ""]
    for task, tb in board["tasks"].items():
        out += [f"## {task}", "", f"base records: `{tb['base_from'] or 'none'}`", ""]
        out += md_table(COLUMNS, task_rows(tb)) + [""] + [f"- {line}" for line in best_lines(tb)]
        out += [f"> warning: {w}" for e in tb["entries"] for w in e["warnings"]] + [""]
    out += ["## Recipe keys that differ", ""]
    out += md_table(("recipe key", *(r["run"] for r in board["runs"])), diff_rows(board)) \
        if board["recipe_differences"] else ["none"]
    return "\n".join(out) + "\n"


def render_html(board: dict) -> str:
    parts = ["<h1>Board: finetunes of one base</h1>", f"<p>{html.escape(_intro(board))}</p>"]
    png = board_bars(board)
    if png:
        parts.append(f"<img alt='scores with 95% CIs' src='data:image/png;base64,{png}'>")
    for task, tb in board["tasks"].items():
        parts.append(f"<h2>{html.escape(task)}</h2><p>base records: {html.escape(str(tb['base_from']))}</p>")
        parts.append(html_table(COLUMNS, task_rows(tb)))
        parts += [f"<p>{html.escape(line)}</p>" for line in best_lines(tb)]
        parts += [f"<p class=warn>warning: {html.escape(w)}</p>" for e in tb["entries"] for w in e["warnings"]]
    parts.append("<h2>Recipe keys that differ</h2>")
    parts.append(html_table(("recipe key", *(r["run"] for r in board["runs"])), diff_rows(board))
                 if board["recipe_differences"] else "<p>none</p>")
    return _page("board", parts)


def write_board(out_dir: Path, board: dict) -> dict:
    """board.json (everything), board.md and board.html into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    board = portable(board)
    paths = {"json": out_dir / "board.json", "markdown": out_dir / "board.md", "html": out_dir / "board.html"}
    write_json(paths["json"], {"created": datetime.datetime.now().isoformat(timespec="seconds"), **board})
    paths["markdown"].write_text(render_markdown(board), encoding="utf-8")
    paths["html"].write_text(render_html(board), encoding="utf-8")
    return paths
