"""References generated from the schemas: every recipe key and every task-file key once.

    python -m finetune.reference      # rewrites the tables in README.md and eval/README.md
"""

import dataclasses
import typing

from finetune.recipe import DatasetSpec, Recipe
from finetune.schema import _describe


def _rows(cls, prefix=""):
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        inner = f.type if dataclasses.is_dataclass(f.type) else None
        if inner:
            yield from _rows(inner, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if typing.get_origin(f.type) is list and DatasetSpec in typing.get_args(f.type):
            yield f"{prefix}{f.name}", "a list of dataset entries (keys below)", "[]", f.metadata.get("help", "")
            yield from _rows(DatasetSpec, f"{prefix}{f.name}[].")
            continue
        yield f"{prefix}{f.name}", _describe(f.type) + _bounds(f.metadata), repr(default), f.metadata.get("help", "")


def _bounds(meta: dict) -> str:
    low = f"> {meta['gt']}" if meta.get("gt") is not None else (f">= {meta['min']:,}" if "min" in meta else "")
    high = f"<= {meta['max']:,}" if "max" in meta else ""
    return f", {' and '.join(b for b in (low, high) if b)}" if low or high else ""


def schema_reference() -> str:
    """Markdown table of every recipe key."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, help in _rows(Recipe):
        lines.append(f"| `{key}` | {tp} | `{default}` | {help} |")
    return "\n".join(lines)


def task_reference() -> str:
    """Markdown table of every eval task-file key (finetune/eval/taskfile.py SCHEMA, BOUNDS, HELP)."""
    from finetune.eval.taskfile import BOUNDS, HELP, SCHEMA, _type_name

    lines = ["| task key | type | meaning |", "|---|---|---|"]
    for key, tp in _task_keys(SCHEMA):
        kind = "a mapping" if isinstance(tp, dict) else "a number" if tp == (int, float) else _type_name(tp)
        if key in BOUNDS:
            *gt, lo, hi = BOUNDS[key]
            kind += f", {'>' if gt else '>='} {lo} and <= {hi:,}"
        lines.append(f"| `{key}` | {kind} | {HELP[key]} |")
    return "\n".join(lines)


def _task_keys(schema: dict, prefix: str = ""):
    for key, tp in schema.items():
        yield prefix + key, tp
        if isinstance(tp, dict):
            yield from _task_keys(tp, f"{prefix}{key}.")


TABLES = {  # file -> (the header line that starts its generated table, the function that writes it)
    "README.md": ("| key | type | default | meaning |", schema_reference),
    "eval/README.md": ("| task key | type | meaning |", task_reference),
}


def update_readmes(root=None) -> list[str]:
    """Rewrite each generated table in place; the files that changed."""
    import re
    from pathlib import Path

    from finetune.resources import project_root

    changed = []
    for name, (header, make) in TABLES.items():
        path = Path(root or project_root()) / name
        text = path.read_text(encoding="utf-8")
        new = re.sub(re.escape(header) + r"\n(\|.*\|\n)+", lambda m: make() + "\n", text, count=1)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(name)
    return changed


if __name__ == "__main__":
    changed = update_readmes()
    print(f"updated {', '.join(changed)}" if changed else "tables already up to date")
