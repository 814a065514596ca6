"""DataError: one message that says where a data problem is and what was expected.

    data/train.jsonl:7: row 7: field 'output' (column 'response'): expected text, got null

Every reader and format check raises this (or, with `skip_invalid_rows`, counts it), so a
bad file stops with the file, the row, the field, and what would have been accepted.
"""

from finetune.errors import UserError


class DataError(UserError):
    """A problem in a dataset file, definition or the data it yields; str() is the user-facing text."""


def where(file: str, row: int | None = None, line: int | None = None) -> str:
    """'data/x.jsonl:7: row 7' (line known) or 'data/x.parquet: row 7'."""
    head = f"{file}:{line}" if line is not None else str(file)
    return head if row is None else f"{head}: row {row}"


def type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "text", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)


def short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value) -> str:
    """'null', 'boolean true', 'integer 5', "list ['a']": what a field held, for 'expected X, got Y' messages."""
    if value is None or isinstance(value, bool):  # as the file spells them: null, true, false
        return "null" if value is None else f"boolean {str(value).lower()}"
    return f"{type_name(value)} {short(value)}"
