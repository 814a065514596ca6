"""Read a task YAML: `include:` chains, key -> file:line positions, and the schema check.

The schema (every accepted key) lives here; `tasks.py` turns a checked spec into a Task.
Validation collects every problem in a file, then raises one `TaskError` that names the
file, the line, the key and what is accepted.
"""

from pathlib import Path

import yaml

OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood_rolling")
METRICS = {  # metric -> output types it applies to
    "exact_match": ("generate_until",),
    "acc": ("multiple_choice",), "acc_norm": ("multiple_choice",), "acc_centered": ("multiple_choice",),
    "perplexity": ("loglikelihood_rolling",), "bits_per_byte": ("loglikelihood_rolling",),
}
FILTER_FUNCTIONS = {  # function -> its accepted arguments
    "answer_format": {"format"}, "last_number": set(), "regex": {"pattern", "group_select"},
    "take_first": set(), "take_first_k": {"k"}, "majority_vote": set(),
}
SCHEMA = {
    "task": str, "description": str, "include": str, "metadata": dict,
    "dataset": {"hub": str, "name": str, "file": str, "field": str, "generator": str, "generator_args": dict,
                "split": str, "limit": int, "process": str},
    "output_type": str, "prompt_template": str,
    "doc_to_text": str, "doc_to_target": str, "doc_to_choice": (str, list), "target_delimiter": str,
    "fewshot": {"num": int, "exemplars": (str, list), "split": str, "seed": int, "text_file": str,
                "delimiter": str, "doc_to_target": str},
    "generation_kwargs": {"until": list, "max_new_tokens": int, "temperature": (int, float), "top_p": (int, float)},
    "repeats": int, "filter_list": list, "metric_list": list,
}


class TaskError(ValueError):
    """A task file or task data problem; the message names the file, the key and what is accepted."""


def _compose(path: Path) -> tuple[dict, dict[str, str]]:
    """(mapping, {dotted key: "file:line"}) for one YAML file."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise TaskError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML: "
                        f"{getattr(e, 'problem', e)}") from None
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must be a mapping of keys, got {type(data).__name__}")
    lines: dict[str, str] = {}

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[key] = f"{path}:{k.start_mark.line + 1}"
                walk(v, key)

    walk(node, "")
    return data, lines


def _merge(base: dict, child: dict) -> dict:
    """Child keys override; nested mappings merge key by key; lists are replaced whole."""
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_task_file(path: Path, _seen: tuple = ()) -> tuple[dict, dict[str, str]]:
    """The include-resolved spec of a task file and where each key was (last) set."""
    path = path.resolve()
    if path in _seen:
        raise TaskError(f"{path}: include cycle: {' -> '.join(str(p) for p in _seen + (path,))}")
    data, lines = _compose(path)
    if "include" not in data:
        return data, lines
    inc = data["include"]
    if not isinstance(inc, str):
        raise TaskError(f"{lines['include']}: include: expected a file name next to this file, got {inc!r}")
    inc_path = path.parent / inc
    if not inc_path.is_file():
        raise TaskError(f"{lines['include']}: include: file {inc_path} does not exist")
    base, base_lines = read_task_file(inc_path, _seen + (path,))
    base.pop("task", None)  # the name always comes from the including file
    merged = _merge(base, {k: v for k, v in data.items() if k != "include"})
    return merged, {**base_lines, **lines}


def _type_name(tp) -> str:
    tps = tp if isinstance(tp, tuple) else (tp,)
    names = {str: "a string", int: "an integer", float: "a number", dict: "a mapping", list: "a list"}
    return " or ".join(names[t] for t in tps)


def _check_keys(spec: dict, schema: dict, prefix: str, where, problems: list):
    for key, value in spec.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            problems.append(f"{where(dotted)}: unknown key {dotted!r}; accepted: {', '.join(sorted(schema))}")
            continue
        tp = schema[key]
        if isinstance(tp, dict):
            if not isinstance(value, dict):
                problems.append(f"{where(dotted)}: {dotted}: expected a mapping with keys {sorted(tp)}")
            else:
                _check_keys(value, tp, dotted + ".", where, problems)
        elif value is not None and (not isinstance(value, tp) or isinstance(value, bool)):
            problems.append(f"{where(dotted)}: {dotted}: expected {_type_name(tp)}, got {value!r}")


def _check_filters(filters: list, where, problems: list):
    for i, entry in enumerate(filters):
        if not isinstance(entry, dict) or set(entry) != {"name", "filter"} or not isinstance(entry["filter"], list):
            problems.append(f"{where('filter_list')}: filter_list[{i}]: expected {{name: ..., filter: [steps]}}")
            continue
        for step in entry["filter"]:
            fn = step.get("function") if isinstance(step, dict) else None
            if fn not in FILTER_FUNCTIONS:
                problems.append(f"{where('filter_list')}: filter_list[{i}] ({entry['name']}): unknown filter "
                                f"function {fn!r}; accepted: {', '.join(FILTER_FUNCTIONS)}")
                continue
            extra = set(step) - {"function"} - FILTER_FUNCTIONS[fn]
            if extra:
                problems.append(f"{where('filter_list')}: filter_list[{i}] ({entry['name']}): {fn} does not take "
                                f"{sorted(extra)}; accepted: {sorted(FILTER_FUNCTIONS[fn]) or 'no arguments'}")


def validate(spec: dict, path: Path, lines: dict[str, str]) -> None:
    """Raise one TaskError listing every problem in the merged spec."""
    def where(key):
        return lines.get(key) or lines.get(key.split(".")[0]) or str(path)

    problems: list[str] = []
    _check_keys(spec, SCHEMA, "", where, problems)
    otype = spec.get("output_type")
    if otype not in OUTPUT_TYPES:
        problems.append(f"{where('output_type')}: output_type: got {otype!r}; accepted: {', '.join(OUTPUT_TYPES)}")
    if not spec.get("doc_to_text") and otype != "loglikelihood_rolling":
        problems.append(f"{where('doc_to_text')}: doc_to_text: required (a template over the doc's fields)")
    if otype == "multiple_choice" and not spec.get("doc_to_choice"):
        problems.append(f"{where('output_type')}: doc_to_choice: required for multiple_choice")
    ds = spec.get("dataset") if isinstance(spec.get("dataset"), dict) else {}
    if not (ds.get("hub") or ds.get("file") or ds.get("generator")):
        problems.append(f"{where('dataset')}: dataset: needs a source: 'hub' (a hub id), 'file' (a path under the "
                        "data dir) or 'generator' (a built-in generator)")
    if ds.get("generator") and (ds.get("hub") or ds.get("file")):
        problems.append(f"{where('dataset.generator')}: dataset: 'generator' cannot be combined with hub/file")
    fs = spec.get("fewshot") if isinstance(spec.get("fewshot"), dict) else {}
    sources = [k for k in ("exemplars", "split", "text_file") if fs.get(k) is not None]
    if fs and len(sources) != 1:
        problems.append(f"{where('fewshot')}: fewshot: give exactly one of 'exemplars' (fixed), 'split' (sampled "
                        f"with 'seed') or 'text_file' (a published prompt); got {sources or 'none'}")
    if fs.get("split") is not None and not fs.get("num"):
        problems.append(f"{where('fewshot.split')}: fewshot.num: required with fewshot.split (how many to sample)")
    if isinstance(spec.get("filter_list"), list):
        _check_filters(spec["filter_list"], where, problems)
    for i, m in enumerate(spec.get("metric_list") or []):
        name = m.get("metric") if isinstance(m, dict) else m
        if METRICS.get(name) is None or otype not in METRICS[name]:
            ok = [k for k, v in METRICS.items() if otype in v]
            problems.append(f"{where('metric_list')}: metric_list[{i}]: {name!r} is not a metric for {otype}; "
                            f"accepted: {', '.join(ok)}")
    if spec.get("task") not in (None, path.stem):
        problems.append(f"{where('task')}: task: {spec['task']!r} must match the file name {path.stem!r}")
    if problems:
        raise TaskError(f"{len(problems)} problem(s) in task {path}:\n  " + "\n  ".join(problems))
