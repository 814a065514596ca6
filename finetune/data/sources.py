"""Sources: where rows come from. Each reader yields (location, row) pairs.

    for loc, row in read_source("data/train.jsonl", spec, seed=0): ...

Accepted: local .jsonl / .json / .csv / .tsv / .parquet files, the first four also
compressed (.jsonl.gz, .csv.bz2, .json.xz, ...), http(s) URLs of such files (downloaded once
into the `datasets` cache), hub ids (`datasets.load_dataset(id, config, split=...)`), and
`builtin:<generator>`. A row that cannot be read (malformed JSON line, invalid UTF-8, wrong
number of cells) is yielded as a DataError in place of the row, so the caller decides between
stopping and `skip_invalid_rows`. Problems with the whole file (missing, empty, binary or
another format under a text suffix, a zip bomb) raise; decode.py holds the byte-level checks
and their limits, readers.py the parsers.
"""

import itertools
from pathlib import Path

from finetune.data.decode import BOM, COMPRESSIONS, FORMATS, check_parquet, check_text, open_chunks, split_suffix
from finetune.data.errors import DataError, where
from finetune.data.readers import Rows, read_delimited, read_json, read_jsonl, read_parquet
from finetune.data.synthetic import GENERATORS

DEFAULT_GENERATED_ROWS = 1000


def source_kind(source: str) -> str:
    """'builtin', 'url', 'file' or 'hub' for a source string."""
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith(("http://", "https://")):
        return "url"
    if split_suffix(source)[0] in FORMATS or Path(source).exists() or source.startswith((".", "/", "~")):
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
        name = source.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        return read_file(_download(source), header=spec.header, label=source, name=name)
    return read_file(Path(source).expanduser(), header=spec.header, label=source)


def read_file(path: Path, header: list[str] | None = None, label: str | None = None,
              name: str | None = None) -> Rows:
    """Rows of a local file; its type comes from `name` (default: the file's own name), e.g. a.jsonl.gz."""
    label = label or str(path)
    fmt, comp = split_suffix(name or path.name)
    if fmt not in FORMATS or (comp and fmt == ".parquet"):
        shown = fmt + comp or "(none)"
        raise DataError(f"{label}: cannot tell the file type from its suffix {shown!r}; accepted: "
                        f"{', '.join(FORMATS)}, and {', '.join(f'.jsonl{c}' for c in COMPRESSIONS)} "
                        "(likewise for .json, .csv, .tsv)")
    if not path.is_file():
        raise DataError(f"{label}: file not found (looked at {path.resolve()})")
    if fmt == ".parquet":
        check_parquet(path, label)
        return read_parquet(path, label)
    chunks = open_chunks(path, comp, label)
    first = next(chunks, b"")
    check_text(first, fmt, label, path if not comp else None)
    chunks = itertools.chain([first], chunks)
    if fmt == ".jsonl":
        return read_jsonl(chunks, label)
    data = b"".join(chunks)
    if not data.removeprefix(BOM).strip():
        raise DataError(f"{label}: file is empty; expected {_EXPECTED[fmt]}")
    if fmt == ".json":
        return read_json(data, label)
    return read_delimited(data, label, "\t" if fmt == ".tsv" else ",", header)


_EXPECTED = {".json": "a JSON list of objects", ".csv": "a header row, then one row per example",
             ".tsv": "tab-separated rows"}


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
