"""Bad data: one DataError naming the file, the row, the field and what was expected."""

import json

import pytest

from finetune.data.build import build_datasets
from finetune.data.errors import DataError
from finetune.recipe import DataConfig, DatasetSpec
from finetune.testing import tiny_tokenizer

TOK = tiny_tokenizer()
GOOD = {"ticket": "How?", "reply": "Like this."}
COLUMNS = {"prompt": "ticket", "completion": "reply"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))


def build(path, skip=False, **spec):
    spec = {"format": "prompt_completion", "columns": COLUMNS, **spec}
    cfg = DataConfig(datasets=[DatasetSpec(source=str(path), **spec)], skip_invalid_rows=skip, max_length=64)
    return build_datasets(cfg, TOK, seed=0)


def jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows) + b"\n")
    return path


def error_of(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        build(path, **kw)
    return str(e.value)


def test_missing_field_names_file_row_field_and_columns(tmp_path):
    path = jsonl(tmp_path, [GOOD, {"ticket": "Why?", "answer": "x"}])
    msg = error_of(path)
    assert f"{path}:2: row 2: field 'completion' (column 'reply'): expected a value, but the row has no " \
           "column 'reply'; its columns: ticket, answer" in msg


@pytest.mark.parametrize("value, got", [(5, "got integer 5"), (None, "got null"), (["a"], "got list ['a']"),
                                        ("  ", "expected non-empty text, got an empty string")])
def test_wrong_type(tmp_path, value, got):
    path = jsonl(tmp_path, [GOOD, GOOD, {"ticket": "Q", "reply": value}])
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: row 3: field 'completion' (column 'reply'): expected ") and got in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    assert error_of(path) == f"{path}: file is empty; expected one JSON object per line"


def test_invalid_utf8_line(tmp_path):
    path = jsonl(tmp_path, [GOOD, GOOD, b'{"ticket": "caf\xe9", "reply": "x"}'])
    assert error_of(path) == f"{path}:3: row 3: not valid UTF-8 (byte 0xe9 at column 16)"


def test_malformed_json_line(tmp_path):
    path = jsonl(tmp_path, [GOOD, b'{"ticket": "Q", "reply": }', GOOD])
    msg = error_of(path)
    assert msg.startswith(f"{path}:2: row 2: not valid JSON (Expecting value at column 26)")


def test_row_that_is_not_an_object(tmp_path):
    path = jsonl(tmp_path, [GOOD, ["a", "b"]])
    assert error_of(path) == f"{path}:2: row 2: expected a JSON object {{...}}, got list ['a', 'b']"


def test_unknown_format_and_unknown_column_field(tmp_path):
    path = jsonl(tmp_path, [GOOD])
    msg = error_of(path, format="xml")
    assert "format: unknown format 'xml'; accepted: alpaca, prompt_completion, cot, messages, text" in msg
    msg = error_of(path, columns={"prompt": "ticket", "answer": "reply"})
    assert "columns: 'answer' is not a field of format prompt_completion; accepted: prompt, completion" in msg


def test_unknown_column_in_the_map_fails_on_the_first_row(tmp_path):
    path = jsonl(tmp_path, [GOOD])
    msg = error_of(path, columns={"prompt": "ticket", "completion": "replies"})
    assert f"{path}:1: row 1: field 'completion' (column 'replies')" in msg and "columns: ticket, reply" in msg


def test_skip_invalid_rows_skips_and_counts(tmp_path):
    rows = [GOOD, {"ticket": "Q"}, b"{not json", GOOD, b'{"ticket": "\xff", "reply": "x"}', GOOD]
    bundle = build(jsonl(tmp_path, rows), skip=True)
    assert len(bundle.train) == 3
    d = bundle.stats["datasets"][0]
    assert d["rows"] == 3 and d["skipped_rows"] == 3 and bundle.stats["skipped_rows"] == 3
    assert "row 2: field 'completion'" in d["skipped_first"][0] and "row 3: not valid JSON" in d["skipped_first"][1]


def test_all_rows_invalid_even_when_skipping(tmp_path):
    msg = error_of(jsonl(tmp_path, [{"ticket": "Q"}]), skip=True)
    assert "no usable rows" in msg and "1 invalid row(s) skipped, the first:" in msg


def test_csv_and_tsv_problems(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("ticket,reply\nHow?,Like this.\nWhy?,\"Because, that is why\",extra\n")
    assert error_of(csv) == f"{csv}:3: row 2: expected 2 fields (ticket, reply), got 3"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"ticket,reply\nHow?,Like this.\nWhy?,caf\xe9\n")
    assert error_of(bad) == f"{bad}:3: not valid UTF-8 (byte 0xe9 at column 9); save the file as UTF-8"
    tsv = tmp_path / "d.tsv"
    tsv.write_text("How?\tLike this.\nWhy?\n")
    msg = error_of(tsv, header=["ticket", "reply"])
    assert msg == f"{tsv}:2: row 2: expected 2 tab-separated fields (ticket, reply), got 1"
    header_only = tmp_path / "h.csv"
    header_only.write_text("ticket,reply\n")
    assert error_of(header_only) == f"{header_only}: no data rows after the header row"


def test_json_and_missing_and_unknown_files(tmp_path):
    js = tmp_path / "d.json"
    js.write_text(json.dumps({"rows": [GOOD, {"ticket": "Q", "reply": 3}]}))
    assert error_of(js).startswith(f"{js}: row 2: field 'completion' (column 'reply'): expected text, got integer")
    broken = tmp_path / "b.json"
    broken.write_text('[\n{"ticket": "Q",\n "reply": }]')
    assert error_of(broken).startswith(f"{broken}:3: not valid JSON")
    assert "file not found" in error_of(tmp_path / "nope.jsonl")
    txt = tmp_path / "d.txt"
    txt.write_text("x")
    assert "cannot tell the file type from its suffix '.txt'" in error_of(txt)


def test_format_specific_problems(tmp_path):
    chats = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "hi"}, {"role": "gpt", "content": "yo"}]}])
    msg = error_of(chats, format="messages", columns={})
    assert msg == (f"{chats}:1: row 1: field 'messages': expected turn 2 'role' to be one of system, user, "
                   "assistant, got text 'gpt'")
    gsm = jsonl(tmp_path, [{"question": "Q", "answer": "no final line"}], name="g.jsonl")
    msg = error_of(gsm, format="cot", columns={"rationale": "answer"}, split_answer=True)
    assert "row 1: field 'rationale' (column 'answer'): expected text ending with an answer line like " \
           "'#### {answer}' (split_answer)" in msg
    tasks = jsonl(tmp_path, [{"instruction": "Do", "instances": "oops"}], name="t.jsonl")
    msg = error_of(tasks, format="alpaca", columns={}, explode="instances")
    assert msg == (f"{tasks}:1: row 1: field 'instances' (explode): expected a non-empty list of objects, "
                   "got text 'oops'")
