"""Mixtures, validation split, limits, seeded shuffling, and the tokenization cache."""

import json

import pytest

from finetune.data import build as build_module
from finetune.data.build import build_datasets
from finetune.data.errors import DataError
from finetune.recipe import DataConfig, DatasetSpec
from finetune.testing import tiny_tokenizer

TOK = tiny_tokenizer()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))


def numbered(tmp_path, name, n):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{name} {i}", "completion": "ok"}) + "\n" for i in range(n)))
    return DatasetSpec(source=str(path), format="prompt_completion", name=name)


def prompts_of(ds):
    return [TOK.decode(ids).split("\n")[1].split("<")[0] for ids in ds["input_ids"]]


def test_mixture_weights_validation_split_and_limit(tmp_path):
    a, b = numbered(tmp_path, "a", 12), numbered(tmp_path, "b", 40)
    b.weight, b.limit, a.weight = 0.5, 20, 2.0
    bundle = build_datasets(DataConfig(datasets=[a, b], val_size=4), TOK, seed=3)
    train, val = prompts_of(bundle.train), prompts_of(bundle.val)
    assert len(val) == 4 and len(set(val)) == 4 and not set(val) & set(train), "validation rows are held out"
    n_a = sum(p.startswith("a ") for p in val)  # the 32 unique rows minus validation, then weighted
    assert sum(p.startswith("a ") for p in train) == 2 * (12 - n_a)
    assert sum(p.startswith("b ") for p in train) == round(0.5 * (20 - (4 - n_a)))
    assert {int(p.split()[1]) for p in train + val if p.startswith("b ")} <= set(range(20)), "limit: first 20 rows"
    assert bundle.train.column_names == ["input_ids", "labels"] == bundle.val.column_names
    assert len(bundle.answer_end) == len(bundle.train) and set(bundle.answer_end) == {-1}


def test_seeded_shuffle_is_deterministic(tmp_path):
    cfg = DataConfig(datasets=[numbered(tmp_path, "a", 30)])
    first, again = build_datasets(cfg, TOK, seed=1), build_datasets(cfg, TOK, seed=1)
    other = build_datasets(cfg, TOK, seed=2)
    assert prompts_of(first.train) == prompts_of(again.train) != prompts_of(other.train)
    assert sorted(prompts_of(first.train)) == sorted(prompts_of(other.train))
    assert first.fingerprint == again.fingerprint != other.fingerprint


def test_second_build_is_a_cache_hit_and_does_not_tokenize(tmp_path, monkeypatch):
    cfg = DataConfig(datasets=[DatasetSpec(name="arith_cot", limit=40), numbered(tmp_path, "a", 10)])
    first = build_datasets(cfg, TOK, seed=0)
    assert first.stats["cache_hits"] == 0
    assert len(list((tmp_path / "cache" / "data").glob("tokenized-*.arrow"))) == 2

    def must_not_run(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(build_module, "_encode", must_not_run)
    second = build_datasets(cfg, TOK, seed=0)
    assert second.stats["cache_hits"] == 2
    assert second.train["input_ids"] == first.train["input_ids"] and second.fingerprint == first.fingerprint
    with pytest.raises(AssertionError, match="tokenized again"):  # a different mask rule is a different key
        build_datasets(DataConfig(datasets=cfg.datasets, train_on_prompt=True), TOK, seed=0)


def test_parallel_tokenization_matches_serial(tmp_path, monkeypatch):
    spec = DatasetSpec(name="arith_cot", limit=24)
    serial = build_datasets(DataConfig(datasets=[spec]), TOK)
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "other-cache"))
    parallel = build_datasets(DataConfig(datasets=[spec], num_proc=2), TOK)
    assert parallel.stats["cache_hits"] == 0
    assert parallel.train["input_ids"] == serial.train["input_ids"]
    assert parallel.train["labels"] == serial.train["labels"]


def test_impossible_splits(tmp_path):
    a = numbered(tmp_path, "a", 3)
    with pytest.raises(DataError, match="val_size: 3 would leave no training examples"):
        build_datasets(DataConfig(datasets=[a], val_size=3), TOK)
    a.weight = 0.0
    with pytest.raises(DataError, match="val_size: 1 would leave no training examples \\(there are 0\\)"):
        build_datasets(DataConfig(datasets=[a], val_size=1), TOK)
    with pytest.raises(DataError, match="data.datasets: empty"):
        build_datasets(DataConfig(datasets=[]), TOK)


def test_every_file_type_gives_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finetune.data.records import load_records
    from finetune.data.registry import resolve_spec

    rows = [{"q": "Line one\nline two, with a comma", "a": 'say "hi"'}, {"q": "2+2?", "a": "4"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text('q,a\n"Line one\nline two, with a comma","say ""hi"""\n2+2?,4\n')
    (tmp_path / "d.tsv").write_text('Line one\\nline two, with a comma\tsay "hi"\n2+2?\t4\n')
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    expected = [{"prompt": r["q"], "completion": r["a"]} for r in rows]
    for suffix in ("jsonl", "json", "csv", "tsv", "parquet"):
        extra = {"header": ["q", "a"], "unescape": True} if suffix == "tsv" else {}
        spec = DatasetSpec(source=str(tmp_path / f"d.{suffix}"), format="prompt_completion",
                           columns={"prompt": "q", "completion": "a"}, **extra)
        records, skipped, _ = load_records(resolve_spec(spec), DataConfig())
        assert records == expected and not skipped, suffix
