"""`finetune rescore`: a task's edited filters applied to saved outputs, scores and report rewritten, no model.

The saved folders are written here as the harness writes them (records through RecordStore, scores.json
through the harness's own summary), with outputs chosen by hand so every score is known in advance.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.eval.compare import compare
from finetune.eval.harness import SCORES_FILE, _task_summary, write_json
from finetune.eval.records import RecordStore, config_hash, read_records
from finetune.eval.report import write_report
from finetune.eval.scoring import score_choices, score_generation
from finetune.eval.tasks import load_task
from finetune.eval.verdict import add_verdicts
from finetune.prompts import load_template

REPO = Path(__file__).resolve().parent.parent

TASK = """\
dataset: {generator: arithmetic_cot, generator_args: {n: 50, seed: 0}, split: test, limit: 6}
output_type: generate_until
prompt_template: raw
doc_to_text: "Q: {{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: [], max_new_tokens: 64}
filter_list:
  - name: strict
    filter: [{function: answer_format, format: "#### {answer}"}, {function: take_first}]
  - name: flexible
    filter: [{function: last_number}, {function: take_first}]
"""
STRICT_EDITED = TASK.replace('format: "#### {answer}"', 'format: "Answer: {answer}"')


def outputs(targets):
    """By hand: '#### N' strict line, 'Answer: N' lines, a wrong '#### 999', trailing numbers, nothing."""
    t = targets
    return [f"so\n#### {t[0]}", f"The answer is {t[1]}.", f"Answer: {t[2]}", "#### 999", f"Answer: {t[4]}\nand 7 more",
            ""]


def save_eval(out: Path, task_path: Path, texts=None, label="finetuned", seed=0) -> list:
    """A `finetune eval` folder for the task with the given outputs (default: `outputs`); returns the targets."""
    task = load_task(str(task_path))
    template = load_template(task.prompt_template)
    cfg = config_hash(task.spec, template.source, template.exemplars, seed)
    docs = task.docs(None)
    targets = [task.target(d) for _, d in docs]
    texts = outputs(targets) if texts is None else texts
    out.mkdir(parents=True, exist_ok=True)
    with RecordStore(out / f"{task.name}.jsonl", cfg) as store:
        for (i, doc), text in zip(docs, texts):
            store.write({"doc_id": i, "prompt": task.context(i, doc), "target": targets[i], "output": text,
                         **score_generation(task, [text], [False], targets[i]), "prompt_tokens": 9,
                         "output_tokens": [5]})
        records = [store.records[i] for i, _ in docs]
    summary = {"tasks": {task.name: _task_summary(task, template, records, len(records), 1.0, cfg, None, {})},
               "label": label, "model": {"class": "Tiny"}, "seed": seed, "limit": None, "template_override": None}
    write_json(out / SCORES_FILE, summary)
    return targets


def scores(folder: Path, task="t") -> dict:
    return json.loads((folder / SCORES_FILE).read_text())["tasks"][task]


def rescore(*args) -> int:
    return main(["rescore", *map(str, args)])


@pytest.fixture
def task_file(tmp_path) -> Path:
    path = tmp_path / "tasks" / "t.yaml"
    path.parent.mkdir()
    path.write_text(TASK)
    return path


def test_edited_strict_filter_changes_the_scores_as_computed_by_hand(tmp_path, task_file, capsys):
    out = tmp_path / "eval_out"
    save_eval(out, task_file)
    assert scores(out)["scores"] == {"exact_match:strict": 1 / 6, "exact_match:flexible": 3 / 6}
    task_file.write_text(STRICT_EDITED)  # the task file the scores name, edited in place
    assert rescore(out) == 0
    after = scores(out)
    # 'Answer: N' now counts (docs 2 and 4); '#### N' (doc 0) no longer does; flexible: the last number, as before
    assert after["scores"] == {"exact_match:strict": 2 / 6, "exact_match:flexible": 3 / 6}
    assert after["failures"]["strict"] == {"correct": 2, "truncated_think": 0, "truncated": 0, "no_answer": 4,
                                           "wrong": 0}
    recs = read_records(out / "t.jsonl")
    assert [r["by_filter"]["strict"]["correct"] for r in recs] == [False, False, True, False, True, False]
    assert [r["extracted"] for r in recs][2] == recs[2]["target"]
    edited = load_task(str(task_file))
    template = load_template("raw")
    assert {r["config"] for r in recs} == {after["config"]} == {config_hash(edited.spec, template.source, None, 0)}
    assert "4 of 6 records scored differently" in capsys.readouterr().out  # docs 0, 2, 4 and 3 (999 -> none)
    # a later `finetune eval` with the edited task resumes from these records instead of refusing them
    assert RecordStore(out / "t.jsonl", after["config"]).done == set(range(6))


def test_unchanged_filter_gives_identical_scores_and_records(tmp_path, task_file):
    out = tmp_path / "eval_out"
    save_eval(out, task_file)
    before, recs = scores(out), read_records(out / "t.jsonl")
    assert rescore(out) == 0
    after = scores(out)
    assert after["scores"] == before["scores"] and after["failures"] == before["failures"]
    assert after["config"] == before["config"]
    assert read_records(out / "t.jsonl") == recs


def test_run_eval_folder_rewrites_both_sides_and_the_report(tmp_path, task_file, capsys):
    root = tmp_path / "run" / "eval"
    save_eval(root / "base", task_file, texts=[""] * 6, label="base")
    save_eval(root / "finetuned", task_file)
    write_report(root, add_verdicts(compare(root / "base", root / "finetuned"), ["t"], 0.02))
    edited = tmp_path / "elsewhere" / "t.yaml"
    edited.parent.mkdir()
    edited.write_text(STRICT_EDITED)
    assert rescore(root, "--task", edited) == 0
    result = json.loads((root / "results.json").read_text())
    strict = result["comparison"]["tasks"]["t"]["metrics"]["exact_match:strict"]
    assert (strict["a"], strict["b"], strict["n"], strict["fail_to_pass"]) == (0.0, 2 / 6, 6, 2)
    assert strict["p_value"] == 0.5  # McNemar exact, 2 discordant pairs both one way
    assert result["comparison"]["guards"]["tasks"] == ["t"], "guard verdicts are rebuilt as the run had them"
    assert "exact_match:strict" in result["comparison"]["tasks"]["t"]["verdicts"]
    assert "finetune rescore" in result["meta"]["rescored"]
    assert "0.3333" in (root / "report.md").read_text() and (root / "report.html").is_file()
    assert scores(root / "finetuned")["task_path"] == str(edited.resolve())
    assert "base: t: 0 of 6 records scored differently" in capsys.readouterr().out


def test_rescoring_loads_no_model_and_imports_no_torch(tmp_path, task_file):
    root = tmp_path / "run" / "eval"
    save_eval(root / "base", task_file, texts=[""] * 6, label="base")
    save_eval(root / "finetuned", task_file)
    task_file.write_text(STRICT_EDITED)
    code = ("import sys; from finetune.cli import main; rc = main(['rescore', sys.argv[1]]); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'trl')); "
            "print('HEAVY', heavy); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, "no torch, transformers, peft or trl in the process: no model can load"
    assert scores(root / "finetuned")["scores"]["exact_match:strict"] == 2 / 6


def test_changed_prompt_is_one_clear_error(tmp_path, task_file, capsys):
    out = tmp_path / "eval_out"
    save_eval(out, task_file)
    before = (out / "t.jsonl").read_text()
    task_file.write_text(TASK.replace('"Q: {{question}}"', '"Question: {{question}}"'))
    assert rescore(out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the task these outputs were made with in doc_to_text" in err
    assert "rerun `finetune eval`" in err and (out / "t.jsonl").read_text() == before, "nothing rewritten"


def test_changed_documents_are_one_clear_error(tmp_path, task_file, capsys):
    out = tmp_path / "eval_out"
    save_eval(out, task_file)
    lines = (out / "t.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    lines[3] = json.dumps({**rec, "target": "123456"})  # the documents changed under the saved outputs
    (out / "t.jsonl").write_text("\n".join(lines) + "\n")
    assert rescore(out) == 2
    err = capsys.readouterr().err
    assert "document 3 has target" in err and "do not answer this task's documents" in err


@pytest.mark.parametrize("make", ["empty", "missing", "unknown_task"])
def test_bad_folder_or_task_is_one_clear_error(tmp_path, task_file, capsys, make):
    folder = tmp_path / "x"
    folder.mkdir()
    args = [folder]
    if make == "missing":
        args = [tmp_path / "nowhere"]
    if make == "unknown_task":
        save_eval(folder, task_file)
        args = [folder, "--task", REPO / "eval" / "arith_cot.yaml"]
    assert rescore(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("no task named 'arith_cot'" if make == "unknown_task" else "no saved eval outputs here") in err


def test_log_likelihood_tasks_recompute_from_saved_scores(tmp_path, capsys):
    path = tmp_path / "mc.yaml"
    path.write_text("""\
dataset: {generator: arithmetic_cot, generator_args: {n: 4}, split: test}
output_type: multiple_choice
prompt_template: raw
doc_to_text: "{{question}}\\nAnswer:"
doc_to_choice: "[answer, '0', '1000']"
doc_to_target: "0"
metric_list: [acc]
""")
    task, out = load_task(str(path)), tmp_path / "out"
    template = load_template("raw")
    cfg = config_hash(task.spec, template.source, None, 0)
    logliks = [[-1.0, -2.0, -3.0], [-5.0, -1.0, -9.0], [-1.0, -1.5, -0.5], [-0.1, -4.0, -4.0]]  # gold 0: docs 0, 3
    with RecordStore(out / "mc.jsonl", cfg) as store:
        for (i, doc), ll in zip(task.docs(), logliks):
            res = score_choices(ll, task.choices(doc), 0)
            store.write({"doc_id": i, "prompt": task.context(i, doc), "choices": task.choices(doc), "target": 0,
                         "output": task.choices(doc)[res["pred"]], "extracted": str(res["pred"]), "logliks": ll,
                         **res})
        records = list(store.records.values())
    write_json(out / SCORES_FILE, {"tasks": {"mc": _task_summary(task, template, records, 4, 1.0, cfg, None, {})},
                                   "seed": 0, "template_override": None})
    path.write_text(path.read_text().replace("metric_list: [acc]", "metric_list: [acc, acc_centered]"))
    assert rescore(out) == 0
    assert scores(out, "mc")["scores"] == {"acc": 0.5, "acc_centered": pytest.approx(0.25)}
    assert "per-choice log-likelihoods re-applied" in capsys.readouterr().out
