"""Experiment trackers (train.report_to): none unless asked; TensorBoard writes inside the run directory.

Trackers are TRL's / transformers' own integrations (`report_to`); the recipe only names them.
TensorBoard works offline: `pip install 'finetune[tensorboard]'`.
"""

import pytest

from conftest import TINY_RECIPE
from finetune.recipe import RecipeError, load_recipe
from finetune.rundir import RunDir
from finetune.train import sft_config, train

SECRET = "hf_rescue_me_if_you_can_0123456789"


def test_no_tracker_by_default(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    assert recipe.train.report_to == []
    assert sft_config(recipe, tmp_path, False).report_to == [], "transformers' 'none': no integration at all"


def test_unknown_tracker_is_refused_with_the_accepted_names(write_recipe):
    with pytest.raises(RecipeError, match="invalid choice 'tensorbord'; accepted: tensorboard"):
        load_recipe(write_recipe(TINY_RECIPE), ["train.report_to=[tensorbord]"])


def test_tensorboard_writes_event_files_in_the_run_directory(write_recipe, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HF_TOKEN", SECRET)
    recipe = load_recipe(write_recipe(TINY_RECIPE), ["train.report_to=[tensorboard]", "train.max_steps=2",
                                                      "train.save_steps=2"])
    run_dir, *_ = train(recipe)
    folder = RunDir(run_dir) / RunDir.TENSORBOARD
    events = list(folder.glob("events.out.tfevents.*"))
    assert len(events) == 1, f"one event file in {folder}"
    assert not any((run_dir / RunDir.CHECKPOINTS).rglob("events.out.tfevents.*")), "not transformers' default dir"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert SECRET.encode() not in events[0].read_bytes(), "no token reaches the event file"
