"""STaR rounds (finetune/star/) on the tiny model: sampling is scripted (a tiny random model never reaches an
answer), training and eval are real. Yield bookkeeping, eval's extraction, dedup and cap, the hint kept out of
the training text, restart modes, resume after a kill, and the per-round report."""

import json

import pytest

from finetune.cli import main
from finetune.data.synthetic import arithmetic_cot
from finetune.eval.generate import Generation
from finetune.eval.scoring import score_generation
from finetune.eval.tasks import load_task
from finetune.recipe import load_recipe
from finetune.star import layout, rounds
from finetune.star.select import is_correct, rationale_of, select, totals

RECIPE = """\
model: {name: "{tiny}"}
method: {name: lora, r: 4, alpha: 8}
data:
  datasets: [{name: arith_answers, limit: 6}]
  max_length: 512
train: {max_steps: 2, batch_size: 4, save_steps: 1, logging_steps: 1, lr: 1.0e-3}
eval: {tasks: [arith_cot], limit: 3, batch_size: 6}
star: {rounds: 2, k: 3, max_per_question: 2, rationalize: true, instruction: "End with {format}."}
output: {dir: "{out}"}
"""
PROBLEMS = {r["question"]: r["answer"] for r in arithmetic_cot(6, seed=42)}  # train.seed seeds the data
HINT = "correct answer is"


class Scripted:
    """generate_batch stand-in: even questions get 2 distinct correct rationales (+1 whitespace duplicate),
    odd ones only wrong answers unless hinted; `kill_after` raises KeyboardInterrupt after that many calls."""

    def __init__(self, kill_after=None):
        self.prompts, self.calls, self.kill_after = [], 0, kill_after

    def __call__(self, model, tokenizer, prompts, *, num_return_sequences, **kw):
        if self.kill_after is not None and self.calls >= self.kill_after:
            raise KeyboardInterrupt
        self.calls += 1
        out = []
        for ids in prompts:
            text = tokenizer.decode(ids)
            self.prompts.append(text)
            q = next(q for q in PROBLEMS if q in text)
            even, answer = list(PROBLEMS).index(q) % 2 == 0, PROBLEMS[q]
            if HINT in text:
                texts = [f"Work it out from the hint.\n#### {answer}"] * num_return_sequences
            elif even:
                texts = [f"Step one.\n#### {answer}", f"Step   one.\n\n#### {answer}", f"Another way.\n#### {answer}"]
            else:
                texts = ["Guess.\n#### 99999", "no answer", f"#### {answer}"]  # the last: no rationale, not kept
            out.append([Generation(t, False, 5) for t in texts[:num_return_sequences]])
        return out


@pytest.fixture
def scripted(monkeypatch):
    def install(**kw):
        fake = Scripted(**kw)
        monkeypatch.setattr("finetune.star.sample.generate_batch", fake)
        return fake
    return install


def _recipe(write_recipe, text=RECIPE, overrides=()):
    return load_recipe(write_recipe(text), list(overrides))


def test_extraction_is_the_eval_one():
    task = load_task("arith_cot")
    for text in ["so 12.\n#### 12", "#### 12.0", "#### 1,2", "The answer: 12", "#### 13\n#### 12", "####12 apples",
                 "x\n#### $12."]:
        ev = score_generation(task, [text], [False], "12")["by_filter"]["strict"]["correct"]
        assert is_correct(text, "12", "#### {answer}") == ev, text


def test_select_dedups_caps_and_counts_yield():
    qs = [{"qid": 0, "question": "q0", "answer": "5", "answer_format": "#### {answer}"},
          {"qid": 1, "question": "q1", "answer": "7", "answer_format": "#### {answer}"}]
    ok = lambda t: {"text": t, "correct": True}
    samples = {0: {"qid": 0, "samples": [ok("A.\n#### 5"), ok("a.  \n#### 5"), ok("B.\n#### 5"), ok("C.\n#### 5"),
                                         {"text": "#### 4", "correct": False}]},
               1: {"qid": 1, "samples": [ok("#### 7"), ok("x #### 7\n#### 7")]}}  # no rationale; two answer lines
    hinted = {1: {"qid": 1, "hinted": True, "samples": [ok("Hinted.\n#### 7")]}}
    rows, yields = select(qs, [samples, hinted], max_per_question=2)
    assert [(r["qid"], r["rationale"], r["hinted"]) for r in rows] == [(0, "A.", False), (0, "B.", False),
                                                                      (1, "Hinted.", True)]
    assert yields["0"] == {"sampled": 5, "correct": 4, "hinted": 0, "hinted_correct": 0, "kept": 2}
    assert yields["1"] == {"sampled": 2, "correct": 2, "hinted": 1, "hinted_correct": 1, "kept": 1}
    t = totals(yields)
    assert (t["kept"], t["sampled"], t["yield"], t["solved_questions"]) == (3, 7, round(3 / 7, 4), 2)
    assert rationale_of("steps\n#### 5", "#### {answer}") == "steps"


def test_rounds_yield_hint_and_report(write_recipe, scripted, tmp_path):
    fake = scripted()
    recipe = _recipe(write_recipe)
    summary = rounds.run_star(recipe)
    run = recipe.run_dir()
    y = json.loads((run / "round_1" / layout.YIELD).read_text())
    # 3 even: 3 correct of 3, 2 distinct kept (cap 2); 3 odd: 1 correct without a rationale, so hinted: 1 kept
    assert y["totals"] | {} == {**y["totals"], "questions": 6, "sampled": 18, "correct": 12, "hinted": 9,
                                "hinted_correct": 9, "kept": 9, "solved_questions": 6, "yield": 0.5}
    assert all(q["sampled"] == 3 for q in y["per_question"].values())
    sampled_prompts = [p for p in fake.prompts if HINT not in p]
    assert all("End with #### N." in p for p in sampled_prompts)  # the instruction is there when sampling
    kept = [json.loads(line) for line in (run / "round_1" / "kept.jsonl").read_text().splitlines()]
    assert len(kept) == 9 and sum(r["hinted"] for r in kept) == 3
    assert all(r["question"] in PROBLEMS and HINT not in r["question"] and "End with" not in r["question"]
               for r in kept)
    _assert_training_text_has_no_hint(run, recipe)
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    md = (run / layout.REPORT_MD).read_text()
    assert "| round | task | metric |" in md and md.count("| 2 | arith_cot |") == 2
    assert (run / layout.PLOT).stat().st_size > 1000 and (run / layout.REPORT_HTML).is_file()
    assert (run / "round_2" / "eval" / "report.md").is_file()
    m = summary["rounds"][0]["metrics"]["arith_cot"]["exact_match:strict"]
    assert m["n"] == 3 and m["p_value"] is not None
    assert json.loads((run / layout.STATE).read_text())["state"] == "finished"


def _assert_training_text_has_no_hint(run, recipe):
    from finetune.data.build import build_datasets
    from finetune.testing import tiny_tokenizer

    round_recipe = load_recipe(run / "round_1" / "round_recipe.yaml")
    tok = tiny_tokenizer()
    bundle = build_datasets(round_recipe.data, tok)
    texts = [tok.decode(r) for r in bundle.train["input_ids"]]
    assert len(texts) == 9 and all(HINT not in t and "End with" not in t for t in texts)
    assert sum("Work it out from the hint." in t for t in texts) == 3


@pytest.mark.parametrize("restart", ["base", "last"])
def test_restart_modes(write_recipe, scripted, restart):
    scripted()
    recipe = _recipe(write_recipe, overrides=[f"star.restart={restart}", "star.rationalize=false"])
    rounds.run_star(recipe)
    run = recipe.run_dir()
    manifest = json.loads((run / "round_2" / "train" / "manifest.json").read_text())
    merged = run / "round_1" / "merged"
    if restart == "base":
        assert manifest["base_model"] == recipe.model.name and not merged.exists()
    else:
        assert manifest["base_model"] == str(merged) and (merged / "config.json").is_file()
    assert json.loads((run / "round_1" / layout.YIELD).read_text())["totals"]["hinted"] == 0


def test_resume_after_kill_skips_finished_stages(write_recipe, scripted, capsys):
    recipe_path = write_recipe(RECIPE)
    # 2 prompts a call (eval.batch_size 6 // k 3): round 1 samples in 3 calls, hints in 2; round 2's first call
    # writes 2 questions, the kill comes in its second
    scripted(kill_after=6)
    assert main(["run", str(recipe_path), "star.max_per_question=1"]) == 130
    run = load_recipe(recipe_path).run_dir()
    state = json.loads((run / layout.STATE).read_text())
    assert len((run / "round_2" / layout.SAMPLES).read_text().splitlines()) == 2
    assert state["state"] == "failed" and set(state["rounds"]["1"]) == {"sample", "rationalize", "train", "eval"}
    before = {k: v["s"] for k, v in state["rounds"]["1"].items()}
    fake = scripted()
    assert main(["run", str(recipe_path), "star.max_per_question=1"]) == 0, capsys.readouterr().err
    state = json.loads((run / layout.STATE).read_text())
    assert {k: v["s"] for k, v in state["rounds"]["1"].items()} == before  # round 1 not redone
    assert len((run / "round_2" / layout.SAMPLES).read_text().splitlines()) == 6
    assert len(fake.prompts) == 4 + 3  # round 2 only: the 4 questions not sampled before the kill, 3 hinted
    assert main(["run", str(recipe_path), "star.max_per_question=1"]) == 2  # finished: needs --overwrite
    assert "holds a finished STaR run" in capsys.readouterr().err


def test_kill_after_training_does_not_train_again(write_recipe, scripted, monkeypatch):
    scripted()
    recipe = _recipe(write_recipe, overrides=["star.rounds=1"])
    real_mark = rounds.Star.mark

    def mark(self, r, stage, *a, **kw):
        if stage == "train":
            raise KeyboardInterrupt
        return real_mark(self, r, stage, *a, **kw)
    monkeypatch.setattr(rounds.Star, "mark", mark)
    with pytest.raises(KeyboardInterrupt):
        rounds.run_star(recipe)
    monkeypatch.setattr(rounds.Star, "mark", real_mark)
    monkeypatch.setattr("finetune.train.train", lambda *a, **kw: pytest.fail("trained again"))
    summary = rounds.run_star(recipe)
    assert [r["round"] for r in summary["rounds"]] == [1]


def test_bad_star_recipes_give_one_error(write_recipe, scripted, capsys):
    no_eval = RECIPE.replace("eval: {tasks: [arith_cot], limit: 3, batch_size: 6}\n", "")
    assert main(["validate", str(write_recipe(no_eval))]) == 2
    assert "star.rounds: STaR evaluates every round" in capsys.readouterr().err
    assert main(["run", str(write_recipe(RECIPE)), "star.restart=first"]) == 2
    assert "star.restart" in capsys.readouterr().err
    fake = scripted()
    fake.__class__ = type("Wrong", (Scripted,), {"__call__": lambda self, m, t, p, *, num_return_sequences, **kw:
                                                 [[Generation("no", False, 1)] * num_return_sequences for _ in p]})
    assert main(["run", str(write_recipe(RECIPE)), "star.rationalize=false"]) == 2
    assert "no sample reached its target answer" in capsys.readouterr().err
