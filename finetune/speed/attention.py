"""Attention for padding-free training batches: each example attends to itself only, causally, unmasked.

A padding-free batch (`data.padding_free`, TRL's `padding_free`) lays a step's examples
end to end in one row; position_ids restarting at 0 mark where each begins. transformers'
`sdpa` then builds a row x row block-diagonal mask, and a masked SDPA computes every
tile of that square: for 4 examples of ~225 tokens, 4x the example-sized blocks, and 2x
again for the masked upper triangle. On the 2-core reference CPU that attention took 28%
of a LoRA step on SmolLM2-135M. `segment_sdpa` runs SDPA once per example with
`is_causal=True` instead: the same result, exactly the work the examples need. Anything
else (several rows, a KV cache, sliding windows, score biases) goes to transformers' sdpa.

The trainer switches a model to it for the length of `train()` (`segment_attention`) and
back afterwards, so saved configs and later generation never see the name.

Proven against transformers 5.23.0 and 5.24.0 (README "Tested versions"). It needs the
internals `_NEEDS` names; where transformers lacks one, the model keeps transformers' sdpa,
with one notice.
"""

import contextlib

import torch

from finetune.speed.perf import fallback

NAME = "finetune_segment_sdpa"
# Under CPU bf16 autocast the per-example SDPA runs in fp32: CPU flash attention's bf16 kernels are slower
# than its fp32 ones (forward + backward, SmolLM2's 9 query / 3 KV heads, on an AVX512-BF16 AMD EPYC:
# 2.2 vs 0.9 ms at 100 tokens, 4.5 vs 3.4 at 225, 11.5 vs 10.1 at 400), and after rotary the query and key
# are fp32 already; only the value is cast. More precise than autocast's bf16 SDPA, never less.
FP32_ON_CPU = True
_NEEDS = ("AttentionInterface, masking_utils.AttentionMaskInterface and sdpa_mask, "
          "integrations.sdpa_attention.sdpa_attention_forward, PreTrainedModel.set_attn_implementation")


def _registries():
    """transformers' attention and mask registries and its sdpa mask; None where they cannot be imported."""
    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401 (segment_sdpa's)
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return None
    return AttentionInterface, AttentionMaskInterface, sdpa_mask


def segment_bounds(position_ids: torch.Tensor) -> list[int]:
    """[0, start of example 2, ..., row length]: a new example wherever the position does not go up by one."""
    pos = position_ids[0]
    starts = (torch.nonzero(torch.diff(pos) != 1).flatten() + 1).tolist()
    return [0, *starts, pos.numel()]


def segment_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                 position_ids=None, **kwargs):
    """transformers attention-interface function; query/key/value are (batch, heads, seq, head_dim)."""
    packed_row = (position_ids is not None and position_ids.dim() == 2 and query.shape[0] == 1
                  and position_ids.shape[1] == query.shape[2] == key.shape[2])
    plain = (is_causal is not False and getattr(module, "is_causal", True) and kwargs.get("position_bias") is None
             and kwargs.get("softcap") is None and not kwargs.get("sliding_window")
             and not kwargs.get("output_attentions"))
    if not (packed_row and plain):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # checked by _registries

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_ids=position_ids, **kwargs)
    bounds = segment_bounds(position_ids)
    sizes = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    gqa = query.shape[1] != key.shape[1]
    fp32 = FP32_ON_CPU and query.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    if fp32:
        query, key, value = query.float(), key.float(), value.float()
    # split, not slices: a slice's backward zero-fills a full-size gradient for every example
    with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
        parts = [torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa).transpose(1, 2)
            for q, k, v in zip(*(t.split(sizes, dim=2) for t in (query, key, value)))]
    # (batch, seq, heads, head_dim), laid out contiguously by the one copy the cat makes
    return (parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim=1)), None


@contextlib.contextmanager
def segment_attention(model):
    """Use `segment_sdpa` inside the block when the model runs transformers' sdpa; otherwise leave it be."""
    with attention_function(model, NAME, segment_sdpa, "per-example attention") as used:
        yield used


@contextlib.contextmanager
def attention_function(model, name: str, function, what: str):
    """`function` as the model's attention (with transformers' sdpa mask) inside the block, where the model runs
    transformers' sdpa; yields whether it does. Where transformers lacks the registries: sdpa, with one notice."""
    before = getattr(model.config, "_attn_implementation", None)
    if before != "sdpa":
        yield False
        return
    found = _registries()
    if found is None or not hasattr(model, "set_attn_implementation"):
        fallback(what, "transformers", _NEEDS)
        yield False
        return
    attention, masks, sdpa_mask = found
    attention.register(name, function)
    masks.register(name, sdpa_mask)
    model.set_attn_implementation(name)
    try:
        yield True
    finally:
        model.set_attn_implementation(before)
