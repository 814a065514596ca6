"""Each speed path with the library internal it needs taken away: one notice, and training runs on the library's path.

Every case removes one internal the way an older or newer release would lack it (the import fails, or
the private attribute is renamed), trains the 2-layer random model for 2 steps, then asks the speed path
again: the notice is printed once, and the run trains.
"""

import importlib
import json
import math
import sys
import types

import pytest
import torch

from conftest import TINY_RECIPE
from finetune.speed import perf
from finetune.recipe import load_recipe
from finetune.train import train

# TRL before 1.15 has no fused head at all, so there the compact head's notice comes with every run
TRL_HAS_FUSED_HEAD = hasattr(importlib.import_module("trl.trainer.utils"), "FusedCausalLMOutput")
FAST = TINY_RECIPE.replace("max_steps: 4", "max_steps: 2")
CHECKPOINTED = FAST.replace("train: {", "train: {gradient_checkpointing: true, ")


def _without(monkeypatch, module: str, name: str):
    """A later import of `module` sees it without `name`; code the library already loaded keeps its own."""
    original = importlib.import_module(module)
    stripped = types.ModuleType(module)
    stripped.__dict__.update({k: v for k, v in vars(original).items() if k != name})
    monkeypatch.setitem(sys.modules, module, stripped)


def _no_fused_output(monkeypatch):
    _without(monkeypatch, "trl.trainer.utils", "FusedCausalLMOutput")


def _no_mask_registry(monkeypatch):
    _without(monkeypatch, "transformers.masking_utils", "AttentionMaskInterface")


def _no_lora_linear(monkeypatch):
    _without(monkeypatch, "peft.tuners.lora.layer", "Linear")


def _renamed_require_grads_hooks(monkeypatch):
    """transformers registers its embeddings hook but keeps the handles under another name."""
    from transformers import PreTrainedModel
    original = PreTrainedModel.enable_input_require_grads

    def enable(self):
        original(self)
        self._other_name = self.__dict__.pop("_require_grads_hooks")
        self.__dict__.pop("_require_grads_hook", None)
    monkeypatch.setattr(PreTrainedModel, "enable_input_require_grads", enable)


def _renamed_inner_training_loop(monkeypatch):
    """Trainer.train() runs its loop under another name, as a later transformers might."""
    from transformers import Trainer
    loop, public_train = Trainer._inner_training_loop, Trainer.train
    monkeypatch.delattr(Trainer, "_inner_training_loop")
    monkeypatch.setattr(Trainer, "_training_loop", loop, raising=False)

    def train_(self, *args, **kwargs):
        self._inner_training_loop = self._training_loop  # an instance attribute: no subclass override applies
        return public_train(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "train", train_)


def _ask_lmhead(model):
    from finetune.speed.lmhead import add_compact_lm_head
    assert add_compact_lm_head(model.get_base_model()) is False


def _ask_attention(model):
    from finetune.speed.attention import segment_attention
    with segment_attention(model) as used:
        assert used is False


def _ask_fused_lora(model):
    from finetune.speed.fused_lora import fused_lora
    with fused_lora(model) as n:
        assert n == 0


def _ask_backward_stop(model):
    model.enable_input_require_grads()
    assert perf.stop_input_grads(model, None) is None


def _ask_trainer(model):
    from transformers import Trainer
    assert not hasattr(Trainer, "_inner_training_loop")  # the loop ran under its other name, speed paths off


CASES = {  # name: (take the internal away, recipe, ask the speed path again, its notice)
    "lmhead": (_no_fused_output, FAST, _ask_lmhead,
               "[finetune] compact loss head unavailable with trl "),
    "attention": (_no_mask_registry, FAST, _ask_attention,
                  "[finetune] per-example attention unavailable with transformers "),
    "fused_lora": (_no_lora_linear, FAST, _ask_fused_lora,
                   "[finetune] fused LoRA forward unavailable with peft "),
    "backward_stop": (_renamed_require_grads_hooks, CHECKPOINTED, _ask_backward_stop,
                      "[finetune] backward stop at the first trainable module unavailable with transformers "),
    "trainer_loop": (_renamed_inner_training_loop, CHECKPOINTED, _ask_trainer,
                     "[finetune] speed paths (compact loss head, per-example attention, fused LoRA forward, "
                     "backward stop) unavailable with transformers "),
}


def _notices(out: str) -> list[str]:
    """Fallback notices in `out`, less the compact head's where this TRL has no fused head to replace."""
    return [line for line in out.splitlines() if " unavailable with " in line
            and (TRL_HAS_FUSED_HEAD or "compact loss head" not in line)]


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(perf, "_NOTICED", set())


@pytest.mark.parametrize("case", CASES)
def test_missing_internal_prints_one_notice_and_trains_on_the_library_path(case, write_recipe, capsys, monkeypatch):
    take_away, recipe, ask_again, notice = CASES[case]
    take_away(monkeypatch)
    run_dir, model, *_ = train(load_recipe(write_recipe(recipe)))
    out = capsys.readouterr().out
    assert out.count(notice) == 1, out
    assert [n for n in _notices(out) if notice not in n] == [], "only the path whose internal is missing falls back"
    ask_again(model)
    assert _notices(capsys.readouterr().out) == [], "the notice is printed once per process"
    rows = [json.loads(l) for l in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters()), "LoRA did not train"


def test_notice_names_the_installed_version(capsys):
    perf.fallback("x path", "torch", "torch.x")
    perf.fallback("x path", "torch", "torch.x")
    assert capsys.readouterr().out == \
        f"[finetune] x path unavailable with torch {torch.__version__} (needs torch.x); using torch's own\n"


def test_with_every_internal_present_no_path_falls_back(write_recipe, capsys):
    train(load_recipe(write_recipe(CHECKPOINTED)))
    assert _notices(capsys.readouterr().out) == []
