"""Reasoning traces with <think> in eval: think-aware extraction and failure buckets (issue #16 s2).

Hand-written model outputs, no model: `split_think`, the `strip_think` filter step, the
`truncated_think` bucket, and prompts that open the block themselves (DeepSeek-R1 templates).
Rendering, loss masks, preview and a run end to end are in test_think.py.
"""

import pytest

from finetune.answers import after_think, extract_answer, split_think
from finetune.eval.scoring import BUCKETS, apply_filter, bucket, failure_counts, score_generation
from finetune.eval.tasks import TaskError, load_task
from finetune.resources import resource_dir

# ── extraction on hand-written strings ────────────────────────────────────────────────────────

@pytest.mark.parametrize("text, state, reasoning, answer", [
    ("#### 5", "none", None, "#### 5"),                                        # no tags: the whole text
    ("<think>\n2+3=5\n</think>\n\n#### 5", "closed", "\n2+3=5\n", "#### 5"),
    ("<think>\n\n</think>\n\n#### 5", "closed", "\n\n", "#### 5"),             # empty block
    ("<think>\n2+3 is", "open", "\n2+3 is", None),                             # cut inside the reasoning
    ("steps</think>#### 5", "closed", "steps", "#### 5"),                      # the prompt opened the block
    ("<think>a<think>b</think>c</think>#### 5", "closed", "a<think>b</think>c", "#### 5"),   # nested
    ("<think>a</think>#### 4<think>b</think>#### 5", "closed", "a</think>#### 4<think>b", "#### 5"),  # repeated
    ("<think>a</think>#### 4<think>b", "open", "b", None),                     # reopened and never closed
    ("<think>a</think>", "closed", "a", ""),                                   # nothing after the block
])
def test_split_think(text, state, reasoning, answer):
    assert split_think(text) == (state, reasoning, answer)
    assert after_think(text) == answer


@pytest.mark.parametrize("text, strict, flexible", [
    ("<think>\n#### 3 is wrong\n</think>\n\n#### 5", "5", "5"),     # a "#### N" inside the reasoning does not count
    ("<think>\n2 + 3 = 5\n</think>\n\nThe answer is five.", None, None),  # the numbers were all in the reasoning
    ("<think>\nstill 2 + 3", None, None),                          # never closed: no answer
    ("#### 5", "5", "5"),                                          # no block: the whole text
    ("<think></think>#### 7", "7", "7"),
])
def test_think_aware_extraction(text, strict, flexible):
    assert extract_answer(text, think=True) == strict
    assert extract_answer(text, mode="flexible", think=True) == flexible
    assert apply_filter([{"function": "strip_think"}, {"function": "answer_format", "format": "#### {answer}"},
                         {"function": "take_first"}], [text]) == strict
    assert apply_filter([{"function": "strip_think"}, {"function": "last_number"}], [text]) == flexible


def test_without_strip_think_the_reasoning_is_scored():
    assert apply_filter([{"function": "answer_format", "format": "#### {answer}"}],
                        ["<think>\n#### 3\n</think>\n\n#### 5"]) == "3"


# ── buckets ───────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("responses, truncated, expected", [
    (["<think>\n2+3=5\n</think>\n\n#### 5"], [False], "correct"),
    (["<think>\n2+3=5\n</think>\n\n#### 5\nand on and on"], [True], "correct"),
    (["<think>\n2 + 3 = 5 and then 5 + 1"], [True], "truncated_think"),          # cut inside the reasoning
    (["<think>\n2+3=5\n</think>\n\nSo the total is"], [True], "truncated"),       # cut after it
    (["So the total is"], [True], "truncated"),                                   # no block at all
    (["<think>\n2+3=5"], [False], "no_answer"),                                   # stopped (EOS) inside it
    (["<think>\nx\n</think>\n\n#### 6"], [False], "wrong"),
    (["<think>\na", "<think>\nb"], [True, True], "truncated_think"),              # k samples: every one inside
    (["<think>\na", "<think>\nb</think>\n\nSo"], [True, True], "truncated"),
])
def test_bucket_of_a_think_output(responses, truncated, expected):
    task = load_task("arith_think")
    rec = score_generation(task, responses, truncated, "5")
    assert rec["by_filter"]["strict"]["bucket"] == expected
    assert failure_counts(task, [rec])["strict"][expected] == 1


R1_PROMPT = "<｜User｜>Q<｜Assistant｜><think>\n"  # DeepSeek-R1 templates open the block in the prompt


@pytest.mark.parametrize("response, truncated, expected, answer", [
    ("2 + 3 = 5 and then", True, "truncated_think", None),     # no tag: still inside the prompt's block
    ("2 + 3 = 5\n</think>\n\nSo the total", True, "truncated", None),
    ("2 + 3 = 5\n</think>\n\n#### 5", False, "correct", "5"),
    ("#### 5", False, "no_answer", None),                        # the block never closed: no answer
])
def test_a_prompt_that_opens_the_block(response, truncated, expected, answer):
    rec = score_generation(load_task("arith_think"), [response], [truncated], "5", prompt=R1_PROMPT)
    assert rec["by_filter"]["strict"]["bucket"] == expected and rec["by_filter"]["strict"]["extracted"] == answer
    plain = score_generation(load_task("arith_think"), [response], [truncated], "5", prompt="<｜User｜>Q")
    assert plain["by_filter"]["strict"]["bucket"] != "truncated_think", "a prompt without the block: text alone"


def test_buckets_list_truncated_think_apart_from_truncated():
    assert BUCKETS == ("correct", "truncated_think", "truncated", "no_answer", "wrong")
    assert bucket(False, True, None, in_think=True) == "truncated_think"
    assert bucket(False, True, None) == "truncated"
    assert bucket(True, True, "5", in_think=True) == "correct"


def test_strip_think_task_file_key(tmp_path):
    task = load_task("arith_think")
    assert [s["function"] for s in dict(task.filters)["strict"]] == ["strip_think", "answer_format", "take_first"]
    assert task.generation["max_new_tokens"] == 192
    bad = tmp_path / "bad_think.yaml"
    text = (resource_dir("eval") / "arith_cot.yaml").read_text()
    bad.write_text(text.replace("task: arith_cot", "task: bad_think").replace(
        "{function: last_number}", "{function: strip_think, tag: think}"))
    with pytest.raises(TaskError, match="strip_think: tag: 'think' is not accepted; accepted: no arguments"):
        load_task(str(bad))
