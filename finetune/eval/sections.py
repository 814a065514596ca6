"""Report sections beside the scores, and the table writers the report shares with them.

    sections(comparison, "md")     # guard verdicts (verdict.py), clean subset (clean.py); "text" | "md" | "html"
"""

import html

from finetune.eval.clean import CLEAN_HEAD, CLEAN_HEADER, clean_rows
from finetune.eval.verdict import guard_rows


def sections(comparison: dict, kind: str) -> list[str]:
    """The guard verdicts (verdict.py) and the clean subset (clean.py) as text lines, Markdown lines or HTML parts."""
    out = []
    rows = guard_rows(comparison)
    if rows:
        head = (f"Guards: did it hurt? δ = {comparison['guards']['delta']:g}; 'no regression beyond δ' when the 95% "
                "CI of the change stays above -δ, 'regression' when it is all below 0")
        out += _section("Guards", head, ("guard task", "metric", "verdict"), rows, kind,
                        text_row=lambda r: f"  {r[0]}  {r[1]}: {r[2]}")
    rows = clean_rows(comparison)
    if rows:
        out += _section("Clean subset", CLEAN_HEAD, CLEAN_HEADER, rows, kind)
    return out


def _section(title: str, head: str, header: tuple, rows: list, kind: str, text_row=None) -> list[str]:
    if kind == "text":
        return ["", head] + [(text_row or (lambda r: "  " + "  ".join(map(str, r))))(r) for r in rows]
    if kind == "md":
        return [f"## {title}", "", head + ".", ""] + md_table(header, rows) + [""]
    return [f"<h2>{html.escape(title)}</h2><p>{html.escape(head)}.</p>" + html_table(header, rows)]


def md_table(header, rows) -> list[str]:
    esc = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in [header] + list(rows)]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                           for r in esc[1:]]


def html_table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"
