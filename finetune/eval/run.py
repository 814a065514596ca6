"""The end of `finetune run`: evaluate base and finetuned on the recipe's tasks and report.

Both models see the same prompts, template and decoding: for LoRA the adapter is switched
off on the same loaded model; for freeze / full the base is loaded again. With
`eval.compare_base: false` only the finetuned model is scored, whatever the method. Base
records scored under the same key by an earlier run are reused (eval/basecache.py).
"""

import dataclasses
import time
from pathlib import Path

from finetune import precision
from finetune.log import say
from finetune.rundir import RunDir
from finetune.model import load_base
from finetune.recipe import Recipe


def _contamination(recipe: Recipe, manifest: dict) -> dict:
    """{task: doc ids the training rows contain}; the full overlap report goes into the manifest."""
    from finetune.preflight import contamination

    found, skipped = contamination(recipe)
    manifest["contamination"] = {"tasks": {name: o.to_dict() for name, o in found.items()}, "skipped": skipped}
    for item in found.values():
        if item.doc_ids:
            say(f"contamination: {item.line()}; the report scores the clean subset beside the full score")
    return {name: o.doc_ids for name, o in found.items()}


def evaluate_run(recipe: Recipe, run_dir: Path, model, tokenizer, manifest: dict) -> dict:
    from finetune.eval.basecache import BaseCache, weights_fingerprint
    from finetune.eval.pipeline import eval_base_and_finetuned, side_names
    from finetune.eval.report import format_table

    dtype = precision.eval_dtype(recipe.model.dtype)  # auto: bf16 where this device decodes bf16 faster

    def base_loader():
        base, _ = load_base(dataclasses.replace(recipe.model, dtype=dtype))
        return base

    started = time.time()
    contaminated = _contamination(recipe, manifest)
    say(f"[finetune] {precision.eval_line(recipe.model.dtype)}")
    guards = {"guard_tasks": recipe.eval.guard_tasks, "delta": recipe.eval.guard_delta} \
        if recipe.eval.guard_tasks else None
    with precision.cast_for_eval(model, dtype):  # the trained weights are given back unchanged afterwards
        comparison = eval_base_and_finetuned(
            model, tokenizer, base_loader=base_loader, compare_base=recipe.eval.compare_base,
            task_names=recipe.eval.tasks, out_dir=run_dir / "eval", template_name=recipe.data.template,
            batch_size=recipe.eval.batch_size, limit=recipe.eval.limit, seed=recipe.train.seed, guards=guards,
            run_dir=run_dir, names=side_names(run_dir, recipe.model.name, dataclasses.asdict(recipe.method)),
            meta={"command": "finetune run"},
            base_cache=BaseCache(weights=weights_fingerprint(manifest.get("base_model_path") or recipe.model.name),
                                 dtype=dtype, batch_size=recipe.eval.batch_size, source=str(run_dir)),
            contaminated=contaminated)
    say(format_table(comparison))
    manifest.setdefault("wall_times", {})["eval_s"] = round(time.time() - started, 2)
    manifest["eval"] = {name: {metric: {k: m.get(k) for k in ("a", "b", "diff", "p_value", "n")}
                               for metric, m in task.get("metrics", {}).items()}
                        for name, task in comparison.get("tasks", {}).items()}
    RunDir(run_dir).write_manifest(manifest)
    return comparison
