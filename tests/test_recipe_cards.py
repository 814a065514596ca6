"""Result cards: written by the run, the recipes table and headers generated from them, and
every shipped recipe run end to end in a cut-down form (a few steps, a few eval documents)."""

import json
import re
import shutil

import pytest
import yaml

from conftest import SHARED_DATA, TINY_RECIPE
from finetune.cards import TABLE_HEADER, headline, table, update
from finetune.cli import main
from finetune.resources import resource_dir

RECIPES = sorted(p for p in resource_dir("recipes").glob("*.yaml"))


def test_recipes_table_and_headers_are_generated_from_the_cards(tmp_path):
    shutil.copytree(resource_dir("recipes"), tmp_path / "recipes")
    assert update(tmp_path) == [], "stale: run python -m finetune.cards"


def test_every_carded_recipe_has_a_card_and_a_header_line():
    for path in RECIPES:
        recipe = yaml.safe_load(path.read_text())
        if (recipe.get("output") or {}).get("card"):
            assert "# measured:" in path.read_text(), path
            assert (resource_dir("recipes") / "results" / f"{path.stem}.json").is_file(), f"{path}: run it for its card"


def test_a_run_writes_its_card_and_the_table_reads_it(write_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINETUNE_DATA_DIR", raising=False)  # the command would name it (tested in the cut-down runs)
    card_path = tmp_path / "cards" / "{name}.json"
    text = TINY_RECIPE.replace("output: {dir: \"{out}\"}",
                               f"output: {{dir: \"{{out}}\", card: \"{card_path}\"}}\n"
                               "eval: {tasks: [arith_cot], guard_tasks: [arith_cot], limit: 4, batch_size: 4}")
    recipe = write_recipe(text, name="tiny_card.yaml")
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "cards" / "tiny_card.json").read_text())
    assert card["command"] == f"finetune run {recipe}" and card["method"]["name"] == "lora"
    metrics = card["tasks"]["arith_cot"]["metrics"]
    assert set(metrics) == {"exact_match:strict", "exact_match:flexible"}
    for m in metrics.values():
        assert m["n"] == 4 and 0 <= m["base"] <= 1 and 0 <= m["finetuned"] <= 1
    assert card["toolkit_commit"] and card["versions"]["torch"] and card["wall_s"]["train_s"] > 0
    rows = table([card]).splitlines()
    assert rows[0] == TABLE_HEADER and len(rows) == 2 + len(metrics)
    assert headline(card).startswith("# measured: ") and "exact_match:strict" in headline(card)


def _needs(path) -> bool:
    text = path.read_text()
    return any(name in text for name in ("gsm8k", "self_instruct", "ifeval", "arc_easy", "flan_cot", "bbh"))


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_runs_end_to_end_cut_down(path, tmp_path, capsys, monkeypatch):
    if _needs(path):
        if not SHARED_DATA.is_dir():
            pytest.skip("shared/data not present")
        monkeypatch.setenv("FINETUNE_DATA_DIR", str(SHARED_DATA))
    overrides = ["train.max_steps=2", "train.batch_size=2", "train.epochs=1", "eval.limit=2", "eval.batch_size=2",
                 f"output.dir={tmp_path}/run", f"output.card={tmp_path}/card.json"]
    recipe = yaml.safe_load(path.read_text())
    if (recipe.get("star") or {}).get("rounds"):
        _star_cut_down(path, overrides, tmp_path, capsys)
        return
    assert main(["run", str(path), *overrides]) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "card.json").read_text())
    expected = set(recipe["eval"]["tasks"]) | set(recipe["eval"].get("guard_tasks", []))
    assert set(card["tasks"]) == expected
    for task in card["tasks"].values():
        assert all(m["n"] == 2 for m in task["metrics"].values())


def _star_cut_down(path, overrides, tmp_path, capsys):
    """A STaR recipe: one round on 4 questions, 2 short samples each (a cut-down run writes no card).

    64 tokens may not reach an answer line on every try: the run either trains and scores its round,
    or stops with STaR's one error that nothing was kept; anything else is a failure."""
    rc = main(["run", str(path), *overrides, "star.rounds=1", "star.sample_limit=4", "star.k=2",
               "star.max_new_tokens=64"])
    err = capsys.readouterr().err
    if rc == 0:
        summary = json.loads((tmp_path / "run" / "results.json").read_text())
        assert [r["round"] for r in summary["rounds"]] == [1]
        assert summary["rounds"][0]["yield"]["sampled"] == 8
    else:
        assert rc == 2 and "no sample reached its target answer (8 sampled)" in err, err
    assert (tmp_path / "run" / "round_1" / "samples.jsonl").read_text().count("\n") == 4


STAR_SUMMARIES = sorted((resource_dir("recipes") / "results" / "star").glob("*.json"))


@pytest.mark.parametrize("summary_path", STAR_SUMMARIES, ids=lambda p: p.stem)
def test_star_recipe_header_matches_the_summary_its_run_wrote(summary_path):
    """A STaR recipe's header numbers are copied from recipes/results/star/ (STaR runs write no card): keep them equal."""
    header = " ".join(line.lstrip("# ").strip() for line in (resource_dir("recipes") / f"{summary_path.stem}.yaml")
                      .read_text().splitlines() if line.startswith("#"))
    summary = json.loads(summary_path.read_text())
    task = summary["rounds"][0]["metrics"]
    assert len(task) == 1, "one target task per STaR recipe header"
    strict = [r["metrics"][next(iter(task))]["exact_match:strict"] for r in summary["rounds"]]
    assert f"strict accuracy base {strict[0]['a']:g}," in header
    for r, m in enumerate(strict, 1):
        shown = re.search(rf"round {r} ([0-9.]+) \(p ([0-9.]+)\)", header)
        assert shown and float(shown[1]) == m["b"] and abs(float(shown[2]) - m["p_value"]) <= 0.005 + 1e-9, r  # shown to 2 decimals
    for y in (r["yield"] for r in summary["rounds"]):
        assert f"{y['correct']}" in header and f"{y['hinted_correct']} of {y['hinted']}" in header


@pytest.mark.parametrize("machine, shown", [
    ({"cpu_capability": "AVX512"}, "(AVX512):"),                                   # a card from before the flags
    ({"cpu_capability": "AVX2", "bf16_flags": []}, "(AVX2, bf16: none):"),
    ({"cpu_capability": "AVX512", "bf16_flags": ["amx_bf16", "avx512_bf16"]}, "(AVX512, bf16: amx_bf16+avx512_bf16):"),
])
def test_the_measured_line_names_the_kind_of_cpu(machine, shown):
    card = {"wall_s": {"total_s": 60}, "machine": {"cpus": 2, **machine}, "tasks": {}}
    assert headline(card) == f"# measured: 1 min on 2 CPU cores {shown}"
