"""Filter pipelines, per-sample metrics and their aggregation (pure Python, no torch).

A filter pipeline turns a doc's responses (one, or k for self-consistency) into one answer:
extraction steps map every response (`strip_think`, `answer_format`, `last_number`, `regex`), reducing
steps pick among them (`take_first`, `take_first_k`, `majority_vote`). Extraction uses the
project's one answer-extraction module (finetune/answers.py). `strip_think` first makes a
pipeline think-aware: it keeps the text after `</think>` (None when the block never closed).

Every metric is a ratio of sums over samples, so a score and its bootstrap resamples are
computed the same way: mean metrics are (value, 1) per sample; perplexity is
exp(sum nll / sum tokens); bits per byte is sum nll / (ln 2 * sum bytes).
"""

import math
import re
from collections import Counter
from functools import lru_cache

from finetune.answers import (after_think, extract_last_number, extract_strict, normalize_number, opens_think,
                              split_think)
from finetune.eval import ifeval
from finetune.eval.ifeval import METRICS as IFEVAL_METRICS
from finetune.eval.taskfile import TaskError

# truncated_think: ran out of tokens inside an open <think> block; truncated: ran out after it (or with no block)
BUCKETS = ("correct", "truncated_think", "truncated", "no_answer", "wrong")


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise TaskError(f"filter regex: pattern {pattern!r} is not a valid regular expression: {e}") from None


def _regex(text: str, pattern: str, group_select: int = 0) -> str | None:
    """lm-eval's regex filter: the `group_select`-th match (-1: last); a match with groups gives its first non-empty."""
    matches = _compiled(pattern).findall(text)
    if not matches:
        return None
    try:
        m = matches[group_select]
    except IndexError:
        return None
    if isinstance(m, tuple):
        m = next((g for g in m if g), "")
    return m.strip()


def _map(fn, xs):
    return [fn(x) if x is not None else None for x in xs]


def apply_filter(steps: list[dict], responses: list[str], opened: bool = False) -> str | None:
    """Run one pipeline over a doc's responses; the answer is the first value left (None: no answer).

    opened: the prompt opened a think block (strip_think then needs a `</think>` even without a `<think>`)."""
    xs: list = list(responses)
    for step in steps:
        fn = step["function"]
        if fn == "strip_think":
            xs = _map(lambda t: after_think(t, opened), xs)
        elif fn == "answer_format":
            xs = _map(lambda t: extract_strict(t, step["format"]), xs)
        elif fn == "last_number":
            xs = _map(extract_last_number, xs)
        elif fn == "regex":
            xs = _map(lambda t: _regex(t, step["pattern"], step.get("group_select", 0)), xs)
        elif fn == "take_first":
            xs = xs[:1]
        elif fn == "take_first_k":
            xs = xs[:step["k"]]
        elif fn == "majority_vote":  # ties go to the answer seen first
            votes = Counter(x for x in xs if x is not None)
            xs = [votes.most_common(1)[0][0]] if votes else [None]
        else:  # validated when the task is loaded
            raise ValueError(f"unknown filter function {fn!r}")
    return xs[0] if xs else None


def exact_match(pred: str | None, target: str) -> bool:
    """Number-aware match: '1,234', '$1234' and '1234.0' all equal '1234'; text is compared stripped, lower-case."""
    return pred is not None and target is not None and normalize_number(pred) == normalize_number(target)


def bucket(correct: bool, truncated: bool, pred: str | None, in_think: bool = False) -> str:
    """Why a CoT sample failed: truncated (ran out of max_new_tokens) comes first, then no answer, then wrong.

    A truncated output is truncated_think when it stopped inside its `<think>` block (before `</think>`)."""
    if correct:
        return "correct"
    if truncated:
        return "truncated_think" if in_think else "truncated"
    return "no_answer" if pred is None else "wrong"


def cut_in_think(responses: list[str], truncated: list[bool], opened: bool = False) -> bool:
    """Every sample ran out of tokens, and each inside an open `<think>` block (its own, or the prompt's)."""
    return bool(responses) and all(t and split_think(r, opened)[0] == "open" for r, t in zip(responses, truncated))


def score_generation(task, responses: list[str], truncated: list[bool], target: str, prompt: str = "") -> dict:
    """The scored part of a generation record: per filter its answer, correctness and failure bucket.

    prompt: the rendered prompt; one that ends inside a think block puts every response in the reasoning."""
    all_truncated = all(truncated)  # with k samples, the doc counts as truncated only if every sample was
    opened = opens_think(prompt)
    in_think = cut_in_think(responses, truncated, opened)
    by_filter, scores, terms = {}, {}, {}
    ifeval_task = any(m in IFEVAL_METRICS for m in getattr(task, "metrics", ()))  # a task needs only .filters
    for name, steps in task.filters:
        pred = apply_filter(steps, responses, opened)
        if ifeval_task:  # "correct": the first listed metric (prompt_level_strict_acc in eval/ifeval.yaml)
            s, t, detail = ifeval.score_response(target, pred, name)
            scores.update({k: v for k, v in s.items() if k.split(":")[0] in task.metrics})
            terms.update({k: v for k, v in t.items() if k in scores})
            ok = scores[f"{task.metrics[0]}:{name}"] == 1
            by_filter[name] = {"extracted": pred, "correct": ok,
                               "bucket": bucket(ok, all_truncated, pred or None, in_think),
                               "ifeval": detail}
            continue
        ok = exact_match(pred, target)
        by_filter[name] = {"extracted": pred, "correct": ok, "bucket": bucket(ok, all_truncated, pred, in_think)}
        scores[f"exact_match:{name}"] = float(ok)
    primary = by_filter[task.filters[0][0]]
    return {"extracted": primary["extracted"], "correct": primary["correct"], "truncated": all_truncated,
            "by_filter": by_filter, "scores": scores, **({"terms": terms} if terms else {})}


def score_choices(logliks: list[float], choices: list[str], gold: int) -> dict:
    """acc: the most likely choice is gold; acc_norm: the same per character of the choice (lm-eval's rule)."""
    pred = max(range(len(logliks)), key=lambda i: logliks[i])
    pred_norm = max(range(len(logliks)), key=lambda i: logliks[i] / max(1, len(choices[i])))
    k = len(choices)
    acc = float(pred == gold)
    centered = (acc - 1 / k) / (1 - 1 / k) if k > 1 else 0.0
    return {"pred": pred, "pred_norm": pred_norm, "correct": pred == gold,
            "scores": {"acc": acc, "acc_norm": float(pred_norm == gold), "acc_centered": centered}}


def sample_terms(key: str, record: dict) -> tuple[float, float]:
    """(numerator, denominator) of one sample for metric `key`; the score is finalize(sum num / sum den)."""
    metric = key.split(":")[0]
    if key in record.get("terms", {}):  # a ratio per sample, e.g. IFEval's (instructions followed, checked)
        n, d = record["terms"][key]
        return n, d
    if metric == "perplexity":
        return record["nll"], record["n_tokens"]
    if metric == "bits_per_byte":
        return record["nll"] / math.log(2), record["n_bytes"]
    return record["scores"][key], 1.0


def finalize(key: str, ratio: float) -> float:
    if key.split(":")[0] != "perplexity":
        return ratio
    try:
        return math.exp(ratio)
    except OverflowError:  # a mean nll above ~709 nats
        return float("inf")


def aggregate(key: str, records: list[dict]) -> float:
    terms = [sample_terms(key, r) for r in records]
    den = sum(d for _, d in terms)
    return finalize(key, sum(n for n, _ in terms) / den) if den else float("nan")


def failure_counts(task, records: list[dict]) -> dict[str, dict[str, int]]:
    """{filter: {bucket: count}} for generation tasks; {} otherwise."""
    if task.output_type != "generate_until":
        return {}
    out = {}
    for name, _ in task.filters:
        counts = Counter(r["by_filter"][name]["bucket"] for r in records)
        out[name] = {b: counts.get(b, 0) for b in BUCKETS}
    return out
