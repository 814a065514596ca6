"""The harness on a tiny model: batching, stop sequences, EOS, truncation, records and resume."""

import json

import pytest
import torch
from _eval_helpers import arith_task, sharp_model, tokenizer, write_task

from finetune.data.tokenize import encode_prompt
from finetune.eval import runners
from finetune.eval.generate import generate_batch
from finetune.eval.harness import evaluate
from finetune.eval.loglik import score_requests, split_long
from finetune.eval.records import ResumeError, read_records
from finetune.eval.tasks import load_task
from finetune.prompts import load_template, render_prompt

PROMPTS = ["Hello there, how are you", "What is 2+3?", "abc", "A much longer prompt than the others, with words."]


@pytest.fixture(scope="module")
def model():
    return sharp_model()


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def _ids(tok, texts):
    return [encode_prompt(tok, t) for t in texts]


def test_batched_left_padded_generation_equals_one_at_a_time(model, tok):
    batched = generate_batch(model, tok, _ids(tok, PROMPTS), max_new_tokens=16, until=[])
    single = [generate_batch(model, tok, [ids], max_new_tokens=16, until=[])[0] for ids in _ids(tok, PROMPTS)]
    assert [b[0].text for b in batched] == [s[0].text for s in single]
    assert len({b[0].text for b in batched}) == len(PROMPTS)  # the model does say different things
    assert all(b[0].truncated and b[0].n_tokens == 16 for b in batched)


def test_generation_uses_the_kv_cache_and_matches_a_no_cache_greedy_loop(model, tok, monkeypatch):
    ids = _ids(tok, PROMPTS[:1])[0]
    seq = list(ids)
    with torch.no_grad():
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    manual = tok.decode(seq[len(ids):], skip_special_tokens=True)
    widths, real = [], type(model).forward

    def spy(self, *a, **kw):
        widths.append(kw["input_ids"].shape[1])
        return real(self, *a, **kw)

    monkeypatch.setattr(type(model), "forward", spy)
    assert generate_batch(model, tok, [ids], max_new_tokens=8, until=[])[0][0].text == manual
    assert widths[0] == len(ids) and set(widths[1:]) == {1}  # after the prompt, one new token per step


def test_stop_sequence_cuts_the_text_and_is_not_truncation(model, tok):
    free = generate_batch(model, tok, _ids(tok, PROMPTS), max_new_tokens=20, until=[])
    text = free[0][0].text
    stop = text[6:8]  # a string the model is known to produce
    cut = generate_batch(model, tok, _ids(tok, PROMPTS), max_new_tokens=20, until=[stop])
    assert cut[0][0].text == text[:text.index(stop)]
    assert not cut[0][0].truncated
    assert cut[0][0].n_tokens < 20  # the row stopped early instead of running to max_new_tokens
    for f, c in zip(free[1:], cut[1:]):  # other rows are cut only where they contain the stop string
        assert c[0].text == f[0].text.split(stop)[0]


def test_eos_stops_a_row_and_is_not_truncation(tok):
    model = sharp_model()
    ids = _ids(tok, PROMPTS[:2])
    free = generate_batch(model, tok, ids, max_new_tokens=10, until=[])
    first_token = tok(free[0][0].text[0], add_special_tokens=False)["input_ids"][0]
    model.generation_config.eos_token_id = [tok.eos_token_id, first_token]  # pretend that token ends the turn
    out = generate_batch(model, tok, ids, max_new_tokens=10, until=[])
    assert out[0][0].text == "" and not out[0][0].truncated and out[0][0].n_tokens == 0


def test_batched_loglikelihood_equals_one_at_a_time(model, tok):
    reqs = [(encode_prompt(tok, p), encode_prompt(tok, c)) for p, c in
            [("Question: 2+2?\nAnswer:", " 4"), ("Q", " a long continuation here"), ("Hello", " world"),
             ("Something much longer as a context for this one", " x")]]
    batched = score_requests(model, tok, reqs, batch_size=4)
    single = [score_requests(model, tok, [r], batch_size=1)[0] for r in reqs]
    for (lb, gb), (ls, gs) in zip(batched, single):
        assert lb == pytest.approx(ls, rel=1e-4, abs=1e-3) and gb == gs
    ctx, cont = reqs[0]  # and against a direct computation
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    direct = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    assert batched[0][0] == pytest.approx(direct, rel=1e-4, abs=1e-3)


def test_long_continuations_are_split_into_conditioned_chunks():
    parts = split_long([1, 2], list(range(10, 20)), max_len=8)
    assert [c for _, c in parts] == [list(range(10, 14)), list(range(14, 18)), [18, 19]]
    assert parts[1][0] == [1, 2, 10, 11, 12, 13]


def test_records_hold_prompt_output_answer_target_and_buckets(tmp_path, model, tok):
    task = load_task(str(arith_task(tmp_path)))
    scores = evaluate(model, tok, [task], tmp_path / "out", batch_size=4)
    recs = read_records(tmp_path / "out" / "mini_arith.jsonl")
    assert [r["doc_id"] for r in recs] == list(range(6))
    template = load_template("chat")
    for (doc_id, doc), r in zip(task.docs(), recs):
        assert r["prompt"] == render_prompt(template, tok, doc["question"])
        assert r["target"] == doc["answer"] and isinstance(r["output"], str)
        assert set(r["by_filter"]) == {"strict", "flexible"} and "correct" in r and "extracted" in r
        assert r["by_filter"]["strict"]["bucket"] in ("truncated", "no_answer", "wrong", "correct")
    summary = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert summary["tasks"]["mini_arith"]["scores"] == scores["mini_arith"]
    assert sum(summary["tasks"]["mini_arith"]["failures"]["strict"].values()) == 6
    assert scores["mini_arith"]["exact_match:strict"] == sum(r["correct"] for r in recs) / 6


def test_resume_skips_finished_docs_and_tolerates_a_half_written_line(tmp_path, model, tok, monkeypatch):
    task = load_task(str(arith_task(tmp_path)))
    out = tmp_path / "out"
    evaluate(model, tok, [task], out, batch_size=2)
    path = out / "mini_arith.jsonl"
    full = read_records(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40])  # two records, then a crash mid-write
    calls = []
    real = runners.generate_batch

    def counting(model, tok, prompts, **kw):
        calls.append(len(prompts))
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(runners, "generate_batch", counting)
    evaluate(model, tok, [task], out, batch_size=2)
    assert sum(calls) == 4  # only the four unfinished docs were generated again
    again = read_records(path)
    assert [(r["doc_id"], r["output"]) for r in again] == [(r["doc_id"], r["output"]) for r in full]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # the torn line is gone
    calls.clear()
    evaluate(model, tok, [task], out, batch_size=2)
    assert calls == []  # nothing left to do


def test_resume_refuses_records_made_with_another_template(tmp_path, model, tok):
    task = load_task(str(arith_task(tmp_path)))
    evaluate(model, tok, [task], tmp_path / "out", limit=2)
    with pytest.raises(ResumeError, match="another task config, prompt template or seed"):
        evaluate(model, tok, [task], tmp_path / "out", limit=2, template_name="plain")


def test_template_override_changes_the_prompt(tmp_path, model, tok):
    task = load_task(str(arith_task(tmp_path)))
    evaluate(model, tok, [task], tmp_path / "out", limit=1, template_name="plain")
    rec = read_records(tmp_path / "out" / "mini_arith.jsonl")[0]
    assert rec["prompt"].startswith("Question: ") and "<|im_start|>" not in rec["prompt"]


def test_multiple_choice_and_perplexity_tasks_run(tmp_path, model, tok):
    mc = write_task(tmp_path, "mc", """\
dataset: {generator: arithmetic_cot, generator_args: {n: 5}, split: test}
output_type: multiple_choice
prompt_template: raw
doc_to_text: "{{question}}\\nAnswer:"
doc_to_choice: "[answer, '0', '1000']"
doc_to_target: "0"
""")
    ppl = write_task(tmp_path, "ppl", """\
dataset: {generator: arithmetic_cot, generator_args: {n: 5}, split: test}
output_type: loglikelihood_rolling
doc_to_text: "{{question}}"
doc_to_target: "{{rationale}}"
metric_list: [perplexity, bits_per_byte]
""")
    scores = evaluate(model, tok, [load_task(str(mc)), load_task(str(ppl))], tmp_path / "out", batch_size=4)
    recs = read_records(tmp_path / "out" / "mc.jsonl")
    assert len(recs) == 5 and all(len(r["logliks"]) == 3 for r in recs)
    assert scores["mc"]["acc"] == sum(r["pred"] == 0 for r in recs) / 5
    prs = read_records(tmp_path / "out" / "ppl.jsonl")
    assert scores["ppl"]["perplexity"] == pytest.approx(
        torch.tensor(sum(r["nll"] for r in prs) / sum(r["n_tokens"] for r in prs)).exp().item(), rel=1e-6)
    assert scores["ppl"]["perplexity"] > 1


def test_self_consistency_samples_k_outputs_per_doc(tmp_path, model, tok):
    path = write_task(tmp_path, "sc", """\
include: mini_arith.yaml
repeats: 3
generation_kwargs: {temperature: 1.0}
filter_list:
  - name: maj
    filter: [{function: last_number}, {function: majority_vote}]
""")
    arith_task(tmp_path)
    evaluate(model, tok, [load_task(str(path))], tmp_path / "out", limit=2, batch_size=6)
    recs = read_records(tmp_path / "out" / "sc.jsonl")
    assert all(len(r["outputs"]) == 3 and r["output"] == r["outputs"][0] for r in recs)
    assert any(len(set(r["outputs"])) > 1 for r in recs)  # sampled, not greedy copies


def test_an_interrupted_eval_keeps_finished_batches(tmp_path, model, tok, monkeypatch):
    task = load_task(str(arith_task(tmp_path)))
    real, calls = runners.generate_batch, []

    def dies_on_second_batch(*a, **kw):  # greedy runs one queue: die as the third record finishes
        write = kw["on_done"]

        def on_done(i, gens):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            write(i, gens)
        return real(*a, **{**kw, "on_done": on_done})

    monkeypatch.setattr(runners, "generate_batch", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, tok, [task], tmp_path / "out", batch_size=2)
    assert len(read_records(tmp_path / "out" / "mini_arith.jsonl")) == 2  # the first batch is on disk
    monkeypatch.setattr(runners, "generate_batch", real)
    scores = evaluate(model, tok, [task], tmp_path / "out", batch_size=2)
    assert len(read_records(tmp_path / "out" / "mini_arith.jsonl")) == 6 and "mini_arith" in scores


def test_max_new_tokens_beyond_the_window_is_a_task_error(tmp_path, model, tok):
    from finetune.eval.tasks import TaskError

    task = load_task(str(arith_task(tmp_path, max_new=5000)))
    with pytest.raises(TaskError, match="leaves no room for the prompt"):
        evaluate(model, tok, [task], tmp_path / "out", limit=1)
