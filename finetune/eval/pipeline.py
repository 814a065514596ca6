"""Base vs finetuned, like for like: same tasks, prompts, template, decoding and seed.

    comparison = eval_base_and_finetuned(model, tokenizer, base_loader=load_base, task_names=["arith_cot"],
                                         out_dir=run_dir / "eval", template_name="chat", batch_size=16,
                                         limit=None, seed=0, names=side_names("runs/x", "smollm2-135m-instruct",
                                                                               {"name": "lora"}))

LoRA: the finetuned model is scored, then the same loaded object with its adapter switched
off (`model.disable_adapter()`) is the base; nothing is reloaded, so nothing else can
differ. Freeze / full: `base_loader()` loads the base weights again. `compare_base=False`
(the recipe's eval.compare_base) scores the finetuned model only, for every method. Writes
out_dir/finetuned/, out_dir/base/ (when the base is scored) and the report (results.json,
report.md, report.html). The report covers every task evaluated into out_dir so far, each with
when and how it was evaluated; base records come from the base cache when the key matches.
"""

import datetime
import json
from pathlib import Path

from finetune.log import say
from finetune.eval.basecache import BaseCache
from finetune.eval.clean import add_clean_subsets
from finetune.eval.compare import compare
from finetune.eval.harness import SCORES_FILE, evaluate
from finetune.eval.report import portable, write_report
from finetune.eval.tasks import load_task
from finetune.eval.verdict import add_verdicts
from finetune.prompts import load_template
from finetune.rundir import RunDir


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _guess_run_dir(out_dir: Path) -> Path | None:
    parent = Path(out_dir).parent
    return parent if (RunDir(parent) / RunDir.TRAIN_LOG).is_file() else None


def describe_model(base_name: str, method: dict) -> str:
    """The finetuned model in the recipe's terms: 'smollm2-135m-instruct + LoRA adapter', '..., trained weights,
    freeze: last 2 blocks trained'."""
    name = method.get("name") or "lora"
    if name == "lora":
        return f"{base_name} + LoRA adapter"
    if name == "freeze":
        n = method.get("layers", 2)
        extra = method.get("extra_modules") or []
        blocks = f"{'last' if n >= 0 else 'first'} {abs(n)} block{'s' * (abs(n) != 1)}"
        return f"{base_name}, trained weights, freeze: {blocks}{' + ' + ', '.join(extra) if extra else ''} trained"
    return f"{base_name}, trained weights, {name} finetune"


def side_names(run_dir, base_name: str, method: dict) -> dict[str, str]:
    """How a user knows each side: A by the recipe's model.name, B by its run directory and method."""
    return {"a": str(base_name), "b": f"{run_dir} ({describe_model(base_name, method)})"}


def run_side_names(run_dir: Path) -> dict[str, str]:
    """side_names for a run directory, from its manifest.json (and recipe.yaml for the method's settings)."""
    import yaml

    run_dir = Path(run_dir)
    manifest = RunDir(run_dir).manifest()
    recipe_file = RunDir(run_dir) / RunDir.RECIPE
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else None
    method = (recipe or {}).get("method") if isinstance(recipe, dict) else None
    method = method if isinstance(method, dict) else {"name": manifest.get("method") or "lora"}
    base = manifest.get("base_model") or Path(str(manifest.get("base_model_path") or "base")).name
    return side_names(run_dir, base, method)


def _failures(out_dir: Path) -> dict:
    path = Path(out_dir) / SCORES_FILE
    tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks", {}) if path.is_file() else {}
    return {t: s.get("failures") or {} for t, s in tasks.items()}


def _all_scores(out_dir: Path) -> dict:
    """{task: scores} of every task evaluated into out_dir so far (a run's report never drops a task)."""
    path = Path(out_dir) / SCORES_FILE
    tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks", {}) if path.is_file() else {}
    return {t: s["scores"] for t, s in tasks.items() if "scores" in s}


def single_side(out_dir: Path, scores: dict, *, name: str | None = None, reason: str | None = None) -> dict:
    """A comparison-shaped dict for one model (no base evaluated): format_table prints its scores."""
    failures = _failures(out_dir)
    return {"a": None, "b": {"dir": str(out_dir), "label": "finetuned", "name": name},
            "base_not_evaluated": reason,
            "tasks": {t: {"metrics": {k: {"b": v} for k, v in s.items()},
                          "failures": {"b": failures.get(t) or {}}} for t, s in scores.items()},
            "warnings": []}


def _score_base(model, tokenizer, base_loader, tasks, out_dir: Path, common: dict) -> str | None:
    """Score the base into out_dir; returns how the base was obtained, or None when there is no base to score."""
    if is_peft_model(model):
        with model.disable_adapter():
            evaluate(model, tokenizer, tasks, out_dir, label="base", **common)
        return "the same loaded model with its LoRA adapter disabled"
    if base_loader is None:
        return None
    loaded = base_loader()
    base_model, base_tok = loaded if isinstance(loaded, tuple) else (loaded, None)
    evaluate(base_model, base_tok or tokenizer, tasks, out_dir, label="base", **common)
    del base_model
    return "the base weights loaded again"


def _eval_base(model, tokenizer, base_loader, tasks, out_dir: Path, common: dict,
               cache: BaseCache | None) -> tuple[str | None, dict]:
    """Base records for every task: copied from the base cache where the key matches, else scored (and cached).
    Returns (how the base was obtained or None, {task: how that task's base records were obtained})."""
    how, todo = {}, []
    for task in tasks:
        template = load_template(common["template_name"] or task.prompt_template)
        hit = cache.restore(task, template, limit=common["limit"], seed=common["seed"], out_dir=out_dir) \
            if cache else None
        if hit is None:
            todo.append((task, template))
            continue
        how[task.name] = f"cached from {portable(hit[0])}, key {hit[1]}"
        say(f"base: {task.name}: {how[task.name]}")
    via = _score_base(model, tokenizer, base_loader, [t for t, _ in todo], out_dir, common) if todo else None
    if todo and via is None:
        return None, {}
    for task, template in todo:
        key = cache.store(task, template, limit=common["limit"], seed=common["seed"], out_dir=out_dir) \
            if cache else None
        how[task.name] = f"computed: {via}" + (f", key {key}" if key else "")
        say(f"base: {task.name}: {how[task.name]}" + (" (cached for later runs)" if key else ""))
    return via or "cached base records (see each task)", how


def _evaluations(tasks, base_how: dict, info: dict) -> dict:
    """When and how each task was evaluated now, for the run's cumulative report."""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    keep = {k: info.get(k) for k in ("template", "limit", "seed", "batch_size", "command") if k in info}
    return {t.name: {"at": now, **keep, "base": base_how.get(t.name, info.get("base_via"))} for t in tasks}


def eval_base_and_finetuned(model, tokenizer, *, base_loader, task_names: list[str], out_dir: Path,
                            template_name: str | None, batch_size: int, limit: int | None, seed: int,
                            data_path: str | None = None, run_dir: Path | None = None,
                            meta: dict | None = None, compare_base: bool = True,
                            names: dict[str, str] | None = None, base_cache: BaseCache | None = None,
                            guards: dict | None = None, contaminated: dict | None = None) -> dict:
    """Evaluate the finetuned model and (with compare_base) its base on the same tasks; write and return the report.

    `base_loader()` returns the base model (or (model, tokenizer)); it is not called for a
    PEFT model. With `compare_base=False`, or `base_loader=None` for a non-PEFT model, only
    the finetuned model is scored: the report says the base was not evaluated and why.
    `names` ({"a": ..., "b": ...}, see side_names) is how the report names the two models.
    `guards` ({"guard_tasks": [...], "delta": δ}) adds those tasks and gives each guard metric a verdict (verdict.py).
    `base_cache` (see basecache.py) reuses base records scored under the same key by any run.
    `contaminated` ({task: doc ids the training rows contain}) adds each such task's clean-subset comparison.
    """
    out_dir, names = Path(out_dir), names or {}
    task_names = [*task_names, *[g for g in (guards or {}).get("guard_tasks", ()) if g not in task_names]]
    tasks = [load_task(n, data_path=data_path) for n in task_names]
    common = dict(template_name=template_name, batch_size=batch_size, limit=limit, seed=seed)
    tuned_scores = evaluate(model, tokenizer, tasks, out_dir / "finetuned", label="finetuned", **common)
    base_via, base_how = _eval_base(model, tokenizer, base_loader, tasks, out_dir / "base", common, base_cache) \
        if compare_base else (None, {})
    info = {"base_via": base_via or "not evaluated", "template": template_name or "each task's prompt_template",
            "limit": limit, "batch_size": batch_size, "seed": seed, "tasks": ", ".join(task_names), **(meta or {})}
    run_dir = run_dir or _guess_run_dir(out_dir)
    if base_via is None:
        reason = "eval.compare_base: false" if not compare_base else "no base model to load"
        result = single_side(out_dir / "finetuned", {**_all_scores(out_dir / "finetuned"), **tuned_scores},
                             name=names.get("b"), reason=reason)
    else:
        result = compare(out_dir / "base", out_dir / "finetuned", seed=seed)
        result["a"]["name"], result["b"]["name"] = names.get("a"), names.get("b")
    if guards:
        add_verdicts(result, **guards)
    if base_via is not None:
        add_clean_subsets(result, contaminated or {}, out_dir, seed)
    write_report(out_dir, result, run_dir=run_dir, meta=info, evaluations=_evaluations(tasks, base_how, info))
    return result
