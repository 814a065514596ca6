"""bf16 decode-step attention on CPU (finetune/eval/grouped.py): transformers' eager attention without repeated K/V;
every other case is transformers' sdpa, unchanged."""

import copy

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import eager_attention_forward

from _eval_helpers import sharp_model, tokenizer
from finetune.eval import grouped
from finetune.eval.generate import generate_batch


class _Module(torch.nn.Module):
    def __init__(self, heads: int, kv_heads: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.training = heads // kv_heads, True, False


def _inputs(batch, heads, kv_heads, width, dtype, q_len=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    capacity = width + 7  # K/V are a view of a longer slot buffer, as in the continuous decoder
    k = torch.randn(batch, kv_heads, capacity, 16, generator=gen).to(dtype)[:, :, :width]
    v = torch.randn(batch, kv_heads, capacity, 16, generator=gen).to(dtype)[:, :, :width]
    q = torch.randn(batch, heads, q_len, 16, generator=gen).to(dtype)
    pos = torch.randint(0, width, (batch,), generator=gen)
    pos[0] = width - 1
    mask = (torch.arange(width)[None, :] <= pos[:, None])[:, None, None].expand(batch, 1, q_len, width)
    return q, k, v, mask


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4), (8, 1)])   # GQA, MHA, MQA
@pytest.mark.parametrize("batch,width", [(1, 1), (5, 37), (16, 200)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_one_query_in_half_precision_is_transformers_eager_attention(heads, kv_heads, batch, width, dtype):
    q, k, v, mask = _inputs(batch, heads, kv_heads, width, dtype)
    module = _Module(heads, kv_heads)
    got, _ = grouped.grouped_attention(module, q, k, v, mask, scaling=0.25)
    eager_mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    want, _ = eager_attention_forward(module, q, k, v, eager_mask, scaling=0.25)
    assert got.shape == want.shape == (batch, 1, heads, 16) and got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=2 * torch.finfo(dtype).eps)
    ref = torch.nn.functional.scaled_dot_product_attention(  # fp32 on the same values: within half-precision error
        q.float(), k.float(), v.float(), attn_mask=mask, scale=0.25, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(got.float(), ref, rtol=0, atol=0.05)


@pytest.mark.parametrize("case", ["fp32", "two queries", "float mask", "softcap", "dropout"])
def test_everything_else_is_transformers_sdpa(case, monkeypatch):
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    q, k, v, mask = _inputs(3, 6, 2, 20, dtype, q_len=2 if case == "two queries" else 1)
    kwargs = {"softcap": 30.0} if case == "softcap" else {}
    if case == "float mask":
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    calls = []
    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward",
                        lambda *a, **kw: calls.append(kw) or ("sdpa", None))
    out = grouped.grouped_attention(_Module(6, 2), q, k, v, mask, dropout=0.1 if case == "dropout" else 0.0,
                                    scaling=0.25, **kwargs)
    assert out == ("sdpa", None) and len(calls) == 1


def test_no_mask_takes_the_grouped_path_and_equals_sdpa_without_mask():
    q, k, v, _ = _inputs(4, 6, 2, 30, torch.bfloat16)
    got, _ = grouped.grouped_attention(_Module(6, 2), q, k, v, None, scaling=0.25)
    want, _ = sdpa_attention_forward(_Module(6, 2), q.float(), k.float(), v.float(), None, scaling=0.25,
                                     is_causal=False)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0.05)


def test_continuous_decoding_uses_it_in_bf16_steps_only_and_puts_sdpa_back(monkeypatch):
    tok = tokenizer()
    model = copy.deepcopy(sharp_model(seed=1))
    prompts = [tok(q)["input_ids"] for q in ("Q: 5+5? A:", "Q: 81-17? A:", "Q: 3*3*3? A:", "hello")]
    seen, real = [], grouped.grouped_attention
    monkeypatch.setattr(grouped, "grouped_attention", lambda m, q, *a, **kw: seen.append((q.dtype, q.shape[2]))
                        or real(m, q, *a, **kw))
    fp32 = generate_batch(model, tok, prompts, max_new_tokens=12, until=[], slots=2)
    assert seen and all(d == torch.float32 for d, _ in seen), "every call reaches it; fp32 goes on to sdpa"
    seen.clear()
    bf16 = generate_batch(model.to(torch.bfloat16), tok, prompts, max_new_tokens=12, until=[], slots=2)
    assert {n for d, n in seen if d == torch.bfloat16} >= {1} and len(bf16) == len(fp32)
    assert model.config._attn_implementation == "sdpa"
