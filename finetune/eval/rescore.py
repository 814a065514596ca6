"""Re-score saved eval outputs with a task's current filters: no model is loaded, nothing is generated.

    finetune rescore runs/quickstart/eval                          # both sides, then results.json + report
    finetune rescore runs/eval/my_model --task my_arith_cot.yaml   # a `finetune eval` folder, an edited task file

Each task is read again from its file (the `task_path` its scores.json records, or `--task FILE`
for the task of that name) and its filter pipelines are applied to the saved outputs of every
record; scores, failure buckets and the records' config hash are rewritten, so a later
`finetune eval` into the same folder resumes instead of refusing the records. A run's eval folder
(base/ and finetuned/) then gets its paired comparison, guard verdicts, clean subsets and report
rebuilt as `finetune run` wrote them. Only what the outputs do not depend on may change: filters,
metrics and metadata. Another prompt, decoding, document or template is one error, because the
saved outputs no longer answer that task. Log-likelihood tasks have no filters: their metrics are
recomputed from the saved per-choice log-likelihoods (multiple choice) or the saved nll
(perplexity), the same numbers unless the metric list changed. Imports no torch.
"""

import datetime
import json
import os
from pathlib import Path

from finetune.eval.harness import SCORES_FILE, write_json
from finetune.eval.records import _json_line, config_hash, read_records
from finetune.eval.scoring import aggregate, failure_counts, score_choices, score_generation
from finetune.eval.taskfile import TaskError
from finetune.eval.tasks import Task, load_task
from finetune.prompts import TemplateError, load_template
from finetune.rundir import RunDir

FREE_KEYS = ("filter_list", "metric_list", "metadata")  # what rescoring may change; the outputs do not depend on it
SCORED = ("extracted", "correct", "truncated", "by_filter", "scores", "terms", "pred", "pred_norm")


class RescoreError(TaskError):
    """The folder holds no saved eval outputs, or they no longer answer the task as it is now."""


def add_rescore_args(parser):
    parser.add_argument("eval_dir", metavar="EVAL_DIR",
                        help="a run's eval folder (RUN/eval, with base/ and finetuned/), a run directory, or a "
                             "`finetune eval` output folder (with scores.json)")
    parser.add_argument("--task", action="append", default=[], metavar="FILE",
                        help="task YAML to score with instead of the file the scores name (the task of the same "
                             "name); repeatable")
    parser.add_argument("--data-path", default=None,
                        help="folder of local task data (default: the one the eval used, else $FINETUNE_DATA_DIR)")


def cmd_rescore(args) -> int:
    root, sides = eval_sides(Path(args.eval_dir))
    override = _task_overrides(args.task, sides)
    for side in sides:
        for line in rescore_side(side, override, data_path=args.data_path):
            print(f"{side.name if len(sides) > 1 else side}: {line}")
    if root is not None:
        from finetune.eval.report import format_table
        print("\n" + format_table(rebuild_report(root)))
        print(f"\nrewrote: {root / 'results.json'}, report.md, report.html and the scores in "
              f"{', '.join(str(s) for s in sides)}")
    else:
        print(f"\nrewrote: records and {SCORES_FILE} in {sides[0]}")
    return 0


def eval_sides(path: Path) -> tuple[Path | None, list[Path]]:
    """(the run's eval folder or None, the folders with a scores.json to rescore)."""
    if (path / SCORES_FILE).is_file():
        return None, [path]
    for root in (path, path / RunDir.EVAL):
        sides = [root / s for s in ("base", "finetuned") if (root / s / SCORES_FILE).is_file()]
        if sides:
            return root, sides
    raise RescoreError(f"{path}: no saved eval outputs here: no {SCORES_FILE} in it, nor in base/ or finetuned/ "
                       f"(or eval/base/, eval/finetuned/); give a run's eval folder (runs/NAME/eval), a run "
                       f"directory or a `finetune eval` output folder")


def _task_overrides(files: list[str], sides: list[Path]) -> dict[str, str]:
    saved = {t for s in sides for t in _summary(s)["tasks"]}
    out = {}
    for f in files:
        name = Path(f).stem
        if not Path(f).is_file():
            raise RescoreError(f"--task {f}: no such file")
        if name not in saved:
            raise RescoreError(f"--task {f}: the saved outputs hold no task named {name!r} (a task is named by its "
                               f"file name); saved: {', '.join(sorted(saved))}")
        out[name] = f
    return out


def _summary(side: Path) -> dict:
    try:
        summary = json.loads((side / SCORES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RescoreError(f"{side / SCORES_FILE}: unreadable ({e})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), dict):
        raise RescoreError(f"{side / SCORES_FILE}: not a scores file written by `finetune eval` (no tasks)")
    return summary


def rescore_side(side: Path, override: dict[str, str], data_path: str | None = None) -> list[str]:
    """Rescore every task saved in one eval folder; returns a line per task saying what changed."""
    summary, lines = _summary(side), []
    for name, saved in summary["tasks"].items():
        source = override.get(name) or saved.get("task_path")
        if not source or not Path(source).is_file():
            raise RescoreError(f"{side}: task {name}: its task file {source!r} is gone; give it with --task FILE")
        task = load_task(source, data_path=data_path or saved.get("data_path"))
        _check_same_outputs(side, task, saved)
        records = read_records(side / saved["records"])
        _check_documents(side, task, saved, records)
        new = [_rescore_record(task, r) for r in records]
        config = config_hash(task.spec, saved.get("template_source"), _exemplars(side, summary, task, saved),
                             summary.get("seed", 0))
        new = [{**r, "config": config} for r in new]
        _write_records(side / saved["records"], new)
        before = saved.get("scores") or {}
        keys = task.metric_keys()
        saved.update(scores={k: aggregate(k, new) for k in keys},
                     metrics={k: {"higher_is_better": task.higher_is_better(k)} for k in keys},
                     failures=failure_counts(task, new), config=config, task_spec=task.spec, task_path=str(task.path),
                     rescored_at=datetime.datetime.now().isoformat(timespec="seconds"))
        lines.append(_change_line(task, before, saved["scores"], records, new))
    write_json(side / SCORES_FILE, summary)
    return lines


def _check_same_outputs(side: Path, task: Task, saved: dict) -> None:
    """Everything but filters, metrics and metadata must be what the outputs were generated with."""
    old = saved.get("task_spec")
    if not isinstance(old, dict):
        raise RescoreError(f"{side}: task {task.name}: {SCORES_FILE} records no task_spec to check the task against")
    keys = sorted(k for k in set(old) | set(task.spec) if k not in FREE_KEYS and old.get(k) != task.spec.get(k))
    if keys:
        raise RescoreError(f"{side}: task {task.name}: {task.path} differs from the task these outputs were made "
                           f"with in {', '.join(keys)} (only {', '.join(FREE_KEYS)} may change without new outputs); "
                           f"rerun `finetune eval` for it")


def _check_documents(side: Path, task: Task, saved: dict, records: list[dict]) -> None:
    """Each record's document is still there, with the same target, and its text is in the saved prompt."""
    docs = dict(task.docs(saved.get("limit")))
    for rec in records:
        doc = docs.get(rec["doc_id"])
        if doc is None:
            problem = "is no longer among the task's documents"
        elif _target(task, doc) != rec.get("target"):
            problem = f"has target {_target(task, doc)!r} now, the saved output {rec.get('target')!r}"
        elif task.context(rec["doc_id"], doc).strip() not in (rec.get("prompt") or ""):
            problem = "renders another prompt now than the saved output answered"
        else:
            continue
        raise RescoreError(f"{side}: task {task.name}: document {rec['doc_id']} {problem}; the saved outputs do not "
                           f"answer this task's documents: rerun `finetune eval` for it")


def _target(task: Task, doc: dict):
    return task.gold(doc) if task.output_type == "multiple_choice" else task.target(doc)


def _rescore_record(task: Task, rec: dict) -> dict:
    """The record with its scored fields computed again from its saved outputs."""
    kept = {k: v for k, v in rec.items() if k not in SCORED}
    if task.output_type == "generate_until":
        responses = rec.get("outputs") or [rec["output"]]
        # records keep whether every sample was truncated; that is all scoring reads of the per-sample flags
        truncated = [bool(rec.get("truncated"))] * len(responses)
        return {**kept, **score_generation(task, responses, truncated, rec["target"], rec.get("prompt", ""))}
    if task.output_type == "multiple_choice":
        res = score_choices(rec["logliks"], rec["choices"], rec["target"])
        return {**kept, "output": rec["choices"][res["pred"]], "extracted": str(res["pred"]), **res}
    return rec  # loglikelihood_rolling: the scores are the saved nll's


def _exemplars(side: Path, summary: dict, task: Task, saved: dict) -> str | None:
    """The exemplars of the template the outputs were made with, for the config hash (its source must be unchanged)."""
    name = summary.get("template_override") or task.prompt_template
    candidates = [name]
    run = side.parent.parent
    if str(name).endswith(RunDir.TEMPLATE) and (RunDir(run) / RunDir.TEMPLATE).is_file():
        candidates.append(str(RunDir(run) / RunDir.TEMPLATE))  # a run's own template, evaluated from elsewhere
    for candidate in candidates:
        try:
            template = load_template(candidate)
        except TemplateError:
            continue
        if template.source == saved.get("template_source"):
            return template.exemplars
    raise RescoreError(f"{side}: task {task.name}: the prompt template {name!r} is gone or changed since these "
                       f"outputs were made; rerun `finetune eval` for it")


def _write_records(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(_json_line(r) for r in records), encoding="utf-8")
    os.replace(tmp, path)


def _change_line(task: Task, before: dict, after: dict, old: list[dict], new: list[dict]) -> str:
    if task.output_type == "loglikelihood_rolling":
        return f"{task.name}: a log-likelihood task, no filters: nothing to rescore (metrics from the saved nll)"
    changed = sum(1 for a, b in zip(old, new) if _scored(a) != _scored(b))
    scores = ", ".join(f"{k} {_num(before.get(k))} -> {_num(v)}" for k, v in after.items())
    how = "per-choice log-likelihoods" if task.output_type == "multiple_choice" else "filters"
    return f"{task.name}: {changed} of {len(new)} records scored differently ({how} re-applied): {scores}"


def _scored(rec: dict) -> str:
    """The scored fields as JSON text: a NaN score (IFEval with nothing to check) equals itself."""
    return json.dumps({k: rec.get(k) for k in SCORED}, sort_keys=True, default=str)


def _num(x) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) else "-"


def rebuild_report(root: Path) -> dict:
    """results.json and the reports of a run's eval folder, from its rescored sides, as the run wrote them."""
    from finetune.eval.clean import add_clean_subsets
    from finetune.eval.compare import compare
    from finetune.eval.pipeline import _all_scores, _guess_run_dir, single_side
    from finetune.eval.report import write_report
    from finetune.eval.verdict import add_verdicts

    old = _old_results(root / "results.json")
    prev, meta = old.get("comparison") or {}, old.get("meta") or {}
    seed = prev.get("seed", meta.get("seed", 0))
    names = {s: (prev.get(s) or {}).get("name") for s in ("a", "b")}
    if (root / "base" / SCORES_FILE).is_file() and (root / "finetuned" / SCORES_FILE).is_file():
        result = compare(root / "base", root / "finetuned", n_boot=prev.get("n_boot", 2000), seed=seed)
        result["a"]["name"], result["b"]["name"] = names["a"], names["b"]
        contaminated = {t: r["clean_subset"]["excluded_doc_ids"] for t, r in (prev.get("tasks") or {}).items()
                        if (r.get("clean_subset") or {}).get("excluded_doc_ids")}
        add_clean_subsets(result, contaminated, root, seed)
    else:
        side = root / "finetuned" if (root / "finetuned" / SCORES_FILE).is_file() else root / "base"
        result = single_side(side, _all_scores(side), name=names["b"],
                             reason=prev.get("base_not_evaluated") or "no base records in this folder")
    guards = prev.get("guards")
    if guards and guards.get("tasks"):
        add_verdicts(result, guards["tasks"], guards.get("delta", 0.02))
    meta = {**meta, "rescored": datetime.datetime.now().isoformat(timespec="seconds") +
            " (finetune rescore: the task files' filters re-applied to the saved outputs)"}
    write_report(root, result, run_dir=_guess_run_dir(root), meta=meta)
    return result


def _old_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):  # an unreadable report: rebuilt from the records alone
        return {}
    return data if isinstance(data, dict) else {}
