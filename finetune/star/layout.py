"""A STaR run directory: every name in it spelled once, and opening it (fresh, resumed or replaced).

    runs/<name>/
      recipe.yaml            the resolved recipe
      star.json              state (running | finished | failed), recipe hash, each round's finished stages
                             with their wall seconds, the eval metrics and yield totals per round
      base_eval/             the base model's eval records (from the base cache when the key matches)
      round_<r>/
        samples.jsonl        k samples per training question, as sampled (text, correct, truncated)
        rationalized.jsonl   star.rationalize: hinted samples for the questions with no correct sample
        kept.jsonl           the training rows (question without any hint, rationale, answer)
        yield.json           per question: sampled, correct, hinted, hinted_correct, kept; and totals
        round_recipe.yaml    the plain recipe this round trained
        train/               the round's training run directory (finetune/rundir.py: adapter/, checkpoints/, ...)
        merged/              restart: last: this round's weights merged, the next round's starting point
        eval/                finetuned/ records and this round's paired report against base_eval/
      results.json, report.md, report.html, plots/star.png   the per-round summary
"""

import shutil
from pathlib import Path

from finetune import rundir
from finetune.recipe import dump_recipe
from finetune.rundir import read_json
from finetune.star import StarError

STATE, BASE_EVAL = "star.json", "base_eval"
SAMPLES, RATIONALIZED, YIELD, KEPT_FORMATS = "samples.jsonl", "rationalized.jsonl", "yield.json", "kept_formats.json"
TRAIN, MERGED, EVAL = "train", "merged", "eval"
RESULTS, REPORT_MD, REPORT_HTML, PLOT = "results.json", "report.md", "report.html", "plots/star.png"


def round_dir(run: Path, r: int) -> Path:
    return Path(run) / f"round_{r}"


def kept_name(i: int) -> str:
    """Training rows of the i-th answer format among the questions (one file per format; usually one)."""
    return "kept.jsonl" if i == 0 else f"kept_{i + 1}.jsonl"


def prepare(recipe, overwrite: bool) -> Path:
    """Create or reopen the run directory; a finished run needs overwrite, a changed recipe a new name."""
    run = recipe.run_dir()
    state = read_json(run / STATE)
    if run.exists() and any(run.iterdir()) and state is None:
        raise StarError(f"{run} exists and is not a STaR run directory (no {STATE}); choose another output.dir")
    overwrite = overwrite or recipe.output.overwrite
    if state and state.get("state") == "finished" and not overwrite:
        raise StarError(f"{run} holds a finished STaR run; pass --overwrite (or output.overwrite: true) to "
                        "replace it, or set output.name to start a new one")
    if state and state.get("state") != "finished" and state.get("recipe_hash") not in (None, recipe.hash()) \
            and not overwrite:
        raise StarError(f"{run}: the recipe changed since this unfinished run started, so its samples do not "
                        "belong to it; pass --overwrite to start again, or set output.name for a new run")
    if state and overwrite and (state.get("state") == "finished" or state.get("recipe_hash") != recipe.hash()):
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    rundir.write_atomic(run / "recipe.yaml", dump_recipe(recipe))
    return run
