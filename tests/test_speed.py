"""The speed paths' one switch: off by the recipe key, training is TRL's plain path; on, the same curve.

The 2-layer random model trains 4 steps with checkpointing, padding-free rows and LoRA without
dropout, so all four paths apply when on. TRL's plain path is `trl.SFTTrainer` itself, built on the
same data and TRL settings (`train.make_trainer`), from the same seed.
"""

import json

import pytest
from transformers import set_seed
from trl import SFTTrainer

from conftest import TINY_RECIPE
from finetune import speed
from finetune.data.build import build_datasets
from finetune.recipe import load_recipe
from finetune.train import make_trainer, setup_model, train

ALL_PATHS = TINY_RECIPE.replace("train: {", "train: {gradient_checkpointing: true, ")
OFF_TOLERANCE = 1e-5  # relative: the same code runs, only float summation order could differ
ON_TOLERANCE = 1e-4   # relative: the speed paths' gradient tolerance (test_lmhead, test_attention, test_fused_lora)


def plain_trl_curve(recipe, out):
    set_seed(recipe.train.seed)  # as train._train does, before the model and LoRA are initialised
    model, tokenizer, _, _, checkpointing = setup_model(recipe)
    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)
    trainer = make_trainer(recipe, out, model, tokenizer, bundle, checkpointing, trainer_class=SFTTrainer)
    trainer.train()
    return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]


def curve(run_dir):
    rows = [json.loads(l) for l in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def assert_close(got, want, tolerance):
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4]
    for (step, a), (_, b) in zip(got, want):
        assert abs(a - b) <= tolerance * abs(b), f"step {step}: {a} vs TRL's {b}"


@pytest.fixture(scope="module")
def trl_curve(tmp_path_factory, tiny_dir):
    path = tmp_path_factory.mktemp("trl") / "recipe.yaml"
    path.write_text(ALL_PATHS.replace("{tiny}", tiny_dir).replace("{out}", str(path.parent / "run")))
    return plain_trl_curve(load_recipe(path), path.parent / "run")


@pytest.fixture
def entered(monkeypatch):
    """[(path, switched on)] for every speed path the trainer asks for."""
    calls, real = [], speed._enter

    def spy(path, *args):
        calls.append((path, bool(real(path, *args))))
        return calls[-1][1]
    monkeypatch.setattr(speed, "_enter", spy)
    return calls


def test_speed_paths_off_by_the_recipe_key_is_trls_plain_path(write_recipe, trl_curve, entered):
    run_dir, *_ = train(load_recipe(write_recipe(ALL_PATHS), ["train.speed_paths=false"]))
    assert entered == [], "no speed path is even asked for"
    assert_close(curve(run_dir), trl_curve, OFF_TOLERANCE)


def test_speed_paths_on_match_trls_curve(write_recipe, trl_curve, entered):
    run_dir, *_ = train(load_recipe(write_recipe(ALL_PATHS)))
    assert entered == [(p, True) for p in speed.PATHS], "every path was on"
    assert_close(curve(run_dir), trl_curve, ON_TOLERANCE)


def test_unknown_path_name_is_refused():
    with pytest.raises(ValueError, match="unknown speed path.*known: loss_head"):
        with speed.enabled(object(), off=["lm_head"]):
            pass
