"""Hostile dataset files: one DataError naming the file (and row and field where there is one).

Each case generates a file in tmp_path and lists fragments its message must hold; the CLI
test runs some of them through `finetune preview` for exit status 2 and no traceback.
"""

import gzip
import io
import json
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import yaml

from finetune.cli import main
from finetune.data import decode
from finetune.data.records import load_records
from finetune.data.errors import DataError
from finetune.data.registry import resolve_spec
from finetune.recipe import DataConfig, DatasetSpec

CORPUS = Path(__file__).parent / "bad_data"
GOOD = {"prompt": "How?", "completion": "Like this."}
GOOD_LINE = json.dumps(GOOD).encode()
GARBAGE = random.Random(0).randbytes(4096)


def jsonl(*rows, good: int = 2) -> bytes:
    """`good` good rows, then `rows` (bytes as they are, anything else as JSON)."""
    rows = [GOOD] * good + list(rows)
    return b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows) + b"\n"


def zip_of(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in names:
            z.writestr(n, "prompt,completion\nq,a\n")
    return buf.getvalue()


def parquet_bytes() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["q"] * 100, "completion": ["a"] * 100}), buf)
    return buf.getvalue()


def chat(*turns) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}, *turns]}


CASES = [  # id, file name, bytes (or a function making them), format, fragments the message must hold
    ("nan", "d.jsonl", jsonl(b'{"prompt": "q", "completion": NaN}'), None,
     ["d.jsonl:3: row 3", "field 'completion': NaN is not valid JSON"]),
    ("neg_infinity_in_extra_column", "d.json", json.dumps([GOOD, {**GOOD, "score": float("-inf")}]).encode(), None,
     [": row 2: field 'score': -Infinity is not valid JSON"]),
    ("float_overflow", "d.jsonl", jsonl(b'{"prompt": "q", "completion": "a", "w": 1e400}'), None,
     ["row 3", "field 'w': a number too large"]),
    ("lone_high_surrogate", "d.jsonl", jsonl(b'{"prompt": "q", "completion": "bad \\ud800 text"}', good=5), None,
     ["d.jsonl:6: row 6", "field 'completion': text holds a lone surrogate '\\ud800'"]),
    ("lone_low_surrogate_json", "d.json", b'[{"prompt": "q", "completion": "a"}, {"prompt": "\\uDC00", '
     b'"completion": "a"}]', None, ["row 2", "field 'prompt'", "lone surrogate"]),
    ("surrogate_in_a_turn", "c.jsonl", jsonl(chat({"role": "assistant", "content": "\ud83d"}), good=0), "messages",
     ["row 1", "field 'messages[1].content'", "lone surrogate"]),
    ("surrogate_in_a_key", "d.jsonl", jsonl(b'{"prompt": "q", "completion": "a", "\\udfff": 1}'), None,
     ["row 3", "a key holds a lone surrogate"]),
    ("deep_nesting_jsonl", "d.jsonl", jsonl(b'{"prompt": ' + b"[" * 100_000), None,
     ["d.jsonl:3: row 3", "nested too deeply"]),
    ("deep_nesting_json", "d.json", b"[" * 100_000 + b"]" * 100_000, None, ["d.json: JSON nested too deeply"]),
    ("huge_integer", "d.jsonl", jsonl(b'{"prompt": "q", "completion": ' + b"9" * 5000 + b"}"), None,
     ["row 3", "not valid JSON (an integer too long to read; write it as text)"]),
    ("zip_renamed_csv", "d.csv", zip_of(["d.csv"]), None, ["d.csv: this file is a ZIP archive", "not CSV text"]),
    ("xlsx_renamed_csv", "book.csv", zip_of(["[Content_Types].xml", "xl/workbook.xml"]), None,
     ["book.csv: this file is an Excel workbook (.xlsx)", "export the sheet as CSV"]),
    ("gzip_without_gz", "d.jsonl", gzip.compress(jsonl()), None, ["gzip-compressed data", "name it d.jsonl.gz"]),
    ("parquet_renamed_csv", "d.csv", parquet_bytes(), None, ["this file is a Parquet file, not CSV text"]),
    ("utf16_csv", "d.csv", "prompt,completion\nq,a\n".encode("utf-16"), None, ["UTF-16 text", "save it as UTF-8"]),
    ("utf16_without_bom", "d.tsv", "prompt\tcompletion\nq\ta\n".encode("utf-16-le"), None, ["NUL byte", "UTF-16"]),
    ("plain_text_named_gz", "d.jsonl.gz", jsonl(), None, ["named .gz but not gzip-compressed"]),
    ("truncated_gzip", "d.csv.gz", gzip.compress(b"prompt,completion\n" + b"q,a\n" * 5000)[:-6], None,
     ["not a valid gzip file"]),
    ("not_a_gzip_but_bz2_name", "d.json.bz2", b"BZh9garbage-garbage", None, ["not a valid bzip2 file"]),
    ("dup_header_csv", "d.csv", b"prompt,completion,prompt\nq,a,b\n", None,
     ["d.csv:1: the header row has column 'prompt' twice (columns 1 and 3)"]),
    ("dup_header_tsv_bom", "d.tsv", b"\xef\xbb\xbfprompt\tprompt \tcompletion\nq\tr\ta\n", None,
     ["the header row has column 'prompt' twice (columns 1 and 2)"]),
    ("content_parts", "c.jsonl", jsonl(chat({"role": "assistant", "content": [{"type": "text", "text": "x"}]}),
                                       good=0), "messages",
     ["row 1", "field 'messages': expected turn 2 'content' to be text, got a list of 1 part(s)", "join"]),
    ("content_number", "c.jsonl", jsonl(chat({"role": "assistant", "content": 5}), good=0), "messages",
     ["turn 2 'content' to be text, got integer 5"]),
    ("content_bool", "c.json", json.dumps([chat({"role": "assistant", "content": True})]).encode(), "messages",
     ["row 1", "got boolean true"]),
    ("turn_without_role", "c.jsonl", jsonl({"messages": [{"content": "hi"}]}, good=0), "messages",
     ["row 1", "field 'messages': expected turn 1 to have a 'role', but its keys are content"]),
    ("role_is_a_list", "c.jsonl", jsonl({"messages": [{"role": ["user"], "content": "hi"}]}, good=0), "messages",
     ["row 1", "turn 1 'role' to be one of system, user, assistant, got list ['user']"]),
    ("null_text", "d.jsonl", jsonl({"prompt": "q", "completion": None}), None,
     ["row 3", "field 'completion': expected text, got null"]),
    ("bool_text_json", "d.json.gz", gzip.compress(json.dumps([GOOD, {"prompt": False, "completion": "a"}]).encode()),
     None, ["d.json.gz: row 2: field 'prompt': expected text, got boolean false"]),
    ("bad_row_after_many", "d.jsonl", jsonl({"prompt": "q", "completion": 7}, good=1000), None,
     ["d.jsonl:1001: row 1001: field 'completion': expected text, got integer 7"]),
    ("bad_csv_row_after_many_with_multiline", "d.csv", b"prompt,completion\n" + b'"a\nb",c\n' * 500 + b"x\n", None,
     ["d.csv:1002: row 501: expected 2 fields"]),
    ("ragged_csv", "d.csv", b"prompt,completion\nq,a\nq\nq,a,b\n", None, ["d.csv:3: row 2: expected 2 fields"]),
    ("unclosed_quote", "d.csv", b'prompt,completion\nq,a\n"q,a\nq,a\nq,a\n', None,
     ["row 2", "is a closing '\"' missing"]),
    ("row_over_16_mib", "d.jsonl", lambda: GOOD_LINE + b"\n" + b'{"prompt": "' + b"x" * (17 << 20), None,
     ["d.jsonl:2: row 2: line longer than 16 MiB"]),
    ("csv_field_over_16_mib", "d.csv", lambda: b"prompt,completion\nq,a\n\"" + b"x" * (17 << 20) + b'",a\n', None,
     ["d.csv:3: row 2: a field longer than 16 MiB"]),
    ("scalar_json", "d.json", b"5", None, ["expected a JSON list of objects, got integer 5"]),
    ("scalar_nan_json", "d.json", b" NaN ", None, ["expected a JSON list of objects, got NaN"]),
    ("string_json", "d.json", b'"rows"', None, ["got text 'rows'"]),
    ("corrupt_parquet", "d.parquet", b"PAR1" + GARBAGE + b"PAR1", None, ["not a readable Parquet file"]),
    ("truncated_parquet", "d.parquet", parquet_bytes()[:300], None, ["not a readable Parquet file"]),
    ("jsonl_named_parquet", "d.parquet", jsonl(), None, ["not a Parquet file", "text starting b'{\"prompt\""]),
    ("empty_gz", "d.jsonl.gz", gzip.compress(b""), None, ["file is empty"]),
    ("compressed_parquet_name", "d.parquet.gz", b"x", None, ["cannot tell the file type from its suffix '.parquet.gz'"]),
    ("bare_gz_name", "d.gz", b"x", None, ["suffix '.gz'", ".jsonl.gz"]),
]
for kind in ["jsonl", "json", "csv", "tsv"]:
    CASES += [(f"binary_{kind}", f"d.{kind}", GARBAGE, None, ["binary data", f"not {decode.FORMATS['.' + kind]}"]),
              (f"empty_{kind}", f"d.{kind}", b"", None, ["file is empty"]),
              (f"whitespace_{kind}", f"d.{kind}", b"\xef\xbb\xbf \r\n\t\n  ", None, ["file is empty"])]


def error_of(path: Path, fmt: str | None = None, **kw) -> str:
    spec = DatasetSpec(source=str(path), format=fmt or "prompt_completion", **kw)
    with pytest.raises(DataError) as e:
        load_records(resolve_spec(spec), DataConfig(datasets=[spec]))
    return str(e.value)


@pytest.mark.parametrize("name, data, fmt, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_gives_one_clear_error(tmp_path, name, data, fmt, fragments):
    path = tmp_path / name
    path.write_bytes(data() if callable(data) else data)
    msg = error_of(path, fmt)
    assert msg.startswith(str(path)), msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert len(msg) < 600 and "Traceback" not in msg


def test_duplicate_names_in_the_entrys_header(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("q\ta\n")
    assert "the header (from the dataset entry) has column 'prompt' twice" in error_of(path, header=["prompt"] * 2)


def test_skipping_an_over_long_row_keeps_memory_bounded(tmp_path):
    """An 80 MiB line with no newline: reported, dropped, and the next row read, holding < 48 MiB."""
    path = tmp_path / "d.jsonl"
    with open(path, "wb") as f:
        f.write(GOOD_LINE + b"\n" + b"x" * (80 << 20) + b"\n" + GOOD_LINE)
    spec = DatasetSpec(source=str(path), format="prompt_completion")
    tracemalloc.start()
    try:
        records, skipped, _ = load_records(resolve_spec(spec), DataConfig(datasets=[spec], skip_invalid_rows=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(records) == 2 and "row 2: line longer than 16 MiB" in skipped[0]
    assert peak < 48 << 20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("name", ["bomb.jsonl.gz", "bomb.csv.gz", "bomb.json.gz"])
def test_zip_bomb_stops_at_the_ratio_limit(tmp_path, name):
    (tmp_path / name).write_bytes(gzip.compress(b"\n" * (64 << 20), compresslevel=1))  # 1 GiB works the same
    assert "looks like a zip bomb" in error_of(tmp_path / name)


def test_decompressed_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "MAX_DECOMPRESSED", 4 << 20)
    rng = random.Random(0)
    rows = b"".join(json.dumps({"prompt": rng.randbytes(50).hex(), "completion": "a"}).encode() + b"\n"
                    for _ in range(60_000))  # ~7 MiB of rows that compress about 2:1
    (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress(rows, compresslevel=1))
    assert "decompresses to more than 4 MiB" in error_of(tmp_path / "big.jsonl.gz")


def test_new_corpus_files_carry_their_message():
    """tests/bad_data cases with `expect:` (test_bad_data_cli runs every case through the CLI)."""
    cases = {k: v for k, v in yaml.safe_load((CORPUS / "cases.yaml").read_text()).items() if "expect" in v}
    assert len(cases) >= 10
    for name, case in cases.items():
        msg = error_of(CORPUS / name, case["format"], columns=case.get("columns", {}))
        assert case["expect"] in msg and name in msg, (name, msg)


CLI_CASES = ["nan", "lone_high_surrogate", "deep_nesting_jsonl", "xlsx_renamed_csv", "dup_header_csv",
             "content_parts", "row_over_16_mib", "truncated_gzip", "binary_csv"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_preview_exits_2_without_traceback(case, tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    _, name, data, fmt, fragments = next(c for c in CASES if c[0] == case)
    (tmp_path / name).write_bytes(data() if callable(data) else data)
    entry = {"name": "bad", "source": str(tmp_path / name), "format": fmt or "prompt_completion"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": tiny_dir}, "data": {"datasets": [entry]}}))
    assert main(["preview", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / name}") and "Traceback" not in err, err
    assert all(f in err for f in fragments) and err.count("\n") == 1, err


def test_cli_preview_reads_a_bom_crlf_jsonl_gz(tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    rows = [{"prompt": f"Q{i} ☕", "completion": f"A{i} 😀"} for i in range(8)]
    data = b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r, ensure_ascii=False).encode() for r in rows)
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(data))
    entry = {"name": "ok", "source": str(tmp_path / "t.jsonl.gz"), "format": "prompt_completion"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": tiny_dir}, "data": {"datasets": [entry]}}))
    assert main(["preview", str(recipe)]) == 0, capsys.readouterr().err
