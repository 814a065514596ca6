"""Answer extraction, the one home for it: training data (split_answer, answer lines), scoring and reports.

Pure string code, no torch. `answer_format` is the declaration a CoT dataset makes about
how its completions end, e.g. "#### {answer}" (GSM8K) or "The answer is {answer}.".

Total on any text: no input raises, and the work is linear in the text's length. The
strict search is written out by hand rather than as one regex because the regex
(`head\\s*(NUMBER|[^\\n]+?)tail\\s*\\.?\\s*$`) backtracks cubically on a line of spaces
(2,000 spaces after "#### 1" took 10 s); numbers are compared as exact decimals, never
through float (inf, nan, 1e400) or int (Python's 4,300-digit conversion limit).

Reasoning traces: a model's (or a dataset's) `<think> ... </think>` block comes before the
answer. `split_think` says where it is; think-aware scoring (the `strip_think` filter) reads
the answer only from the text after the last `</think>`.
"""

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# A number: digits with commas (dropped when normalised) and a decimal part; a match starts at a digit,
# so a long run of commas costs linear time in findall
_NUMBER_RE = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MAX_ZEROS = 50  # 1e400 stays "1e400": zeros written out are capped; digits given are always kept


def format_answer(answer: str, answer_format: str) -> str:
    """The final-answer line a training target ends with."""
    return answer_format.replace("{answer}", str(answer))


def _plain(sign: str, digits: str, exp: int) -> str:
    """digits x 10**exp with no leading/trailing zeros in `digits`, written without an exponent when short."""
    if exp >= 0:
        return f"{sign}{digits}{'0' * exp}" if exp <= MAX_ZEROS else f"{sign}{digits}e{exp}"
    point = len(digits) + exp  # digits before the decimal point
    if point > 0:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return f"{sign}0.{'0' * -point}{digits}" if -point <= MAX_ZEROS else f"{sign}{digits}e{exp}"


def _canonical(value: Decimal) -> str:
    """One spelling per finite value: '1,234.0', '1234' and '1.234e3' all give '1234'; '-0' gives '0'."""
    sign, digit_tuple, exp = value.as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if not digits:
        return "0"
    stripped = digits.rstrip("0")
    return _plain("-" if sign else "", stripped, exp + len(digits) - len(stripped))


def normalize_number(text: str) -> str:
    """'1,234.0' -> '1234', '$5' -> '5', '١٢' -> '12'; non-numbers (and inf, nan) are stripped and lower-cased."""
    t = str(text).strip().strip("$").rstrip(".").replace(",", "").strip()
    try:
        value = Decimal(t)
    except (InvalidOperation, ValueError, TypeError):
        return t.lower()
    return _canonical(value) if value.is_finite() else t.lower()


@lru_cache(maxsize=256)
def _format_parts(answer_format: str) -> tuple[str, str]:
    """(text before {answer}, text after it less trailing full stops and spaces, which stay optional)."""
    head, _, tail = str(answer_format).partition("{answer}")
    return head, re.sub(r"[\s.]+$", "", tail)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _answer_end(text: str, start: int, end: int, tail: str) -> int:
    """Where the answer on text[start:end] (one line) ends: before `tail`, trailing spaces and one full stop."""
    line = text[start:end].rstrip()
    if line.endswith("."):
        line = line[:-1].rstrip()
    if not line.endswith(tail):
        return -1
    return start + len(line) - len(tail)


def extract_strict(text: str, answer_format: str = "#### {answer}") -> str | None:
    """The answer on the first declared final-answer line, or None if the line is missing."""
    head, tail = _format_parts(answer_format)
    text = str(text)
    line_end = answer_end = p = -1
    i = text.find(head)
    while i >= 0:
        # spaces (and newlines) after the head are skipped; a start inside the last skipped run lands at p again
        p = p if i + len(head) <= p else _skip_space(text, i + len(head))
        if p >= line_end:  # a new line; a failed line fails for every later start on it too
            line_end = text.find("\n", p)
            line_end = len(text) if line_end < 0 else line_end
            answer_end = _answer_end(text, p, line_end, tail)
        if answer_end > p:
            return normalize_number(text[p:answer_end])
        i = text.find(head, i + 1)
    return None


def last_answer_line(text: str, answer_format: str = "#### {answer}") -> tuple[int, str] | None:
    """(where the last declared final-answer line starts, its answer as written), or None.

    Training data splits "...worked steps...\n#### 72" with it (`split_answer`); linear in the text."""
    head, tail = _format_parts(answer_format)
    line_end = answer_end = -1
    i = text.rfind(head)
    while i >= 0:
        p = _skip_space(text, i + len(head))
        end = text.find("\n", p)
        end = len(text) if end < 0 else end
        if end != line_end:  # where the answer on a line ends does not depend on where it starts
            line_end, answer_end = end, _answer_end(text, p, end, tail)
        if answer_end > p:
            return _leftmost_on_line(text, head, i, answer_end)
        i = text.rfind(head, 0, i + len(head) - 1) if head else -1
    return None


def _leftmost_on_line(text: str, head: str, i: int, answer_end: int) -> tuple[int, str]:
    """The first head on the line of text[i] whose answer still ends at answer_end (as a regex match would)."""
    j = text.find(head, text.rfind("\n", 0, i) + 1)
    while j < i:
        p = _skip_space(text, j + len(head))
        if p < answer_end:
            return j, text[p:answer_end]
        j = text.find(head, j + 1)
    return i, text[_skip_space(text, i + len(head)):answer_end]


def extract_last_number(text: str) -> str | None:
    """Flexible scoring: the last number anywhere in the text."""
    last = None
    for last in _NUMBER_RE.finditer(str(text)):
        pass
    return normalize_number(last.group()) if last else None


def split_think(text: str, opened: bool = False) -> tuple[str, str | None, str | None]:
    """(state, reasoning, answer text) of a text that may hold a `<think>` block; linear, never raises.

    opened: the prompt already opened the block (DeepSeek-R1 templates end it with `<think>\\n`), so a
    text with no tag at all is still inside the reasoning.

    none:   no tag at all                      -> (none, None, text)
    closed: a `</think>` with no `<think>` after it -> (closed, text from the first `<think>`
            (or the start: a prompt may open the block) to the last `</think>`, text after it, stripped)
    open:   a `<think>` with no `</think>` after it (the output stopped inside the reasoning)
            -> (open, text after that `<think>`, None)
    Nested or repeated blocks count as one reasoning span: the answer is what follows the last `</think>`.
    """
    text = str(text)
    close, last_open = text.rfind(THINK_CLOSE), text.rfind(THINK_OPEN)
    if last_open > close:
        return "open", text[last_open + len(THINK_OPEN):], None
    if close < 0:
        return ("open", text, None) if opened else ("none", None, text)
    first = text.find(THINK_OPEN)
    start = first + len(THINK_OPEN) if 0 <= first < close else 0
    return "closed", text[start:close], text[close + len(THINK_CLOSE):].strip()


def after_think(text: str, opened: bool = False) -> str | None:
    """The answer part of a model output: after the last `</think>`; None while the reasoning is still open."""
    return split_think(text, opened)[2]


def opens_think(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a think block, so generation starts in the reasoning."""
    return split_think(prompt)[0] == "open"


def extract_answer(text: str, answer_format: str = "#### {answer}", mode: str = "strict",
                   think: bool = False) -> str | None:
    """The final answer of `text` (strict: the declared answer line; flexible: the last number).

    think: read it only from the text after `</think>` (None when the output never closed its block)."""
    if think:
        text = after_think(text)
        if text is None:
            return None
    if mode == "strict":
        return extract_strict(text, answer_format)
    if mode == "flexible":
        return extract_last_number(text)
    raise ValueError(f"unknown extraction mode {mode!r}; accepted: 'strict', 'flexible'")
