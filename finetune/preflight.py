"""Checks that need no model and no data download, run before anything heavy.

    finetune validate RECIPE     # schema + these checks

Names that must exist (template, datasets, eval tasks, model folder or file) and places
that must be writable are checked here, all at once, so a typo fails in a second with
every problem listed instead of after a model load.
"""

import os
import tempfile
from pathlib import Path

from finetune.log import say
from finetune.data.errors import DataError
from finetune.data.registry import locate, resolve_spec
from finetune.data.sources import source_kind
from finetune.model import ModelError, check_model_spec
from finetune.prompts import TemplateError, load_template
from finetune.recipe import Recipe
from finetune.schema import RecipeError


def _unwritable(path: Path) -> str | None:
    """Why the run directory cannot be created or written, if it cannot.

    When the folder must be created, its nearest existing parent is probed by creating (and
    removing) a temporary folder in it: permission bits say nothing for root, and read-only
    or virtual filesystems (/proc, /sys) refuse what os.access allows. An existing run
    directory is never probed inside (another process of the same run may be writing it).
    """
    p = path
    try:
        p = path.resolve()
        if p.is_dir():
            return None if os.access(p, os.W_OK | os.X_OK) else f"{p} is not writable"
        while not p.exists():
            p = p.parent
        if not p.is_dir():
            return f"{p} is a file, not a folder"
        os.rmdir(tempfile.mkdtemp(prefix=".finetune-probe-", dir=p))
    except (OSError, ValueError) as e:
        return f"{p} cannot be written ({getattr(e, 'strerror', None) or e})"
    return None


def _dataset(recipe: Recipe, i: int, spec) -> str | None:
    entry = resolve_spec(spec, i)
    where = locate(entry, recipe.data.data_dir)
    if source_kind(where) == "file" and not Path(where).is_file():
        return f"data.datasets[{i}] ({entry.name}): file {where} does not exist"
    return None


def _task(name: str) -> None:
    from finetune.eval.tasks import load_task
    load_task(name)


def _guard(out: list, key: str, prefix: str, check) -> None:
    """Run one check; its user error, or a path the system refuses, becomes the problem of `key`."""
    from finetune.eval.taskfile import TaskError
    try:
        problem = check()
    except (ModelError, TemplateError, DataError, TaskError) as e:
        problem = f"{prefix}{e}"
    except (OSError, ValueError) as e:  # e.g. a name too long for the filesystem, a NUL in a path
        problem = f"{key}: cannot use this path: {getattr(e, 'strerror', None) or e}"
    if problem:
        out.append((key, problem))


def problems(recipe: Recipe) -> list[tuple[str, str]]:
    """(dotted key, message) for every problem found."""
    out: list[tuple[str, str]] = []
    _guard(out, "model.name", "", lambda: check_model_spec(recipe.model.name) and None)
    _guard(out, "data.template", "data.template: ", lambda: load_template(recipe.data.template) and None)
    for i, spec in enumerate(recipe.data.datasets):
        _guard(out, f"data.datasets[{i}]", "", lambda i=i, spec=spec: _dataset(recipe, i, spec))
    for i, name in enumerate(recipe.eval.tasks):
        _guard(out, f"eval.tasks[{i}]", f"eval.tasks[{i}]: ", lambda name=name: _task(name))
    for i, name in enumerate(recipe.eval.guard_tasks):
        _guard(out, f"eval.guard_tasks[{i}]", f"eval.guard_tasks[{i}]: ", lambda name=name: _task(name))
    blocked = _unwritable(recipe.run_dir())
    if blocked:
        out.append(("output.dir", f"output.dir: cannot create {recipe.run_dir()}: {blocked}"))
    return out


def check(recipe: Recipe) -> None:
    found = problems(recipe)
    if found:
        raise RecipeError([f"{recipe.where(key)}: {msg}" for key, msg in found],
                          header=f"{recipe.source_path}: {len(found)} problem(s)" if len(found) > 1 else None)


def contamination(recipe: Recipe) -> tuple[dict, list[str]]:
    """({task: Overlap} for every eval and guard task, [why a task or dataset was skipped]).

    Reads the training rows as training does (local files, built-in generators; a hub-only
    source is skipped here, not downloaded) and the documents each task will score."""
    from finetune.data.contamination import overlap
    from finetune.data.records import load_records

    records, skipped = [], []
    for i, spec in enumerate(recipe.data.datasets):
        try:
            entry = resolve_spec(spec, i)
            if source_kind(locate(entry, recipe.data.data_dir)) == "hub":
                skipped.append(f"data.datasets[{i}] ({entry.name}): a hub dataset, not read here")
                continue
            rows, _, _ = load_records(entry, recipe.data, recipe.train.seed)
            records += [(f"data.datasets[{i}] ({entry.name}) record {j}", r) for j, r in enumerate(rows, 1)]
        except (DataError, OSError) as e:
            skipped.append(f"data.datasets[{i}]: {str(e)[:200]}")
    found = {}
    for name in [*recipe.eval.tasks, *getattr(recipe.eval, "guard_tasks", [])]:
        docs = _task_docs(name, recipe.eval.limit, skipped)
        if docs is not None:
            found[name] = overlap(name, docs, records)
    return found, skipped


def _task_docs(name: str, limit: int | None, skipped: list[str]) -> list[tuple[int, str]] | None:
    from finetune.eval.taskfile import TaskError
    from finetune.eval.tasks import load_task

    try:
        task = load_task(name)
        return [(i, _doc_text(task, doc)) for i, doc in task.docs(limit)]
    except (TaskError, DataError, OSError) as e:
        skipped.append(f"eval task {name}: {str(e)[:200]}")
        return None


def _doc_text(task, doc) -> str:
    try:
        return task.text(doc)
    except Exception:  # a template that needs fields this doc lacks: compare the doc's own text
        return " ".join(str(v) for v in doc.values()) if isinstance(doc, dict) else str(doc)


def print_contamination(recipe: Recipe) -> None:
    """One line per eval task (`finetune validate`, `finetune preview`): documents the training rows contain."""
    found, skipped = contamination(recipe)
    for item in found.values():
        say(f"contamination: {item.line()}")
    for why in skipped:
        say(f"contamination: skipped {why}")
