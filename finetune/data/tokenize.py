"""Turn rendered (prompt, completion) text into `input_ids` + `labels` for TRL.

The loss-mask rule, in one place: prompt tokens get label -100, completion tokens
(including the end-of-turn / EOS token that closes them) are trained. `train_on_prompt`
trains every token. TRL's SFTTrainer takes the `labels` column as is.
"""

from finetune.prompts import Template, render_completion, render_prompt

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


def encode_example(template: Template, tokenizer, prompt: str, completion: str,
                   train_on_prompt: bool = False) -> dict:
    prompt_ids = encode_prompt(tokenizer, render_prompt(template, tokenizer, prompt))
    completion_ids = tokenizer(render_completion(template, tokenizer, prompt, completion),
                               add_special_tokens=False)["input_ids"]
    labels = (list(prompt_ids) if train_on_prompt else [IGNORE] * len(prompt_ids)) + list(completion_ids)
    return {"input_ids": list(prompt_ids) + list(completion_ids), "labels": labels}


def encode_text(tokenizer, text: str) -> dict:
    """Raw text for continued pretraining: loss on every token, EOS appended."""
    ids = encode_prompt(tokenizer, text) + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}
