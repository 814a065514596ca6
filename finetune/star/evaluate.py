"""STaR evaluation: the base once (from the base cache when its key matches), each round against it, paired.

Every round is compared with the same base records (RUN/base_eval/), not with its own
starting point: with `restart: last` a round starts from the previous round's weights, and
the question the report answers is how far the rounds got from the base model.
"""

import dataclasses
from pathlib import Path

from finetune import precision
from finetune.eval.basecache import BaseCache, weights_fingerprint
from finetune.eval.compare import compare
from finetune.eval.harness import evaluate
from finetune.eval.report import write_report
from finetune.eval.tasks import load_task
from finetune.eval.verdict import add_verdicts
from finetune.log import say
from finetune.model import load_base, resolve_model
from finetune.prompts import load_template


def eval_tasks(recipe) -> list:
    names = [*recipe.eval.tasks, *[g for g in recipe.eval.guard_tasks if g not in recipe.eval.tasks]]
    return [load_task(n) for n in names]


def _common(recipe) -> dict:
    e = recipe.eval
    return dict(template_name=recipe.data.template, batch_size=e.batch_size, limit=e.limit, seed=recipe.train.seed)


def eval_base(recipe, out_dir: Path, source: str, loaded=None):
    """Score the base into out_dir (cached records where the key matches); returns (model, tokenizer) if loaded."""
    tasks, common = eval_tasks(recipe), _common(recipe)
    dtype = precision.eval_dtype(recipe.model.dtype)  # the key holds the dtype the base really runs in
    cache = BaseCache(weights=weights_fingerprint(resolve_model(recipe.model.name)), dtype=dtype,
                      batch_size=common["batch_size"], source=source)
    template = load_template(recipe.data.template)
    todo = []
    for task in tasks:
        hit = cache.restore(task, template, limit=common["limit"], seed=common["seed"], out_dir=out_dir)
        if hit is None:
            todo.append(task)
        else:
            say(f"[star] base: {task.name}: cached from {hit[0]}, key {hit[1]}")
    if todo:
        loaded = loaded or load_base(dataclasses.replace(recipe.model, dtype=dtype))
        evaluate(*loaded, todo, out_dir, label="base", **common)
        for task in todo:
            cache.store(task, template, limit=common["limit"], seed=common["seed"], out_dir=out_dir)
    return loaded


def eval_round(recipe, model, tokenizer, base_dir: Path, round_eval: Path, train_dir: Path, r: int) -> dict:
    """This round's model on the eval tasks (records resume), paired against the base; writes its report."""
    evaluate(model, tokenizer, eval_tasks(recipe), round_eval / "finetuned", label=f"star round {r}",
             **_common(recipe))
    result = compare(base_dir, round_eval / "finetuned", seed=recipe.train.seed)
    result["a"]["name"] = recipe.model.name
    result["b"]["name"] = f"{train_dir} (STaR round {r}, restart: {recipe.star.restart})"
    if recipe.eval.guard_tasks:
        add_verdicts(result, guard_tasks=recipe.eval.guard_tasks, delta=recipe.eval.guard_delta)
    write_report(round_eval, result, run_dir=train_dir,
                 meta={"command": "finetune run (star)", "round": r, "base_via": f"{base_dir} (the base, scored once)"})
    return result


def metric_rows(result: dict) -> dict:
    """{task: {metric: {a, b, diff, ci, p_value, n}}} of a comparison."""
    return {t: {k: {f: m.get(f) for f in ("a", "b", "diff", "ci", "p_value", "n")} for k, m in v["metrics"].items()}
            for t, v in result.get("tasks", {}).items()}
