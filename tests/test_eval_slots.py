"""Generation's slot count is bounded by the KV cache it would hold, the same way on every machine."""

import inspect

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig

from _eval_helpers import sharp_model, tokenizer
from finetune.eval import generate
from finetune.eval.generate import bounded_slots, generate_batch, kv_bytes_per_token


def _llama(heads: int, kv_heads: int, head_dim: int | None, layers: int, dtype):
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                      max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


@pytest.mark.parametrize("heads, kv_heads, head_dim, layers, dtype", [
    (4, 4, None, 2, torch.float32),     # multi-head, head_dim from hidden / heads
    (4, 2, None, 3, torch.float32),     # grouped-query
    (8, 1, 32, 2, torch.bfloat16),      # multi-query, explicit head_dim, half-width elements
    (2, 2, 48, 1, torch.float16),
])
def test_kv_bytes_per_token_is_what_the_cache_holds(heads, kv_heads, head_dim, layers, dtype):
    model, n = _llama(heads, kv_heads, head_dim, layers, dtype), 7
    cache = DynamicCache(config=model.config)
    kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    with torch.no_grad():
        model(input_ids=torch.arange(n)[None], **{kw: cache}, use_cache=True)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_bytes_per_token(model) * n == held


@pytest.mark.parametrize("longest, max_new, asked, sequences, budget_rows, expect", [
    (10, 6, 8, 1, 100, 8),    # fits: unchanged
    (10, 6, 8, 1, 5, 5),      # room for 5 prompts
    (10, 6, 8, 2, 5, 2),      # 2 sequences a prompt: room for 2 (5 // 2)
    (10, 6, 8, 1, 0, 1),      # not even one fits: still one at a time, never zero
    (10, 6, 1, 1, 100, 1),
])
def test_bounded_slots(longest, max_new, asked, sequences, budget_rows, expect):
    model = sharp_model()
    per_row = kv_bytes_per_token(model) * (longest + max_new)
    prompts = [[1] * longest, [1] * (longest // 2)]
    assert bounded_slots(model, prompts, max_new, asked, sequences, budget=budget_rows * per_row) == expect


def test_generation_decodes_no_more_rows_than_the_budget_holds(monkeypatch, caplog):
    model, tok = sharp_model(seed=1), tokenizer()
    prompts = [tok(f"Q: {a}+{a * 3}? A:")["input_ids"] for a in range(9)]
    free = generate_batch(model, tok, prompts, max_new_tokens=12, until=[], slots=8)
    per_row = kv_bytes_per_token(model) * (max(len(p) for p in prompts) + 12)
    monkeypatch.setattr(generate, "KV_CACHE_BUDGET", 3 * per_row)
    monkeypatch.setattr(generate, "_TOLD", set())
    rows, forward = [], model.forward

    def spy(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    with caplog.at_level("INFO", logger="finetune"):
        for decoder in generate.DECODERS:
            rows.clear()
            out = generate_batch(model, tok, prompts, max_new_tokens=12, until=[], slots=8, decoder=decoder)
            assert max(rows) == 3, decoder
            assert [g[0] for g in out] == [g[0] for g in free], decoder
    notices = [r.message for r in caplog.records if "prompts at a time" in r.message]
    assert len(notices) == 1 and "decoding 3 prompts at a time, not 8" in notices[0]
