"""Backward stops at the first trainable block when the embeddings do not train."""

import torch

from finetune.methods import apply_freeze
from finetune.speed.perf import stop_input_grads
from finetune.testing import tiny_model


def _train_step(model):
    """Forward/backward with checkpointing on, as the trainer has it; returns (block-0 backward calls, grads)."""
    calls = []
    hook = model.model.layers[0].register_full_backward_hook(lambda *a: calls.append(1))
    ids = torch.randint(0, 90, (2, 16))
    model.zero_grad()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    hook.remove()
    return len(calls), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _frozen_prefix_model():
    model = apply_freeze(tiny_model(), layers=1, extra_modules=[])
    model.train()
    model.activation_checkpointing_enable()   # also marks the embeddings' output as requiring grad
    return model


def test_frozen_blocks_get_no_backward_and_trained_ones_the_same_gradients():
    model = _frozen_prefix_model()
    torch.manual_seed(0)
    before_calls, before = _train_step(model)
    model = _frozen_prefix_model()
    assert stop_input_grads(model, None) is not None
    torch.manual_seed(0)
    after_calls, after = _train_step(model)
    assert before_calls > 0 and after_calls == 0
    assert before.keys() == after.keys() and all(k.startswith("model.layers.1.") for k in after)
    for name in before:
        torch.testing.assert_close(after[name], before[name])


def test_left_alone_when_embeddings_train_or_checkpointing_is_reentrant():
    model = apply_freeze(tiny_model(), layers=1, extra_modules=["embed_tokens"])
    assert stop_input_grads(model, None) is None
    assert stop_input_grads(_frozen_prefix_model(), {"use_reentrant": True}) is None
