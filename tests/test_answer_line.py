"""`last_answer_line` (training data's split_answer) against the regex it replaced.

The regex `head\\s*(NUMBER|[^\\n]+?)tail\\s*\\.?\\s*$` backtracked cubically on long runs of
spaces; the hand-written search must give the same split on real rationales and stay linear.
"""

import json
import re
import time

import pytest

from conftest import SHARED_DATA
from finetune.answers import last_answer_line

FORMATS = ["#### {answer}", "The answer is {answer}.", "Answer: {answer}"]


def _regex_split(text: str, answer_format: str):
    head, _, tail = answer_format.partition("{answer}")
    pattern = re.escape(head) + r"\s*(-?[\d,]*\.?\d+|[^\n]+?)" + re.escape(tail.rstrip(".")) + r"\s*\.?\s*$"
    found = list(re.finditer(pattern, text, re.MULTILINE))
    return (found[-1].start(), found[-1].group(1).strip()) if found else None


def _split(text: str, answer_format: str):
    found = last_answer_line(text, answer_format)
    return (found[0], found[1].strip()) if found else None


@pytest.mark.parametrize("text,fmt,expected", [
    ("Step 1.\nStep 2.\n#### 72", "#### {answer}", (16, "72")),
    ("a\n#### 5\nmore\n#### 7\n", "#### {answer}", (14, "7")),
    ("So the answer is 12.", "The answer is {answer}.", None),           # lower-case 'the': not the head
    ("So The answer is 1,234.", "The answer is {answer}.", (3, "1,234")),
    ("#### 3 #### 4", "#### {answer}", (0, "3 #### 4")),                  # the leftmost head on the line
    ("#### \n", "#### {answer}", None),                                   # an empty answer is no answer
    ("no answer line", "#### {answer}", None),
])
def test_hand_written_cases(text, fmt, expected):
    assert _split(text, fmt) == expected


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "train.jsonl").is_file(), reason="shared/data not present")
def test_same_split_as_the_regex_on_every_gsm8k_rationale():
    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "train.jsonl").open()]
    for row in rows:
        for fmt in FORMATS:
            assert _split(row["answer"], fmt) == _regex_split(row["answer"], fmt), (row["answer"][-80:], fmt)


def test_linear_on_long_runs_of_spaces():
    text = "#### 1" + " " * 200_000 + "x\n" + "####" * 20_000 + "\n" + " " * 100_000
    start = time.perf_counter()
    assert _split(text, "#### {answer}") == (0, "1" + " " * 200_000 + "x")
    assert time.perf_counter() - start < 1
