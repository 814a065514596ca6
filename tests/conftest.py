import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# model.dtype auto means fp32 in tests on every CPU, so expected numbers do not depend on the machine's
# bf16 support (finetune/precision.py); tests/test_precision.py exercises the choice itself
os.environ.setdefault("FINETUNE_AUTO_PRECISION", "float32")


REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _own_base_results(tmp_path, monkeypatch):
    """Base-model results cached by one test never answer for another (eval/basecache.py)."""
    monkeypatch.setenv("FINETUNE_BASE_RESULTS", str(tmp_path / "base_results"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A saved 2-layer random Llama + char tokenizer, loadable like any local model folder."""
    from finetune.testing import save_tiny
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def write_recipe(tmp_path, tiny_dir):
    """write_recipe(yaml_text) -> path; {tiny} and {out} are filled in."""
    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{tiny}", tiny_dir).replace("{out}", str(tmp_path / "run")))
        return path
    return write


TINY_RECIPE = """\
model: {name: "{tiny}"}
method: {name: lora, r: 4, alpha: 8}
data:
  datasets: [{name: arith_cot, limit: 32}]
  max_length: 512  # the tiny tokenizer is one token per character
train: {max_steps: 4, batch_size: 4, save_steps: 2, logging_steps: 1, lr: 1.0e-3}
output: {dir: "{out}"}
"""


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="fuzz tests: many more cases (minutes)")


@pytest.fixture
def fuzz_cases(request) -> int:
    """Cases per fuzz test: a seconds-fast fixed set in CI, many more with --long."""
    return 400 if request.config.getoption("--long") else 25
