"""Unusual but valid dataset files load as users expect: every format x every spelling x every compression.

Each case writes the same rows (non-ASCII, emoji, quotes, commas, a multi-line field, an
extra column that no format reads) as .jsonl / .json / .csv / .tsv, with a BOM, CRLF or CR
line endings, no final newline, blank lines, and plain or .gz / .bz2 / .xz compressed, and
asserts the records are exactly the rows.
"""

import bz2
import csv
import gzip
import io
import json
import lzma

import pytest

from finetune.data.records import load_records
from finetune.data.decode import lines, split_suffix
from finetune.data.registry import resolve_spec
from finetune.data.sources import source_kind
from finetune.recipe import DataConfig, DatasetSpec

ROWS = [
    {"prompt": "Résumé ☕ naïve — 日本語, ελληνικά?", "completion": "Yes 😀 (an emoji beyond the BMP)", "extra": "x"},
    {"prompt": 'She said "hi", then left', "completion": "NaN, Infinity and \\ud800 are fine as text", "extra": ""},
    {"prompt": "line one\nline two", "completion": "done, with a comma", "extra": "y"},
]
TSV_ROWS = [r for r in ROWS if "\n" not in r["prompt"]]  # TSV has no quoting: no newline inside a field
EXPECTED = [{"prompt": r["prompt"], "completion": r["completion"]} for r in ROWS]
COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
VARIANTS = {  # name -> (BOM, line ending, final newline, blank line between rows)
    "plain": (False, "\n", True, False),
    "bom": (True, "\n", True, False),
    "crlf": (False, "\r\n", True, False),
    "cr": (False, "\r", True, False),
    "no_final_newline": (False, "\n", False, False),
    "blank_lines": (False, "\n", True, True),
    "bom_crlf_blank_no_final": (True, "\r\n", False, True),
}


def records_of(fmt: str, rows: list[dict], eol: str) -> list[str]:
    """The file's records as text (header first for CSV/TSV); joined by `eol` later."""
    if fmt == "jsonl":
        return [json.dumps(r, ensure_ascii=False) for r in rows]
    if fmt == "json":  # pretty-printed; JSON strings escape newlines, so eol only changes whitespace
        return [json.dumps(rows, ensure_ascii=False, indent=2).replace("\n", eol)]
    if fmt == "tsv":
        return ["\t".join(rows[0])] + ["\t".join(r.values()) for r in rows]
    out = []
    for r in [dict(zip(rows[0], rows[0]))] + rows:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow(r.values())  # "\r\n": quote fields holding either
        out.append(buf.getvalue()[:-2])
    return out


def encode(fmt: str, rows: list[dict], variant: str) -> bytes:
    bom, eol, final, blank = VARIANTS[variant]
    text = (eol * 2 if blank else eol).join(records_of(fmt, rows, eol)) + (eol if final else "")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def load(path, fmt="prompt_completion", **kw) -> list[dict]:
    spec = DatasetSpec(source=str(path), format=fmt, **kw)
    records, skipped, _ = load_records(resolve_spec(spec), DataConfig(datasets=[spec]))
    assert not skipped
    return records


@pytest.mark.parametrize("comp", list(COMPRESS))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
def test_unusual_but_valid_file_loads(tmp_path, fmt, variant, comp):
    rows = TSV_ROWS if fmt == "tsv" else ROWS
    path = tmp_path / f"train.{fmt}{comp}"
    path.write_bytes(COMPRESS[comp](encode(fmt, rows, variant)))
    assert load(path) == [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
def test_a_one_mib_field_loads(tmp_path, fmt):
    """Larger than the csv module's default field limit (128 KiB), far below ours (16 MiB)."""
    rows = [{"prompt": "long " * 200_000 + "end", "completion": "ok"}, {"prompt": "q", "completion": "a"}]
    path = tmp_path / f"big.{fmt}.gz"
    path.write_bytes(gzip.compress(encode(fmt, rows, "plain")))
    assert load(path) == rows


def test_messages_with_emoji_in_jsonl_gz_and_json(tmp_path):
    chat = {"messages": [{"role": "system", "content": "Réponds en français 🇫🇷"},
                         {"role": "user", "content": "Ça va ?\r\nOui."}, {"role": "assistant", "content": "Très bien 👍"}],
            "id": 7, "tags": ["ignored", None], "score": 1e300}
    for name, data in [("c.jsonl.gz", gzip.compress(b"\xef\xbb\xbf" + json.dumps(chat).encode() + b"\r\n")),
                       ("c.json", json.dumps({"data": [chat, chat]}, ensure_ascii=False).encode())]:
        (tmp_path / name).write_bytes(data)
        got = load(tmp_path / name, fmt="messages")
        assert got[0]["messages"][2] == {"role": "assistant", "content": "Très bien 👍"}


def test_escaped_surrogate_pair_is_one_emoji(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"prompt": "smile \\ud83d\\ude00", "completion": "\\uD83D\\uDE00"}')
    assert load(path) == [{"prompt": "smile 😀", "completion": "😀"}]


def test_json_lines_in_a_json_gz_and_multi_member_gzip(tmp_path):
    lines = encode("jsonl", ROWS, "crlf")
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(lines))
    assert load(tmp_path / "a.json.gz") == EXPECTED
    half = lines.index(b"\n") + 1  # `cat a.gz b.gz > c.gz` is a valid gzip file of both
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(lines[:half]) + gzip.compress(lines[half:]))
    assert load(tmp_path / "m.jsonl.gz") == EXPECTED


def test_csv_with_unnamed_index_column_and_header_given_in_the_entry(tmp_path):
    path = tmp_path / "pandas.csv"  # DataFrame.to_csv() writes an unnamed index column
    path.write_text(",prompt,completion\n0,Q1,A1\n1,\"Q2, long\",A2\n", encoding="utf-8")
    assert load(path) == [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2, long", "completion": "A2"}]
    tsv = tmp_path / "flan.tsv.gz"
    tsv.write_bytes(gzip.compress('Q "1"\tA1\r\nQ2\tA2'.encode()))
    assert load(tsv, header=["prompt", "completion"]) == [{"prompt": 'Q "1"', "completion": "A1"},
                                                          {"prompt": "Q2", "completion": "A2"}]


def test_parquet_with_extra_columns_and_non_ascii(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": [r["prompt"] for r in ROWS], "completion": [r["completion"] for r in ROWS],
                      "extra": [1, 2, 3]})
    pq.write_table(table, tmp_path / "t.parquet")
    assert load(tmp_path / "t.parquet") == EXPECTED


@pytest.mark.parametrize("name, parts", [
    ("train.jsonl", (".jsonl", "")), ("train.JSONL.GZ", (".jsonl", ".gz")), ("v1.2/train.csv.bz2", (".csv", ".bz2")),
    ("my.data.tsv.xz", (".tsv", ".xz")), ("train.gz", ("", ".gz")), ("train", ("", "")),
    ("a.parquet", (".parquet", "")),
])
def test_split_suffix(name, parts):
    assert split_suffix(name) == parts


def test_compressed_names_are_files_not_hub_ids():
    assert source_kind("data/train.jsonl.gz") == "file" and source_kind("train.csv.bz2") == "file"
    assert source_kind("openai/gsm8k") == "hub"


@pytest.mark.parametrize("data, expected", [
    (b"a\nb", [(1, b"a"), (2, b"b")]), (b"\n\na\r\n\r\nb\r\n", [(3, b"a"), (5, b"b")]),
    (b"a\rb\rc\nd", [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]), (b"a\r\rb", [(1, b"a"), (3, b"b")]),
    (b"\n" * 5, []), (b"", []),
])
def test_lines_count_every_ending(data, expected):
    """Line numbers in messages count \\n, \\r\\n and lone \\r endings, blank lines included."""
    for size in (1, 2, 1 << 20):  # chunk boundaries anywhere, even inside \r\n
        chunks = (data[i:i + size] for i in range(0, len(data), size))
        assert list(lines(chunks)) == expected, size
