"""Fused LoRA forward: PEFT's outputs and gradients, and PEFT's own forward back afterwards."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear

from finetune.speed import fused_lora as fl
from finetune.testing import tiny_model


def _lora(**kw):
    torch.manual_seed(0)
    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                    task_type="CAUSAL_LM", **kw))
    for name, p in model.named_parameters():   # lora_B starts at zero: move it so the adapter matters
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def _step(model, ids):
    model.zero_grad()
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_outputs_and_gradients_as_peft(monkeypatch):
    ours = _lora()
    peft = copy.deepcopy(ours)
    ids = torch.randint(0, 90, (2, 24))
    want, want_grads = _step(peft, ids)
    real_addmm, calls = torch.addmm, []
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real_addmm(*a, **k))
    with fl.fused_lora(ours) as n:
        assert n == 14   # 7 projections x 2 blocks
        got, got_grads = _step(ours, ids)
    assert len(calls) == 14
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got_grads.keys() == want_grads.keys() and any("lora_A" in k for k in got_grads)
    for k in want_grads:
        torch.testing.assert_close(got_grads[k], want_grads[k], rtol=1e-4, atol=1e-6)
    assert all("forward" not in vars(m) for m in ours.modules() if isinstance(m, Linear))


@pytest.mark.parametrize("kw", [{"lora_dropout": 0.1}, {"use_dora": True}])
def test_other_adapters_run_peft_forward(kw, monkeypatch):
    model = _lora(**kw)
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: pytest.fail("fused path taken"))
    model.eval()
    ids = torch.randint(0, 90, (1, 8))
    want = model(input_ids=ids).logits
    with fl.fused_lora(model):
        torch.testing.assert_close(model(input_ids=ids).logits, want)


def test_disabled_adapter_runs_base_model():
    model = _lora()
    ids = torch.randint(0, 90, (1, 8))
    with model.disable_adapter():
        want = model(input_ids=ids).logits
    with fl.fused_lora(model), model.disable_adapter():
        torch.testing.assert_close(model(input_ids=ids).logits, want)
