"""Evaluate any causal LM on eval tasks; per-sample records make every score auditable.

    scores = evaluate(model, tokenizer, [load_task("arith_cot")], Path("runs/x/eval/finetuned"))

Writes `<out_dir>/<task>.jsonl` (one line per document, written as it finishes) and
`<out_dir>/scores.json` (scores, failure buckets, configs, versions, timing). Running it
again on the same folder resumes: finished documents are not redone.
"""

import datetime
import json
import os
import time
from pathlib import Path

from finetune.eval import BATCH_SIZE
from finetune.eval.records import RecordStore, config_hash
from finetune.eval.scoring import aggregate, failure_counts
from finetune.eval.tasks import Task
from finetune.prompts import load_template
from finetune.log import progress
from finetune.provenance import versions

SCORES_FILE = "scores.json"


def model_info(model) -> dict:
    cfg = getattr(model, "config", None)
    info = {"class": type(model).__name__, "name_or_path": getattr(cfg, "_name_or_path", None),
            "parameters": sum(p.numel() for p in model.parameters())}
    if hasattr(model, "peft_config"):
        info["adapters"] = sorted(model.peft_config)
    return info


def write_json(path: Path, data) -> None:
    """Atomic write: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a model's output: write it as its \u escape
        text = json.dumps(data, indent=2, default=str)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _task_summary(task: Task, template, records: list[dict], new: int, seconds: float, cfg: str,
                  limit: int | None, previous: dict) -> dict:
    keys = task.metric_keys()
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return {
        "scores": {k: aggregate(k, records) for k in keys},
        "metrics": {k: {"higher_is_better": task.higher_is_better(k)} for k in keys},
        "n": len(records), "failures": failure_counts(task, records),
        "records": f"{task.name}.jsonl", "config": cfg, "output_type": task.output_type,
        "template": template.name, "template_source": template.source, "task_path": str(task.path),
        "task_spec": task.spec, "data_path": task.data_path, "limit": limit,
        "evaluated_at": now if new or not previous.get("evaluated_at") else previous["evaluated_at"],
        "timing": {"new_samples": new, "seconds": round(seconds, 3),
                   "examples_per_s": round(new / seconds, 4) if new and seconds > 0 else None},
    }


def evaluate(model, tokenizer, tasks: list[Task], out_dir: Path, *, template_name: str | None = None,
             batch_size: int = BATCH_SIZE, limit: int | None = None, seed: int = 0, label: str = "",
             decoder: str = "continuous") -> dict:
    """Score `model` on `tasks`; returns {task: {metric: value}} and writes records + scores.json to out_dir.

    `template_name` replaces every task's `prompt_template` (evaluate with the template a run
    trained with). `limit` caps documents per task (default: each task's dataset.limit).
    `decoder` is how greedy generation runs (generate.DECODERS; continuous batching by default).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / SCORES_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"tasks": {}}
    summary.update(label=label, model=model_info(model), seed=seed, batch_size=batch_size, limit=limit,
                   template_override=template_name, versions=versions())
    from finetune.eval.meter import describe  # torch, like the runners
    from finetune.eval.runners import RUNNERS  # torch and transformers: not for readers (report, rescore)

    was_training = model.training
    model.eval()
    scores = {}
    try:
        for task in tasks:
            template = load_template(template_name or task.prompt_template)
            docs = task.docs(limit)
            cfg = config_hash(task.spec, template.source, template.exemplars, seed)
            t0, decode = time.time(), None
            with RecordStore(out_dir / f"{task.name}.jsonl", cfg) as store:
                todo = [(i, d) for i, d in docs if i not in store.done]
                if todo:
                    decode = RUNNERS[task.output_type](model, tokenizer, task, template, todo, store.write,
                                                       batch_size=batch_size, seed=seed, decoder=decoder)
                records = [store.records[i] for i, _ in docs]
            summary["tasks"][task.name] = _task_summary(task, template, records, len(todo), time.time() - t0, cfg,
                                                        limit, summary["tasks"].get(task.name) or {})
            if decode:  # generated tokens/s and decode MFU (eval/meter.py)
                summary["tasks"][task.name]["timing"]["decode"] = decode
                progress(describe(task.name, decode))
            scores[task.name] = summary["tasks"][task.name]["scores"]
            write_json(summary_path, summary)
    finally:
        model.train(was_training)
    return scores
