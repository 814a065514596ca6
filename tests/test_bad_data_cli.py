"""The bad-dataset corpus through the CLI: one message naming the file (and row), exit 2, no traceback."""

from pathlib import Path

import pytest
import yaml

from finetune.cli import main

CORPUS = Path(__file__).parent / "bad_data"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dataset_gives_one_clear_error(name, tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    case = CASES[name]
    entry = {"name": "bad", "source": str(CORPUS / name), "format": case["format"]}
    if "columns" in case:
        entry["columns"] = case["columns"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": tiny_dir}, "data": {"datasets": [entry]}}))
    assert main(["preview", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert name in err, err
    # a row-level problem names the row (files with rows that parse)
    if name.endswith((".jsonl", ".csv")) and "empty" not in name and "blank" not in name:
        assert "row " in err or "line " in err, err
