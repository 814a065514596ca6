"""The validation-split sweep: grid parsing, a real two-value sweep on the tiny model, the table's best row."""

import json

import pytest

from conftest import TINY_RECIPE
from finetune.sweep import grid, main, table


@pytest.mark.parametrize("specs, expected", [
    (["method.layers=2,4"], [{"method.layers": "2"}, {"method.layers": "4"}]),
    (["a=1,2", "b=x"], [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]),
    (["a=1, ,2,"], [{"a": "1"}, {"a": "2"}]),
])
def test_grid_is_every_combination(specs, expected):
    assert grid(specs) == expected


@pytest.mark.parametrize("bad", ["noequals", "=1,2", "a="])
def test_grid_refuses_a_malformed_key(bad):
    with pytest.raises(SystemExit, match="KEY=V1,V2"):
        grid([bad])


def test_table_marks_the_lowest_validation_loss_and_shows_errors():
    rows = [{"setting": {"lr": "1"}, "val_loss": 2.0, "train_loss_last": 2.1, "wall_s": 1},
            {"setting": {"lr": "2"}, "val_loss": 1.5, "train_loss_last": 1.6, "wall_s": 1},
            {"setting": {"lr": "3"}, "error": ["boom"], "wall_s": 0}]
    text = table(rows)
    assert "lr=2 (best) | 1.5" in text and "lr=1 | 2.0" in text and "error: boom" in text


def test_a_sweep_trains_each_value_and_records_its_validation_loss(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    recipe = write_recipe(TINY_RECIPE)
    out = tmp_path / "sweep.json"
    rc = main([str(recipe), "train.lr=1.0e-3,1.0e-2", "--set", "data.val_size=4", "--set", "train.max_steps=2",
               "--out", str(tmp_path / "runs"), "--json", str(out)])
    record = json.loads(out.read_text())
    assert rc == 0 and [r["setting"] for r in record["results"]] == [{"train.lr": "1.0e-3"}, {"train.lr": "1.0e-2"}]
    losses = [r["val_loss"] for r in record["results"]]
    assert all(loss > 0 for loss in losses) and losses[0] != losses[1]  # two real trainings, not one repeated
    assert (tmp_path / "runs" / "recipe" / "train.lr=1.0e-3" / "logs" / "train_log.jsonl").is_file()


def test_a_sweep_without_a_validation_split_says_what_is_missing(write_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    recipe = write_recipe(TINY_RECIPE)
    assert main([str(recipe), "train.max_steps=2", "--out", str(tmp_path / "runs")]) == 1
    assert "set data.val_size" in capsys.readouterr().out
