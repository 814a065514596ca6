"""The CPU loss head gives TRL's fused-head outputs and gradients, projecting only labelled positions."""

import copy

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from finetune.speed import lmhead
from finetune.testing import tiny_model

FIELDS = ("log_probs", "entropy", "is_top1")


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(0, 90, (3, 40))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0                       # a left-padded row
    labels = ids.clone()
    labels[:, :12] = -100                 # prompt positions
    labels[mask == 0] = -100
    return ids, mask, labels


@pytest.mark.parametrize("frozen_head", [True, False])
def test_same_loss_metrics_and_gradients_as_trl(frozen_head, monkeypatch):
    monkeypatch.setattr(lmhead, "CHUNK", 16)   # several chunks on this small batch
    trl_model = tiny_model()
    if frozen_head:                       # LoRA / freeze: the (tied) head does not train
        trl_model.get_output_embeddings().weight.requires_grad_(False)
    ours = copy.deepcopy(trl_model)
    add_fused_lm_head(trl_model, outputs=FIELDS)
    add_fused_lm_head(ours, outputs=FIELDS)
    assert lmhead.add_compact_lm_head(ours)
    ids, mask, labels = _batch()
    results = []
    for model in (trl_model, ours):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        (-out.log_probs.sum() / out.label_mask.sum()).backward()
        results.append((out, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (a, grads_a), (b, grads_b) = results
    assert torch.equal(a.label_mask, b.label_mask)
    torch.testing.assert_close(b.log_probs, a.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.entropy, a.entropy, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.is_top1.bool(), b.is_top1.bool())
    assert len(grads_a) == len(grads_b) > 0
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)


def test_projects_only_labelled_positions(monkeypatch):
    model = tiny_model()
    model.get_output_embeddings().weight.requires_grad_(False)
    add_fused_lm_head(model, outputs=FIELDS)
    lmhead.add_compact_lm_head(model)
    rows = []
    real_mm = torch.Tensor.__matmul__

    def spy(a, b):
        if b.shape[0] == model.config.hidden_size and b.shape[1] == model.config.vocab_size:
            rows.append(a.shape[0])
        return real_mm(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    ids, mask, labels = _batch()
    model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    assert sum(rows) == int((labels[:, 1:] != -100).sum())


def test_models_with_scaled_logits_keep_trls_head():
    model = tiny_model()
    model.config.final_logit_softcapping = 30.0
    assert not lmhead.add_compact_lm_head(model)
