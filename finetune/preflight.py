"""Checks that need no model and no data download, run before anything heavy.

    finetune validate RECIPE     # schema + these checks

Names that must exist (template, datasets, eval tasks, model folder or file) and places
that must be writable are checked here, all at once, so a typo fails in a second with
every problem listed instead of after a model load.
"""

import os
import tempfile
from pathlib import Path

from finetune.data.errors import DataError
from finetune.data.registry import locate, resolve_spec
from finetune.data.sources import source_kind
from finetune.model import ModelError, check_model_spec
from finetune.prompts import TemplateError, load_template
from finetune.recipe import Recipe
from finetune.schema import RecipeError


def _unwritable(path: Path) -> str | None:
    """Why the run directory cannot be created or written, if it cannot.

    The nearest existing folder is probed by creating (and removing) a temporary folder
    in it: permission bits say nothing for root, and read-only or virtual filesystems
    (/proc, /sys) refuse what os.access allows.
    """
    p = path
    try:
        p = path.resolve()
        while not p.exists():
            p = p.parent
        if not p.is_dir():
            return f"{p} is a file, not a folder"
        os.rmdir(tempfile.mkdtemp(prefix=".finetune-probe-", dir=p))
    except (OSError, ValueError) as e:
        return f"{p} cannot be written ({getattr(e, 'strerror', None) or e})"
    return None


def problems(recipe: Recipe) -> list[tuple[str, str]]:
    """(dotted key, message) for every problem found."""
    out = []
    try:
        check_model_spec(recipe.model.name)
    except ModelError as e:
        out.append(("model.name", str(e)))
    try:
        load_template(recipe.data.template)
    except TemplateError as e:
        out.append(("data.template", f"data.template: {e}"))
    for i, spec in enumerate(recipe.data.datasets):
        try:
            entry = resolve_spec(spec, i)
            where = locate(entry, recipe.data.data_dir)
            if source_kind(where) == "file" and not Path(where).is_file():
                out.append((f"data.datasets[{i}]", f"data.datasets[{i}] ({entry.name}): file {where} does not exist"))
        except DataError as e:
            out.append((f"data.datasets[{i}]", str(e)))
    if recipe.eval.tasks:
        from finetune.eval.taskfile import TaskError
        from finetune.eval.tasks import load_task
        for i, name in enumerate(recipe.eval.tasks):
            try:
                load_task(name)
            except TaskError as e:
                out.append((f"eval.tasks[{i}]", f"eval.tasks[{i}]: {e}"))
    blocked = _unwritable(recipe.run_dir())
    if blocked:
        out.append(("output.dir", f"output.dir: cannot create {recipe.run_dir()}: {blocked}"))
    return out


def check(recipe: Recipe) -> None:
    found = problems(recipe)
    if found:
        raise RecipeError([f"{recipe.where(key)}: {msg}" for key, msg in found],
                          header=f"{recipe.source_path}: {len(found)} problem(s)" if len(found) > 1 else None)
