"""One runner per output type: render prompts, run the model in batches, write scored records.

Every prompt is `render_prompt(template, tokenizer, task.context(...))` tokenized with
`encode_prompt`, the same two calls training uses, so the model is scored on exactly the
text it was trained to answer. Records are written as soon as their batch finishes.
"""

import math
import time

from finetune.log import progress
from finetune.data.tokenize import encode_prompt
from finetune.eval.generate import generate_batch, length_sorted_batches
from finetune.eval.meter import DecodeMeter
from finetune.eval.loglik import max_length, score_requests, split_long
from finetune.eval.scoring import score_choices, score_generation
from finetune.eval.taskfile import TaskError
from finetune.prompts import render_completion, render_prompt

DOCS_PER_CHUNK = 64  # log-likelihood docs scored (and written) together


class Progress:
    def __init__(self, name: str, total: int):
        self.name, self.total, self.done, self.t0 = name, total, 0, time.time()

    def step(self, n: int):
        self.done += n
        rate = self.done / max(1e-9, time.time() - self.t0)
        progress(f"[eval] {self.name}: {self.done}/{self.total} ({rate:.3g} ex/s)")


def generation_prompts(model, tokenizer, task, template, todo, max_new_tokens: int) -> list[tuple]:
    """(doc_id, doc, prompt, ids, cut) per document: rendered, encoded, left-truncated to the window less
    max_new_tokens (cut: it was)."""
    budget = max_length(model, tokenizer) - max_new_tokens
    if budget < 1:
        raise TaskError(f"task {task.name}: max_new_tokens {max_new_tokens} leaves no room for the prompt "
                        f"in the model's {max_length(model, tokenizer)}-token window")
    items = []
    for doc_id, doc in todo:
        prompt = render_prompt(template, tokenizer, task.context(doc_id, doc))
        ids = encode_prompt(tokenizer, prompt)
        items.append((doc_id, doc, prompt, ids[-budget:], len(ids) > budget))
    return items


def run_generation(model, tokenizer, task, template, todo, write, *, batch_size: int, seed: int,
                   decoder: str = "continuous"):
    gen, k = task.generation, task.repeats
    items = generation_prompts(model, tokenizer, task, template, todo, gen["max_new_tokens"])
    progress = Progress(task.name, len(items))
    meter = DecodeMeter(model)

    def finished(batch):
        def on_done(i, gens):
            doc_id, doc, prompt, ids, cut = batch[i]
            target = task.target(doc)
            rec = {"doc_id": doc_id, "prompt": prompt, "target": target, "output": gens[0].text,
                   **score_generation(task, [g.text for g in gens], [g.truncated for g in gens], target, prompt),
                   "prompt_tokens": len(ids), "output_tokens": [g.n_tokens for g in gens]}
            if k > 1:
                rec["outputs"] = [g.text for g in gens]
            if cut:
                rec["prompt_truncated"] = True  # left-truncated to fit the window with max_new_tokens
            write(rec)
            meter.add(sum(g.n_tokens for g in gens))
            progress.step(1)
        return on_done

    kw = dict(max_new_tokens=gen["max_new_tokens"], until=list(gen["until"]), decoder=decoder)
    if k == 1 and float(gen["temperature"]) <= 0:  # greedy: one queue, each record written as it finishes
        generate_batch(model, tokenizer, [it[3] for it in items], slots=batch_size, on_done=finished(items), **kw)
    else:  # sampling: one seeded batch at a time, so a batch's samples do not depend on the others
        for batch in length_sorted_batches(items, [len(it[3]) for it in items], max(1, batch_size // k)):
            generate_batch(model, tokenizer, [it[3] for it in batch], temperature=float(gen["temperature"]),
                           top_p=float(gen["top_p"]), num_return_sequences=k, seed=seed * 1_000_003 + batch[0][0],
                           on_done=finished(batch), **kw)
    return meter.summary()


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing context whitespace moves into the continuation; the pair is tokenized whole."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = encode_prompt(tokenizer, context + continuation)
    ctx = encode_prompt(tokenizer, context)
    return ctx, whole[len(ctx):]


def run_multiple_choice(model, tokenizer, task, template, todo, write, *, batch_size: int, seed: int, **_):
    progress = Progress(task.name, len(todo))
    for s in range(0, len(todo), DOCS_PER_CHUNK):
        chunk, requests, spans = todo[s:s + DOCS_PER_CHUNK], [], []
        for doc_id, doc in chunk:
            context = render_prompt(template, tokenizer, task.context(doc_id, doc))
            choices = task.choices(doc)
            spans.append((doc_id, doc, context, choices, len(requests)))
            requests += [encode_pair(tokenizer, context, task.target_delimiter + c) for c in choices]
        scored = score_requests(model, tokenizer, requests, batch_size=batch_size)
        for doc_id, doc, context, choices, start in spans:
            logliks = [lp for lp, _ in scored[start:start + len(choices)]]
            gold = task.gold(doc)
            res = score_choices(logliks, choices, gold)
            write({"doc_id": doc_id, "prompt": context, "choices": choices, "target": gold,
                   "output": choices[res["pred"]], "extracted": str(res["pred"]), "logliks": logliks, **res})
        progress.step(len(chunk))


def _rolling_pair(task, template, tokenizer, doc_id, doc) -> tuple[str, list[int], list[int]]:
    """(context text, context ids, scored ids): the target as a completion of the prompt, or alone."""
    text, target = task.context(doc_id, doc), task.target(doc)
    if text:  # the same tokens training puts the loss on
        context = render_prompt(template, tokenizer, text)
        cont = tokenizer(render_completion(template, tokenizer, text, target), add_special_tokens=False)["input_ids"]
        return context, encode_prompt(tokenizer, context), cont
    ids = encode_prompt(tokenizer, target)
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if ids and ids[0] == first:
        return "", ids[:1], ids[1:]
    return "", [first], ids


def run_rolling(model, tokenizer, task, template, todo, write, *, batch_size: int, seed: int, **_):
    max_len = max_length(model, tokenizer)
    progress = Progress(task.name, len(todo))
    for s in range(0, len(todo), DOCS_PER_CHUNK):
        chunk, requests, spans = todo[s:s + DOCS_PER_CHUNK], [], []
        for doc_id, doc in chunk:
            context, ctx, cont = _rolling_pair(task, template, tokenizer, doc_id, doc)
            parts = split_long(ctx, cont, max_len)
            spans.append((doc_id, doc, context, len(cont), len(requests), len(parts)))
            requests += parts
        scored = score_requests(model, tokenizer, requests, batch_size=batch_size, max_len=max_len)
        for doc_id, doc, context, n_tokens, start, n_parts in spans:
            nll = -sum(lp for lp, _ in scored[start:start + n_parts])
            target = task.target(doc)
            n_bytes = max(1, len(target.encode("utf-8", "surrogatepass")))
            write({"doc_id": doc_id, "prompt": context, "target": target, "nll": nll, "n_tokens": n_tokens,
                   "n_bytes": n_bytes, "scores": {"perplexity": math.exp(nll / n_tokens),
                                                  "bits_per_byte": nll / math.log(2) / n_bytes}})
        progress.step(len(chunk))


RUNNERS = {"generate_until": run_generation, "multiple_choice": run_multiple_choice,
           "loglikelihood_rolling": run_rolling}
