"""Readers: the decoded bytes of a .jsonl / .json / .csv / .tsv / .parquet file -> (location, row).

    for loc, row in read_jsonl(open_chunks(path, "", label), label): ...

A row that cannot be read is yielded as a DataError in place of the row (the caller decides
between stopping and `skip_invalid_rows`); a problem with the whole file raises. JSON is read
strictly: NaN / Infinity literals, numbers that overflow a float, and lone surrogate escapes
("\\ud800", text no tokenizer can encode) are errors naming the row and the field.
"""

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Iterator

from finetune.data.decode import BOM, MAX_ROW_BYTES, lines, mib, text_of
from finetune.data.errors import DataError, describe, where

Rows = Iterator[tuple[str, "dict | DataError"]]

# Only text matching this can hold a NaN literal, an overflowing number or a lone surrogate:
# the full check walks a row only then, so clean rows cost one regex search.
_SUSPECT = re.compile(r"NaN|Infinity|\\u[dD][89abcdefABCDEF]|\d[eE][+]?\d{3}|\d{309}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Literal:
    """What json.loads makes of NaN / Infinity / -Infinity here, so the row check can name the field."""

    def __init__(self, text: str):
        self.text = text


def loads(text: str, loc: str, expected: str = ""):
    """json.loads with every failure as one DataError at `loc` (never RecursionError or a bare ValueError)."""
    tail = f"; expected {expected}" if expected else ""
    try:
        return json.loads(text, parse_constant=_Literal)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise DataError(f"{loc}: JSON nested too deeply to read (hundreds of levels of [ or {{){tail}") from None
    except ValueError as e:  # Python refuses integers of over 4300 digits (sys.get_int_max_str_digits)
        what = "an integer too long to read; write it as text" if "digits" in str(e) else str(e)
        raise DataError(f"{loc}: not valid JSON ({what}){tail}") from None


def value_problem(obj) -> str | None:
    """'field 'x': ...' for the first NaN/Infinity, overflowing number or lone surrogate in a row, else None."""
    stack = [("", obj)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict):
            for k in v:
                if _SURROGATE.search(k):
                    return f"a key holds a lone surrogate ({k!r}), which cannot be encoded as UTF-8"
            stack += reversed([(f"{path}.{k}" if path else k, x) for k, x in v.items()])
        elif isinstance(v, list):
            stack += reversed([(f"{path}[{i}]", x) for i, x in enumerate(v)])
        elif isinstance(v, str) and (m := _SURROGATE.search(v)):
            return (f"field {path!r}: text holds a lone surrogate {m.group()!r} (a \\u escape that is half of a "
                    "pair), which cannot be encoded as UTF-8; fix the program that wrote this file")
        elif isinstance(v, _Literal):
            return f"field {path!r}: {v.text} is not valid JSON; write null, or the value as text"
        elif isinstance(v, float) and not math.isfinite(v):
            return f"field {path!r}: a number too large for a 64-bit float; write it as text"
    return None


def _checked(obj, loc: str, suspect: bool):
    if not isinstance(obj, dict):
        return DataError(f"{loc}: expected a JSON object {{...}}, got {_got(obj)}")
    problem = value_problem(obj) if suspect else None
    return DataError(f"{loc}: {problem}") if problem else obj


def _got(obj) -> str:
    return obj.text if isinstance(obj, _Literal) else describe(obj)


def read_jsonl(chunks: Iterator[bytes], label: str) -> Rows:
    row = 0
    for line_no, raw in lines(chunks):
        if raw is None:
            row += 1
            loc = where(label, row, line_no)
            yield loc, DataError(f"{loc}: line longer than {mib(MAX_ROW_BYTES)} (the limit for one row); "
                                 "expected one JSON object per line")
            continue
        raw = raw.removeprefix(BOM) if line_no == 1 else raw
        if not raw.strip():
            continue
        row += 1
        loc = where(label, row, line_no)
        yield loc, _jsonl_row(raw, loc)
    if row == 0:
        raise DataError(f"{label}: file is empty; expected one JSON object per line")


def _jsonl_row(raw: bytes, loc: str):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(f"{loc}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
    try:
        obj = loads(text, loc, "one JSON object per line")
    except json.JSONDecodeError as e:
        return DataError(f"{loc}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object per line")
    except DataError as e:
        return e
    return _checked(obj, loc, _SUSPECT.search(text) is not None)


def read_json(data: bytes, label: str) -> Rows:
    text = text_of(data, label)
    try:
        obj = loads(text, label)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several objects, one per line: JSON Lines with a .json name
            return read_jsonl(iter([data]), label)
        raise DataError(f"{where(label, line=e.lineno)}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict):  # {"examples": [...]} or {"data": [...]}: the one list inside
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{label}: expected a JSON list of objects (or an object holding exactly one such "
                            f"list), got an object with keys {', '.join(map(str, obj)) or '(none)'}")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{label}: expected a JSON list of objects, got {_got(obj)}")
    if not obj:
        raise DataError(f"{label}: the JSON list is empty; expected one object per example")
    suspect = _SUSPECT.search(text) is not None
    return ((where(label, i), _checked(o, where(label, i), suspect)) for i, o in enumerate(obj, 1))


def read_delimited(data: bytes, label: str, delimiter: str, header: list[str] | None) -> Rows:
    text = text_of(data, label)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))  # the default, 128 KiB, is too small
    # TSV files (e.g. FLAN) use no quoting: a '"' inside a field is just a character.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    kind = "tab-separated " if delimiter == "\t" else ""
    names = _names(header, f"{label}: the header (from the dataset entry)") if header else None
    row = 0
    for line, cells in _cells(reader):
        if isinstance(cells, str):  # csv.Error: the reader cannot go on
            raise DataError(f"{where(label, row + 1, line)}: {cells}")
        if names is None:
            names = _names(cells, f"{label}:{line}: the header row")
            continue
        row += 1
        loc = where(label, row, line)
        if len(cells) != len(names):
            spans = f" (a quoted field runs from line {line} to {reader.line_num}: is a closing '\"' missing?)" \
                if reader.line_num > line and any("\n" in c for c in cells) else ""
            yield loc, DataError(f"{loc}: expected {len(names)} {kind}fields ({', '.join(names)}), got "
                                 f"{len(cells)}{spans}")
            continue
        yield loc, dict(zip(names, cells))
    if row == 0:
        raise DataError(f"{label}: no data rows" + (" after the header row" if not header else ""))


def _cells(reader) -> Iterator[tuple[int, "list[str] | str"]]:
    """(first line, cells) per non-blank record; (line, problem) once, then stop, on a csv.Error."""
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            big = "field larger than field limit" in str(e)
            yield line, (f"a field longer than {mib(MAX_ROW_BYTES)} (the limit for one field)" if big
                         else f"not valid CSV ({e})")
            return
        if cells and cells != [""]:
            yield line, cells


def _names(cells: list[str], at: str) -> list[str]:
    names, seen = [c.strip() for c in cells], {}
    for i, name in enumerate(names, 1):
        if name in seen:
            shown = repr(name) if name else "'' (an empty name)"
            raise DataError(f"{at} has column {shown} twice (columns {seen[name]} and {i}); every column "
                            "needs its own name")
        seen[name] = i
    return names


def read_parquet(path: Path, label: str) -> Rows:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{label}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    if not rows:
        raise DataError(f"{label}: file has no rows")
    return ((where(label, i), o) for i, o in enumerate(rows, 1))
