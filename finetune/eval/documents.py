"""Where a task's documents come from: a local file, the hub, or a built-in generator.

A task's `dataset.file` is a path inside a *data dir* laid out like the project's shared
data (gsm8k/test.jsonl, arc/arc_easy_test.jsonl, bbh/<task>.json, ...). The data dir is,
in order: the `data_path` argument, then the FINETUNE_DATA_DIR environment variable. An
absolute `file` is used as is. Without a local file the task falls back to its hub id
(`datasets.load_dataset(hub, name, split=split)`).

`process` names a document normaliser from PROCESSORS (an explicit dict) that maps a
source's schema to the fields the task's templates use, so the hub copy and a local copy
of the same data render identically.
"""

from pathlib import Path

from finetune.data.synthetic import GENERATORS
from finetune.eval.taskfile import TaskError
from finetune.resources import DATA_ENV, data_root



def _arc(doc: dict) -> dict:
    """ARC as {query, choices, gold}: the local (lm-eval preprocessed) copy already is; the hub copy is mapped."""
    if "query" in doc:
        return doc
    labels, texts = doc["choices"]["label"], doc["choices"]["text"]
    return {"id": doc.get("id"), "query": "Question: " + doc["question"], "choices": list(texts),
            "gold": labels.index(doc["answerKey"])}


def _self_instruct(doc: dict) -> dict:
    """One (prompt, response) per instruction: its first instance's input appended to the instruction."""
    inst = doc["instances"]
    first = inst[0] if isinstance(inst, list) else {k: v[0] for k, v in inst.items()}
    prompt = doc["instruction"] + (f"\n\n{first['input']}" if first.get("input") else "")
    return {"id": doc.get("id"), "prompt": prompt, "response": first["output"]}


PROCESSORS = {"arc": _arc, "self_instruct": _self_instruct}


def _read_file(path: Path, field: str | None) -> list[dict]:
    """Documents of a local file, read by the training data readers (same bounds, same row errors).

    A .json object holding one list ({"canary": "...", "examples": [...]}) is read as that list, so
    `dataset.field` names it for the reader of the file but is not needed to find it.
    """
    from finetune.data.errors import DataError
    from finetune.data.sources import read_file

    if not path.name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        raise TaskError(f"{path}: unsupported data file type {path.suffix!r}; accepted: .jsonl, .json (or .gz)")
    try:
        docs = []
        for loc, row in read_file(path):
            if isinstance(row, DataError):
                raise row
            docs.append(row)
    except DataError as e:
        raise TaskError(str(e)) from None
    return docs


def _load_hub(ds: dict, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(ds["hub"], ds.get("name"), split=split))


def _generate(ds: dict, split: str, where: str) -> list[dict]:
    name = ds["generator"]
    if name not in GENERATORS:
        raise TaskError(f"{where}: dataset.generator: unknown generator {name!r}; accepted: {', '.join(GENERATORS)}")
    args = dict(ds.get("generator_args") or {})
    args.setdefault("n", ds.get("limit") or 1000)
    try:
        return GENERATORS[name](split=split, **args)
    except (TypeError, ValueError) as e:  # an argument the generator does not take, or a bad value
        raise TaskError(f"{where}: dataset.generator_args: {e}") from None


def load_docs(ds: dict, where: str, *, data_path=None, split: str | None = None) -> list[dict]:
    """Every document of one split, normalised by `dataset.process`."""
    split = split or ds.get("split") or "test"
    if ds.get("generator"):
        docs = _generate(ds, split, where)
    else:
        docs = _load_source(ds, where, data_path, split)
    if ds.get("process"):
        if ds["process"] not in PROCESSORS:
            raise TaskError(f"{where}: dataset.process: unknown processor {ds['process']!r}; "
                            f"accepted: {', '.join(PROCESSORS)}")
        docs = [_process(ds["process"], d, i, where) for i, d in enumerate(docs, 1)]
    return docs


def _process(name: str, doc, i: int, where: str) -> dict:
    try:
        return PROCESSORS[name](doc)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise TaskError(f"{where}: dataset.process {name!r}: document {i} does not have the fields it needs "
                        f"({type(e).__name__}: {e}); its keys: {', '.join(map(str, doc)) if isinstance(doc, dict) else doc}") from None


def _load_source(ds: dict, where: str, data_path, split: str) -> list[dict]:
    root, tried = data_root(data_path), []
    if ds.get("file"):
        rel = Path(ds["file"].replace("{split}", split))
        path = rel if rel.is_absolute() else (root / rel if root else None)
        if path is not None and path.is_file():
            return _read_file(path, ds.get("field"))
        tried.append(f"file {path}" if path else f"file {rel} (no data dir: set {DATA_ENV} or pass data_path)")
    if ds.get("hub"):
        try:
            return _load_hub(ds, split)
        except Exception as e:  # offline, unknown id, ...: say what was tried and how to fix it
            tried.append(f"hub dataset {ds['hub']!r} ({type(e).__name__}: {str(e)[:200]})")
    raise TaskError(f"{where}: dataset: no data found; tried " + "; ".join(tried) + f". Set {DATA_ENV} to a folder "
                    "laid out like shared/data (or pass data_path / --data-path), or use a machine that reaches "
                    "the hub.")
