"""The shared-prefix greedy decoder gives the tokens `model.generate` gives, with less work."""

import pytest
import torch

from _eval_helpers import sharp_model, tokenizer
from finetune.eval import continuous, decode, generate
from finetune.eval.generate import generate_batch

PREFIX = "Q: 12+3? A: 15. Q: 7*2? A: 14. Q: 9-4? A: 5.\n"
QUESTIONS = ["Q: 5+5? A:", "Q: 81-17? A:", "Q: 3*3*3? A:", "Q: 100/4? A:", "Q: 2+2? A:", "hello"]


@pytest.fixture(scope="module")
def model():
    return sharp_model(seed=1)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def _prompts(tok, with_prefix=True):
    return [tok((PREFIX if with_prefix and q != "hello" else "") + q)["input_ids"] for q in QUESTIONS]


def _via_generate(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(generate, "plain_greedy", lambda model: False)
        return generate_batch(*args, **kwargs)


@pytest.mark.parametrize("until", [[], ["Q:"], ["?", "\n"]])
@pytest.mark.parametrize("with_prefix", [True, False])
def test_same_text_as_model_generate(model, tok, monkeypatch, until, with_prefix):
    prompts = _prompts(tok, with_prefix)
    fast = generate_batch(model, tok, prompts, max_new_tokens=24, until=until)
    slow = _via_generate(monkeypatch, model, tok, prompts, max_new_tokens=24, until=until)
    assert [g[0] for g in fast] == [g[0] for g in slow]
    assert len({g[0].text for g in fast}) > 2  # the model says different things: the check has teeth


def test_shared_prefix_is_run_once_and_finished_rows_leave_the_batch(model, tok, monkeypatch):
    prompts = [tok(PREFIX + q)["input_ids"] for q in QUESTIONS[:5]]
    shapes, forward = [], model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    out = generate_batch(model, tok, prompts, max_new_tokens=30, until=["Q:", "?"], decoder="batched")
    shared = decode.common_prefix(prompts)
    assert shared >= len(tok(PREFIX)["input_ids"]) - 1
    assert shapes[0] == (1, shared)                       # the prefix, once
    assert shapes[1] == (5, max(len(p) for p in prompts) - shared)  # each row's own tokens only
    sizes = [s[0] for s in shapes[2:]]
    assert sizes == sorted(sizes, reverse=True)           # rows only ever leave
    stopped_early = [g[0] for g in out if not g[0].truncated]
    assert stopped_early and sizes[-1] < 5


def test_in_place_cache_matches_dynamic_cache(model, tok):
    ids = torch.tensor([_prompts(tok)[0]])
    fast, slow = decode._new_cache(model.config), decode.DynamicCache(config=model.config)
    assert isinstance(fast.layers[0] if fast.layers else decode._InPlaceLayer(), decode._InPlaceLayer)
    with torch.no_grad():
        a = model(input_ids=ids[:, :-3], cache=fast, use_cache=True).logits
        b = model(input_ids=ids[:, :-3], cache=slow, use_cache=True).logits
        for i in range(3, 0, -1):  # three single-token steps, past the buffer's first fill
            step = ids[:, -i:ids.shape[1] - i + 1]
            a = model(input_ids=step, cache=fast, use_cache=True).logits
            b = model(input_ids=step, cache=slow, use_cache=True).logits
            assert torch.equal(a, b)
    assert fast.get_seq_length() == slow.get_seq_length() == ids.shape[1]


def test_generation_config_with_logit_processing_falls_back_to_generate(model, tok):
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not decode.plain_greedy(model)
    finally:
        model.generation_config.repetition_penalty = 1.0
    assert decode.plain_greedy(model)


# continuous batching (finetune/eval/continuous.py): slots refilled as rows stop
MORE = QUESTIONS + ["Q: 6*7? A:", "Q: 1000-1? A:", "Q: 13+29+4? A:", "what is", "Q: 8/2? A:"]


def _many(tok):
    return [tok((PREFIX if i % 3 else "") + q)["input_ids"] for i, q in enumerate(MORE)]


def _frequent_token(model, tok, prompts):
    """A token the model emits early in some rows: as EOS it makes rows stop at different steps."""
    out = generate_batch(model, tok, prompts, max_new_tokens=6, until=[], decoder="batched")
    first = [tok(g[0].text, add_special_tokens=False)["input_ids"][2] for g in out if g[0].text]
    return max(set(first), key=first.count)


@pytest.mark.parametrize("until", [[], ["Q:"], ["?", "\n"]])
@pytest.mark.parametrize("slots", [1, 3, 5])
@pytest.mark.parametrize("fill_tokens", [1, 40, 2048])  # one document per prefill forward .. all free slots at once
def test_continuous_equals_model_generate_one_prompt_at_a_time(model, tok, monkeypatch, until, slots, fill_tokens):
    monkeypatch.setattr(continuous, "FILL_TOKENS", fill_tokens)
    prompts = _many(tok)
    fast = generate_batch(model, tok, prompts, max_new_tokens=20, until=until, slots=slots)
    slow = generate_batch(model, tok, prompts, max_new_tokens=20, until=until, slots=1, decoder="generate")
    assert [g[0] for g in fast] == [g[0] for g in slow]
    assert len({g[0].text for g in fast}) > 4


def test_continuous_with_eos_refills_slots_and_reports_each_document_as_it_ends(model, tok, monkeypatch):
    prompts = _many(tok)
    monkeypatch.setattr(model.generation_config, "eos_token_id", _frequent_token(model, tok, prompts))
    slow = generate_batch(model, tok, prompts, max_new_tokens=24, until=["?"], slots=1, decoder="generate")
    assert len({g[0].n_tokens for g in slow}) > 3 and any(not g[0].truncated for g in slow)  # varied stops
    steps, fills, order = [], [], []
    step, fill = continuous._Decoder.step, continuous._Decoder.fill
    monkeypatch.setattr(continuous._Decoder, "step", lambda self, t, p: steps.append(len(t)) or step(self, t, p))
    monkeypatch.setattr(continuous._Decoder, "fill", lambda self, r, s, d: fills.append(len(r)) or fill(self, r, s, d))
    fast = generate_batch(model, tok, prompts, max_new_tokens=24, until=["?"], slots=4,
                          on_done=lambda i, gens: order.append(i))
    assert [g[0] for g in fast] == [g[0] for g in slow]
    assert sorted(order) == list(range(len(prompts)))          # each document reported once
    assert max(steps) == 4 and steps.count(4) > 24              # 4 slots kept busy across refills
    assert sum(fills) == len(prompts) and fills[0] == 4         # each document prefilled once; slots free together


@pytest.mark.parametrize("gone", [[1, 4], [4], [0, 1, 2, 3], [3, 4], [0, 2, 4]])
def test_dropping_slots_moves_the_last_live_ones_into_the_gaps(model, gone):
    dec = continuous._Decoder(model, 5, 16)
    with torch.inference_mode():
        dec.fill(list(range(5)), 0, [[3 + r] * (2 + r) for r in range(5)])
        before = [layer.keys.clone() for layer in dec.cache.layers]
        kept = dec.drop(gone)
    assert sorted(kept) == [r for r in range(5) if r not in gone] and dec.live == len(kept)
    for layer, old in zip(dec.cache.layers, before):
        assert layer.keys.shape[0] == len(kept) and torch.equal(layer.keys, old[kept])


def test_continuous_shares_the_prefix_of_all_prompts_once(model, tok, monkeypatch):
    prompts = [tok(PREFIX + q)["input_ids"] for q in MORE]
    rows, forward = [], model.forward

    def spy(*args, **kwargs):
        rows.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    fast = generate_batch(model, tok, prompts, max_new_tokens=12, until=[], slots=3)
    shared = decode.common_prefix(prompts)
    assert rows[0] == (1, shared) and all(r[1] < max(len(p) for p in prompts) - shared + 1 for r in rows[1:])
    monkeypatch.setattr(model, "forward", forward)
    slow = generate_batch(model, tok, prompts, max_new_tokens=12, until=[], slots=1, decoder="generate")
    assert [g[0] for g in fast] == [g[0] for g in slow]


def test_continuous_falls_back_to_the_batch_decoder_with_one_notice(tok, monkeypatch, caplog):
    from finetune.speed import perf

    eager = sharp_model(seed=1)
    eager.config._attn_implementation = "eager"
    monkeypatch.setattr(perf, "_NOTICED", set())
    prompts = _many(tok)
    with caplog.at_level("INFO", logger="finetune"):
        out = generate_batch(eager, tok, prompts, max_new_tokens=10, until=[], slots=4)
        generate_batch(eager, tok, prompts[:2], max_new_tokens=4, until=[], slots=4)
    notices = [r.message for r in caplog.records if "continuous batching" in r.message]
    assert len(notices) == 1 and "'eager'" in notices[0]
    assert [g[0] for g in out] == [g[0] for g in generate_batch(eager, tok, prompts, max_new_tokens=10, until=[],
                                                                slots=4, decoder="batched")]


def test_unknown_decoder_is_refused(model, tok):
    with pytest.raises(ValueError, match="unknown decoder 'fast'"):
        generate_batch(model, tok, _many(tok)[:1], max_new_tokens=2, until=[], decoder="fast")
