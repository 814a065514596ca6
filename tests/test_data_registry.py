"""Registry: every shipped definition and template loads; names, overrides and data paths resolve."""

import json

import pytest
from datasets import Dataset

from conftest import SHARED_DATA
from finetune.data import registry
from finetune.data.build import build_datasets
from finetune.data.records import load_records
from finetune.data.errors import DataError
from finetune.data.registry import format_listing, list_datasets, locate, registered_names, resolve_spec
from finetune.prompts import available_templates, load_template
from finetune.recipe import DataConfig, DatasetSpec
from finetune.testing import tiny_tokenizer

SHIPPED = {"gsm8k", "alpaca", "dolly", "self_instruct", "arith_cot"} | {
    f"flan_cot_{s}" for s in ("aqua", "creak", "ecqa", "qasc", "sensemaking", "strategyqa")}
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(registry.DATA_ENV, raising=False)


def test_every_shipped_definition_and_template_loads():
    assert SHIPPED <= set(registered_names())
    listed = list_datasets()
    assert not [d for d in listed if d["description"].startswith("INVALID")]
    assert all(d["format"] and d["description"] and d["license"] for d in listed)
    for name in registered_names():
        entry = resolve_spec(DatasetSpec(name=name))
        assert entry.name == name and entry.origin.endswith(f"{name}.yaml")
    for name in available_templates():
        load_template(name)
    table = format_listing()
    assert "gsm8k" in table and "local: gsm8k/{split}.jsonl" in table


def test_recipe_keys_override_the_definition():
    entry = resolve_spec(DatasetSpec(name="gsm8k", limit=5, split="test"))
    assert (entry.source, entry.config, entry.split, entry.limit) == ("openai/gsm8k", "main", "test", 5)
    assert entry.split_answer and entry.columns == {"question": "question", "rationale": "answer"}


def test_unknown_name_suggests_and_inline_needs_a_format():
    with pytest.raises(DataError, match=r"unknown dataset 'gsm8'; did you mean 'gsm8k'\?"):
        resolve_spec(DatasetSpec(name="gsm8"))
    with pytest.raises(DataError, match="format: required for an inline dataset"):
        resolve_spec(DatasetSpec(source="x.jsonl"))


def test_broken_definition_reports_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nformat: xml\nsource: a.jsonl\ncolums: {}\n")
    with pytest.raises(DataError) as e:
        resolve_spec(DatasetSpec(name=str(bad)))
    assert f"{bad}:2: format: invalid choice 'xml'" in str(e.value)
    assert f"{bad}:4: colums: unknown key; did you mean 'columns'?" in str(e.value)


def test_data_path_override_order(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    local = tmp_path / "gsm8k" / "test.jsonl"
    local.write_text(json.dumps({"question": "Q", "answer": "r\n#### 3"}) + "\n")
    entry = resolve_spec(DatasetSpec(name="gsm8k", split="test"))
    assert locate(entry) == "openai/gsm8k", "no data dir: the hub source"
    assert locate(entry, str(tmp_path)) == str(local), "data.data_dir holds the local copy"
    monkeypatch.setenv(registry.DATA_ENV, str(tmp_path))
    assert locate(entry) == str(local), "$FINETUNE_DATA_DIR holds it"
    train = resolve_spec(DatasetSpec(name="gsm8k"))
    assert locate(train) == "openai/gsm8k", "the data dir lacks gsm8k/train.jsonl: fall back to the source"
    assert locate(resolve_spec(DatasetSpec(name="gsm8k", path=str(local)))) == str(local), "path: a file"
    assert locate(resolve_spec(DatasetSpec(name="gsm8k", split="test", source="mine.jsonl"))) == "mine.jsonl", \
        "a recipe's own source wins over the definition's local copy"
    assert locate(resolve_spec(DatasetSpec(name="gsm8k", split="test", path=str(tmp_path)))) == str(local)
    with pytest.raises(DataError, match="does not exist"):
        locate(resolve_spec(DatasetSpec(name="gsm8k", path=str(tmp_path))))
    records, _, _ = load_records(resolve_spec(DatasetSpec(name="gsm8k", split="test")), DataConfig())
    assert records == [{"prompt": "Q", "rationale": "r", "answer_line": "#### 3"}]


def test_hub_source_calls_load_dataset(monkeypatch):
    import datasets
    calls = []

    def fake(path, name=None, split=None):
        calls.append((path, name, split))
        return Dataset.from_list([{"instruction": "Say hi", "context": "", "response": "hi", "category": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    records, _, read = load_records(resolve_spec(DatasetSpec(name="dolly")), DataConfig())
    assert calls == [("databricks/databricks-dolly-15k", None, "train")] and read == calls[0][0]
    assert records == [{"prompt": "Say hi", "completion": "hi"}]

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"openai/gsm8k \(config main\) split train: could not load this hub dataset "
                                        r"\(ConnectionError: no network\); without network access point"):
        load_records(resolve_spec(DatasetSpec(name="gsm8k")), DataConfig())


def test_url_source_is_downloaded_then_read_strictly(tmp_path, monkeypatch):
    from datasets.utils import file_utils
    cached = tmp_path / "3f9a1c"  # a cache file: no suffix, the URL says .tsv
    cached.write_text("What is 2+2?\\nOptions: 4, 5\t4\tTwo plus two\\nis four.\n")
    monkeypatch.setattr(file_utils, "cached_path", lambda url: str(cached))
    records, _, _ = load_records(resolve_spec(DatasetSpec(name="flan_cot_qasc")), DataConfig())
    assert records == [{"prompt": "What is 2+2?\nOptions: 4, 5", "rationale": "Two plus two\nis four.",
                        "answer_line": "The answer is 4."}]


@needs_shared
def test_gsm8k_from_shared_data_splits_rationale_and_answer(monkeypatch):
    monkeypatch.setenv(registry.DATA_ENV, str(SHARED_DATA))
    records, _, read = load_records(resolve_spec(DatasetSpec(name="gsm8k", limit=3)), DataConfig())
    assert read == str(SHARED_DATA / "gsm8k" / "train.jsonl") and len(records) == 3
    assert records[0]["prompt"].startswith("Natalia sold clips to 48 of her friends")
    assert records[0]["rationale"].endswith("clips altogether in April and May.")
    assert records[0]["answer_line"] == "#### 72"


@needs_shared
def test_flan_and_self_instruct_from_shared_data():
    cfg = DataConfig(data_dir=str(SHARED_DATA))
    aqua, _, _ = load_records(resolve_spec(DatasetSpec(name="flan_cot_aqua", limit=1)), cfg)
    assert aqua[0]["prompt"].endswith("(D) 552\n(E) 312") and aqua[0]["answer_line"] == "The answer is (C)."
    assert aqua[0]["rationale"] == "1/7:1/7:1/14 = 2:2:1\n1/5*5600 = 1120\n2240-1120 = 1120"
    tasks = [json.loads(line) for line in (SHARED_DATA / "self_instruct" / "seed_tasks.jsonl").open()]
    rows, _, _ = load_records(resolve_spec(DatasetSpec(name="self_instruct")), cfg)
    assert len(rows) == sum(len(t["instances"]) for t in tasks) >= 175
    bundle = build_datasets(DataConfig(datasets=[DatasetSpec(name=f"flan_cot_{s}", limit=4) for s in
                                                 ("creak", "ecqa", "qasc", "sensemaking", "strategyqa")],
                                       data_dir=str(SHARED_DATA), max_length=1024), tiny_tokenizer())
    assert len(bundle.train) == 20 and bundle.stats["cot_examples"] == 20
