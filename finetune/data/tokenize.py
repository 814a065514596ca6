"""Turn rendered text into `input_ids` + `labels` for TRL: the loss-mask rules, in one place.

    prompt_completion / alpaca   prompt -100, completion + end-of-turn/EOS trained
    cot                          prompt -100, rationale + answer line + EOS trained
                                 (cot_loss answer_only: the rationale is -100 too)
    messages                     system/user turns -100, every assistant turn trained,
                                 each one's end-of-turn token included
    text                         every token trained, EOS appended

`train_on_prompt` trains the prompt (and every non-assistant turn) as well. Text is cut into
pieces at the mask boundaries and each piece is tokenized on its own, so the prompt's ids
are exactly `encode_prompt(rendered prompt)`: the call the eval harness generates from.
TRL's SFTTrainer takes the `labels` column as is.
"""

from finetune.prompts import Template, TemplateError, render_completion, render_prompt, render_turns

IGNORE = -100


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


def encode_example(template: Template, tokenizer, prompt: str, completion: str,
                   train_on_prompt: bool = False) -> dict:
    return encode_pieces(tokenizer, [(render_prompt(template, tokenizer, prompt), train_on_prompt),
                                     (render_completion(template, tokenizer, prompt, completion), True)])


def encode_cot(template: Template, tokenizer, prompt: str, rationale: str, answer_line: str,
               train_on_prompt: bool = False, answer_only: bool = False) -> dict:
    """CoT target `rationale\\nanswer_line`; `answer_end` is the token index just after the answer line."""
    completion = f"{rationale}\n{answer_line}" if rationale else answer_line
    rendered = render_completion(template, tokenizer, prompt, completion)
    at = rendered.rfind(answer_line)
    if at < 0:
        raise TemplateError(f"template {template.name!r} does not keep the answer line {answer_line!r} verbatim")
    head = [(render_prompt(template, tokenizer, prompt), train_on_prompt), (rendered[:at], not answer_only),
            (answer_line, True)]
    out = encode_pieces(tokenizer, head)
    out["answer_end"] = len(out["input_ids"])
    tail = tokenizer(rendered[at + len(answer_line):], add_special_tokens=False)["input_ids"]
    out["input_ids"] += tail
    out["labels"] += tail
    return out


def encode_messages(template: Template, tokenizer, messages: list[dict], train_on_prompt: bool = False) -> dict:
    pieces = render_turns(template, tokenizer, messages)
    return encode_pieces(tokenizer, [(text, trained or train_on_prompt) for text, trained in pieces])


def encode_text(tokenizer, text: str) -> dict:
    """Raw text for continued pretraining: loss on every token, EOS appended."""
    ids = encode_prompt(tokenizer, text) + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}


def encode_record(record: dict, fmt: str, template: Template, tokenizer, train_on_prompt: bool = False,
                  cot_loss: str = "full") -> dict:
    """A standard record (see formats.py) -> input_ids, labels, answer_end (-1 when not CoT)."""
    if fmt == "cot":
        return encode_cot(template, tokenizer, record["prompt"], record["rationale"], record["answer_line"],
                          train_on_prompt, answer_only=cot_loss == "answer_only")
    if fmt == "messages":
        out = encode_messages(template, tokenizer, record["messages"], train_on_prompt)
    elif fmt == "text":
        out = encode_text(tokenizer, record["text"])
    else:
        out = encode_example(template, tokenizer, record["prompt"], record["completion"], train_on_prompt)
    return {**out, "answer_end": -1}


def end_token_ids(template: Template, tokenizer) -> set[int]:
    """Tokens that end a completion under this template: EOS and the special tokens that close a turn."""
    marker = "Zq7Xw"
    tail = render_completion(template, tokenizer, "q", marker)
    ids = tokenizer(tail[tail.rfind(marker) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []))
    return {tokenizer.eos_token_id} | {i for i in ids if i in special}
