"""IFEval scoring (finetune/eval/ifeval.py): hand-written responses against single instructions, the
project's own subset agreeing with lm-eval's checkers, and scored records agreeing with lm-eval's own
`process_results` on real IFEval prompts. lm-eval parts skip without lm-eval; data parts without shared data."""

import json

import pytest
from _eval_helpers import SHARED_DATA

from finetune.eval import ifeval
from finetune.eval.scoring import aggregate, score_generation
from finetune.eval.tasks import load_task

IFEVAL_FILE = SHARED_DATA / "ifeval" / "input_data.jsonl"

CASES = [  # (instruction id, kwargs, response, followed strictly)
    ("punctuation:no_comma", {}, "No commas here at all.", True),
    ("punctuation:no_comma", {}, "One, two.", False),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "Just four words here.", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "Just four words here.", False),
    ("keywords:existence", {"keywords": ["apple", "pear"]}, "An Apple and a pear.", True),
    ("keywords:existence", {"keywords": ["apple", "pear"]}, "An apple only.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "Concatenate dogs.", True),  # \b: not inside words
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A Cat sat.", False),
    ("keywords:frequency", {"keyword": "yes", "relation": "at least", "frequency": 2}, "yes YES no", True),
    ("keywords:frequency", {"keyword": "yes", "relation": "less than", "frequency": 2}, "yes YES no", False),
    ("keywords:letter_frequency", {"letter": "z", "let_relation": "at least", "let_frequency": 2}, "Zoo zebra", True),
    ("keywords:letter_frequency", {"letter": "z", "let_relation": "less than", "let_frequency": 2}, "Zoo zebra", False),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', True),
    ("startend:quotation", {}, '"Only an opening quote.', False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, 'Done. any other questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("detectable_format:title", {}, "<<A Title>>\nBody.", True),
    ("detectable_format:title", {}, "<< >>\nNo title.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** **", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n- b\ntext", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n- b\n* c", False),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True),
    ("detectable_format:json_format", {}, "{a: 1}", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\np.s. see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. see you", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name].", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Hi! Say hi.", False),
]

lm_eval = pytest.mark.skipif(ifeval.official() is None, reason="lm-eval with its ifeval extras is not installed")
shared = pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason="no shared data (../shared/data/ifeval)")


def _doc(iid, kwargs, prompt="p"):
    return {"prompt": prompt, "instruction_id_list": [iid], "kwargs": [kwargs]}


@pytest.fixture
def own_only(monkeypatch):
    monkeypatch.setattr(ifeval, "official", lambda: None)


def test_every_own_checker_has_cases():
    assert {c[0] for c in CASES} == set(ifeval.OWN_CHECKERS)


@pytest.mark.parametrize("iid,kwargs,response,expected", CASES)
def test_own_checkers_on_hand_written_responses(own_only, iid, kwargs, response, expected):
    assert ifeval.follow(_doc(iid, kwargs), response)["strict"] == [expected]


def test_without_lm_eval_other_instructions_are_not_checked(own_only):
    doc = {"prompt": "p", "instruction_id_list": ["language:response_language", "punctuation:no_comma"],
           "kwargs": [{"language": "en"}, {}]}
    res = ifeval.follow(doc, "Hello there.")
    assert res["strict"] == [None, True] and res["checker"] == "finetune subset (15 instruction types)"
    _, terms, _ = ifeval.score_response(json.dumps(doc), "Hello there.", "raw")
    assert terms["inst_level_strict_acc:raw"] == [1.0, 1.0]  # the checked one, followed
    assert terms["prompt_level_strict_acc:raw"] == [0.0, 0.0]  # not every instruction checked: left out


def test_loose_accepts_a_response_without_its_first_line(own_only):
    doc = _doc("startend:quotation", {})
    response = 'Sure! Here it is:\n"All of it quoted."'
    res = ifeval.follow(doc, response)
    assert res["strict"] == [False] and res["loose"] == [True]


def test_empty_response_follows_nothing(own_only):
    assert ifeval.follow(_doc("punctuation:no_comma", {}), "   ")["strict"] == [False]


@lm_eval
@pytest.mark.parametrize("iid,kwargs,response,expected", CASES)
def test_own_checkers_agree_with_lm_eval(iid, kwargs, response, expected):
    assert ifeval.follow(_doc(iid, kwargs), response)["strict"] == [expected]  # lm-eval's checker, installed


def _lm_eval_process_results(doc, response):
    """lm-eval's scores, or None where they depend on its unseeded random draw (a rejected argument)."""
    import random

    from lm_eval.tasks.ifeval.utils import process_results

    runs = []
    for seed in (0, 1, 2):
        random.seed(seed)
        runs.append(process_results(doc, [response]))
    return runs[0] if all(r == runs[0] for r in runs) else None


RESPONSES = ['"Yes. This answer has no commas and ends in a quote."',
             "*Summary*\n\n**Section 2** the quick brown fox\n\nP.S. a postscript [here]",
             "Sure, here you go:\n<<Title>>\n* one\n* two\n* three\nAny other questions?"]


@lm_eval
@shared
def test_scored_records_agree_with_lm_eval_process_results():
    """The first 30 IFEval prompts x 3 hand-written responses: our records' scores equal lm-eval's own."""
    task = load_task("ifeval", data_path=str(SHARED_DATA))
    compared = 0
    for _, doc in task.docs(limit=30):
        for response in RESPONSES:
            try:
                ref = _lm_eval_process_results(doc, response)
            except LookupError:  # nltk's punkt data is not installed here: lm-eval cannot check this prompt
                continue
            if ref is None:
                continue
            rec = score_generation(task, [response], [False], task.target(doc))
            assert rec["scores"]["prompt_level_strict_acc:raw"] == float(ref["prompt_level_strict_acc"])
            assert rec["scores"]["prompt_level_loose_acc:raw"] == float(ref["prompt_level_loose_acc"])
            assert rec["terms"]["inst_level_strict_acc:raw"] == [sum(ref["inst_level_strict_acc"]),
                                                                 len(ref["inst_level_strict_acc"])]
            assert rec["by_filter"]["raw"]["ifeval"]["loose"] == ref["inst_level_loose_acc"]
            compared += 1
    assert compared >= 45


def test_task_file_and_pooled_instruction_accuracy(own_only):
    """eval/ifeval.yaml loads without data; instruction-level accuracy pools instructions (lm-eval's rule)."""
    task = load_task("ifeval")
    assert task.metric_keys() == [f"{m}:raw" for m in ifeval.METRICS]
    docs = [{"prompt": "p", "instruction_id_list": ["punctuation:no_comma"] * 3, "kwargs": [{}] * 3},
            {"prompt": "q", "instruction_id_list": ["startend:quotation"], "kwargs": [{}]}]
    recs = [score_generation(task, [r], [False], task.target(d)) for d, r in zip(docs, ["no commas", "not quoted"])]
    assert aggregate("inst_level_strict_acc:raw", recs) == 3 / 4  # a per-prompt mean would say (1 + 0) / 2
    assert aggregate("prompt_level_strict_acc:raw", recs) == 1 / 2
    assert [r["by_filter"]["raw"]["bucket"] for r in recs] == ["correct", "wrong"]
    assert recs[0]["correct"] is True and recs[1]["correct"] is False
