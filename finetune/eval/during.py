"""Task accuracy during training: a fixed small validation subset scored at checkpoints (eval.every_steps).

    eval: {every_steps: 50, every_limit: 24, keep_best: true}                  # the recipe's held-out rows
    eval: {every_steps: 50, every_task: arith_cot, every_split: validation}   # an eval task's validation split

Where the documents come from (`eval.every_task`):
- null (default): the recipe's own held-out rows (`data.val_size`), those of cot datasets. The prompt is
  the row's question in the run's template (the very text training rendered); the target is the final
  answer read back from the row's answer line with its dataset's `answer_format` (finetune/answers.py);
  two filters, as the shipped CoT tasks have: strict (that answer_format) and flexible (the last number),
  both after `</think>` with `data.think`. Greedy, stop at EOS, room for 1.5x the longest reference
  completion of the subset (+16 tokens).
- an eval task (name or path): the task file with `dataset.split` set to `eval.every_split`. The test
  split and the split the task itself is scored on are refused, so no checkpoint is ever chosen on the
  final evaluation's documents. Prompts, generation settings, filters and metrics are the task's.

Either way the final eval's runner (finetune/eval/runners.py: `render_prompt` + `encode_prompt` +
`generate_batch`) writes the records and finetune/eval/scoring.py scores them. The curve is the first
metric (`exact_match:strict` for held-out rows): `task_accuracy` in the train log, every metric in
`task_scores`, the pass's seconds in `task_eval_s`; each pass's records go to logs/task_eval/step-N.jsonl.
The trainer side (when to score, keeping the best) is `TaskEval` in finetune/trainer.py.
"""

import dataclasses
import html
import json
import math
from dataclasses import dataclass, field

from finetune.errors import UserError
from finetune.eval import BATCH_SIZE
from finetune.rundir import RunDir, write_atomic

VALUE, SCORES, SECONDS = "task_accuracy", "task_scores", "task_eval_s"  # train-log fields of a scored step


class DuringError(UserError):
    pass


@dataclass
class ValidationRows:
    """Held-out cot rows of one answer_format as a generation task: what the runner and scoring.py read."""
    name: str
    answer_format: str
    max_new_tokens: int
    think: bool = False
    output_type: str = "generate_until"
    repeats: int = 1
    metrics: list = field(default_factory=lambda: ["exact_match"])

    @property
    def generation(self) -> dict:
        return {"until": [], "max_new_tokens": self.max_new_tokens, "temperature": 0.0, "top_p": 1.0}

    @property
    def filters(self) -> list[tuple[str, list[dict]]]:
        first = [{"function": "strip_think"}] if self.think else []
        return [("strict", first + [{"function": "answer_format", "format": self.answer_format},
                                    {"function": "take_first"}]),
                ("flexible", first + [{"function": "last_number"}, {"function": "take_first"}])]

    def metric_keys(self) -> list[str]:
        return [f"{m}:{f}" for m in self.metrics for f, _ in self.filters]

    @staticmethod
    def higher_is_better(key: str) -> bool:
        return True

    def context(self, doc_id: int, doc: dict) -> str:
        return doc["prompt"]

    def target(self, doc: dict) -> str:
        return doc["target"]


@dataclass
class Probe:
    """What eval.every_steps scores: (task, todo) parts under one template; the curve is `metric`."""
    label: str
    metric: str
    higher_is_better: bool
    parts: list  # [(task or ValidationRows, [(doc_id, doc), ...])]
    template: object
    batch_size: int = BATCH_SIZE
    seed: int = 0

    @property
    def n(self) -> int:
        return sum(len(todo) for _, todo in self.parts)

    def score(self, model, tokenizer) -> tuple[dict, list[dict]]:
        """({metric: value}, records), the model in eval mode meanwhile; the same runner as the final eval."""
        from finetune.eval.runners import RUNNERS
        from finetune.eval.scoring import aggregate

        records, was_training = [], model.training
        model.eval()
        try:
            for task, todo in self.parts:
                RUNNERS[task.output_type](model, tokenizer, task, self.template, todo, records.append,
                                          batch_size=self.batch_size, seed=self.seed)
        finally:
            model.train(was_training)
        return {k: aggregate(k, records) for k in self.parts[0][0].metric_keys()}, records

    def better(self, value: float, best: float | None) -> bool:
        """A new best: strictly better than `best` (ties keep the earlier step); NaN never is."""
        if math.isnan(value):
            return False
        return best is None or (value > best if self.higher_is_better else value < best)


def build_probe(recipe, bundle, tokenizer) -> Probe:
    """The probe of `recipe.eval` on the run's data bundle (held-out rows) or its every_task; fails before training."""
    from finetune import launch

    e = recipe.eval
    if launch.world_size() > 1:
        raise DuringError("eval.every_steps: scoring during training runs in a single process; multi-process runs "
                          "(--nproc, FSDP / DeepSpeed) are not supported; set eval.every_steps: 0")
    common = dict(template=bundle.template, batch_size=e.batch_size, seed=recipe.train.seed)
    if e.every_task is not None:
        return _task_probe(e.every_task, e.every_split, e.every_limit, **common)
    return _rows_probe(bundle.val_records[:e.every_limit], tokenizer, recipe.data.val_size,
                       getattr(recipe.data, "think", None) in ("render", "keep"), **common)


def _task_probe(name: str, split: str, limit: int, **common) -> Probe:
    from finetune.eval.tasks import load_task

    task = load_task(name)
    own = task.spec["dataset"].get("split") or "test"
    if split.strip().lower() == "test" or split == own:
        raise DuringError(f"eval.every_split: {split!r} is the split {task.name} is scored on ({task.path}); "
                          "the checkpoint must not be chosen on the final evaluation's documents. Use another "
                          "split, e.g. 'validation'")
    task = dataclasses.replace(task, spec={**task.spec, "dataset": {**task.spec["dataset"], "split": split}},
                               _cache={})
    docs = task.docs(limit)
    if not docs:
        raise DuringError(f"eval.every_task: {task.name} has no documents in split {split!r}")
    metric = task.metric_keys()[0]
    return Probe(label=f"{task.name} ({split})", metric=metric, higher_is_better=task.higher_is_better(metric),
                 parts=[(task, docs)], **common)


def _rows_probe(rows: list[dict], tokenizer, val_size: int, think: bool, **common) -> Probe:
    from finetune.answers import extract_strict

    cot = [(i, r) for i, r in enumerate(rows) if r.get("format") == "cot"]
    if not cot:
        raise DuringError(f"eval.every_steps: the {val_size} held-out rows (data.val_size) hold no cot-format row, "
                          "whose final answer can be checked; set eval.every_task to a generation task with a "
                          "validation split (e.g. arith_cot)")
    longest = max(len(tokenizer(f"{r['rationale']}\n{r['answer_line']}", add_special_tokens=False)["input_ids"])
                  for _, r in cot)
    by_format: dict[str, list] = {}
    for i, r in cot:
        by_format.setdefault(r["answer_format"], []).append(
            (i, {"prompt": r["prompt"], "target": extract_strict(r["answer_line"], r["answer_format"])}))
    parts = [(ValidationRows(name="validation rows", answer_format=fmt, max_new_tokens=longest * 3 // 2 + 16,
                             think=think), todo) for fmt, todo in by_format.items()]
    return Probe(label="held-out rows", metric="exact_match:strict", higher_is_better=True, parts=parts, **common)


# --- the run directory: records, the curve, the report section -------------------------------------------

def write_records(run: RunDir, step: int, records: list[dict]) -> None:
    write_atomic(run / RunDir.TASK_EVAL / f"step-{step}.jsonl",
                 "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


def curve(rows: list[dict]) -> list[tuple[int, float]]:
    """(step, value) of every scored step in train-log rows."""
    return [(r["step"], r[VALUE]) for r in rows
            if isinstance(r.get("step"), int) and isinstance(r.get(VALUE), (int, float))]


def summary(rows: list[dict]) -> dict | None:
    """What the manifest and the report say about the curve: passes, seconds, best step; None when it is off."""
    scored = [r for r in rows if isinstance(r.get(VALUE), (int, float)) and isinstance(r.get("step"), int)]
    if not scored:
        return None
    higher = scored[-1].get("task_higher_is_better", True)
    best = scored[0]
    for r in scored[1:]:  # the first of equal values, as the trainer keeps it
        if (r[VALUE] > best[VALUE]) if higher else (r[VALUE] < best[VALUE]):
            best = r
    seconds = sum(r.get(SECONDS, 0.0) for r in scored)
    return {"metric": scored[-1].get("task_metric"), "source": scored[-1].get("task_source"),
            "n": scored[-1].get("task_n"), "passes": len(scored), "seconds": round(seconds, 2),
            "best_step": best["step"], "best": best[VALUE], "last_step": scored[-1]["step"],
            "last": scored[-1][VALUE], "points": [(r["step"], r[VALUE]) for r in scored]}


def finish(run: RunDir, kept_step: int | None) -> dict | None:
    """The manifest's `task_eval` entry (the curve's summary, the step kept); prints what scoring cost. None: off."""
    from finetune.log import say

    info = summary(run.train_log())
    if info is None:
        return None
    say(f"[finetune] task accuracy during training: {info['passes']} passes on {info['n']} documents, "
        f"{info['seconds']:.1f} s in all; best {info['best']:.4g} at step {info['best_step']}")
    return {**{k: v for k, v in info.items() if k != "points"}, "kept_step": kept_step}


def report_section(run_dir, fmt: str) -> str:
    """'## Task accuracy during training' (Markdown) or its HTML with the loss + accuracy plot; '' when off."""
    if run_dir is None:
        return ""
    run = RunDir(run_dir)
    info = summary(run.train_log())
    if info is None:
        return ""
    manifest = run.manifest() if (run / RunDir.MANIFEST).is_file() else {}
    kept = ((manifest.get("train_metrics") or {}).get("task_eval") or {}).get("kept_step")
    text = (f"{info['metric']} on {info['n']} documents of {info['source']}, {info['passes']} passes in "
            f"{info['seconds']:.1f} s; best {info['best']:.4g} at step {info['best_step']}, last {info['last']:.4g} "
            f"at step {info['last_step']}; the run's output is step "
            f"{kept if kept is not None else info['last_step']}{' (the best, eval.keep_best)' if kept else ''}.")
    rows = [(str(s), f"{v:.4g}") for s, v in info["points"]]
    if fmt == "md":
        from finetune.eval.sections import md_table
        return "\n## Task accuracy during training\n\n" + text + "\n\n" + "\n".join(md_table(("step", info["metric"]),
                                                                                           rows)) + "\n"
    from finetune.eval.plots import loss_and_task_curve
    from finetune.eval.sections import html_table
    png = loss_and_task_curve(run.loss_points(), info["points"], info["metric"])
    img = f"<img alt='task accuracy during training' src='data:image/png;base64,{png}'>" if png else ""
    return (f"<h2>Task accuracy during training</h2><p>{html.escape(text)}</p>{img}"
            + html_table(("step", info["metric"]), rows))
