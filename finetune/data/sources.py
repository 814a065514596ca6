"""Sources: where rows come from. Each reader yields (location, row) pairs.

    for loc, row in read_source("data/train.jsonl", spec, seed=0): ...

Accepted: local .jsonl / .json / .csv / .tsv / .parquet files, http(s) URLs of such files
(downloaded once into the `datasets` cache), hub ids (`datasets.load_dataset(id, config,
split=...)`), and `builtin:<generator>`. A row that cannot be read (malformed JSON line,
invalid UTF-8, wrong number of cells) is yielded as a DataError in place of the row, so the
caller decides between stopping and `skip_invalid_rows`. Problems with the whole file
(missing, empty, not UTF-8 where lines cannot be separated) raise at once.
"""

import csv
import io
import json
from pathlib import Path
from typing import Iterator

from finetune.data.errors import DataError, describe, type_name, where
from finetune.data.synthetic import GENERATORS

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
DEFAULT_GENERATED_ROWS = 1000

Rows = Iterator[tuple[str, "dict | DataError"]]


def source_kind(source: str) -> str:
    """'builtin', 'url', 'file' or 'hub' for a source string."""
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith(("http://", "https://")):
        return "url"
    if Path(source).suffix in SUFFIXES or Path(source).exists() or source.startswith((".", "/", "~")):
        return "file"
    return "hub"


def read_source(source: str, spec, seed: int = 0) -> Rows:
    """Rows of `source` for a DatasetSpec (uses its config, split, limit and header)."""
    kind = source_kind(source)
    if kind == "builtin":
        return _read_builtin(source, spec, seed)
    if kind == "hub":
        return _read_hub(source, spec)
    if kind == "url":  # the cached download has no suffix: take it from the URL
        suffix = Path(source.split("?")[0]).suffix
        return read_file(_download(source), header=spec.header, label=source, suffix=suffix)
    return read_file(Path(source).expanduser(), header=spec.header, label=source)


def read_file(path: Path, header: list[str] | None = None, label: str | None = None,
              suffix: str | None = None) -> Rows:
    label = label or str(path)
    suffix = (suffix or path.suffix).lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{label}: cannot tell the file type from its suffix {suffix or '(none)'!r}; "
                        f"accepted: {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{label}: file not found (looked at {path.resolve()})")
    if suffix == ".parquet":
        return _read_parquet(path, label)
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{label}: file is empty; expected {_EXPECTED[suffix]}")
    if suffix == ".jsonl":
        return _read_jsonl(data, label)
    if suffix == ".json":
        return _read_json(data, label)
    return _read_delimited(data, label, "\t" if suffix == ".tsv" else ",", header)


_EXPECTED = {".jsonl": "one JSON object per line", ".json": "a JSON list of objects",
             ".csv": "a header row, then one row per example", ".tsv": "tab-separated rows"}


def _decode(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{where(label, line=line)}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); "
                        "save the file as UTF-8") from None


def _read_jsonl(data: bytes, label: str) -> Rows:
    row = 0
    for line_no, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        row += 1
        loc = where(label, row, line_no)
        try:
            text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield loc, DataError(f"{loc}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield loc, DataError(f"{loc}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object "
                                 "per line")
            continue
        if not isinstance(obj, dict):
            yield loc, DataError(f"{loc}: expected a JSON object {{...}}, got {describe(obj)}")
            continue
        yield loc, obj


def _read_json(data: bytes, label: str) -> Rows:
    text = _decode(data, label)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several objects, one per line: JSON Lines with a .json name
            return _read_jsonl(data, label)
        raise DataError(f"{where(label, line=e.lineno)}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict):  # {"examples": [...]} or {"data": [...]}: the one list inside
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{label}: expected a JSON list of objects (or an object holding exactly one such "
                            f"list), got an object with keys {', '.join(map(str, obj))}")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{label}: expected a JSON list of objects, got {type_name(obj)}")
    if not obj:
        raise DataError(f"{label}: the JSON list is empty; expected one object per example")
    return _objects(obj, label)


def _objects(items: list, label: str) -> Rows:
    for i, obj in enumerate(items, 1):
        loc = where(label, i)
        if isinstance(obj, dict):
            yield loc, obj
        else:
            yield loc, DataError(f"{loc}: expected an object {{...}}, got {describe(obj)}")


def _read_delimited(data: bytes, label: str, delimiter: str, header: list[str] | None) -> Rows:
    text = _decode(data, label)
    # TSV files (e.g. FLAN) use no quoting: a '"' inside a field is just a character.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    names = list(header) if header else None
    row, start = 0, 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not cells or cells == [""]:
            continue
        if names is None:
            names = [c.strip() for c in cells]
            continue
        row += 1
        loc = where(label, row, line)
        if len(cells) != len(names):
            yield loc, DataError(f"{loc}: expected {len(names)} {'tab-separated ' if delimiter == chr(9) else ''}"
                                 f"fields ({', '.join(names)}), got {len(cells)}")
            continue
        yield loc, dict(zip(names, cells))
    if row == 0:
        raise DataError(f"{label}: no data rows" + (" after the header row" if not header else ""))


def _read_parquet(path: Path, label: str) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{label}: not a readable Parquet file ({e})") from None
    if table.num_rows == 0:
        raise DataError(f"{label}: file has no rows")
    return _objects(table.to_pylist(), label)


def _read_hub(source: str, spec) -> Rows:
    import datasets

    label = f"{source}" + (f" (config {spec.config})" if spec.config else "") + f" split {spec.split}"
    try:
        ds = datasets.load_dataset(source, spec.config, split=spec.split)
    except Exception as e:  # offline, unknown id, unknown split: all one message
        raise DataError(f"{label}: could not load this hub dataset ({type(e).__name__}: {e}); without network "
                        "access point the dataset entry's `path:` (or data.data_dir) at a local copy") from None
    return ((where(label, i), row) for i, row in enumerate(ds, 1))


def _read_builtin(source: str, spec, seed: int) -> Rows:
    name = source.split(":", 1)[1]
    if name not in GENERATORS:
        raise DataError(f"source {source!r}: unknown generator {name!r}; accepted: "
                        + ", ".join(f"builtin:{g}" for g in GENERATORS))
    try:
        rows = GENERATORS[name](spec.limit or DEFAULT_GENERATED_ROWS, seed=seed, split=spec.split)
    except ValueError as e:
        raise DataError(f"source {source!r}: {e}") from None
    return ((where(source, i), row) for i, row in enumerate(rows, 1))


def _download(url: str) -> Path:
    from datasets.utils.file_utils import cached_path

    try:
        return Path(cached_path(url))
    except Exception as e:
        raise DataError(f"{url}: download failed ({type(e).__name__}: {e}); without network access point the "
                        "dataset entry's `path:` (or data.data_dir) at a local copy") from None
