"""Per-sample records as JSONL, written as they complete, so an interrupted eval resumes.

Each line is one finished document (doc_id, prompt, raw output, extracted answer, target,
correct, ...) plus `config`, a hash of everything that shapes the prompts and decoding.
On resume, finished doc ids are skipped; a half-written last line (the process died
mid-write) is dropped and overwritten; records made under another config are refused
rather than silently mixed.
"""

import hashlib
import json
from pathlib import Path

from finetune.eval.taskfile import TaskError


class ResumeError(TaskError):
    """The records file cannot be resumed (made with another config, or corrupt before its last line)."""


def _last_nonempty(lines: list) -> int:
    return max((i for i, line in enumerate(lines) if line.strip()), default=-1)


def config_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _json_line(record: dict) -> str:
    """One JSONL line, UTF-8 text as is; a lone surrogate (not UTF-8) is written as its \\u escape instead."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record)
    return line + "\n"


class RecordStore:
    def __init__(self, path: Path, config: str):
        self.path, self.config = Path(path), config
        self.records: dict[int, dict] = {}
        self._file = None
        if self.path.exists():
            self._load()

    def _load(self):
        data = self.path.read_bytes()
        offset, lines = 0, data.split(b"\n")
        last = _last_nonempty(lines)
        for i, line in enumerate(lines):
            is_last = i == last
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if not is_last:
                        raise ResumeError(f"{self.path}:{i + 1}: corrupt record before the last line; "
                                          "delete the file to start this task over") from None
                    with self.path.open("r+b") as f:  # a half-written last line: cut it off
                        f.truncate(offset)
                    break
                if rec.get("config") != self.config:
                    raise ResumeError(f"{self.path}:{i + 1}: records were made with another task config, prompt "
                                      "template or seed; use a new --out folder or delete the file")
                self.records[rec["doc_id"]] = rec
            offset += len(line) + 1

    @property
    def done(self) -> set[int]:
        return set(self.records)

    def write(self, record: dict) -> None:
        """Append one finished record and flush it to disk."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and \
                not self.path.read_bytes().endswith(b"\n")
            self._file = self.path.open("a", encoding="utf-8")
            if needs_newline:
                self._file.write("\n")
        record = {**record, "config": self.config}
        self._file.write(_json_line(record))
        self._file.flush()
        self.records[record["doc_id"]] = record

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path: Path) -> list[dict]:
    """All complete records of a JSONL file (a half-written last line is ignored), sorted by doc_id."""
    out = {}
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    last = _last_nonempty(lines)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i != last:
                raise ResumeError(f"{path}:{i + 1}: corrupt record") from None
            break
        out[rec["doc_id"]] = rec
    return [out[k] for k in sorted(out)]
