"""A board across runs that share a base: per task, the base and every finetune, each paired against the base.

    finetune compare runs/a runs/b runs/c            # board of three runs (writes runs/board/)
    board = build_board([load_run("runs/a"), load_run("runs/b")])

Only saved per-sample records are used (RUN/eval/base, RUN/eval/finetuned); nothing is
recomputed. Each finetune is paired with its own run's base records for a task, or, when its
run has none, with another run's base records of that task (same base and settings, checked
first). Per task and metric: every finetune's B - base with its 95% paired bootstrap CI and
p (exact McNemar for pass/fail, paired bootstrap otherwise), the p-values Holm-adjusted over
the finetunes compared with the base, and the paired difference of the two best finetunes.
Runs whose base model, task file, template, decoding, seed or documents differ are refused
with what differs. The recipe keys whose values differ between runs are listed.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from finetune.eval.basecache import weights_fingerprint
from finetune.eval.compare import compare_task
from finetune.eval.harness import SCORES_FILE
from finetune.eval.taskfile import TaskError
from finetune.rundir import RunDir

CORRECTION = ("Holm: the p-values of the finetunes against the base are adjusted together within each task and "
              "metric (family = the finetunes on the board)")
IGNORED_RECIPE_KEYS = {"output.dir"}  # differs between any two runs by construction


class BoardError(TaskError):
    """Runs that cannot share one board (another base, task file, template or decoding), or no evaluations."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        raise BoardError(f"{path}: unreadable JSON; rerun the evaluation that writes it") from None


@dataclass
class BoardRun:
    path: Path
    manifest: dict
    recipe: dict
    base: dict  # RUN/eval/base/scores.json ({} when the base was never scored)
    tuned: dict  # RUN/eval/finetuned/scores.json
    results: dict  # RUN/eval/results.json (guard verdicts live here when the run has guard tasks)

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def base_dir(self) -> Path:
        return self.path / "eval" / "base"

    @property
    def tuned_dir(self) -> Path:
        return self.path / "eval" / "finetuned"

    def base_spec(self) -> str:
        return str(self.manifest.get("base_model_path") or self.manifest.get("base_model") or "")


def load_run(path) -> BoardRun:
    p = Path(path)
    if not (RunDir(p) / RunDir.MANIFEST).is_file():
        raise BoardError(f"{path}: not a run directory (no manifest.json); the board compares runs of `finetune run`")
    recipe_file = p / "recipe.yaml"
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else {}
    run = BoardRun(p, _read_json(RunDir(p) / RunDir.MANIFEST), recipe if isinstance(recipe, dict) else {},
                   _read_json(p / "eval" / "base" / SCORES_FILE), _read_json(p / "eval" / "finetuned" / SCORES_FILE),
                   _read_json(p / "eval" / "results.json"))
    if not (run.tuned.get("tasks") or {}):
        raise BoardError(f"{path}: no evaluated task in {run.tuned_dir}; run `finetune eval {path} --tasks ... "
                         "--with-base` first")
    return run


def _tasks(run: BoardRun, side: str = "tuned") -> dict:
    return getattr(run, side).get("tasks") or {}


def task_names(runs: list[BoardRun]) -> list[str]:
    return list(dict.fromkeys(t for r in runs for t in _tasks(r)))


def missing_tasks(runs: list[BoardRun]) -> dict[str, list[str]]:
    """{run: [tasks other runs have and it has not]}, for runs missing any."""
    names = task_names(runs)
    out = {r.name: [t for t in names if t not in _tasks(r)] for r in runs}
    return {k: v for k, v in out.items() if v}


CHECKS = (  # (what differs, how to read it from a task's scores.json entry and its side's summary)
    ("task file", lambda s, side: {k: v for k, v in (s.get("task_spec") or {}).items() if k != "generation_kwargs"}),
    ("prompt template", lambda s, side: s.get("template_source")),
    ("decoding (generation_kwargs)", lambda s, side: (s.get("task_spec") or {}).get("generation_kwargs")),
    ("seed or few-shot exemplars (task config hash)", lambda s, side: s.get("config")),
    ("documents (limit, n)", lambda s, side: (s.get("limit", side.get("limit")), s.get("n"))),
)


def _base_problems(runs: list[BoardRun]) -> list[str]:
    ref, fp = runs[0], {r.name: weights_fingerprint(r.base_spec()) for r in runs}
    return [f"base model: {r.name} uses {r.manifest.get('base_model') or r.base_spec()!r} ({r.base_spec()}, "
            f"fingerprint {fp[r.name]}), {ref.name} uses {ref.manifest.get('base_model') or ref.base_spec()!r} "
            f"({ref.base_spec()}, fingerprint {fp[ref.name]})" for r in runs[1:] if fp[r.name] != fp[ref.name]]


def check_compatible(runs: list[BoardRun]) -> None:
    """BoardError naming every difference that makes two runs' scores on a task not comparable."""
    problems = _base_problems(runs)
    for task in task_names(runs):
        have = [(r, side, s) for r in runs for side in ("tuned", "base") if (s := _tasks(r, side).get(task))]
        (ref, ref_side, ref_s), rest = have[0], have[1:]
        for what, get in CHECKS:
            for r, side, s in rest:
                if get(s, getattr(r, side)) != get(ref_s, getattr(ref, ref_side)):
                    problems.append(f"{task}: {what} differs between {ref.name} ({ref_side}) and {r.name} ({side})")
                    break
    if problems:
        raise BoardError("these runs cannot share one board:\n  - " + "\n  - ".join(problems) +
                         "\nevaluate them with the same base, task files, template and decoding (or compare "
                         "two eval folders with `finetune compare A B`)")


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _base_source(task: str, run: BoardRun, runs: list[BoardRun]) -> Path | None:
    if task in _tasks(run, "base"):
        return run.base_dir
    return next((r.base_dir for r in runs if task in _tasks(r, "base")), None)


def _entry(task: str, run: BoardRun, runs: list[BoardRun], n_boot: int, seed: int) -> dict:
    base_dir = _base_source(task, run, runs)
    if base_dir is None:  # no run scored the base on this task: the finetune's scores alone
        scores = _tasks(run)[task]["scores"]
        return {"run": run.name, "base_from": None, "n": _tasks(run)[task].get("n"), "warnings": [],
                "metrics": {k: {"b": v, "higher_is_better": (_tasks(run)[task].get("metrics") or {}).get(k, {})
                                .get("higher_is_better", True)} for k, v in scores.items()}}
    res = compare_task(task, base_dir, run.tuned_dir, n_boot=n_boot, seed=seed)
    return {"run": run.name, "base_from": str(base_dir), "n": res["n"], "metrics": res["metrics"],
            "warnings": res["warnings"]}


def _best_two(task: str, key: str, entries: list[dict], by_run: dict, n_boot: int, seed: int) -> dict | None:
    scored = [e for e in entries if key in e["metrics"]]
    if len(scored) < 2:
        return None
    higher = scored[0]["metrics"][key].get("higher_is_better", True)
    best, second = sorted(scored, key=lambda e: e["metrics"][key]["b"], reverse=higher)[:2]
    res = compare_task(task, by_run[second["run"]].tuned_dir, by_run[best["run"]].tuned_dir, n_boot=n_boot, seed=seed)
    m = res["metrics"].get(key)
    return m and {"best": best["run"], "second": second["run"], **m}


def verdict(run: BoardRun, task: str) -> str | None:
    """The guard verdicts of `task` in the run's results.json (finetune/eval/verdict.py writes them on each
    guard task of the comparison: {metric: {verdict, label}}); None when the task is not a guard there."""
    found = (((run.results.get("comparison") or {}).get("tasks") or {}).get(task) or {}).get("verdicts")
    if not found:
        return None
    return "; ".join(f"{key}: {v.get('label') or v.get('verdict')}" for key, v in found.items())


def _task_board(task: str, runs: list[BoardRun], n_boot: int, seed: int) -> dict:
    by_run = {r.name: r for r in runs}
    entries = [_entry(task, r, runs, n_boot, seed) for r in runs if task in _tasks(r)]
    keys = list(dict.fromkeys(k for e in entries for k in e["metrics"]))
    for key in keys:
        paired = [e["metrics"][key] for e in entries if "p_value" in e["metrics"].get(key, {})]
        for m, adj in zip(paired, holm([m["p_value"] for m in paired])):
            m["p_holm"] = adj
    for e in entries:
        e["verdict"] = verdict(by_run[e["run"]], task)
    src = next((e for e in entries if e["base_from"]), None)
    base = {k: {"score": m["a"], "ci": m["ci_a"]} for k, m in src["metrics"].items()} if src else None
    return {"base": base, "base_from": src and src["base_from"], "entries": entries, "metrics": keys,
            "best_two": {k: _best_two(task, k, entries, by_run, n_boot, seed) for k in keys},
            "missing": [r.name for r in runs if task not in _tasks(r)]}


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict) and obj:
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj}


def recipe_differences(runs: list[BoardRun]) -> list[tuple[str, list]]:
    """(dotted recipe key, its value in each run) for every key whose values differ between runs."""
    flats = [_flatten(r.recipe) for r in runs]
    keys = sorted(set().union(*flats) - IGNORED_RECIPE_KEYS)
    same = lambda k: len({json.dumps(f.get(k, "<unset>"), sort_keys=True, default=str) for f in flats}) == 1  # noqa
    return [(k, [f.get(k, "<unset>") for f in flats]) for k in keys if not same(k)]


def build_board(runs: list[BoardRun], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """The board as a dict (board.json): runs, per-task tables, recipe differences, correction used."""
    if len(runs) < 2:
        raise BoardError("a board needs at least two run directories")
    check_compatible(runs)
    return {"runs": [{"run": r.name, "base_model": r.manifest.get("base_model"), "method": r.manifest.get("method")}
                     for r in runs],
            "tasks": {t: _task_board(t, runs, n_boot, seed) for t in task_names(runs)},
            "recipe_differences": recipe_differences(runs), "missing": missing_tasks(runs),
            "correction": CORRECTION, "n_boot": n_boot, "seed": seed}
