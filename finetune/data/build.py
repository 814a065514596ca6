"""Recipe data section -> tokenized train / validation datasets for TRL.

    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)

Each dataset spec is resolved (registry name + inline overrides), read from its source,
mapped to (prompt, completion) by its format, rendered by the recipe's prompt template,
and tokenized with the loss-mask rule of finetune/data/tokenize.py.
"""

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from datasets import Dataset

from finetune.data.synthetic import GENERATORS
from finetune.data.tokenize import encode_example, encode_text
from finetune.eval.extract import format_answer
from finetune.prompts import Template, load_template
from finetune.recipe import DataConfig, DatasetSpec
from finetune.resources import resource_dir
from finetune.schema import RecipeError, build

DEFAULT_GENERATED_ROWS = 1000


class DataError(ValueError):
    pass


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset | None
    template: Template
    fingerprint: str
    specs: list[DatasetSpec]


def resolve_spec(spec: DatasetSpec) -> DatasetSpec:
    """Registry definition (data/<name>.yaml) with the recipe entry's keys laid over it."""
    path = resource_dir("data") / f"{spec.name}.yaml" if spec.name else None
    if path is None or not path.is_file():
        if spec.source or spec.path:
            return spec
        known = ", ".join(sorted(p.stem for p in resource_dir("data").glob("*.yaml")))
        raise DataError(f"data.datasets: unknown dataset {spec.name!r}; accepted: {known}, "
                        "or an inline definition with `source` and `format`")
    text = "\n".join(l for l in path.read_text().splitlines() if not l.startswith(("description:", "license:")))
    base = build(DatasetSpec, text, str(path))
    defaults = DatasetSpec()
    overrides = {k: v for k, v in vars(spec).items() if v != getattr(defaults, k)}
    return replace(base, **{"name": spec.name, **overrides})


def read_rows(spec: DatasetSpec, seed: int) -> list[dict]:
    source = spec.path or spec.source
    if source and source.startswith("builtin:"):
        gen = source.split(":", 1)[1]
        if gen not in GENERATORS:
            raise DataError(f"{spec.name}: unknown generator {gen!r}; accepted: {', '.join(GENERATORS)}")
        return GENERATORS[gen](spec.limit or DEFAULT_GENERATED_ROWS, seed=seed, split=spec.split)
    path = Path(source)
    if path.suffix == ".jsonl" and path.is_file():
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: row {i}: not valid JSON ({e.msg})") from None
        return rows[: spec.limit] if spec.limit else rows
    raise DataError(f"{spec.name}: cannot read source {source!r}")


def to_pair(row: dict, spec: DatasetSpec) -> tuple[str, str]:
    col = lambda field: row[spec.columns.get(field, field)]  # noqa: E731
    if spec.format == "cot":
        return col("question"), col("rationale").rstrip() + "\n" + format_answer(col("answer"), spec.answer_format)
    if spec.format == "prompt_completion":
        return col("prompt"), col("completion")
    raise DataError(f"{spec.name}: format {spec.format!r} not supported yet")


def build_datasets(cfg: DataConfig, tokenizer, seed: int = 0) -> DataBundle:
    template = load_template(cfg.template)
    specs = [resolve_spec(s) for s in cfg.datasets]
    examples = []
    for spec in specs:
        for row in read_rows(spec, seed):
            if spec.format == "text":
                examples.append(encode_text(tokenizer, row[spec.columns.get("text", "text")]))
            else:
                prompt, completion = to_pair(row, spec)
                examples.append(encode_example(template, tokenizer, prompt, completion, cfg.train_on_prompt))
    ds = Dataset.from_list(examples).shuffle(seed=seed)
    val = None
    if cfg.val_size:
        split = ds.train_test_split(test_size=cfg.val_size, seed=seed)
        ds, val = split["train"], split["test"]
    digest = hashlib.sha256(json.dumps([ds._fingerprint, template.source, cfg.max_length]).encode()).hexdigest()[:16]
    return DataBundle(train=ds, val=val, template=template, fingerprint=digest, specs=specs)
