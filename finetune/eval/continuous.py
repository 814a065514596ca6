"""Continuous batching for greedy decoding: a fixed number of slots, each holding one document.

`decode.greedy_shared_prefix` decodes a batch until its last row stops; rows that stop early
leave, so the batch shrinks and the tail of a batch runs at a few rows (on GSM8K zero-shot the
longest output in a batch of 20 is often a 256-token loop while the median is ~130). Here a
row that stops is refilled at once with the next document, so every decode step runs all
`slots` rows until the queue is empty:

    slot r:  [shared prefix][own prompt][generated ...........][ stale from the last doc ]
    mask r:  [1 ...       1][1 ...    1][1 ...  up to its pos ][0 ...                  0]
    pos:     [0 ...     P-1][P .......  .................. pos_r]

  - the prefix all prompts share (the chat template's system turn, a few-shot block) is run
    once for the whole run and stays in positions 0..P-1 of every slot; a refill prefills only
    the new document's own tokens, from position P, and overwrites the slot in place;
  - slots that come free together (all of them at the start, several at one step later) are
    prefilled together, left-padded in one forward of up to FILL_TOKENS tokens: a forward over
    one ~80-token document runs the matmuls at about two thirds of the rate a 2,000-token one
    does (benchmarks/decode_levers.py: prefill 16% faster on 100 GSM8K zero-shot prompts);
  - every slot's K/V lives in one buffer per layer, [slots, kv_heads, capacity, head_dim]; a
    decode step writes each slot's new K/V at its own position (one index_put per layer) and
    attends over the buffer up to the longest slot, with a boolean mask per slot;
  - once the queue is empty, finished slots are dropped from the buffer (the last live slot
    moves into the gap, the buffer is cut to a view), so the last documents do not pay for
    idle slots.
Masks are passed as prepared 4-D boolean masks, which transformers hands to SDPA untouched,
so this needs SDPA attention and full-attention layers (`supports`); otherwise the caller
uses the batch decoder. The tokens are the argmax of the same logits `generate` computes.
"""

import inspect

import torch
from transformers.cache_utils import Cache, DynamicLayer

from finetune.eval.decode import _has_stop, _sdpa_gqa, common_prefix
from finetune.eval.grouped import grouped_decode_attention

FILL_TOKENS = 2048  # padded prompt tokens per prefill forward (documents x the longest one's own tokens)


def supports(model) -> str | None:
    """None when the model can decode in slots; otherwise why not (for the fallback notice)."""
    cfg = model.config.get_text_config(decoder=True)
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention {getattr(cfg, '_attn_implementation', None)!r}, needs 'sdpa'"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window layers"
    return None


class _Slots:
    """The write plan shared by every layer for one forward: which rows, at which positions."""

    def __init__(self, rows: int, capacity: int):
        self.rows, self.capacity = rows, capacity
        self.mode, self.start, self.width, self.pos = "prefix", 0, 0, None
        self.fill_rows: list[int] = []  # "fill": the slots being prefilled, and each one's own tokens
        self.fill_lens: list[int] = []


class _SlotLayer(DynamicLayer):
    def __init__(self, plan: _Slots):
        super().__init__()
        self.plan = plan

    def update(self, key_states, value_states, *args, **kwargs):
        plan = self.plan
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            shape = (plan.rows, key_states.shape[1], plan.capacity, key_states.shape[-1])
            self.keys, self.values = key_states.new_zeros(shape), value_states.new_zeros(shape)
        k, v = self.keys, self.values
        if plan.mode == "step":  # one new token per slot, each at its own position
            rows = torch.arange(k.shape[0], device=k.device)
            k[rows, :, plan.pos] = key_states[:, :, 0]
            v[rows, :, plan.pos] = value_states[:, :, 0]
            return k[:, :, :plan.width], v[:, :, :plan.width]
        n, start = key_states.shape[-2], plan.start
        if plan.mode == "prefix":  # the shared prefix, into every slot
            k[:, :, :n], v[:, :, :n] = key_states, value_states
            return k[:1, :, :n], v[:1, :, :n]
        # "fill": documents' own tokens, left-padded to n, each into its slot after the prefix;
        # attention runs over [prefix][the padded block], the padding masked out
        for i, (r, m) in enumerate(zip(plan.fill_rows, plan.fill_lens)):
            k[r, :, start:start + m], v[r, :, start:start + m] = key_states[i, :, n - m:], value_states[i, :, n - m:]
        rows = len(plan.fill_rows)
        return (torch.cat([k[:1, :, :start].expand(rows, -1, -1, -1), key_states], 2),
                torch.cat([v[:1, :, :start].expand(rows, -1, -1, -1), value_states], 2))

    def move(self, moves: list[tuple[int, int]], rows: int) -> None:
        """Copy slot src into slot dst for each (dst, src), then keep the first `rows` slots (a view)."""
        if self.is_initialized:
            for dst, src in moves:
                self.keys[dst], self.values[dst] = self.keys[src], self.values[src]
            self.keys, self.values = self.keys[:rows], self.values[:rows]


class _Decoder:
    def __init__(self, model, n_rows: int, capacity: int):
        self.model, self.device = model, next(model.parameters()).device
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes kwargs through
        self.cache_kw = "cache" if "cache" in inspect.signature(type(core).forward).parameters else "past_key_values"
        n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.plan, self.live = _Slots(n_rows, capacity), n_rows
        self.cache = Cache(layers=[_SlotLayer(self.plan) for _ in range(n_layers)])

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         **{self.cache_kw: self.cache}, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1)

    def _causal(self, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.arange(start, start + n, device=self.device)
        mask = torch.arange(start + n, device=self.device)[None, :] <= q[:, None]
        return q[None], mask[None, None]

    def prefix(self, ids: list[int]) -> None:
        self.plan.mode = "prefix"
        positions, mask = self._causal(0, len(ids))
        self._forward(torch.tensor([ids], device=self.device), positions, mask)

    def fill(self, rows: list[int], start: int, docs: list[list[int]]) -> list[int]:
        """Prefill slot rows[i] with docs[i] from position `start`, in one forward; each one's first token."""
        lens = [len(d) for d in docs]
        n = max(lens)
        self.plan.mode, self.plan.start, self.plan.fill_rows, self.plan.fill_lens = "fill", start, rows, lens
        pad = torch.tensor([n - m for m in lens], device=self.device)[:, None]
        j = torch.arange(n, device=self.device)
        positions = start + (j[None] - pad).clamp(min=0)
        q, c = j[None, :, None], j[None, None, :]
        own = ((c <= q) & (c >= pad[:, :, None])) | (c == q)  # a padding query sees itself: no empty row
        mask = torch.cat([own.new_ones(len(docs), n, start), own], 2)[:, None]
        ids = torch.tensor([[d[0]] * (n - len(d)) + d for d in docs], device=self.device)
        return self._forward(ids, positions, mask).tolist()

    def step(self, tokens: list[int], pos: list[int]) -> list[int]:
        """One token per slot, slot i's at position pos[i]; returns each slot's next token."""
        width = max(pos) + 1
        p = torch.tensor(pos, device=self.device)
        self.plan.mode, self.plan.pos, self.plan.width = "step", p, width
        mask = torch.arange(width, device=self.device)[None, :] <= p[:, None]
        return self._forward(torch.tensor(tokens, device=self.device)[:, None], p[:, None],
                             mask[:, None, None]).tolist()

    def drop(self, rows: list[int]) -> list[int]:
        """Remove slots `rows`; for each slot left, the old slot it now holds.

        The last live slot moves into each removed one and the buffers are cut to a view of the
        first slots: one slot's K/V copied per removal, where indexing the buffers with the kept
        rows copied all of them (benchmarks/decode_levers.py: 1.9 s -> 0.17 s in a 100-document run)."""
        order = list(range(self.live))
        moves, n = [], self.live
        for r in sorted(rows, reverse=True):  # every slot after r is live by now
            n -= 1
            if r != n:
                moves.append((r, n))
                order[r] = order[n]
        for layer in self.cache.layers:
            layer.move(moves, n)
        self.live = n
        return order[:n]


@torch.inference_mode()
def greedy_continuous(model, tokenizer, prompts: list[list[int]], *, slots: int, max_new_tokens: int,
                      eos: list[int], until: list[str], on_done=None) -> list[list[int]]:
    """Greedy continuation ids for each prompt (up to and including the stopping token), `slots` at a time.

    Documents start longest prompt first; `on_done(i, ids)` is called as prompt i finishes."""
    with _sdpa_gqa(), grouped_decode_attention(model):  # bf16 steps on CPU: grouped matmuls (grouped.py)
        return _run(model, tokenizer, prompts, slots, max_new_tokens, eos, until, on_done)


def _run(model, tokenizer, prompts, slots, max_new_tokens, eos, until, on_done):
    queue = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[::-1]  # pop() takes the longest
    shared = min(common_prefix(prompts), min(len(p) for p in prompts) - 1) if len(prompts) > 1 else 0
    dec = _Decoder(model, min(slots, len(prompts)), max(len(p) for p in prompts) + max_new_tokens)
    if shared:
        dec.prefix(prompts[0][:shared])
    lookback = max((len(s) for s in until), default=0) + 2
    generated: list[list[int]] = [[] for _ in prompts]
    n = dec.plan.rows
    doc, pos, tokens = [0] * n, [0] * n, [0] * n

    def record(row: int, token: int) -> bool:
        """Append slot `row`'s new token to its document; False when that ends the document."""
        tokens[row], out = token, generated[doc[row]]
        out.append(token)
        if not (token in eos or len(out) == max_new_tokens or
                (until and _has_stop(tokenizer, out[-lookback:], until))):
            return True
        if on_done is not None:
            on_done(doc[row], out)
        return False

    def refill(free: list[int]) -> list[int]:
        """Give the free slots the next documents, several per forward; the slots still free (queue empty)."""
        while free and queue:
            take = min(len(free), len(queue), max(1, FILL_TOKENS // (len(prompts[queue[-1]]) - shared)))
            rows, free = free[:take], free[take:]
            for r in rows:
                doc[r] = queue.pop()
                pos[r] = len(prompts[doc[r]])
            firsts = dec.fill(rows, shared, [prompts[doc[r]][shared:] for r in rows])
            free += [r for r, token in zip(rows, firsts) if not record(r, token)]
        return free

    free = refill(list(range(n)))
    while True:
        if free:  # the queue is empty: drop finished slots from the buffers
            if len(free) == len(doc):
                return generated
            kept = dec.drop(free)
            doc, pos, tokens = [doc[r] for r in kept], [pos[r] for r in kept], [tokens[r] for r in kept]
        new = dec.step(tokens, pos)
        pos = [p + 1 for p in pos]
        free = refill([r for r in range(len(doc)) if not record(r, new[r])])
