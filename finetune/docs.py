"""Recipe reference generated from the schema: every key once, with its help text."""

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


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the recipe reference table in README.md; True if it changed."""
    import re
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8")
    new = re.sub(r"\| key \| type \| default \| meaning \|\n(\|.*\|\n)+", lambda m: schema_reference() + "\n", text,
                 count=1)
    Path(path).write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("README.md updated" if update_readme() else "README.md already up to date")
