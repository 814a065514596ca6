"""Formats: how a row becomes a standard record, before any template or tokenizer.

    record = to_record(row, spec, loc)   # {"prompt", "completion"} for alpaca, ...

| format            | fields read (rename with `columns:`)   | record                          |
|-------------------|----------------------------------------|---------------------------------|
| alpaca            | instruction, input (optional), output  | prompt, completion              |
| prompt_completion | prompt, completion                     | prompt, completion              |
| cot               | question, rationale, answer            | prompt, rationale, answer_line  |
| messages          | messages: [{role, content}, ...] (*)   | messages                        |
| text              | text                                   | text                            |

(*) for messages, `columns` may also rename the keys inside a turn (`role`, `content`) and
the role names (`user`, `assistant`, `system`): ShareGPT is `{messages: conversations,
role: from, content: value, user: human, assistant: gpt}`.

A dataset is a format plus at most a column map (`columns: {output: response}`), never a
class. Options for files that do not fit directly: `explode` (one row per item of a list
column, e.g. Self-Instruct `instances`), `unescape` (literal \\n -> newline, FLAN TSVs) and
`split_answer` (cot: the rationale column ends with the answer line, GSM8K `#### 72`).
Every problem raises DataError naming the row, the field, its column and what was expected.

With `data.think` keep or render, a completion (or assistant turn) holding think tags must
start with exactly one closed `<think>...</think>` block (its loss mask is cut there,
tokenize.py); with render, a CoT rationale must hold no tags (the block is written for it).
"""

from finetune.data.errors import DataError, describe, short
from finetune.answers import THINK_CLOSE, THINK_OPEN, format_answer, last_answer_line

FORMATS = {  # format -> (required fields, optional fields)
    "alpaca": (("instruction", "output"), ("input",)),
    "prompt_completion": (("prompt", "completion"), ()),
    "cot": (("question", "rationale", "answer"), ()),
    "messages": (("messages",), ("role", "content", "system", "user", "assistant")),
    "text": (("text",), ()),
}
ROLES = ("system", "user", "assistant")


def check_spec(spec, origin: str) -> None:
    """Spec-level problems (unknown format, column-map keys, option misuse), before reading rows."""
    if spec.format not in FORMATS:
        raise DataError(f"{origin}: format: unknown format {spec.format!r}; accepted: {', '.join(FORMATS)}")
    required, optional = FORMATS[spec.format]
    for key in spec.columns:
        if key not in required + optional:
            raise DataError(f"{origin}: columns: {key!r} is not a field of format {spec.format}; accepted: "
                            f"{', '.join(required + optional)} (map each to your file's column name)")
    if spec.format == "cot" and "{answer}" not in spec.answer_format:
        raise DataError(f"{origin}: answer_format: must contain {{answer}}, e.g. '#### {{answer}}' or "
                        f"'The answer is {{answer}}.', got {spec.answer_format!r}")
    if spec.split_answer and spec.format != "cot":
        raise DataError(f"{origin}: split_answer: only used by format cot, but format is {spec.format}")


def expand(row: dict, loc: str, spec) -> list[tuple[str, dict]]:
    """`explode`: one row per item of a list column, the item's keys joined to the row."""
    if not spec.explode:
        return [(loc, _unescape(row) if spec.unescape else row)]
    items = row.get(spec.explode)
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        got = "missing" if spec.explode not in row else f"got {describe(items)}"
        raise DataError(f"{loc}: field {spec.explode!r} (explode): expected a non-empty list of objects, {got}")
    base = {k: v for k, v in row.items() if k != spec.explode}
    out = []
    for k, item in enumerate(items):
        merged = {**base, **item}
        out.append((f"{loc}, {spec.explode}[{k}]", _unescape(merged) if spec.unescape else merged))
    return out


def _unescape(row: dict) -> dict:
    return {k: v.replace("\\n", "\n") if isinstance(v, str) else v for k, v in row.items()}


def to_record(row: dict, spec, loc: str, think: str = "none") -> dict:
    """The standard record for one row; raises DataError naming the row, field and column.

    think (data.think): none, render or keep; the last two check the think blocks (see above)."""
    get = _Getter(row, spec, loc)
    record = _record(get, spec, loc)
    if think != "none":
        _check_record_think(get, spec.format, record, think)
    return record


def _record(get, spec, loc: str) -> dict:
    if spec.format in ("alpaca", "prompt_completion"):
        if spec.format == "alpaca":
            instruction, extra = get.text("instruction"), get.text("input", optional=True).strip()
            prompt = instruction + ("\n\n" + extra if extra else "")
            return {"prompt": prompt, "completion": get.text("output")}
        return {"prompt": get.text("prompt"), "completion": get.text("completion")}
    if spec.format == "cot":
        return _cot(get, spec)
    if spec.format == "messages":
        return {"messages": _messages(get)}
    if spec.format == "text":
        return {"text": get.text("text")}
    raise DataError(f"{loc}: unknown format {spec.format!r}; accepted: {', '.join(FORMATS)}")


def think_problem(text: str) -> str | None:
    """Why a text's think tags cannot be cut into (block, answer); None when it has none or one leading block."""
    opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if not opens and not closes:
        return None
    if opens != 1 or closes != 1:
        return f"got {opens} {THINK_OPEN} and {closes} {THINK_CLOSE} tag(s)"
    if text.find(THINK_CLOSE) < text.find(THINK_OPEN):
        return f"got {THINK_CLOSE} before {THINK_OPEN}"
    head = text[: text.find(THINK_OPEN)]
    return f"got text before {THINK_OPEN}: {short(head)}" if head.strip() else None


def _check_record_think(get, fmt: str, record: dict, think: str) -> None:
    block = f"at most one {THINK_OPEN}...{THINK_CLOSE} block, at the start of the text (data.think: {think})"
    if fmt == "cot":
        tags = [t for t in (THINK_OPEN, THINK_CLOSE) if t in record["rationale"] + record["answer_line"]]
        if think == "render" and tags:
            get.fail("rationale", f"no {THINK_OPEN} tags (data.think: render writes the block around the "
                     "rationale; use data.think: keep for text that has its own)", f"got {tags[0]}")
    elif fmt in ("alpaca", "prompt_completion"):
        field = "output" if fmt == "alpaca" else "completion"
        problem = think_problem(record["completion"])
        if problem:
            get.fail(field, block, problem)
    elif fmt == "messages":
        for i, turn in enumerate(record["messages"]):
            problem = think_problem(turn["content"]) if turn["role"] == "assistant" else None
            if problem:
                get.fail("messages", f"turn {i + 1} (assistant): {block}", problem)


class _Getter:
    """Reads format fields through the column map; errors say field, column and expectation."""

    def __init__(self, row: dict, spec, loc: str):
        self.row, self.spec, self.loc = row, spec, loc

    def name(self, field: str) -> str:
        col = self.spec.columns.get(field, field)
        return f"field {field!r}" + (f" (column {col!r})" if col != field else "")

    def fail(self, field: str, expected: str, got: str):
        raise DataError(f"{self.loc}: {self.name(field)}: expected {expected}, {got}")

    def raw(self, field: str, optional: bool = False):
        col = self.spec.columns.get(field, field)
        if col not in self.row:
            if optional:
                return None
            self.fail(field, "a value", f"but the row has no column {col!r}; its columns: "
                      f"{', '.join(map(str, self.row)) or '(none)'}")
        return self.row[col]

    def text(self, field: str, optional: bool = False, numbers: bool = False) -> str:
        value = self.raw(field, optional)
        if value is None and optional:
            return ""
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(int(value)) if float(value).is_integer() else str(value)
        if not isinstance(value, str):
            self.fail(field, "text", f"got {describe(value)}")
        if not optional and field != "rationale" and not value.strip():
            self.fail(field, "non-empty text", "got an empty string")
        return value


def _cot(get: _Getter, spec) -> dict:
    question = get.text("question")
    if spec.split_answer:  # GSM8K: "...worked steps...\n#### 72" in one column
        full = get.text("rationale")
        found = last_answer_line(full, spec.answer_format)
        if found is None:
            get.fail("rationale", f"text ending with an answer line like {spec.answer_format!r} (split_answer)",
                     f"got {short(full[-60:])}")
        rationale, answer = full[: found[0]].strip(), found[1].strip()
    else:
        rationale, answer = get.text("rationale").strip(), get.text("answer", numbers=True).strip()
    return {"prompt": question, "rationale": rationale, "answer_line": format_answer(answer, spec.answer_format)}


def _messages(get: _Getter) -> list[dict]:
    """Turns as {role, content}; `columns` may rename the turn keys (role: from, content: value)
    and the role values (user: human, assistant: gpt), e.g. for ShareGPT-style files."""
    cols = get.spec.columns
    role_key, content_key = cols.get("role", "role"), cols.get("content", "content")
    roles = {cols.get(r, r): r for r in ROLES}  # the file's role name -> ours
    turns = get.raw("messages")
    if not isinstance(turns, list) or not turns:
        get.fail("messages", f"a non-empty list of {{{role_key}, {content_key}}} turns", f"got {describe(turns)}")
    out = [_turn(get, i, turn, role_key, content_key, roles) for i, turn in enumerate(turns)]
    if not any(t["role"] == "assistant" and t["content"].strip() for t in out):
        get.fail("messages", "at least one assistant turn with text (nothing to train otherwise)",
                 f"got roles {', '.join(t['role'] for t in out)}")
    return out


def _turn(get: _Getter, i: int, turn, role_key: str, content_key: str, roles: dict) -> dict:
    at = f"turn {i + 1}"
    if not isinstance(turn, dict):
        get.fail("messages", f"{at} to be an object {{{role_key}, {content_key}}}", f"got {describe(turn)}")
    for key in (role_key, content_key):
        if key not in turn:
            get.fail("messages", f"{at} to have a {key!r}", f"but its keys are {', '.join(map(str, turn)) or '(none)'}")
    role, content = turn[role_key], turn[content_key]
    if not isinstance(role, str) or role not in roles:  # (a list or object is not even hashable)
        get.fail("messages", f"{at} {role_key!r} to be one of {', '.join(roles)}", f"got {describe(role)}")
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}, {"type": "image_url"...}]
        get.fail("messages", f"{at} {content_key!r} to be text", f"got a list of {len(content)} part(s) "
                 f"{short(content)}; join text parts into one string (images and other parts are not supported)")
    if not isinstance(content, str):
        get.fail("messages", f"{at} {content_key!r} to be text", f"got {describe(content)}")
    return {"role": roles[role], "content": content}
