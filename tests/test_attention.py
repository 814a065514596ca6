"""Padding-free rows attend per example: the same outputs and gradients as each example alone."""

import copy

import torch
from peft import LoraConfig, get_peft_model

from finetune.speed.attention import NAME, segment_attention, segment_bounds
from finetune.testing import tiny_model

LENGTHS = [7, 12, 5]


def _packed_row():
    torch.manual_seed(0)
    ids = torch.randint(0, 90, (1, sum(LENGTHS)))
    pos = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return ids, pos


def _forward_backward(model, **inputs):
    model.zero_grad()
    logits = model(**inputs, use_cache=False).logits
    logits.pow(2).mean().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_bounds_from_restarting_positions():
    assert segment_bounds(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])) == [0, 3, 5, 9]
    assert segment_bounds(torch.tensor([[0, 1, 2, 3]])) == [0, 4]


def test_same_outputs_and_gradients_as_masked_sdpa_and_as_each_example_alone(monkeypatch):
    model = tiny_model()
    model.train()
    ids, pos = _packed_row()
    masked, masked_grads = _forward_backward(model, input_ids=ids, position_ids=pos)
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(k.get("attn_mask")) or real_sdpa(*a, **k))
    with segment_attention(model) as used:
        assert used and model.config._attn_implementation == NAME
        ours, our_grads = _forward_backward(model, input_ids=ids, position_ids=pos)
    assert model.config._attn_implementation == "sdpa"
    assert len(calls) == len(LENGTHS) * model.config.num_hidden_layers and all(m is None for m in calls)
    torch.testing.assert_close(ours, masked, rtol=1e-5, atol=1e-5)
    assert len(our_grads) == len(masked_grads) > 0
    for a, b in zip(our_grads, masked_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    starts = [0, *torch.tensor(LENGTHS).cumsum(0).tolist()]
    alone = torch.cat([model(input_ids=ids[:, s:e], use_cache=False).logits.detach()
                       for s, e in zip(starts[:-1], starts[1:])], dim=1)
    torch.testing.assert_close(ours, alone, rtol=1e-5, atol=1e-5)


def test_padded_batches_and_cached_generation_keep_transformers_sdpa():
    model = tiny_model()
    model.eval()
    ids = torch.randint(0, 90, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    want = model(input_ids=ids, attention_mask=mask).logits
    gen_want = model.generate(ids[1:], max_new_tokens=5, do_sample=False)
    with segment_attention(model):
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, want)
        assert torch.equal(model.generate(ids[1:], max_new_tokens=5, do_sample=False), gen_want)


def test_lora_model_switches_and_switches_back():
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids, pos = _packed_row()
    reference = copy.deepcopy(model)
    want, _ = _forward_backward(reference, input_ids=ids, position_ids=pos)
    with segment_attention(model):
        got, grads = _forward_backward(model, input_ids=ids, position_ids=pos)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert grads


def test_other_attention_is_left_alone():
    model = tiny_model()
    model.set_attn_implementation("eager")
    with segment_attention(model) as used:
        assert not used and model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "eager"
