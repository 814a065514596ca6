"""Batched log-likelihood of continuations given contexts (multiple choice, perplexity).

A request is (context ids, continuation ids). The model reads context + continuation minus
its last token; the continuation's log-probability is the sum over its tokens. Batches
are length-sorted and left-padded with explicit position ids, so a padded row scores the
same as the row alone, and only the last positions' logits are materialised
(`logits_to_keep`), which keeps a 49k-word vocabulary affordable on CPU.
"""

import torch

from finetune.eval.generate import left_pad

LOGITS_BUDGET = 2 ** 27  # floats of logits per forward pass (512 MB in fp32)


def max_length(model, tokenizer, cap: int = 8192) -> int:
    """Longest sequence the model takes: its position limit, the tokenizer's if smaller, at most `cap`."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min([cap] + [int(x) for x in limits if x and x < 1e7])


def split_long(context: list[int], continuation: list[int], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Requests for a continuation longer than half the window: chunks, each conditioned on the tokens before it."""
    step = max(1, max_len // 2)
    if len(continuation) <= step:
        return [(context, continuation)]
    out = []
    for s in range(0, len(continuation), step):
        out.append((context + continuation[:s], continuation[s:s + step]))
    return out


def _forward(model, ids, mask, keep: int) -> torch.Tensor:
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    try:
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    except TypeError:  # an architecture without logits_to_keep
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep:]


def _batches(order: list[int], rows: list[list[int]], n_cont: list[int], batch_size: int, vocab: int):
    batch: list[int] = []
    for i in order:
        width = max(n_cont[j] for j in batch + [i])
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width * vocab > LOGITS_BUDGET):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def score_requests(model, tokenizer, requests: list[tuple[list[int], list[int]]], *, batch_size: int = 16,
                   max_len: int | None = None) -> list[tuple[float, bool]]:
    """(sum of log-probabilities of the continuation, whether greedy decoding would produce it) per request."""
    max_len = max_len or max_length(model, tokenizer)
    rows, n_cont, targets = [], [], []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("empty continuation: nothing to score")
        if len(cont) > max_len:
            raise ValueError(f"continuation of {len(cont)} tokens exceeds the model window {max_len}; use split_long")
        full = (ctx + cont)[-(max_len + 1):]  # left-truncate the context to fit the window
        rows.append(full[:-1])
        n_cont.append(len(cont))
        targets.append(cont)
    vocab = model.get_output_embeddings().weight.shape[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    for batch in _batches(order, rows, n_cont, batch_size, vocab):
        ids, mask = (t.to(device) for t in left_pad([rows[i] for i in batch], pad))
        keep = max(n_cont[i] for i in batch)
        logits = _forward(model, ids, mask, keep).float()
        lse = torch.logsumexp(logits, dim=-1)
        for r, i in enumerate(batch):
            n = n_cont[i]
            row_logits = logits[r, keep - n:]
            tgt = torch.tensor(targets[i], device=device)
            logp = row_logits.gather(-1, tgt[:, None]).squeeze(-1) - lse[r, keep - n:]
            greedy = bool((row_logits.argmax(-1) == tgt).all())
            results[i] = (float(logp.sum()), greedy)
    return results
