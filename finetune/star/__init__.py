"""Self-taught rationales (STaR, Zelikman et al. 2022; rejection-sampling finetuning, Yuan et al. 2023).

    finetune run recipes/star_arith.yaml        a recipe with `star.rounds` >= 1 runs the rounds

From questions and final answers alone the model writes its own rationales: sample k per
question (sample.py), keep those whose answer eval's strict extraction finds equal to the
target (select.py), optionally rationalise the failures with the answer as a hint, finetune
on the kept ones, evaluate against the base (evaluate.py), repeat (rounds.py); the per-round
report is report.py, the run directory's layout layout.py.
"""

from finetune.errors import UserError


class StarError(UserError):
    pass


def run_star(recipe, overwrite: bool = False) -> dict:
    from finetune.star.rounds import run_star as run
    return run(recipe, overwrite)
