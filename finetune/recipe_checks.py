"""Recipe problems no single key shows: options that conflict or leave nothing to do (pure, no torch).

    problems = cross_checks(recipe)     # [(dotted key, message)]; load_recipe raises them with file:line
"""


def cross_checks(recipe) -> list[tuple[str, str]]:
    """Problems no single key shows: options that conflict or leave nothing to do."""
    out = []
    if recipe.train.max_steps == -1 and recipe.train.epochs == 0:
        out.append(("train.epochs", "train: nothing to train: max_steps is -1 and epochs is 0; set one of them"))
    if recipe.train.max_steps == 0:
        out.append(("train.max_steps", "train.max_steps: must be -1 (use epochs) or at least 1, got 0"))
    for i, ds in enumerate(recipe.data.datasets):
        if not ds.name and not ds.source and not ds.path:
            out.append((f"data.datasets[{i}]", f"data.datasets[{i}]: give a registered `name` (see `finetune ls "
                        "datasets`) or an inline `source` with a `format`"))
    if recipe.method.name == "freeze" and recipe.method.layers == 0 and not recipe.method.extra_modules:
        out.append(("method.layers", "method.layers: freeze with layers 0 and no extra_modules trains nothing; "
                    "use N (last N blocks) or -N (first N)"))
    if recipe.method.name != "freeze" and recipe.method.extra_modules:
        out.append(("method.extra_modules", "method.extra_modules: only used by method 'freeze', but method is "
                    f"'{recipe.method.name}'"))
    if recipe.star.rounds and not recipe.eval.tasks:
        out.append(("star.rounds", "star.rounds: STaR evaluates every round on held-out tasks; set eval.tasks "
                    "(e.g. [arith_cot])"))
    return out + _during_checks(recipe)


def _during_checks(recipe) -> list[tuple[str, str]]:
    """eval.every_steps / keep_best: a validation source, and a score to keep the best checkpoint by."""
    e, out = recipe.eval, []
    if e.keep_best and not e.every_steps:
        out.append(("eval.keep_best", "eval.keep_best: keeps the best checkpoint by the eval.every_steps score, but "
                    "eval.every_steps is 0; set it (e.g. eval.every_steps: 50)"))
    if e.every_steps and e.every_task is None and not recipe.data.val_size:
        out.append(("eval.every_steps", "eval.every_steps: scores the recipe's held-out rows, but data.val_size is "
                    "0; set data.val_size (e.g. 32) or eval.every_task (an eval task with a validation split)"))
    return out
