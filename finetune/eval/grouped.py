"""Decode-step attention for bf16 on CPU: grouped matmuls instead of SDPA's masked CPU kernel.

    with grouped_decode_attention(model):      # greedy_continuous, around the whole decode
        ...

A continuous-decoding step attends one query per slot over that slot's K/V, under a boolean
mask (slots sit at different positions). PyTorch's CPU SDPA runs that masked one-query case
3-7x slower in bf16 than in fp32 (128 slots, SmolLM2's 9 query / 3 KV heads, widths 150-430, on
an AVX512-BF16 AMD EPYC: 12.7-36.2 ms a call in bf16, 3.7-8.5 in fp32), so a bf16 decode was
attention-bound and no faster than fp32 there. Here each KV head's query heads are one
(group x head_dim) block: scores = q @ k^T in bf16, the mask and softmax in fp32, the
probabilities back to bf16, then @ v: transformers' own `eager` attention, without copying K/V
once per query head (3.3-8.1 ms a call on the same machine).

Only what it is built for takes it: one query position, bf16 or fp16, on CPU, a boolean or absent
mask, no softcap, sliding window, position bias or dropout. Everything else, fp32 included (where
the decoders' outputs are tested identical to `model.generate`), goes to transformers' sdpa.
bf16 greedy outputs already differ between kernels and batch shapes, which is why base and
finetuned are scored in the same dtype and slots (benchmarks/eval_decode.py reports the agreement).
"""

import contextlib

import torch

from finetune.speed.attention import attention_function

NAME = "finetune_grouped_decode"


def grouped_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      **kwargs):
    """transformers attention-interface function; query (batch, heads, 1, dim), key/value (batch, kv heads, n, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # checked by attention_function

    mask = attention_mask
    if not (query.shape[2] == 1 and query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16)
            and key.dtype == query.dtype and not dropout and query.shape[1] % key.shape[1] == 0
            and (mask is None or (mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[2] == 1))
            and kwargs.get("softcap") is None and not kwargs.get("sliding_window")
            and kwargs.get("position_bias") is None and not kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)           # a KV head's query heads, one block
    scores = torch.matmul(q, key.transpose(-1, -2)).float().mul_(scale)  # (batch, kv heads, group, n)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    probs = scores.softmax(-1).to(query.dtype)
    out = torch.matmul(probs, value)                                     # (batch, kv heads, group, dim)
    return out.reshape(batch, 1, heads, dim), None


@contextlib.contextmanager
def grouped_decode_attention(model):
    """`grouped_attention` inside the block where the model runs transformers' sdpa; yields whether it does."""
    with attention_function(model, NAME, grouped_attention, "grouped bf16 decode attention") as used:
        yield used
