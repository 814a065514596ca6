"""Batched generation: left padding, length-sorted batches, stop sequences, KV cache.

Greedy decoding, by `decoder`:
  continuous  `continuous.greedy_continuous`: `slots` rows decode together and a row that
              stops takes the next prompt at once (the default; where the model cannot,
              `continuous.supports` says why, one notice, and the batch decoder runs);
  batched     `decode.greedy_shared_prefix` per length-sorted batch of `slots` (shared
              few-shot prefix run once, finished rows retired);
  generate    `model.generate` per batch, as below.
Sampling, and models whose generation config processes logits, go through `model.generate`.

Prompts are token ids from `encode_prompt` (the training tokenizer call). A batch is
left-padded so every row's next token sits in the last column, and decoded with
`model.generate(use_cache=True)`. A row stops at EOS or when a stop string appears in its
decoded tail (other rows go on); its text is cut at the earliest stop string, the way
lm-eval cuts `until`. A row that ran out of `max_new_tokens` without either is `truncated`.
"""

from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from finetune.eval import KV_CACHE_BUDGET
from finetune.eval.continuous import greedy_continuous, supports
from finetune.eval.decode import greedy_shared_prefix, plain_greedy
from finetune.log import progress
from finetune.speed.perf import fallback

DECODERS = ("continuous", "batched", "generate")
_TOLD: set = set()  # (asked, bounded) slot counts already reported


@dataclass
class Generation:
    text: str
    truncated: bool  # hit max_new_tokens with no EOS and no stop string
    n_tokens: int


class StopOnStrings(StoppingCriteria):
    """Per-row stop: True once any stop string occurs in the row's generated text."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        # every token decodes to >= 1 character, so this many tokens cover the longest stop string
        self.lookback = max(len(s) for s in stops) + 2

    def __call__(self, input_ids, scores, **kwargs):
        new = input_ids[:, self.prompt_len:][:, -self.lookback:]
        tails = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


def eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    cfg = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += cfg if isinstance(cfg, list) else [cfg]
    return sorted({i for i in ids if i is not None})


def kv_bytes_per_token(model) -> int:
    """Bytes of K and V one token of one row keeps, over all layers, in the model's dtype."""
    cfg = model.config.get_text_config(decoder=True)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


def bounded_slots(model, prompts: list[list[int]], max_new_tokens: int, slots: int, sequences: int = 1,
                  budget: int | None = None) -> int:
    """`slots` (prompts decoded together), lowered so their KV cache, each of `sequences` rows holding the
    longest prompt plus max_new_tokens, fits in `budget` bytes (default KV_CACHE_BUDGET); at least 1."""
    budget = KV_CACHE_BUDGET if budget is None else budget
    per_prompt = kv_bytes_per_token(model) * (max(len(p) for p in prompts) + max_new_tokens) * sequences
    return max(1, min(slots, budget // per_prompt))


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def _finish(tokenizer, new_ids: list[int], eos: list[int], stops: list[str], pad: int) -> Generation:
    cut = next((i for i, t in enumerate(new_ids) if t in eos), None)
    hit_eos = cut is not None
    kept = new_ids[:cut] if hit_eos else list(new_ids)
    while kept and kept[-1] == pad:  # a row that stopped early is padded until the whole batch stops
        kept.pop()
    text = tokenizer.decode(kept, skip_special_tokens=True)
    found = [text.find(s) for s in stops if s in text]
    if found:
        text = text[:min(found)]
    return Generation(text=text, truncated=not hit_eos and not found, n_tokens=len(kept))


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, until: list[str],
                   temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
                   seed: int = 0, slots: int | None = None, on_done=None,
                   decoder: str = "continuous") -> list[list[Generation]]:
    """For each prompt, `num_return_sequences` generations (greedy when temperature == 0).

    `slots`: prompts decoded together (None: all), lowered where their KV cache would pass
    KV_CACHE_BUDGET (`bounded_slots`; said once per size). `on_done(i, gens)` is called as prompt i
    finishes (greedy) or its batch does (sampling)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
    if not prompts:
        return []
    asked = min(slots or len(prompts), len(prompts))
    slots = bounded_slots(model, prompts, max_new_tokens, asked, num_return_sequences)
    if slots < asked and (asked, slots) not in _TOLD:
        _TOLD.add((asked, slots))
        times = f" x {num_return_sequences} sequences" if num_return_sequences > 1 else ""
        progress(f"[eval] decoding {slots} prompts at a time, not {asked}: their KV cache (longest prompt + "
                 f"{max_new_tokens} new tokens{times}) is kept under {KV_CACHE_BUDGET / 2**30:g} GiB")
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    results: list = [None] * len(prompts)

    def done(i: int, gens: list[Generation]) -> None:
        results[i] = gens
        if on_done is not None:
            on_done(i, gens)

    greedy = temperature <= 0 and num_return_sequences == 1 and plain_greedy(model)
    why = supports(model) if greedy and decoder == "continuous" else "not asked"
    if why is None:
        greedy_continuous(model, tokenizer, prompts, slots=slots, max_new_tokens=max_new_tokens,
                          eos=eos, until=until, on_done=lambda i, ids: done(i, [_finish(tokenizer, ids, eos, until,
                                                                                         pad)]))
        return results
    if greedy and decoder == "continuous":
        fallback("continuous batching (eval)", "transformers", f"SDPA full attention; this model has {why}")
    index = list(range(len(prompts)))
    batches = length_sorted_batches(index, [len(p) for p in prompts], slots)
    for batch in batches:
        rows = [prompts[i] for i in batch]
        if greedy and decoder != "generate":
            new = greedy_shared_prefix(model, tokenizer, rows, max_new_tokens=max_new_tokens, eos=eos, until=until,
                                       pad=pad)
            outs = [[_finish(tokenizer, row, eos, until, pad)] for row in new]
        else:
            outs = _generate(model, tokenizer, rows, max_new_tokens, until, eos, pad, temperature, top_p,
                             num_return_sequences, seed)
        for i, gens in zip(batch, outs):
            done(i, gens)
    return results


def _generate(model, tokenizer, prompts, max_new_tokens, until, eos, pad, temperature, top_p, k, seed):
    """`model.generate` on one left-padded batch: k generations per prompt."""
    device = next(model.parameters()).device
    input_ids, mask = (t.to(device) for t in left_pad(prompts, pad))
    width = input_ids.shape[1]
    sampling = temperature > 0
    kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sampling else dict(do_sample=False)
    stopping = StoppingCriteriaList([StopOnStrings(tokenizer, until, width)]) if until else None
    if sampling:
        torch.manual_seed(seed)
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         num_return_sequences=k, eos_token_id=eos, pad_token_id=pad,
                         use_cache=True, stopping_criteria=stopping, **kwargs)
    new = out[:, width:].tolist()
    return [[_finish(tokenizer, new[i * k + j], eos, until, pad) for j in range(k)] for i in range(len(prompts))]


def length_sorted_batches(items: list, lengths: list[int], batch_size: int) -> list[list]:
    """Batches of items with similar lengths, longest first (an out-of-memory shows up at once)."""
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    return [[items[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
