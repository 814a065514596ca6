"""Training questions and the rationales a model samples for them, written as they finish.

    qs = questions(recipe)                       # [{qid, question, answer, answer_format}]
    recs = sample(model, tok, template, qs, path, star=recipe.star, batch_size=20, seed=42)

Questions come from the recipe's datasets read exactly as training reads them
(`load_records`); only the question and the final answer line are used: a dataset's own
rationale column, if it has one, is never looked at. Prompts are rendered and tokenized with
the two calls eval uses (`render_prompt`, `encode_prompt`), then sampled in batches with the
eval harness's generator (`generate_batch`, temperature > 0: model.generate). Each question's
k samples are appended to `path` (JSON lines) as soon as its batch ends; rerunning after a
kill skips the questions already there (a line cut short by the kill is dropped).
"""

import json
import time
from pathlib import Path

from finetune.answers import extract_answer, format_answer
from finetune.data.records import load_records
from finetune.data.registry import resolve_spec
from finetune.data.tokenize import encode_prompt
from finetune.eval.generate import generate_batch, length_sorted_batches
from finetune.log import progress
from finetune.prompts import render_prompt
from finetune.star.select import is_correct


def questions(recipe) -> list[dict]:
    """Every training question with its target (eval's strict extraction of its answer line), in data order."""
    out = []
    for i, spec in enumerate(recipe.data.datasets):
        entry = resolve_spec(spec, i)
        records, _, _ = load_records(entry, recipe.data, recipe.train.seed)
        for r in records:
            if "answer_line" not in r:
                from finetune.star import StarError
                raise StarError(f"data.datasets[{i}] ({entry.name}): format {entry.format!r}; STaR needs "
                                "questions with final answers: format cot (rationale may be empty)")
            answer = extract_answer(r["answer_line"], entry.answer_format, "strict")
            out.append({"qid": len(out), "question": r["prompt"], "answer": answer,
                        "answer_format": entry.answer_format})
    limit = recipe.star.sample_limit
    return out[:limit] if limit else out


def prompt_text(q: dict, star, hinted: bool) -> str:
    """What the model is asked when sampling: the question, the sampling instruction, and (hinted) the answer."""
    parts = [q["question"]]
    if star.instruction:
        parts.append(star.instruction.replace("{format}", format_answer("N", q["answer_format"])))
    if hinted:
        parts.append(star.hint.replace("{answer}", str(q["answer"])))
    return "\n\n".join(parts)


def read_samples(path: Path) -> dict:
    """{qid: record} of a samples file; a line cut short by a kill is skipped."""
    out = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "qid" in rec:
            out[rec["qid"]] = rec
    return out


def _clean_tail(path: Path) -> None:
    """Drop a last line left without its newline by a kill, so appends start on a fresh line."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")


def sample(model, tokenizer, template, qs: list[dict], path: Path, *, star, batch_size: int, seed: int,
           hinted: bool = False) -> dict:
    """k samples per question appended to `path`; returns {qid: record} for every question in qs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_tail(path)
    done = read_samples(path)
    todo = [q for q in qs if q["qid"] not in done]
    items = []
    for q in todo:
        prompt = render_prompt(template, tokenizer, prompt_text(q, star, hinted))
        items.append((q, encode_prompt(tokenizer, prompt)))
    per_batch = max(1, batch_size // star.k)  # batch_size rows: prompts x k samples each
    t0, n = time.time(), 0
    with open(path, "a", encoding="utf-8") as f:
        for batch in length_sorted_batches(items, [len(ids) for _, ids in items], per_batch):
            outs = generate_batch(model, tokenizer, [ids for _, ids in batch], max_new_tokens=star.max_new_tokens,
                                  until=[], temperature=star.temperature, top_p=star.top_p,
                                  num_return_sequences=star.k, seed=seed * 1_000_003 + batch[0][0]["qid"])
            for (q, _), gens in zip(batch, outs):
                rec = {"qid": q["qid"], "hinted": hinted, "target": q["answer"],
                       "samples": [{"text": g.text, "correct": is_correct(g.text, q["answer"], q["answer_format"]),
                                    "truncated": g.truncated, "tokens": g.n_tokens} for g in gens]}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                done[q["qid"]] = rec
            f.flush()
            n += len(batch)
            progress(f"[star] sampling{' (hinted)' if hinted else ''}: {n}/{len(todo)} questions "
                     f"({n * star.k / max(1e-9, time.time() - t0):.3g} samples/s)")
    return {q["qid"]: done[q["qid"]] for q in qs}
