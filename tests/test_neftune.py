"""NEFTune (train.neftune_alpha): transformers' embedding noise reaches the blocks with the speed paths on.

The noise is transformers' forward hook on the input embeddings, uniform in +-alpha/sqrt(L x d)
for a row of L tokens and hidden size d. The speed paths must not bypass it: the compact loss
head calls the base model (and so the embeddings) itself, and the backward stop detaches the
embeddings' output after the noise hook has run. Padding-free rows would put a whole batch in one
row (L = the batch's tokens), so NEFTune trains on padded batches.
"""

import math

import pytest
import torch
from transformers import set_seed
from transformers.integrations.neftune import neftune_post_forward_hook

from conftest import TINY_RECIPE
from finetune import speed
from finetune.data.build import build_datasets
from finetune.recipe import load_recipe
from finetune.train import _padding_free, make_trainer, setup_model, sft_config

ALL_PATHS = TINY_RECIPE.replace("train: {", "train: {gradient_checkpointing: true, ")
ALPHA = 5.0


def test_off_by_default_and_padded_batches_when_on(write_recipe, tmp_path):
    off = load_recipe(write_recipe(TINY_RECIPE))
    assert off.train.neftune_alpha is None and sft_config(off, tmp_path, False).neftune_noise_alpha is None
    assert _padding_free(off) and sft_config(off, tmp_path, False).padding_free
    on = load_recipe(write_recipe(TINY_RECIPE), [f"train.neftune_alpha={ALPHA}"])
    config = sft_config(on, tmp_path, False)
    assert config.neftune_noise_alpha == ALPHA
    assert not _padding_free(on) and not config.padding_free and config.max_length == on.data.max_length


def _block_inputs(recipe, out):
    """Train 2 steps; returns [(embeddings' clean output, first block's input)] of each training forward."""
    set_seed(recipe.train.seed)
    model, tokenizer, _, _, checkpointing = setup_model(recipe)
    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)
    trainer = make_trainer(recipe, out, model, tokenizer, bundle, checkpointing)
    base = model.get_base_model()
    seen = []

    def capture(module, args, kwargs):
        if module.training and torch.is_grad_enabled():  # not the checkpoint's recomputation
            seen.append(kwargs.get("hidden_states", args[0] if args else None).detach().clone())
    handle = base.model.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    ids_seen = []
    ids_handle = base.model.embed_tokens.register_forward_pre_hook(lambda m, a: ids_seen.append(a[0].clone()))
    try:
        trainer.train()
    finally:
        handle.remove()
        ids_handle.remove()
    emb = base.model.embed_tokens
    clean = [torch.nn.functional.embedding(ids, emb.weight).detach() for ids in ids_seen]
    return clean, seen, trainer


@pytest.mark.parametrize("paths", [True, False], ids=["speed_paths", "plain"])
def test_noise_reaches_the_first_block(write_recipe, tmp_path, paths, monkeypatch):
    entered = []
    real = speed._enter
    monkeypatch.setattr(speed, "_enter", lambda p, *a: entered.append(p) or real(p, *a))
    recipe = load_recipe(write_recipe(ALL_PATHS), [f"train.neftune_alpha={ALPHA}", "train.max_steps=2",
                                                  f"train.speed_paths={str(paths).lower()}"])
    clean, noisy, trainer = _block_inputs(recipe, tmp_path / "run")
    assert len(clean) == len(noisy) >= 2
    if paths:
        assert {"loss_head", "backward_stop", "fused_lora"} <= set(entered)
    for c, n in zip(clean, noisy):
        length, hidden = c.shape[1], c.shape[2]
        bound = ALPHA / math.sqrt(length * hidden)
        noise = (n - c).abs()
        assert noise.max() <= bound * (1 + 1e-5), "noise beyond transformers' alpha/sqrt(L d)"
        assert noise.max() >= 0.9 * bound and noise.mean() >= 0.4 * bound, "no (or too little) noise"
    emb = trainer.model.get_base_model().model.embed_tokens
    assert neftune_post_forward_hook not in emb._forward_hooks.values() and not hasattr(emb, "neftune_noise_alpha"), \
        "the hook is removed when training ends (generation sees clean embeddings)"
