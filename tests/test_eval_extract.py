"""Answer extraction, filter pipelines and per-sample metrics on hand-written strings."""

import math

import pytest

from finetune.answers import extract_answer, extract_last_number, extract_strict, format_answer, normalize_number
from finetune.eval.scoring import aggregate, apply_filter, bucket, exact_match, score_choices


@pytest.mark.parametrize("text, expected", [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("#### 1,234", "1234"),
    ("Total: #### $56.00", "56"),
    ("#### -7", "-7"),
    ("#### 5.\nThen some rambling 99", "5"),        # the first declared line wins, not the last number
    ("The total is 12 apples.", None),              # no "#### N" line: strict finds nothing
    ("#### twelve", "twelve"),                     # a non-number answer is kept (and will not match 12)
])
def test_strict_gsm8k_format(text, expected):
    assert extract_strict(text) == expected
    assert extract_answer(text, mode="strict") == expected


@pytest.mark.parametrize("text, fmt, expected", [
    ("Leah had 32. 32 + 42 = 74. The answer is 74.", "The answer is {answer}.", "74"),
    ("The answer is 74", "The answer is {answer}.", "74"),        # the full stop is optional
    ("So the answer is (B).", "So the answer is {answer}.", "(b)"),
    ("So the answer is True.", "So the answer is {answer}.", "true"),
    ("I think it is 74.", "The answer is {answer}.", None),
])
def test_strict_other_formats(text, fmt, expected):
    assert extract_strict(text, fmt) == expected


@pytest.mark.parametrize("text, expected", [
    ("3 apples and then 4.5 more", "4.5"),
    ("It costs $1,200.", "1200"),
    ("first 10, then -3", "-3"),
    ("no digits here.", None),
    ("... = 18\n#### 18", "18"),
])
def test_flexible_last_number(text, expected):
    assert extract_last_number(text) == expected
    assert extract_answer(text, mode="flexible") == expected


def test_unknown_mode_names_the_accepted_ones():
    with pytest.raises(ValueError, match="'strict', 'flexible'"):
        extract_answer("#### 1", mode="loose")


def test_format_and_extract_round_trip():
    line = format_answer("42", "#### {answer}")
    assert line == "#### 42" and extract_strict("work\n" + line) == "42"


def test_normalize_number():
    assert normalize_number(" 1,234.0 ") == "1234"
    assert normalize_number("$5") == "5"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("(B)") == "(b)"


def test_exact_match_is_number_aware_and_none_never_matches():
    assert exact_match("1,234", "1234") and exact_match("$18.00", "18")
    assert not exact_match("17", "18")
    assert not exact_match(None, "18")


def test_regex_filter_follows_lm_eval_semantics():
    pattern = "(-?[$0-9.,]{2,})|(-?[0-9]+)"  # lm-eval's gsm8k flexible-extract
    steps = [{"function": "regex", "pattern": pattern, "group_select": -1}, {"function": "take_first"}]
    assert apply_filter(steps, ["I had 5 then 12 so $3.50"]) == "$3.50"
    assert apply_filter(steps, ["nothing"]) is None
    first = [{"function": "regex", "pattern": r"#### (\-?[0-9\.\,]+)"}]
    assert apply_filter(first, ["#### 7 and #### 8"]) == "7"


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    steps = [{"function": "last_number"}, {"function": "majority_vote"}]
    assert apply_filter(steps, ["so 4", "no idea", "it is 5", "5 it is? 5", "4"]) == "4"  # 4 seen first, 2 votes each
    assert apply_filter(steps, ["so 4", "7", "7"]) == "7"
    assert apply_filter(steps, ["none", "nothing"]) is None


def test_take_first_k_limits_the_vote():
    steps = [{"function": "take_first_k", "k": 2}, {"function": "last_number"}, {"function": "majority_vote"}]
    assert apply_filter(steps, ["1", "2", "3", "3", "3"]) == "1"


def test_failure_buckets():
    assert bucket(True, True, "5") == "correct"  # a correct answer is correct even if the output ran on
    assert bucket(False, True, None) == "truncated"
    assert bucket(False, False, None) == "no_answer"
    assert bucket(False, False, "6") == "wrong"


def test_choice_scores_and_length_normalisation():
    # choice 1 has the higher total log-likelihood, choice 0 the higher per-character one
    res = score_choices([-3.0, -2.0], ["abcdefgh", "ab"], gold=0)
    assert res["pred"] == 1 and res["pred_norm"] == 0
    assert res["scores"] == {"acc": 0.0, "acc_norm": 1.0, "acc_centered": -1.0}


def test_perplexity_is_a_ratio_of_sums_not_a_mean_of_ratios():
    recs = [{"nll": 2.0, "n_tokens": 1, "n_bytes": 4}, {"nll": 6.0, "n_tokens": 3, "n_bytes": 12}]
    assert aggregate("perplexity", recs) == pytest.approx(math.exp(8 / 4))
    assert aggregate("bits_per_byte", recs) == pytest.approx(8 / math.log(2) / 16)
    assert aggregate("exact_match:strict", [{"scores": {"exact_match:strict": v}} for v in (1, 0, 0, 1)]) == 0.5
