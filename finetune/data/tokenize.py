"""Turn rendered text into `input_ids` + `labels` for TRL: the loss-mask rules, in one place.

    prompt_completion / alpaca   prompt -100, completion + end-of-turn/EOS trained
    cot                          prompt -100, rationale + answer line + EOS trained
                                 (cot_loss answer_only: the rationale is -100 too)
    messages                     system/user turns -100, every assistant turn trained,
                                 each one's end-of-turn token included
                                 (messages_loss last: only the final assistant turn;
                                 the earlier ones are -100 like the prompt)
    text                         every token trained, EOS appended

Think blocks (`data.think`; render: a CoT rationale becomes `<think>\n...\n</think>\n\n` before
the answer line; keep/render: a completion or assistant turn that starts with such a block):
    cot_loss full                the block and the answer trained
    cot_loss answer_only         the block (with the blank line after `</think>`) -100
    an empty block               `<think>\n\n</think>\n\n` is -100 under either choice: it is
                                 the prompt side of the answer, as in the generation prompt
                                 thinking-mode templates write when thinking is off; training
                                 it would teach the model to skip its reasoning

`train_on_prompt` trains the prompt (and every non-assistant turn, and empty think blocks) as well. Text is cut into
pieces at the mask boundaries and each piece is tokenized on its own, so the prompt's ids
are exactly `encode_prompt(rendered prompt)`: the call the eval harness generates from.
TRL's SFTTrainer takes the `labels` column as is.
"""

from finetune.answers import THINK_CLOSE, split_think
from finetune.prompts import Template, TemplateError, render_completion, render_prompt, render_turns, think_text

IGNORE = -100
THINK_MODES = ("none", "render", "keep")  # data.think ("none", not "off": YAML reads off as false)
MESSAGES_LOSS = ("all", "last")  # data.messages_loss


def encode_prompt(tokenizer, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt: the same call for training and generation."""
    ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    # Raw-text models (GPT-2 style) expect BOS first if the tokenizer adds one by default;
    # chat templates already write their own special tokens.
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def encode_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> dict:
    """(text, trained) pieces -> input_ids + labels; the first piece is encoded as a prompt (BOS rule)."""
    ids, labels = [], []
    for i, (text, trained) in enumerate(pieces):
        seg = encode_prompt(tokenizer, text) if i == 0 else tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += list(seg) if trained else [IGNORE] * len(seg)
    return {"input_ids": ids, "labels": labels}


def think_pieces(rendered: str, train_think: bool, train_on_prompt: bool = False) -> list[tuple[str, bool]]:
    """A rendered answer cut after its think block: (the block and the blank after `</think>`, trained?),
    (the answer, trained). An empty block is trained only with train_on_prompt; no block: one piece."""
    state, reasoning, _ = split_think(rendered)
    if state != "closed":
        return [(rendered, True)]
    end = rendered.rfind(THINK_CLOSE) + len(THINK_CLOSE)
    end += len(rendered[end:]) - len(rendered[end:].lstrip())
    trained = train_think if reasoning.strip() else train_on_prompt
    return [(rendered[:end], trained), (rendered[end:], True)]


def encode_example(template: Template, tokenizer, prompt: str, completion: str,
                   train_on_prompt: bool = False, think: bool = False, answer_only: bool = False) -> dict:
    """prompt -> completion; think: a leading think block is masked by the think rules above."""
    rendered = render_completion(template, tokenizer, prompt, completion, think)
    tail = think_pieces(rendered, not answer_only, train_on_prompt) if think else [(rendered, True)]
    return encode_pieces(tokenizer, [(render_prompt(template, tokenizer, prompt), train_on_prompt)] + tail)


def encode_cot(template: Template, tokenizer, prompt: str, rationale: str, answer_line: str,
               train_on_prompt: bool = False, answer_only: bool = False, think: bool = False) -> dict:
    """CoT target `rationale\\nanswer_line` (think: `<think>\\nrationale\\n</think>\\n\\nanswer_line`);
    `answer_end` is the token index just after the answer line."""
    if think:
        rendered = render_completion(template, tokenizer, prompt, think_text(rationale, answer_line), think=True)
    else:
        completion = f"{rationale}\n{answer_line}" if rationale else answer_line
        rendered = render_completion(template, tokenizer, prompt, completion)
    at = rendered.rfind(answer_line)
    if at < 0:
        raise TemplateError(f"template {template.name!r} does not keep the answer line {answer_line!r} verbatim")
    train_head = train_on_prompt if think and not rationale.strip() else not answer_only  # the empty-block rule
    head = [(render_prompt(template, tokenizer, prompt), train_on_prompt), (rendered[:at], train_head),
            (answer_line, True)]
    out = encode_pieces(tokenizer, head)
    out["answer_end"] = len(out["input_ids"])
    tail = tokenizer(rendered[at + len(answer_line):], add_special_tokens=False)["input_ids"]
    out["input_ids"] += tail
    out["labels"] += tail
    return out


def encode_messages(template: Template, tokenizer, messages: list[dict], train_on_prompt: bool = False,
                    think: bool = False, answer_only: bool = False, last_only: bool = False) -> dict:
    """Assistant turns trained (last_only: the final one), others -100; think blocks by the think rules."""
    pieces = render_turns(template, tokenizer, messages, think, last_only)
    last = max((i for i, (_, assistant) in enumerate(pieces) if assistant), default=-1)
    out = []
    for i, (text, assistant) in enumerate(pieces):
        if not assistant or (last_only and i != last):
            out.append((text, train_on_prompt))
        else:
            out += think_pieces(text, not answer_only, train_on_prompt) if think else [(text, True)]
    return encode_pieces(tokenizer, out)


def encode_text(tokenizer, text: str) -> dict:
    """Raw text for continued pretraining: loss on every token, EOS appended."""
    ids = encode_prompt(tokenizer, text) + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}


def encode_record(record: dict, fmt: str, template: Template, tokenizer, train_on_prompt: bool = False,
                  cot_loss: str = "full", think: str = "none", messages_loss: str = "all") -> dict:
    """A standard record (see formats.py) -> input_ids, labels, answer_end (-1 when not CoT).

    think (THINK_MODES): render writes a CoT rationale as a think block; render and keep read the
    think blocks other formats' completions already start with; none treats tags as plain text."""
    answer_only = cot_loss == "answer_only"
    if fmt == "cot":
        return encode_cot(template, tokenizer, record["prompt"], record["rationale"], record["answer_line"],
                          train_on_prompt, answer_only=answer_only, think=think == "render")
    reads = think != "none"
    if fmt == "messages":
        out = encode_messages(template, tokenizer, record["messages"], train_on_prompt, think=reads,
                              answer_only=answer_only, last_only=messages_loss == "last")
    elif fmt == "text":
        out = encode_text(tokenizer, record["text"])
    else:
        out = encode_example(template, tokenizer, record["prompt"], record["completion"], train_on_prompt,
                             think=reads, answer_only=answer_only)
    return {**out, "answer_end": -1}


def end_token_ids(template: Template, tokenizer) -> set[int]:
    """Tokens that end a completion under this template: EOS and the special tokens that close a turn."""
    marker = "Zq7Xw"
    tail = render_completion(template, tokenizer, "q", marker)
    ids = tokenizer(tail[tail.rfind(marker) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []))
    return {tokenizer.eos_token_id} | {i for i in ids if i in special}
