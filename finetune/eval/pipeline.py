"""Base vs finetuned, like for like: same tasks, prompts, template, decoding and seed.

    comparison = eval_base_and_finetuned(model, tokenizer, base_loader=load_base, task_names=["arith_cot"],
                                         out_dir=run_dir / "eval", template_name="chat", batch_size=16,
                                         limit=None, seed=0)

LoRA: the finetuned model is scored, then the same loaded object with its adapter switched
off (`model.disable_adapter()`) is the base; nothing is reloaded, so nothing else can
differ. Freeze / full: `base_loader()` loads the base weights again. Writes
out_dir/finetuned/, out_dir/base/ and the report (results.json, report.md, report.html).
"""

from pathlib import Path

from finetune.eval.compare import compare
from finetune.eval.harness import evaluate
from finetune.eval.report import write_report
from finetune.eval.tasks import load_task


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _guess_run_dir(out_dir: Path) -> Path | None:
    parent = Path(out_dir).parent
    return parent if (parent / "logs" / "train_log.jsonl").is_file() else None


def single_side(out_dir: Path, scores: dict) -> dict:
    """A comparison-shaped dict for one model (no base evaluated): format_table prints its scores."""
    return {"a": None, "b": {"dir": str(out_dir), "label": "finetuned"},
            "tasks": {t: {"metrics": {k: {"b": v} for k, v in s.items()}} for t, s in scores.items()},
            "warnings": []}


def eval_base_and_finetuned(model, tokenizer, *, base_loader, task_names: list[str], out_dir: Path,
                            template_name: str | None, batch_size: int, limit: int | None, seed: int,
                            data_path: str | None = None, run_dir: Path | None = None,
                            meta: dict | None = None) -> dict:
    """Evaluate the finetuned model and its base on the same tasks; write and return the comparison.

    `base_loader()` returns the base model (or (model, tokenizer)); it is not called for a
    PEFT model. With `base_loader=None` and a non-PEFT model only the finetuned model is
    scored and a one-sided result is returned (no report).
    """
    out_dir = Path(out_dir)
    tasks = [load_task(n, data_path=data_path) for n in task_names]
    common = dict(template_name=template_name, batch_size=batch_size, limit=limit, seed=seed)
    tuned_scores = evaluate(model, tokenizer, tasks, out_dir / "finetuned", label="finetuned", **common)
    if is_peft_model(model):
        with model.disable_adapter():
            evaluate(model, tokenizer, tasks, out_dir / "base", label="base", **common)
        base_via = "the same loaded model with its LoRA adapter disabled"
    elif base_loader is not None:
        loaded = base_loader()
        base_model, base_tok = loaded if isinstance(loaded, tuple) else (loaded, None)
        evaluate(base_model, base_tok or tokenizer, tasks, out_dir / "base", label="base", **common)
        del base_model
        base_via = "the base weights loaded again"
    else:
        return single_side(out_dir / "finetuned", tuned_scores)
    comparison = compare(out_dir / "base", out_dir / "finetuned", seed=seed)
    info = {"base_via": base_via, "template": template_name or "each task's prompt_template", "limit": limit,
            "batch_size": batch_size, "seed": seed, "tasks": ", ".join(task_names), **(meta or {})}
    write_report(out_dir, comparison, run_dir=run_dir or _guess_run_dir(out_dir), meta=info)
    return comparison
