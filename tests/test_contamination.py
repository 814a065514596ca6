"""Contamination check: training rows that contain eval documents are found, fast, and named."""

import json
import random
import time

from finetune.cli import main
from finetune.data.contamination import LOOSE_N, N, overlap, words
from finetune.eval.tasks import load_task

LONG = ("Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May "
        "how many clips did Natalia sell altogether")


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert words("Natalia SOLD clips, to 48 (of) her\nfriends!") == ["natalia", "sold", "clips", "to", "48", "of",
                                                                  "her", "friends"]


def test_a_shared_13_gram_is_found_and_located():
    docs = [(0, LONG), (1, "An unrelated question about the colour of the sky over the sea at night time")]
    records = [("ds record 1", {"prompt": "Intro. " + LONG.upper().replace(" in ", ", in ") + "?", "completion": "72"}),
               ("ds record 2", {"text": "nothing to see here"})]
    found = overlap("t", docs, records)
    assert found.doc_ids == [0] and found.examples == [(0, "ds record 1")]
    assert f"1 of 2 documents share a {N}-gram" in found.line()


def test_eight_grams_are_the_looser_signal():
    ws = LONG.split()
    record = {"text": " ".join(ws[:LOOSE_N + 2])}  # 10 words: an 8-gram, not a 13-gram
    found = overlap("t", [(0, LONG)], [("r", record)])
    assert found.doc_ids == [] and found.loose_ids == [0]


def test_short_documents_match_as_a_whole_and_very_short_ones_never():
    docs = [(0, "Is a goldfish able to live in the ocean?"), (1, "Yes or no?")]
    records = [("r", {"prompt": "q: is a goldfish able to live in the ocean? a: no", "completion": "yes or no"})]
    found = overlap("t", docs, records)
    assert found.doc_ids == [0] and 1 not in found.loose_ids


def test_tens_of_thousands_of_rows_take_seconds():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    docs = [(i, " ".join(rng.choice(vocab) for _ in range(60))) for i in range(1500)]
    records = [(f"r{j}", {"prompt": " ".join(rng.choice(vocab) for _ in range(150))}) for j in range(20000)]
    records[123] = ("r123", {"prompt": "prefix " + docs[7][1]})
    start = time.perf_counter()
    found = overlap("t", docs, records)
    assert found.doc_ids == [7]
    assert time.perf_counter() - start < 20


def test_validate_reports_the_eval_documents_a_recipe_trains_on(tmp_path, capsys):
    task = load_task("arith_cot")
    docs = task.docs(40)
    leaked = [3, 17, 29]
    rows = [{"prompt": task.text(docs[i][1]), "completion": "#### 1"} for i in leaked]
    data = tmp_path / "leak.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  datasets:\n    - {{source: '{data}', format: prompt_completion}}\n"
                      f"eval: {{tasks: [arith_cot], limit: 40}}\noutput: {{dir: '{tmp_path / 'run'}'}}\n")
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"contamination: arith_cot: {len(leaked)} of 40 documents share a {N}-gram" in out, out
    from finetune.preflight import contamination
    from finetune.recipe import load_recipe
    found, skipped = contamination(load_recipe(recipe))
    assert found["arith_cot"].doc_ids == leaked and skipped == []


def test_preview_prints_the_contamination_lines(tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: '{tiny_dir}'}}\ndata:\n  datasets: [{{name: arith_cot, limit: 8}}]\n"
                      f"  max_length: 512\neval: {{tasks: [arith_cot], limit: 5}}\noutput: {{dir: '{tmp_path / 'run'}'}}\n")
    assert main(["preview", str(recipe), "-n", "1", "--no-color"]) == 0
    assert f"contamination: arith_cot: 0 of 5 documents share a {N}-gram" in capsys.readouterr().out


def test_packages_import_no_cycle():
    """data never imports eval (directly or through a top-level module), so neither depends on the other both ways."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "finetune"
    for path in (root / "data").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("finetune.eval", "finetune.preflight", "finetune.cli")), \
                    (path.name, node.module)


def test_a_run_scores_the_clean_subset_beside_the_full_score(tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    task = load_task("arith_cot")
    docs = task.docs(8)
    leaked = [1, 4]
    rows = [{"prompt": task.text(docs[i][1]), "completion": "#### 1"} for i in leaked] + \
           [{"prompt": "What is 1 + 1?", "completion": "#### 2"}] * 6
    data = tmp_path / "leak.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: '{tiny_dir}'}}\nmethod: {{name: lora, r: 4, alpha: 8}}\n"
                      f"data:\n  datasets:\n    - {{source: '{data}', format: prompt_completion}}\n  max_length: 512\n"
                      "train: {max_steps: 2, batch_size: 4, save_steps: 2, logging_steps: 1}\n"
                      f"eval: {{tasks: [arith_cot], limit: 8, batch_size: 8}}\noutput: {{dir: '{tmp_path / 'run'}'}}\n")
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    task_result = (results.get("comparison") or results)["tasks"]["arith_cot"]
    clean = task_result["clean_subset"]
    assert clean["excluded_doc_ids"] == leaked and clean["n"] == 8 - len(leaked)
    assert set(clean["metrics"]) == set(task_result["metrics"])
    assert "## Clean subset" in (tmp_path / "run" / "eval" / "report.md").read_text()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["contamination"]["tasks"]["arith_cot"]["doc_ids"] == leaked
