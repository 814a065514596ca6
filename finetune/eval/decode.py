"""Greedy decoding for a batch of prompts that share a prefix (few-shot exemplars).

`model.generate` runs the whole prompt of every row through the model. In an 8-shot
GSM8K batch ~90% of each prompt is the same exemplar text, and on CPU that prefill was
most of the eval time (16 prompts of ~800 tokens: 38 s of prefill against ~35 ms per
decoded token). Here the prompts' common token prefix is run once, its KV cache is
repeated over the batch, and only each row's own suffix is prefilled:

    row i:  [shared prefix][pad ... pad][suffix_i][generated ...]
    mask:   [1 ...       1][0 ...    0][1 ...   1][1 ...        ]
    pos:    [0 ...     P-1]            [P ... P+len_i-1][...    ]

Rows leave the batch (and the KV cache) as soon as they stop, so a long answer does not
keep finished rows computing. Two memory-traffic savings for the decode steps, which on
CPU are bound by memory bandwidth, not FLOPs:
  - the KV cache is written in place into a buffer with spare room, where transformers'
    DynamicCache copies the whole cache (`torch.cat`) on every step;
  - grouped-query attention runs in SDPA itself (`enable_gqa`) instead of first copying
    K and V to every query head (transformers does that copy whenever there is a mask).
    SDPA's result is the same to the bit (checked in tests).
The tokens are the greedy argmax as in `generate`; the caller falls back to `generate`
when the model's generation config asks for logits processing (repetition penalty and
the like).
"""

import contextlib
import inspect
import os

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# generation-config fields that change greedy decoding when set (their neutral values)
_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
               "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
               "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "sequence_bias": None, "exponential_decay_length_penalty": None}


def plain_greedy(model) -> bool:
    """True when greedy `generate` is argmax and nothing else for this model."""
    cfg = getattr(model, "generation_config", None)
    return cfg is None or all(getattr(cfg, k, v) in (v, None) for k, v in _PROCESSORS.items())


def common_prefix(prompts: list[list[int]]) -> int:
    n = min(len(p) for p in prompts)
    first = prompts[0]
    for i in range(n):
        if any(p[i] != first[i] for p in prompts):
            return i
    return n


@torch.inference_mode()
def greedy_shared_prefix(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, eos: list[int],
                         until: list[str], pad: int) -> list[list[int]]:
    """Greedy continuation token ids for each prompt (up to and including the stopping token)."""
    with _sdpa_gqa():
        return _greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, eos=eos, until=until, pad=pad)


def _greedy(model, tokenizer, prompts, *, max_new_tokens, eos, until, pad):
    device = next(model.parameters()).device
    core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes kwargs through
    cache_kw = "cache" if "cache" in inspect.signature(type(core).forward).parameters else "past_key_values"
    batch = len(prompts)
    # every row keeps >= 1 own token; a lone prompt has nothing to share
    shared = min(common_prefix(prompts), min(len(p) for p in prompts) - 1) if batch > 1 else 0
    cache = _new_cache(model.config)
    if shared:
        model(input_ids=torch.tensor([prompts[0][:shared]], device=device), **{cache_kw: cache}, use_cache=True,
              logits_to_keep=1)
        cache.batch_repeat_interleave(batch)
    own = [p[shared:] for p in prompts]
    width = max(len(s) for s in own)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in own], device=device)
    own_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in own], device=device)
    mask = torch.cat([torch.ones(batch, shared, dtype=own_mask.dtype, device=device), own_mask], dim=1)
    positions = shared + (own_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **{cache_kw: cache}, use_cache=True,
                logits_to_keep=1)
    next_tok = out.logits[:, -1].argmax(-1)
    next_pos = positions[:, -1] + 1
    alive, generated = list(range(batch)), [[] for _ in range(batch)]
    lookback = max((len(s) for s in until), default=0) + 2
    for step in range(max_new_tokens):
        tokens = next_tok.tolist()
        stopped = []
        for j, row in enumerate(alive):
            generated[row].append(tokens[j])
            if tokens[j] in eos or (until and _has_stop(tokenizer, generated[row][-lookback:], until)):
                stopped.append(j)
        if step == max_new_tokens - 1 or len(stopped) == len(alive):
            break
        if stopped:
            keep = torch.tensor([j for j in range(len(alive)) if j not in set(stopped)], device=device)
            cache.batch_select_indices(keep)
            mask, next_tok, next_pos = mask[keep], next_tok[keep], next_pos[keep]
            alive = [alive[j] for j in keep.tolist()]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        out = model(input_ids=next_tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    **{cache_kw: cache}, use_cache=True)
        next_tok, next_pos = out.logits[:, -1].argmax(-1), next_pos + 1
    return generated


def _has_stop(tokenizer, tail: list[int], until: list[str]) -> bool:
    text = tokenizer.decode(tail, skip_special_tokens=True)
    return any(s in text for s in until)


@contextlib.contextmanager
def _sdpa_gqa():
    """transformers' own switch for SDPA's native grouped-query attention, for the duration of a call.

    Read by `transformers.integrations.sdpa_attention.use_gqa_in_sdpa` from transformers 5.23.0, the
    lowest release this project declares (5.22.0 does not read it)."""
    before = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA", None)
        else:
            os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = before


def _new_cache(config):
    """A cache of in-place layers; DynamicCache as built by transformers for models with sliding layers."""
    types_ = getattr(config.get_text_config(decoder=True), "layer_types", None) or []
    if any(t != "full_attention" for t in types_):
        return DynamicCache(config=config)
    return Cache(layer_class_to_replicate=_InPlaceLayer)


class _InPlaceLayer(DynamicLayer):
    """DynamicLayer that appends into a buffer with spare room instead of concatenating."""

    SPARE = 256

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._k = self._v = None
            self._len = 0
        n = key_states.shape[-2]
        if self._k is None or self._len + n > self._k.shape[-2]:
            self._grow(key_states, value_states, self._len + n + self.SPARE)
        self._k[..., self._len:self._len + n, :] = key_states
        self._v[..., self._len:self._len + n, :] = value_states
        self._len += n
        self.keys, self.values = self._k[..., :self._len, :], self._v[..., :self._len, :]
        return self.keys, self.values

    def _grow(self, key_states, value_states, capacity):
        k = key_states.new_empty(*key_states.shape[:-2], capacity, key_states.shape[-1])
        v = value_states.new_empty(*value_states.shape[:-2], capacity, value_states.shape[-1])
        if self._len:
            k[..., :self._len, :], v[..., :self._len, :] = self.keys, self.values
        self._k, self._v = k, v

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._len:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self.keys, self.values = self._k[..., :self._len, :], self._v[..., :self._len, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._len:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[..., :self._len, :], self._v[..., :self._len, :]
