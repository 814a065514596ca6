"""STaR rounds: sample -> rationalize -> select -> train -> eval, R times; a finished stage is skipped on rerun.

    finetune run recipes/star_arith.yaml          (any recipe with star.rounds >= 1)

Round r samples from the model of round r - 1 (round 1: the base) and trains either from the
base model (`star.restart: base`, the default and STaR's choice: every round is one finetune of
the base on the rationales kept this round, which round r - 1's model wrote, so errors do not
compound across rounds and the model does not drift or overfit its own earlier samples) or
from round r - 1's weights (`restart: last`: LoRA merged into the weights,
RUN/round_<r-1>/merged/, then a fresh adapter).
Resuming: samples are appended per batch (a rerun samples only the missing questions), the
round's training resumes from its last checkpoint (finetune/train.py), eval records resume
(finetune/eval/harness.py), and star.json records each finished stage, which a rerun skips.
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

from finetune import precision, rundir
from finetune.log import say
from finetune.prompts import load_template
from finetune.recipe import DatasetSpec, Recipe, StarConfig, dump_recipe
from finetune.rundir import RunDir, read_json, write_json
from finetune.star import layout
from finetune.star.evaluate import eval_base, eval_round, metric_rows
from finetune.star.report import write_star_report
from finetune.star.sample import questions, sample
from finetune.star.select import select, totals


class Star:
    """One STaR run directory and the model currently in memory (reused between stages)."""

    def __init__(self, recipe: Recipe, overwrite: bool = False):
        self.recipe, self.run = recipe, layout.prepare(recipe, overwrite)
        self.state = read_json(self.run / layout.STATE) or {"rounds": {}}
        self.loaded = None  # (round, model, tokenizer); round 0 is the base
        self.eval_dtype = precision.eval_dtype(recipe.model.dtype)  # sampling and eval (auto: measured)

    def save_state(self, **extra):
        self.state.update(recipe_hash=self.recipe.hash(), **extra)
        write_json(self.run / layout.STATE, self.state)

    def stage_done(self, r: int, stage: str) -> bool:
        return stage in self.state["rounds"].get(str(r), {})

    def mark(self, r: int, stage: str, seconds: float, **info):
        self.state["rounds"].setdefault(str(r), {})[stage] = {"s": round(seconds, 1), **info}
        self.save_state()

    def model(self, r: int):
        """(model, tokenizer) after round r (0: the base), loaded once."""
        if self.loaded is None or self.loaded[0] != r:
            self.loaded = None  # free the previous model first
            if r == 0:
                from finetune.model import load_base
                self.loaded = (0, *load_base(dataclasses.replace(self.recipe.model, dtype=self.eval_dtype)))
            else:
                self.loaded = (r, *RunDir(layout.round_dir(self.run, r) / layout.TRAIN).load(dtype=self.eval_dtype))
        return self.loaded[1], self.loaded[2]


def run_star(recipe: Recipe, overwrite: bool = False) -> dict:
    """Every round of the recipe's star section; returns the per-round summary (RUN/results.json)."""
    s = Star(recipe, overwrite)
    s.save_state(state="running")
    try:
        _base(s)
        qs = questions(recipe)
        say(f"[star] {len(qs)} training questions, {recipe.star.rounds} round(s), k {recipe.star.k}, "
            f"restart: {recipe.star.restart}; sampling and {precision.eval_line(recipe.model.dtype)}")
        for r in range(1, recipe.star.rounds + 1):
            _round(s, r, qs)
    except BaseException as e:
        s.save_state(state="failed", error=f"{type(e).__name__}: {e}"[:500])
        raise
    summary = write_star_report(s.run, recipe, s.state)
    s.save_state(state="finished")
    return summary


def _base(s: Star):
    if "base_eval" in s.state:
        return
    t0 = time.time()
    loaded = eval_base(s.recipe, s.run / layout.BASE_EVAL, str(s.run))
    if loaded is not None:
        s.loaded = (0, *loaded)
    s.save_state(base_eval={"s": round(time.time() - t0, 1)})


def _round(s: Star, r: int, qs: list[dict]):
    rd, star, template = layout.round_dir(s.run, r), s.recipe.star, load_template(s.recipe.data.template)
    sampled = {}
    for stage, path, hinted in (("sample", layout.SAMPLES, False), ("rationalize", layout.RATIONALIZED, True)):
        if hinted and not star.rationalize:
            break
        todo = qs if not hinted else _unsolved(qs, sampled["sample"], star.max_per_question)
        t0 = time.time()
        if not s.stage_done(r, stage):
            model, tok = s.model(r - 1)
            with precision.cast_for_eval(model, s.eval_dtype):  # a model just trained is still fp32
                sample(model, tok, template, todo, rd / path, star=star, batch_size=s.recipe.eval.batch_size,
                       seed=s.recipe.train.seed * 1000 + r * 10 + hinted, hinted=hinted)
        sampled[stage] = {rec["qid"]: rec for rec in map(json.loads, (rd / path).read_text().splitlines())}
        if not s.stage_done(r, stage):
            s.mark(r, stage, time.time() - t0, questions=len(todo))
    kept, yields = select(qs, list(sampled.values()), star.max_per_question)
    write_json(rd / layout.YIELD, {"totals": totals(yields), "per_question": yields})
    if not kept:
        from finetune.star import StarError
        raise StarError(f"star round {r}: no sample reached its target answer ({totals(yields)['sampled']} "
                        "sampled); nothing to train on. Raise star.k or star.temperature, set star.instruction "
                        "(how to write the final answer) or star.rationalize: true")
    _write_kept(rd, kept, qs)
    _train(s, r, rd)
    if not s.stage_done(r, "eval"):
        t0 = time.time()
        model, tok = s.model(r)
        with precision.cast_for_eval(model, s.eval_dtype):
            result = eval_round(s.recipe, model, tok, s.run / layout.BASE_EVAL, rd / layout.EVAL,
                                rd / layout.TRAIN, r)
        s.mark(r, "eval", time.time() - t0, metrics=metric_rows(result), yield_=totals(yields))


def _unsolved(qs: list[dict], samples: dict, cap: int) -> list[dict]:
    """The questions left without a kept rationale by their unhinted samples: rationalisation's work."""
    _, yields = select(qs, [samples], cap)
    return [q for q in qs if not yields[str(q["qid"])]["kept"]]


def _write_kept(rd: Path, kept: list[dict], qs: list[dict]):
    fmt = {q["qid"]: q["answer_format"] for q in qs}
    by_format = {}
    for row in kept:
        by_format.setdefault(fmt[row["qid"]], []).append(row)
    for i, rows in enumerate(by_format.values()):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        rundir.write_atomic(rd / layout.kept_name(i), text)
    rundir.write_atomic(rd / layout.KEPT_FORMATS, json.dumps(list(by_format)) + "\n")


def round_recipe(recipe: Recipe, r: int, rd: Path, base_name: str) -> Recipe:
    """The plain recipe one round trains: the kept rows as inline cot data, no eval, its own run directory."""
    formats = json.loads((rd / layout.KEPT_FORMATS).read_text())
    datasets = [DatasetSpec(name=f"star_round_{r}" + (f"_{i}" if i else ""), format="cot",
                            source=str(rd / layout.kept_name(i)), answer_format=f) for i, f in enumerate(formats)]
    out = dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, name=base_name),
        data=dataclasses.replace(recipe.data, datasets=datasets),
        eval=dataclasses.replace(recipe.eval, tasks=[], guard_tasks=[]),
        output=dataclasses.replace(recipe.output, dir=str(rd / layout.TRAIN), name=None, overwrite=False, card=None),
        star=StarConfig())
    out.source_lines = {}
    return out


def _train(s: Star, r: int, rd: Path):
    if s.stage_done(r, "train"):
        return
    t0 = time.time()
    base_name = s.recipe.model.name
    if s.recipe.star.restart == "last" and r > 1:
        base_name = str(_merged(s, r - 1))
    recipe = round_recipe(s.recipe, r, rd, base_name)
    rundir.write_atomic(rd / "round_recipe.yaml", dump_recipe(recipe))
    train_dir = RunDir(rd / layout.TRAIN)
    if train_dir.status() != "finished":  # killed after training finished, before star.json said so: done
        from finetune.train import train
        s.loaded = None
        _, model, tok, _ = train(recipe)
        s.loaded = (r, model, tok)
    s.mark(r, "train", time.time() - t0, base=base_name, examples=sum(1 for _ in _kept_rows(rd)))


def _kept_rows(rd: Path):
    for i in range(len(json.loads((rd / layout.KEPT_FORMATS).read_text()))):
        yield from (rd / layout.kept_name(i)).read_text().splitlines()


def _merged(s: Star, r: int) -> Path:
    """Round r's weights as a plain model folder (LoRA merged), the next round's base under restart: last."""
    from finetune.export import export_run

    out = layout.round_dir(s.run, r) / layout.MERGED
    if not (out / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        s.loaded = None
        export_run(layout.round_dir(s.run, r) / layout.TRAIN, out, merge=RunDir(
            layout.round_dir(s.run, r) / layout.TRAIN).is_lora(), force=True)
    return out
