"""Contamination: which eval documents also appear in a recipe's training rows.

    found = overlap("gsm8k_cot_zeroshot", [(0, "doc text"), ...], [("data.datasets[0] record 3", record), ...])
    print(found.line())       # finetune validate / preview print one line per eval task

Text is normalised (lower-cased, split into words of letters and digits: punctuation,
spacing and markup do not matter) and compared by word n-grams: a document *overlaps*
when it shares at least one 13-gram with any training record (the GPT-3 / lm-eval
decontamination rule); the 8-gram count is reported beside it, as a looser signal. A
document shorter than 13 words (a StrategyQA question) overlaps when its whole word
sequence (at least MIN_WORDS words) appears inside a training record.

The eval side is hashed once; training records stream past it, so tens of thousands of
rows take seconds. The report lists the overlapping document ids, and the eval report
scores the clean subset (documents with no 13-gram overlap) beside the full score.
"""

import re
from dataclasses import dataclass, field

N, LOOSE_N = 13, 8
MIN_WORDS = 6  # shorter documents ('yes', 'Paris') match everywhere and say nothing
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    return _WORD.findall(str(text).lower())


def record_text(record) -> str:
    """Every text of a standard record (prompt, completion, rationale, turns) joined."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        return "\n".join(record_text(v) for v in record.values())
    if isinstance(record, (list, tuple)):
        return "\n".join(record_text(v) for v in record)
    return ""


@dataclass
class Overlap:
    task: str
    n_docs: int
    doc_ids: list[int] = field(default_factory=list)      # 13-gram (or whole short document) overlap
    loose_ids: list[int] = field(default_factory=list)    # 8-gram overlap
    examples: list[tuple[int, str]] = field(default_factory=list)  # (doc id, where in the training data)

    def line(self) -> str:
        head = (f"{self.task}: {len(self.doc_ids)} of {self.n_docs} documents share a {N}-gram with the training "
                f"data ({len(self.loose_ids)} share an {LOOSE_N}-gram)")
        if not self.examples:
            return head
        shown = ", ".join(f"doc {d} in {where}" for d, where in self.examples[:3])
        return f"{head}; e.g. {shown}"

    def to_dict(self) -> dict:
        return {"n": N, "loose_n": LOOSE_N, "n_docs": self.n_docs, "doc_ids": self.doc_ids,
                "loose_doc_ids": self.loose_ids, "examples": [list(e) for e in self.examples[:10]]}


class _Index:
    """n-gram hash -> eval document ids, for the 13-grams, the 8-grams and whole short documents."""

    def __init__(self, docs: list[tuple[int, str]]):
        self.grams: dict[int, dict[int, set[int]]] = {N: {}, LOOSE_N: {}}
        for doc_id, text in docs:
            ws = words(text)
            for n in (N, LOOSE_N):
                grams = _ngrams(ws, n) if len(ws) >= n else ([hash(tuple(ws))] if len(ws) >= MIN_WORDS else [])
                table = self.grams.setdefault(min(n, len(ws)), {})
                for g in grams:
                    table.setdefault(g, set()).add((doc_id, n))

    def hits(self, ws: list[str]) -> dict[int, set[int]]:
        """{n: doc ids} that this record's words contain, for n in (N, LOOSE_N)."""
        found: dict[int, set[int]] = {N: set(), LOOSE_N: set()}
        for size, table in self.grams.items():
            if not table or len(ws) < size:
                continue
            for g in _ngrams(ws, size):
                for doc_id, n in table.get(g, ()):
                    found[n].add(doc_id)
        return found


def _ngrams(ws: list[str], n: int) -> list[int]:
    return [hash(tuple(ws[i:i + n])) for i in range(len(ws) - n + 1)]


def overlap(task_name: str, docs: list[tuple[int, str]], records) -> Overlap:
    """Which of `docs` ((id, text)) appear in `records` ((where, record) pairs)."""
    index, strict, loose, examples = _Index(docs), set(), set(), []
    for where, record in records:
        found = index.hits(words(record_text(record)))
        for doc_id in sorted(found[N] - strict):
            examples.append((doc_id, where))
        strict |= found[N]
        loose |= found[LOOSE_N] | found[N]
    return Overlap(task_name, len(docs), sorted(strict), sorted(loose), examples)
