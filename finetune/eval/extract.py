"""Answer extraction: one function used by training data, scoring and reports.

Pure string code, no torch. `answer_format` is the declaration a CoT dataset makes about
how its completions end, e.g. "#### {answer}" (GSM8K) or "The answer is {answer}.".
"""

import re

NUMBER = r"-?[\d,]*\.?\d+"
_NUMBER_RE = re.compile(NUMBER)


def format_answer(answer: str, answer_format: str) -> str:
    """The final-answer line a training target ends with."""
    return answer_format.replace("{answer}", str(answer))


def answer_regex(answer_format: str) -> re.Pattern:
    """Regex that finds the declared final-answer line and captures the answer."""
    head, _, tail = answer_format.partition("{answer}")
    tail = tail.rstrip(".")  # "The answer is 7" should still count without the full stop
    return re.compile(re.escape(head) + r"\s*(" + NUMBER + r"|[^\n]+?)" + re.escape(tail) + r"\s*\.?\s*$",
                      re.MULTILINE)


def normalize_number(text: str) -> str:
    """'1,234.0' -> '1234', '$5' -> '5'; non-numbers are stripped and lower-cased."""
    t = text.strip().strip("$").rstrip(".").replace(",", "").strip()
    try:
        value = float(t)
    except ValueError:
        return t.lower()
    return str(int(value)) if value == int(value) else str(value)


def extract_strict(text: str, answer_format: str = "#### {answer}") -> str | None:
    """The answer on the first declared final-answer line, or None if the line is missing."""
    m = answer_regex(answer_format).search(text)
    return normalize_number(m.group(1)) if m else None


def extract_last_number(text: str) -> str | None:
    """Flexible scoring: the last number anywhere in the text."""
    found = _NUMBER_RE.findall(text)
    found = [f for f in found if any(c.isdigit() for c in f)]
    return normalize_number(found[-1]) if found else None


def extract_answer(text: str, answer_format: str = "#### {answer}", mode: str = "strict") -> str | None:
    if mode == "strict":
        return extract_strict(text, answer_format)
    if mode == "flexible":
        return extract_last_number(text)
    raise ValueError(f"unknown extraction mode {mode!r}; accepted: 'strict', 'flexible'")
