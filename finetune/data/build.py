"""Recipe data section -> tokenized train / validation datasets for TRL.

    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)

For each dataset entry: resolve it (registry.py: a data/<name>.yaml definition with the
entry's keys laid over it, or an inline definition), locate what to read (the `path`
override, a local copy under data.data_dir / $FINETUNE_DATA_DIR, else `source`), read its
rows (sources.py), map each to a standard record by its format (formats.py), and tokenize
with the recipe's template and the loss-mask rules of tokenize.py. Tokenization is a
`Dataset.map` whose cache file is named by a hash of the records, template, tokenizer and
mask options, so building the same data again loads it instead of re-tokenizing.

The datasets are then mixed (each row used `weight` times), a validation split of
`val_size` unique rows is held out first, and the result is shuffled with the seed.
"""

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from finetune.data import tokenize as tokenize_module
from finetune.data.audit import rows_of, token_stats
from finetune.data.errors import DataError
from finetune.data.records import load_records
from finetune.data.registry import RegistryEntry, resolve_spec
from finetune.data.tokenize import encode_record, end_token_ids
from finetune.prompts import Template, load_template
from finetune.recipe import DataConfig
from finetune.resources import cache_dir

__all__ = ["DataBundle", "DataError", "build_datasets"]

PARALLEL_ROWS = 2_000  # below this, starting worker processes costs more than it saves


@dataclass
class DataBundle:
    train: Dataset  # columns input_ids, labels (-100 = not trained); no padding
    val: Dataset | None
    template: Template
    fingerprint: str
    specs: list[RegistryEntry]
    stats: dict = field(default_factory=dict)  # audit.token_stats of train + per-dataset rows, skips, cache hits
    answer_end: list[int] = field(default_factory=list)  # per train row: token index after the CoT answer, or -1
    val_records: list[dict] = field(default_factory=list)  # per val row: its standard record + format, answer_format


def _code_version() -> bytes:
    """The rendering and masking code itself: editing it invalidates cached tokenizations."""
    from finetune import answers, prompts  # answers: where think blocks are cut
    return b"".join(Path(m.__file__).read_bytes() for m in (tokenize_module, prompts, answers))


def _tokenizer_id(tokenizer) -> bytes:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return json.dumps([type(tokenizer).__name__, vocab, tokenizer.chat_template or "", tokenizer.eos_token_id,
                       tokenizer.bos_token_id, getattr(tokenizer, "add_bos_token", None)]).encode()


def cache_key(records: list[dict], fmt: str, template: Template, tokenizer, cfg: DataConfig) -> str:
    h = hashlib.sha256(_code_version() + _tokenizer_id(tokenizer))
    h.update(json.dumps([fmt, cfg.train_on_prompt, cfg.cot_loss, cfg.think, cfg.messages_loss, template.wrap,
                         template.user, template.system, template.exemplars]).encode())
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def _encode(record, fmt, template, tokenizer, train_on_prompt, cot_loss, think, messages_loss):
    return encode_record(record, fmt, template, tokenizer, train_on_prompt, cot_loss, think, messages_loss)


def tokenize_records(records: list[dict], entry: RegistryEntry, template: Template, tokenizer,
                     cfg: DataConfig) -> tuple[Dataset, bool, str]:
    """(Dataset of input_ids, labels, answer_end; whether it came from the cache; cache key)."""
    key = cache_key(records, entry.format, template, tokenizer, cfg)
    folder = cache_dir() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tokenized-{key}.arrow"
    hit = any(folder.glob(f"tokenized-{key}*.arrow"))
    procs = cfg.num_proc or (min(4, os.cpu_count() or 1) if len(records) >= PARALLEL_ROWS else 1)
    if procs > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ds = Dataset.from_list(records)
    out = ds.map(_encode, fn_kwargs=dict(fmt=entry.format, template=template, tokenizer=tokenizer,
                                         train_on_prompt=cfg.train_on_prompt, cot_loss=cfg.cot_loss,
                                         think=cfg.think, messages_loss=cfg.messages_loss),
                 remove_columns=ds.column_names, cache_file_name=str(path), new_fingerprint=key,
                 num_proc=procs if procs > 1 and not hit else None, desc=f"Tokenizing {entry.name}")
    return out, hit, key


def mix(parts: list[Dataset], weights: list[float], val_size: int, seed: int) -> tuple[Dataset, Dataset | None, list]:
    """Hold out `val_size` unique rows, use each remaining row `weight` times, shuffle; also (part, row) of each
    validation row."""
    rng = random.Random(seed)
    offsets = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    pool = [(i, j) for i, p in enumerate(parts) if weights[i] > 0 for j in range(len(p))]
    rng.shuffle(pool)
    if val_size >= len(pool):
        raise DataError(f"data.val_size: {val_size} would leave no training examples (there are {len(pool)})")
    by_part: dict[int, list[int]] = {}
    for i, j in pool[val_size:]:
        by_part.setdefault(i, []).append(j)
    train_idx = []
    for i, rows in sorted(by_part.items()):
        whole, rest = divmod(round(weights[i] * len(rows)), len(rows))
        train_idx += [offsets[i] + j for j in rows * whole + rows[:rest]]
    if not train_idx:
        raise DataError("data.datasets: the mixture is empty (every weight rounds to 0 rows)")
    rng.shuffle(train_idx)
    everything = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    val = everything.select([offsets[i] + j for i, j in pool[:val_size]]) if val_size else None
    return everything.select(train_idx), val, pool[:val_size]


def build_datasets(cfg: DataConfig, tokenizer, seed: int = 0) -> DataBundle:
    """Every dataset of the recipe's data section, tokenized, mixed, split and shuffled."""
    if not cfg.datasets:
        raise DataError("data.datasets: empty; list at least one dataset (see `finetune ls datasets`)")
    template = load_template(cfg.template)
    entries = [resolve_spec(s, i) for i, s in enumerate(cfg.datasets)]
    parts, per_dataset, keys, all_records = [], [], [], []
    for entry in entries:
        records, skipped, source = load_records(entry, cfg, seed)
        all_records.append(records)
        ds, hit, key = tokenize_records(records, entry, template, tokenizer, cfg)
        parts.append(ds)
        keys.append(key)
        per_dataset.append({"name": entry.name, "read": source, "rows": len(records), "skipped_rows": len(skipped),
                            "skipped_first": skipped[:3], "cache_hit": hit})
    train, val, val_rows = mix(parts, [e.weight for e in entries], cfg.val_size, seed)
    val_records = [{**all_records[i][j], "format": entries[i].format, "answer_format": entries[i].answer_format}
                   for i, j in val_rows]  # eval.every_steps scores them (finetune/eval/during.py)
    answer_end = list(train["answer_end"])
    stats = token_stats(rows_of(train), cfg.max_length, end_token_ids(template, tokenizer))
    stats.update(datasets=per_dataset, skipped_rows=sum(d["skipped_rows"] for d in per_dataset),
                 cache_hits=sum(d["cache_hit"] for d in per_dataset), val_examples=len(val) if val else 0)
    fingerprint = hashlib.sha256(json.dumps([keys, [e.weight for e in entries], cfg.val_size, seed,
                                             template.source, cfg.max_length]).encode()).hexdigest()[:16]
    cols = ["input_ids", "labels"]
    return DataBundle(train=train.select_columns(cols), val=val.select_columns(cols) if val else None,
                      template=template, fingerprint=fingerprint, specs=entries, stats=stats, answer_end=answer_end,
                      val_records=val_records)
