"""Read a task YAML: `include:` chains, key -> file:line positions, and the schema check.

The schema (every accepted key) lives here; `tasks.py` turns a checked spec into a Task.
Validation collects every problem in a file, then raises one `TaskError` that names the
file, the line, the key and what is accepted.
"""

import re
from pathlib import Path

from finetune.errors import UserError
from finetune.yamlfile import read_yaml_file

OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood_rolling")
METRICS = {  # metric -> output types it applies to
    "exact_match": ("generate_until",),
    "acc": ("multiple_choice",), "acc_norm": ("multiple_choice",), "acc_centered": ("multiple_choice",),
    "perplexity": ("loglikelihood_rolling",), "bits_per_byte": ("loglikelihood_rolling",),
    # IFEval (finetune/eval/ifeval.py): the instructions of doc_to_target's JSON checked on the response
    "prompt_level_strict_acc": ("generate_until",), "inst_level_strict_acc": ("generate_until",),
    "prompt_level_loose_acc": ("generate_until",), "inst_level_loose_acc": ("generate_until",),
}
FILTER_FUNCTIONS = {  # function -> its accepted arguments and their types
    "answer_format": {"format": str}, "last_number": {}, "regex": {"pattern": str, "group_select": int},
    "take_first": {}, "take_first_k": {"k": int}, "majority_vote": {},
    "strip_think": {},  # think-aware scoring: keep the text after </think> (put it first in a pipeline)
}
REQUIRED_ARGS = {"answer_format": ("format",), "regex": ("pattern",), "take_first_k": ("k",)}
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
HELP = {  # dotted key -> its one line in eval/README.md (generated: python -m finetune.reference)
    "task": "Optional; must equal the file name.",
    "description": "One line for listings.",
    "include": "Start from another task file next to this one: mappings merge key by key, lists are replaced.",
    "metadata": "Free-form, e.g. {version: 1}.",
    "dataset": "Where the documents come from: hub, file or generator.",
    "dataset.hub": "Hub id: datasets.load_dataset(hub, name, split=split), used when no local file is found.",
    "dataset.name": "Hub config.",
    "dataset.file": "A .jsonl or .json (also .gz) file under the data dir ({split} is replaced), or an absolute path.",
    "dataset.field": ".json only: the key that holds the list of documents.",
    "dataset.generator": "A built-in generator (finetune/data/synthetic.py) instead of hub/file.",
    "dataset.generator_args": "Arguments of the generator, e.g. {n: 1000, seed: 0}.",
    "dataset.split": "Split to read (default test).",
    "dataset.limit": "Default document cap (eval.limit / --limit overrides).",
    "dataset.process": "A document normaliser from finetune/eval/documents.py PROCESSORS (arc, self_instruct).",
    "output_type": "generate_until, multiple_choice (log-likelihood of each choice) or loglikelihood_rolling.",
    "prompt_template": "The prompts/ wrapper (default chat); `finetune eval --template` replaces it.",
    "doc_to_text": "A jinja template over the document's fields: the prompt.",
    "doc_to_target": "A jinja template: the target text (multiple_choice: the choice index).",
    "doc_to_choice": "multiple_choice: a jinja expression giving a list, or a YAML list of templates.",
    "target_delimiter": "Between a text and its target (few-shot exemplars, choices); default one space.",
    "fewshot": "Few-shot exemplars: exactly one of exemplars / split / text_file.",
    "fewshot.num": "How many exemplars.",
    "fewshot.exemplars": "Fixed exemplars: a YAML list of docs under prompts/, or an inline list.",
    "fewshot.split": "Or sampled from this split, per document, with `seed`.",
    "fewshot.seed": "Seed of the sampled exemplars.",
    "fewshot.text_file": "Or a published prompt text under the data dir (BIG-bench canary line skipped).",
    "fewshot.delimiter": "Between exemplars, and before the document (default a blank line).",
    "fewshot.doc_to_target": "How an exemplar's answer is written (default: the task's doc_to_target).",
    "generation_kwargs": "Decoding.",
    "generation_kwargs.until": "Stop strings (EOS always stops); the text is cut at the first one.",
    "generation_kwargs.max_new_tokens": "Token cap per generation (default 256).",
    "generation_kwargs.temperature": "0: greedy; > 0: sampling with top_p.",
    "generation_kwargs.top_p": "Nucleus sampling mass (with temperature > 0).",
    "repeats": "Samples per document (self-consistency).",
    "filter_list": "Named pipelines from outputs to one answer: [{name, filter: [{function, ...}]}]; functions: "
                   + ", ".join(["answer_format (format)", "last_number", "regex (pattern, group_select)",
                                "take_first", "take_first_k (k)", "majority_vote",
                                "strip_think (first: keep the text after </think>, think-aware scoring)"]) + ".",
    "metric_list": "; ".join(f"{o}: {', '.join(m for m, types in METRICS.items() if o in types)}"
                             for o in OUTPUT_TYPES) + " (generate_until: one score per filter; IFEval's four: "
                   "finetune/eval/ifeval.py).",
}
BOUNDS = {  # numeric key -> (lowest, highest) accepted; an interval open at 0 is written (0, ...) with "gt"
    "dataset.limit": (1, 2**31 - 1), "fewshot.num": (0, 256), "fewshot.seed": (0, 2**32 - 1),
    "generation_kwargs.max_new_tokens": (1, 1 << 16), "generation_kwargs.temperature": (0, 100),
    "generation_kwargs.top_p": ("gt", 0, 1), "repeats": (1, 1000),
}


class TaskError(UserError):
    """A task file or task data problem; the message names the file, the key and what is accepted."""


def _compose(path: Path) -> tuple[dict, dict[str, str]]:
    """(mapping, {dotted key: "file:line"}) for one YAML file."""
    data, lines, _ = read_yaml_file(path, error=TaskError)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must be a mapping of keys, got {type(data).__name__}")
    return data, {key: f"{path}:{line}" for key, line in lines.items()}


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
            problems.append(f"{where(dotted)}: {dotted}: expected {_type_name(tp)}, got {_short(value)}")
        elif dotted in BOUNDS and value is not None:
            _check_bound(dotted, value, where, problems)


def _check_bound(dotted: str, value, where, problems: list):
    *gt, lo, hi = BOUNDS[dotted]
    if value != value or value in (float("inf"), float("-inf")):
        problems.append(f"{where(dotted)}: {dotted}: expected a finite number, got {value}")
    elif (value <= lo if gt else value < lo) or value > hi:
        problems.append(f"{where(dotted)}: {dotted}: must be {'>' if gt else '>='} {lo} and <= {hi:,}, "
                        f"got {_short(value)}")


def _short(value, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**100 else "(a number of 100+ digits)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_filters(filters: list, where, problems: list):
    for i, entry in enumerate(filters):
        if not isinstance(entry, dict) or set(entry) != {"name", "filter"} or not isinstance(entry["filter"], list):
            problems.append(f"{where('filter_list')}: filter_list[{i}]: expected {{name: ..., filter: [steps]}}")
            continue
        for step in entry["filter"]:
            fn = step.get("function") if isinstance(step, dict) else None
            if not isinstance(fn, str) or fn not in FILTER_FUNCTIONS:
                problems.append(f"{where('filter_list')}: filter_list[{i}] ({_short(entry['name'])}): unknown filter "
                                f"function {_short(fn)}; accepted: {', '.join(FILTER_FUNCTIONS)}")
                continue
            args = FILTER_FUNCTIONS[fn]
            for arg, value in step.items():
                if arg != "function" and (arg not in args or not isinstance(value, args[arg])
                                          or isinstance(value, bool)):
                    accepted = ", ".join(f"{a} ({_type_name(t)})" for a, t in args.items()) or "no arguments"
                    problems.append(f"{where('filter_list')}: filter_list[{i}] ({_short(entry['name'])}): {fn}: "
                                    f"{str(arg)[:60]}: {_short(value)} is not accepted; accepted: {accepted}")
            missing = [a for a in REQUIRED_ARGS.get(fn, ()) if a not in step]
            if missing:
                problems.append(f"{where('filter_list')}: filter_list[{i}] ({_short(entry['name'])}): {fn}: "
                                f"{missing[0]}: required")
            if fn == "take_first_k" and isinstance(step.get("k"), int) and step["k"] < 1:
                problems.append(f"{where('filter_list')}: filter_list[{i}] ({_short(entry['name'])}): take_first_k: "
                                f"k: must be >= 1, got {step['k']}")
            if fn == "regex" and isinstance(step.get("pattern"), str):
                try:
                    re.compile(step["pattern"])
                except (re.error, RecursionError, OverflowError) as e:
                    problems.append(f"{where('filter_list')}: filter_list[{i}] ({_short(entry['name'])}): regex: "
                                    f"pattern {_short(step['pattern'])} is not a valid regular expression ({e})")


def _check_text_lists(spec: dict, where, problems: list):
    """Lists whose items must be text: stop strings and the choices of a multiple-choice task."""
    for dotted in ("generation_kwargs.until", "doc_to_choice"):
        head, _, tail = dotted.rpartition(".")
        parent = spec.get(head) if head else spec
        value = parent.get(tail) if isinstance(parent, dict) else None
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            problems.append(f"{where(dotted)}: {dotted}: expected a list of non-empty text, got {_short(value)}")


def validate(spec: dict, path: Path, lines: dict[str, str]) -> None:
    """Raise one TaskError listing every problem in the merged spec."""
    def where(key):
        return lines.get(key) or lines.get(key.split(".")[0]) or str(path)

    problems: list[str] = []
    _check_keys(spec, SCHEMA, "", where, problems)
    _check_text_lists(spec, where, problems)
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
    metrics = spec.get("metric_list") if isinstance(spec.get("metric_list"), list) else []
    for i, m in enumerate(metrics):
        name = m.get("metric") if isinstance(m, dict) else m
        if not isinstance(name, str) or METRICS.get(name) is None or otype not in METRICS[name]:
            ok = [k for k, v in METRICS.items() if otype in v]
            problems.append(f"{where('metric_list')}: metric_list[{i}]: {_short(name)} is not a metric for {otype}; "
                            f"accepted: {', '.join(ok)}")
    if spec.get("task") not in (None, path.stem):
        problems.append(f"{where('task')}: task: {spec['task']!r} must match the file name {path.stem!r}")
    if problems:
        raise TaskError(f"{len(problems)} problem(s) in task {path}:\n  " + "\n  ".join(problems))
