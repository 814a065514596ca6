"""Label audit: token counts of tokenized data, and the checks that stop a run before step 1.

    stats = audit(bundle, tokenizer, max_length=512)   # raises DataError on a broken mask

Counts are of real tokens only (the data holds no padding; TRL pads or packs later), after
truncation to max_length where it says "kept". A token is *trained* when its label is not
-100 and it is not the first token of its example (nothing predicts the first token, and
TRL's padding-free collator masks it too), so `trained_tokens` is what the loss averages over.
"""

from finetune.data.errors import DataError
from finetune.data.tokenize import IGNORE, end_token_ids

MAX_CUT_ANSWERS = 0.10


def token_stats(rows, max_length: int, end_ids: set[int]) -> dict:
    """rows: iterable of (input_ids, labels, answer_end) with answer_end -1 when not CoT."""
    s = dict(examples=0, tokens=0, tokens_kept=0, trained_tokens=0, truncated_examples=0,
             examples_without_trained=0, examples_with_end_trained=0, cot_examples=0, cot_answers_cut=0)
    lengths = []
    for ids, labels, answer_end in rows:
        n = len(ids)
        lengths.append(n)
        s["examples"] += 1
        s["tokens"] += n
        s["tokens_kept"] += min(n, max_length)
        s["truncated_examples"] += n > max_length
        trained = [t for t in labels[1:max_length] if t != IGNORE]
        s["trained_tokens"] += len(trained)
        s["examples_without_trained"] += not trained
        s["examples_with_end_trained"] += any(t in end_ids for t in trained)
        if answer_end >= 0:
            s["cot_examples"] += 1
            s["cot_answers_cut"] += answer_end > max_length
    s["trained_fraction"] = s["trained_tokens"] / s["tokens_kept"] if s["tokens_kept"] else 0.0
    lengths.sort()
    s["max_tokens"] = lengths[-1] if lengths else 0
    s["p95_tokens"] = lengths[int(0.95 * (len(lengths) - 1))] if lengths else 0
    s["max_length"] = max_length
    return s


def rows_of(ds, answer_end: list[int] | None = None):
    """(input_ids, labels, answer_end) per row, read in batches; answer_end from the list, the column, or -1."""
    has_column = answer_end is None and "answer_end" in ds.column_names
    i = 0
    for batch in ds.select_columns(["input_ids", "labels"] + (["answer_end"] if has_column else [])).iter(1000):
        n = len(batch["input_ids"])
        ends = batch["answer_end"] if has_column else answer_end[i:i + n] if answer_end else [-1] * n
        yield from zip(batch["input_ids"], batch["labels"], ends)
        i += n


def stats_of(data, tokenizer, max_length: int, template=None) -> dict:
    """token_stats of a DataBundle's train split, or of a Dataset with input_ids and labels."""
    ds = getattr(data, "train", data)
    template = template or getattr(data, "template", None)
    end_ids = end_token_ids(template, tokenizer) if template is not None else {tokenizer.eos_token_id}
    return token_stats(rows_of(ds, getattr(data, "answer_end", None)), max_length, end_ids)


def problems_of(stats: dict, tokenizer, max_cut_answers: float = MAX_CUT_ANSWERS) -> list[str]:
    """What would make training pointless or silently wrong, each with a fix."""
    out, n = [], stats["max_length"]
    if stats["examples"] == 0:
        return ["no examples: every dataset came out empty"]
    if stats["trained_tokens"] == 0:
        out.append(f"no token is trained: every label is -100 within max_length {n}; check data.train_on_prompt, "
                   "the template, and that prompts are shorter than max_length")
    elif stats["examples_with_end_trained"] == 0:
        out.append(f"the end-of-sequence token ({tokenizer.eos_token}) is never trained, so the model will not "
                   f"learn to stop; completions must end with it (and fit in max_length {n})")
    cot, cut = stats["cot_examples"], stats["cot_answers_cut"]
    if cot and cut / cot > max_cut_answers:
        out.append(f"{cut} of {cot} CoT answers ({cut / cot:.0%}) are cut off by max_length {n} (limit "
                   f"{max_cut_answers:.0%}): the model would learn rationales without answers; raise "
                   f"data.max_length (95% of examples fit in {stats['p95_tokens']} tokens, the longest is "
                   f"{stats['max_tokens']}) or set data.limit / filter long rows")
    return out


def audit(data, tokenizer, max_length: int, *, template=None, max_cut_answers: float = MAX_CUT_ANSWERS) -> dict:
    """Token stats of `data` (DataBundle or Dataset); raises one DataError listing every problem."""
    stats = stats_of(data, tokenizer, max_length, template)
    problems = problems_of(stats, tokenizer, max_cut_answers)
    if problems:
        raise DataError("training data failed the label audit:\n" + "\n".join(f"  - {p}" for p in problems))
    return stats


def format_stats(s: dict) -> str:
    """The totals block `finetune preview` prints."""
    lines = [f"examples            {s['examples']:,}",
             f"tokens              {s['tokens']:,} ({s['tokens_kept']:,} within max_length {s['max_length']}; "
             f"longest {s['max_tokens']:,}, 95% <= {s['p95_tokens']:,})",
             f"trained tokens      {s['trained_tokens']:,} ({s['trained_fraction']:.1%} of kept tokens)",
             f"truncated examples  {s['truncated_examples']:,} (longer than max_length {s['max_length']})",
             f"end token trained   {s['examples_with_end_trained']:,} of {s['examples']:,} examples"]
    if s["cot_examples"]:
        lines.append(f"CoT answers cut off {s['cot_answers_cut']:,} of {s['cot_examples']:,} by max_length")
    return "\n".join(lines)
