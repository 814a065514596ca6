"""The shared-prefix greedy decoder gives the tokens `model.generate` gives, with less work."""

import pytest
import torch

from _eval_helpers import sharp_model, tokenizer
from finetune.eval import decode, generate
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
    out = generate_batch(model, tok, prompts, max_new_tokens=30, until=["Q:", "?"])
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
