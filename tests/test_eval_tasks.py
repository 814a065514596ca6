"""Task YAML: every shipped task loads, include merges, errors name file/line/key, data overrides."""

import json

import pytest
from _eval_helpers import SHARED_DATA, arith_task, write_task

from finetune.data.synthetic import arithmetic_cot
from finetune.eval.documents import DATA_ENV
from finetune.eval.tasks import TaskError, available_tasks, load_task

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data not present")


def test_every_shipped_task_loads_and_has_scores():
    names = available_tasks()
    for expected in ("arith_cot", "gsm8k_cot_zeroshot", "gsm8k_cot_8shot", "gsm8k_cot_zeroshot_maj8", "arc_easy",
                     "arc_challenge", "self_instruct_ppl", "bbh_cot_date_understanding"):
        assert expected in names
    assert not [n for n in names if n.startswith("_")]  # include-only bases are not tasks
    for name in names:
        task = load_task(name)
        assert task.name == name and task.metric_keys()


@needs_data
def test_every_shipped_task_renders_a_document_from_shared_data():
    for name in available_tasks():
        task = load_task(name, data_path=SHARED_DATA)
        doc_id, doc = task.docs(limit=1)[0]
        if task.output_type != "loglikelihood_rolling":  # perplexity tasks score the whole text, no context
            assert task.context(doc_id, doc).strip(), name
        if task.output_type == "multiple_choice":
            assert 0 <= task.gold(doc) < len(task.choices(doc))
        else:
            assert task.target(doc).strip()


def test_arith_cot_is_the_held_out_split():
    task = load_task("arith_cot")
    docs = task.docs()
    assert len(docs) == 100  # the task's default limit
    test_rows = arithmetic_cot(100, seed=0, split="test")
    train_questions = {r["question"] for r in arithmetic_cot(2000, seed=0, split="train")}
    assert [d for _, d in docs] == test_rows
    assert not train_questions & {d["question"] for _, d in docs}
    _, doc = docs[0]
    assert task.context(0, doc) == doc["question"] and task.target(doc) == doc["answer"]
    assert task.generation["max_new_tokens"] == 160 and task.prompt_template == "chat"
    assert task.metric_keys() == ["exact_match:strict", "exact_match:flexible"]


def test_include_merges_nested_keys_and_replaces_lists():
    base, eight = load_task("gsm8k_cot_zeroshot"), load_task("gsm8k_cot_8shot")
    assert eight.spec["dataset"] == base.spec["dataset"]                 # inherited
    assert eight.generation["max_new_tokens"] == base.generation["max_new_tokens"]
    assert eight.generation["until"] == ["Q:", "</s>", "<|im_end|>"]      # overridden
    assert [f for f, _ in eight.filters] == ["strict", "flexible"]
    assert eight.filters[0][1][0]["format"] == "The answer is {answer}."
    assert eight.prompt_template == "raw" and base.prompt_template == "cot"


def test_eight_shot_context_uses_the_eight_standard_exemplars():
    task = load_task("gsm8k_cot_8shot")
    ctx = task.context(0, {"question": "How many?", "answer": "x\n#### 3"})
    assert ctx.count("Q: ") == 9 and ctx.count("The answer is") == 8
    assert ctx.startswith("Q: There are 15 trees in the grove.")
    assert ctx.endswith("The answer is 8.\n\nQ: How many?\nA:")


def test_unknown_task_suggests_close_names():
    with pytest.raises(TaskError, match="Did you mean arith_cot"):
        load_task("arith_cott")


def test_errors_name_file_line_key_and_accepted(tmp_path):
    path = write_task(tmp_path, "bad", """\
dataset: {generator: arithmetic_cot, split: test}
output_type: generate
doc_to_text: "{{question}}"
generation_kwargs:
  max_new_tokns: 5
filter_list:
  - name: s
    filter: [{function: regexp}]
metric_list: [acc]
""")
    with pytest.raises(TaskError) as err:
        load_task(str(path))
    msg = str(err.value)
    assert f"{path}:2: output_type: got 'generate'; accepted: generate_until" in msg
    assert f"{path}:5: unknown key 'generation_kwargs.max_new_tokns'; accepted: max_new_tokens" in msg
    assert "unknown filter function 'regexp'; accepted: answer_format" in msg
    assert "'acc' is not a metric" in msg
    assert isinstance(err.value, ValueError)


def test_task_name_must_match_file(tmp_path):
    path = write_task(tmp_path, "mine", "task: other\ndataset: {generator: arithmetic_cot}\n"
                                        "output_type: generate_until\ndoc_to_text: '{{question}}'\n")
    with pytest.raises(TaskError, match=r"mine.yaml:1: task: 'other' must match the file name 'mine'"):
        load_task(str(path))


def test_include_of_a_missing_file_and_cycles(tmp_path):
    write_task(tmp_path, "a", "include: b.yaml\n")
    write_task(tmp_path, "b", "include: a.yaml\n")
    with pytest.raises(TaskError, match="include cycle"):
        load_task(str(tmp_path / "a.yaml"))
    write_task(tmp_path, "c", "include: nope.yaml\n")
    with pytest.raises(TaskError, match="c.yaml:1: include: file .*nope.yaml does not exist"):
        load_task(str(tmp_path / "c.yaml"))


def test_template_error_names_key_and_doc_fields(tmp_path):
    task = load_task(str(arith_task(tmp_path)))
    task.spec["doc_to_target"] = "{{solution}}"
    with pytest.raises(TaskError, match=r"doc_to_target: .*'solution' is undefined.*\['answer', 'question'"):
        task.target({"question": "q", "answer": "1", "rationale": "r"})


def _local_gsm8k(folder, n=3):
    (folder / "gsm8k").mkdir(parents=True)
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(n)]
    (folder / "gsm8k" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_data_path_argument_and_env_var_override(tmp_path, monkeypatch):
    rows = _local_gsm8k(tmp_path / "mydata")
    monkeypatch.delenv(DATA_ENV, raising=False)
    task = load_task("gsm8k_cot_zeroshot", data_path=tmp_path / "mydata")
    assert [d for _, d in task.docs()] == rows and task.target(rows[2]) == "2"
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mydata"))
    assert [d for _, d in load_task("gsm8k_cot_zeroshot").docs(limit=2)] == rows[:2]


def test_missing_data_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr("finetune.eval.documents._load_hub", lambda ds, split: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(TaskError, match=r"gsm8k_cot_zeroshot.yaml: dataset: no data found; tried file .*"
                                        r"gsm8k/test.jsonl; hub dataset 'openai/gsm8k' \(OSError: offline\)"
                                        r".*FINETUNE_DATA_DIR"):
        load_task("gsm8k_cot_zeroshot").docs()


def test_sampled_fewshot_is_seeded_per_doc_and_never_shows_the_doc_itself(tmp_path):
    path = write_task(tmp_path, "fs", """\
dataset: {generator: arithmetic_cot, generator_args: {n: 6}, split: test}
output_type: generate_until
doc_to_text: "Q: {{question}}"
doc_to_target: "{{answer}}"
fewshot: {split: test, num: 5, seed: 7}
""")
    task = load_task(str(path))
    docs = task.docs()
    for doc_id, doc in docs:
        shots = task._shots(doc_id, doc)
        assert len(shots) == 5 and doc not in shots  # 6 docs, itself excluded: exactly the other 5
    again = load_task(str(path))
    assert [again.context(i, d) for i, d in docs] == [task.context(i, d) for i, d in docs]


def test_multiple_choice_target_must_be_an_index(tmp_path):
    path = write_task(tmp_path, "mc", """\
dataset: {generator: arithmetic_cot, split: test}
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{answer}}"
""")
    task = load_task(str(path))
    assert task.choices({"question": "q", "answer": "1"}) == ["yes", "no"]
    assert task.gold({"question": "q", "answer": "1"}) == 1
    with pytest.raises(TaskError, match="must render a choice index 0..1, got '7'"):
        task.gold({"question": "q", "answer": "7"})


@needs_data
def test_bbh_fewshot_prompt_skips_the_canary_and_keeps_three_exemplars():
    task = load_task("bbh_cot_date_understanding", data_path=SHARED_DATA)
    doc_id, doc = task.docs(limit=1)[0]
    ctx = task.context(doc_id, doc)
    assert "canary" not in ctx.lower() and "-----" not in ctx
    assert ctx.startswith("Infer the date from context.") and ctx.count("So the answer is") == 3
    assert ctx.endswith(f"Q: {doc['input']}\nA: Let's think step by step.")
