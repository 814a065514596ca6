"""Which sampled rationales a STaR round keeps (pure, no torch).

    kept, yields = select(questions, [samples, rationalized], max_per_question=1)

A sample is correct when its answer, extracted exactly as eval's strict filter extracts it
(`finetune.answers.extract_answer`, mode strict, the question's answer_format), equals the
target under eval's own comparison (`finetune.eval.scoring.exact_match`). A kept sample becomes
a training row {question, rationale, answer}: the text before its answer line, and the target.
Samples whose rationale is empty or holds a second answer line are not kept (the training
text would not be the text eval scored); duplicates (same rationale up to whitespace) count
once; at most `max_per_question` rows per question, unhinted samples first.
"""

import re

from finetune.answers import extract_answer, last_answer_line
from finetune.eval.scoring import exact_match


def is_correct(text: str, target: str, answer_format: str) -> bool:
    """Eval's strict verdict on one generated text."""
    return exact_match(extract_answer(text, answer_format, "strict"), target)


def rationale_of(text: str, answer_format: str) -> str | None:
    """The text before the single answer line of a correct sample; None when it cannot be trained on as is."""
    found = last_answer_line(text, answer_format)
    if found is None:
        return None
    rationale = text[: found[0]].strip()
    if not rationale or extract_answer(rationale, answer_format, "strict") is not None:
        return None
    return rationale


def _key(rationale: str) -> str:
    return re.sub(r"\s+", " ", rationale).strip().lower()


def select(questions: list[dict], sample_sets: list[dict], max_per_question: int) -> tuple[list[dict], dict]:
    """(training rows, per-question yield) from sample sets, each {qid: record} (samples.jsonl, rationalized.jsonl).

    Yield per question: sampled (unhinted samples), correct (among them), hinted / hinted_correct
    (rationalisation), kept (training rows after dedup and cap)."""
    rows, yields = [], {}
    for q in questions:
        qid, fmt = q["qid"], q["answer_format"]
        y = {"sampled": 0, "correct": 0, "hinted": 0, "hinted_correct": 0, "kept": 0}
        seen = set()
        for records in sample_sets:
            rec = records.get(qid)
            if rec is None:
                continue
            hinted = bool(rec.get("hinted"))
            y["hinted" if hinted else "sampled"] += len(rec["samples"])
            for s in rec["samples"]:
                if not s["correct"]:
                    continue
                y["hinted_correct" if hinted else "correct"] += 1
                rationale = rationale_of(s["text"], fmt)
                if rationale is None or _key(rationale) in seen or y["kept"] >= max_per_question:
                    continue
                seen.add(_key(rationale))
                y["kept"] += 1
                rows.append({"qid": qid, "question": q["question"], "rationale": rationale, "answer": q["answer"],
                             "hinted": hinted})
        yields[str(qid)] = y
    return rows, yields


def totals(yields: dict) -> dict:
    """Sums over questions, and the yields: kept / sampled and the fraction of questions with a kept row."""
    keys = ("sampled", "correct", "hinted", "hinted_correct", "kept")
    out = {k: sum(y[k] for y in yields.values()) for k in keys}
    out["questions"] = len(yields)
    out["solved_questions"] = sum(1 for y in yields.values() if y["kept"])
    out["yield"] = round(out["kept"] / out["sampled"], 4) if out["sampled"] else 0.0
    out["correct_rate"] = round(out["correct"] / out["sampled"], 4) if out["sampled"] else 0.0
    out["question_yield"] = round(out["solved_questions"] / len(yields), 4) if yields else 0.0
    return out
