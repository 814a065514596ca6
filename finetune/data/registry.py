"""Registry: a named dataset is one small YAML file in data/.

    finetune ls datasets

A file `data/<name>.yaml` holds the keys of a recipe's dataset entry (format, source,
columns, ...) plus `description`, `license` and `local`. A recipe uses it with
`- name: <name>` and may override any key beside the name (`limit: 500`); `name` may also
be a path to such a file anywhere. An entry with a `source` or `path` and no registered name
is an inline definition. The data-path override points a definition at local files:
the entry's `path:` (a file, or a folder laid out like the `local:` paths), else
`data.data_dir` / $FINETUNE_DATA_DIR joined with `local:` when that file exists.
"""

import difflib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from finetune.data.errors import DataError
from finetune.data.formats import FORMATS
from finetune.recipe import DatasetSpec
from finetune.resources import DATA_ENV, data_root, resource_dir
from finetune.schema import RecipeError, build
from finetune.yamlfile import read_text



@dataclass
class RegistryEntry(DatasetSpec):
    description: str = field(default="", metadata={"help": "One line shown by `finetune ls datasets`."})
    license: str = field(default="", metadata={"help": "License of the data (users must be able to check it)."})
    local: str | None = field(default=None, metadata={
        "help": "Path of a local copy inside the data dir (data.data_dir or $FINETUNE_DATA_DIR), "
                "e.g. gsm8k/{split}.jsonl; read instead of `source` when it exists."})
    origin: str = field(default="", metadata={"internal": True})  # where the definition came from, for errors


def registered_names() -> list[str]:
    return sorted(p.stem for p in resource_dir("data").glob("*.yaml"))


def load_entry(path: Path) -> RegistryEntry:
    """Parse one definition file strictly (unknown keys, types, choices), with file:line errors."""
    try:
        entry = build(RegistryEntry, read_text(path, error=lambda m: RecipeError([m])), str(path))
    except RecipeError as e:
        raise DataError(str(e)) from None
    problems = []
    if not entry.format:
        problems.append(f"format: required; accepted: {', '.join(FORMATS)}")
    if not entry.source and not entry.local:
        problems.append("source: required (a hub id, a file, a URL or builtin:<generator>), or give `local:`")
    if problems:
        raise DataError(f"{path}: " + f"\n{path}: ".join(problems))
    return replace(entry, name=path.stem, origin=str(path))


def _definition_path(name: str) -> Path | None:
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    path = resource_dir("data") / f"{name}.yaml"
    return path if path.is_file() else None


def resolve_spec(spec: DatasetSpec, index: int = 0) -> RegistryEntry:
    """The definition a recipe entry names, with the entry's other keys laid over it."""
    label = f"data.datasets[{index}]"
    path = _definition_path(spec.name) if spec.name else None
    if path is None:
        if not (spec.source or spec.path):
            known = registered_names()
            close = difflib.get_close_matches(spec.name or "", known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"{label}: unknown dataset {spec.name!r}; {hint}registered: {', '.join(known)} "
                            "(see `finetune ls datasets`), or define it inline with `source` and `format`")
        if not spec.format:
            raise DataError(f"{label} ({spec.name or spec.source or spec.path}): format: required for an inline "
                            f"dataset; accepted: {', '.join(FORMATS)}")
        return RegistryEntry(**{f.name: getattr(spec, f.name) for f in fields(DatasetSpec)},
                             origin=f"{label} ({spec.name or spec.path or spec.source})")
    if not path.is_file():
        raise DataError(f"{label}: name: dataset definition file {path} does not exist")
    base = load_entry(path)
    defaults = DatasetSpec()
    overrides = {f.name: getattr(spec, f.name) for f in fields(DatasetSpec)
                 if f.name != "name" and getattr(spec, f.name) != getattr(defaults, f.name)}
    if "source" in overrides:  # `local` is a copy of the definition's source, not of the recipe's
        overrides["local"] = None
    return replace(base, **overrides)


def locate(entry: RegistryEntry, data_dir: str | None = None) -> str:
    """What to read: the entry's `path`, else its `local` copy under the data dir, else `source`."""
    local = entry.local.replace("{split}", entry.split) if entry.local else None
    if entry.path:
        path = Path(entry.path).expanduser()
        if not path.is_dir():
            return str(path)
        if not local:
            raise DataError(f"{entry.origin}: path: {path} is a folder, but this definition declares no `local:` "
                            "file inside it; give the path of the file itself")
        if not (path / local).is_file():
            raise DataError(f"{entry.origin}: path: {path / local} does not exist (`local: {entry.local}` under "
                            f"the folder {path})")
        return str(path / local)
    root = data_root(data_dir)
    if root and local and (root / local).is_file():
        return str(root / local)
    if not entry.source:
        where = f"{root / local} does not exist" if root else f"set data.data_dir or ${DATA_ENV}"
        raise DataError(f"{entry.origin}: no `source`, and the local copy `{entry.local}` was not found "
                        f"({where})")
    return entry.source


def list_datasets() -> list[dict]:
    """One dict per registered dataset: name, format, source, local, description, license."""
    out = []
    for name in registered_names():
        try:
            e = load_entry(resource_dir("data") / f"{name}.yaml")
            out.append({"name": name, "format": e.format, "source": e.source or "", "local": e.local or "",
                        "description": e.description, "license": e.license})
        except DataError as err:
            out.append({"name": name, "format": "?", "source": "", "local": "", "license": "",
                        "description": f"INVALID: {str(err).splitlines()[0]}"})
    return out


def format_listing() -> str:
    """The registry as a table (`finetune ls datasets`): name, format, description, then where from."""
    rows = list_datasets()
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'NAME'.ljust(width)}  FORMAT             DESCRIPTION"]
    for r in rows:
        lines.append(f"{r['name'].ljust(width)}  {r['format'].ljust(17)}  {r['description']}")
        local = f"   local: {r['local']}" if r["local"] else ""
        lines.append(f"{'':{width}}  {'':17}  source: {r['source']}{local}")
    lines.append(f"\n{len(rows)} datasets in {resource_dir('data')}; a recipe uses one with `- name: NAME`. "
                 f"`local` is read instead of `source` when data.data_dir or ${DATA_ENV} holds it.")
    return "\n".join(lines)


def cmd_ls_datasets(args=None) -> int:
    print(format_listing())
    return 0
