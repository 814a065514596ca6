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
  - every slot's K/V lives in one buffer per layer, [slots, kv_heads, capacity, head_dim]; a
    decode step writes each slot's new K/V at its own position (one index_put per layer) and
    attends over the buffer up to the longest slot, with a boolean mask per slot;
  - once the queue is empty, finished slots are dropped from the buffer (as the batch decoder
    does), so the last documents do not pay for idle slots.
Masks are passed as prepared 4-D boolean masks, which transformers hands to SDPA untouched,
so this needs SDPA attention and full-attention layers (`supports`); otherwise the caller
uses the batch decoder. The tokens are the argmax of the same logits `generate` computes.
"""

import inspect

import torch
from transformers.cache_utils import Cache, DynamicLayer

from finetune.eval.decode import _has_stop, _sdpa_gqa, common_prefix


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
        self.mode, self.row, self.start, self.width, self.pos = "prefix", 0, 0, 0, None


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
        n, end = key_states.shape[-2], plan.start + key_states.shape[-2]
        if plan.mode == "prefix":  # the shared prefix, into every slot
            k[:, :, :n], v[:, :, :n] = key_states, value_states
            return k[:1, :, :n], v[:1, :, :n]
        r = plan.row  # "fill": one document's own tokens into slot r, after the prefix
        k[r, :, plan.start:end], v[r, :, plan.start:end] = key_states[0], value_states[0]
        return k[r:r + 1, :, :end], v[r:r + 1, :, :end]

    def keep(self, index: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys, self.values = self.keys[index], self.values[index]


class _Decoder:
    def __init__(self, model, n_rows: int, capacity: int):
        self.model, self.device = model, next(model.parameters()).device
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes kwargs through
        self.cache_kw = "cache" if "cache" in inspect.signature(type(core).forward).parameters else "past_key_values"
        n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.plan = _Slots(n_rows, capacity)
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

    def fill(self, row: int, start: int, ids: list[int]) -> int:
        """Prefill slot `row` with `ids` from position `start`; returns the first generated token."""
        self.plan.mode, self.plan.row, self.plan.start = "fill", row, start
        positions, mask = self._causal(start, len(ids))
        return int(self._forward(torch.tensor([ids], device=self.device), positions, mask)[0])

    def step(self, tokens: list[int], pos: list[int]) -> list[int]:
        """One token per slot, slot i's at position pos[i]; returns each slot's next token."""
        width = max(pos) + 1
        p = torch.tensor(pos, device=self.device)
        self.plan.mode, self.plan.pos, self.plan.width = "step", p, width
        mask = torch.arange(width, device=self.device)[None, :] <= p[:, None]
        return self._forward(torch.tensor(tokens, device=self.device)[:, None], p[:, None],
                             mask[:, None, None]).tolist()

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, device=self.device)
        for layer in self.cache.layers:
            layer.keep(index)


@torch.inference_mode()
def greedy_continuous(model, tokenizer, prompts: list[list[int]], *, slots: int, max_new_tokens: int,
                      eos: list[int], until: list[str], on_done=None) -> list[list[int]]:
    """Greedy continuation ids for each prompt (up to and including the stopping token), `slots` at a time.

    Documents start longest prompt first; `on_done(i, ids)` is called as prompt i finishes."""
    with _sdpa_gqa():
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

    def settle(row: int, token: int | None) -> bool:
        """Record slot `row`'s new token; while it ends a document, refill the slot. False: the slot is free."""
        while True:
            if token is None:  # an empty slot takes the next document
                if not queue:
                    return False
                doc[row] = i = queue.pop()
                pos[row] = len(prompts[i])
                token = dec.fill(row, shared, prompts[i][shared:])
            tokens[row], out = token, generated[doc[row]]
            out.append(token)
            if not (token in eos or len(out) == max_new_tokens or
                    (until and _has_stop(tokenizer, out[-lookback:], until))):
                return True
            if on_done is not None:
                on_done(doc[row], out)
            token = None

    live = [settle(row, None) for row in range(n)]
    while True:
        if not all(live):  # the queue is empty: drop finished slots from the buffers
            keep = [r for r in range(len(live)) if live[r]]
            if not keep:
                return generated
            dec.keep(keep)
            doc, pos, tokens = [doc[r] for r in keep], [pos[r] for r in keep], [tokens[r] for r in keep]
        new = dec.step(tokens, pos)
        for row in range(len(doc)):
            pos[row] += 1
        live = [settle(row, new[row]) for row in range(len(doc))]
