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


@pytest.mark.parametrize("chunk", [1, 7, 16, 512])
@pytest.mark.parametrize("rows", [1, 5, 33])
def test_frozen_head_under_autocast_is_autocasts_products_with_fp32_softmax(chunk, rows, monkeypatch):
    """Under bf16 autocast the two products run in bf16 as autocast runs them (log-probs and input gradient
    bit-identical to bf16-cast operands), the softmax, entropy and argmax in fp32 on those bf16 logits."""
    monkeypatch.setattr(lmhead, "CHUNK", chunk)
    torch.manual_seed(rows)
    hidden = torch.randn(rows, 24, requires_grad=True)
    weight = torch.randn(90, 24) / 4
    target = torch.randint(0, 90, (rows,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, entropy, top1 = lmhead._FrozenHeadLogProb.apply(hidden, weight, target)
    logp.sum().backward()

    w16 = weight.bfloat16()
    logits = (hidden.detach().bfloat16() @ w16.t()).float()
    ref = torch.log_softmax(logits.double(), -1)
    torch.testing.assert_close(logp.double(), ref.gather(-1, target[:, None]).squeeze(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy.double(), -(ref.exp() * ref).sum(-1), rtol=0, atol=1e-5)
    assert torch.equal(top1, logits.argmax(-1) == target)
    probs = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(target, 90).float()
    want = ((onehot - probs).bfloat16() @ w16).float()  # the gradient autocast's bf16 product gives
    torch.testing.assert_close(hidden.grad, want, rtol=0, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the weight stored in bf16: the same numbers exactly
        again = lmhead._FrozenHeadLogProb.apply(hidden.detach(), w16, target)
    assert all(torch.equal(a, b) for a, b in zip(again, (logp.detach(), entropy, top1)))


def test_frozen_head_weight_is_cast_once_and_again_when_it_changes():
    cast, weight = lmhead._AutocastWeight(), torch.randn(90, 24)
    assert cast(weight) is weight, "no autocast: the weight itself"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = cast(weight)
        assert first.dtype == torch.bfloat16 and torch.equal(first, weight.bfloat16())
        assert cast(weight) is first, "unchanged: the kept copy"
        with torch.no_grad():
            weight.mul_(2)                      # an in-place change (its version moves)
        assert torch.equal(cast(weight), weight.bfloat16())
        weight.data = torch.randn(90, 24)       # new storage (e.g. precision.cast_for_eval swapping .data)
        assert torch.equal(cast(weight), weight.bfloat16())
        other = torch.randn(90, 24)
        assert torch.equal(cast(other), other.bfloat16()), "another tensor: cast anew"
