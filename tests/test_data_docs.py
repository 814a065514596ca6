"""README section "Add a new instruction dataset", followed word for word; and GSM8K from ../shared/data through its definition.

The section's fenced blocks tagged `file=PATH` are written to a fresh project folder
(FINETUNE_HOME, with the repository's prompts/), and its commands are run through the CLI
with one change: the tiny test model replaces the packaged one.
"""

import json
import re

import pytest
import yaml

from conftest import REPO, SHARED_DATA
from finetune.cli import main
from finetune.data.registry import DATA_ENV, RegistryEntry
from finetune.schema import build

DOC = REPO / "README.md"  # its section "Add a new instruction dataset"
SECTION = re.compile(r"^## Add a new instruction dataset\n(.*?)(?=^## )", re.S | re.M)
FENCE = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def blocks():
    section = SECTION.search(DOC.read_text()).group(1)
    return [(lang, info.strip(), body) for lang, info, body in FENCE.findall(section)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder laid out like the repository, as the current directory."""
    (tmp_path / "prompts").symlink_to(REPO / "prompts")
    (tmp_path / "data").mkdir()
    (tmp_path / "recipes").mkdir()
    monkeypatch.setenv("FINETUNE_HOME", str(tmp_path))
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_files(root):
    written = []
    for _, info, body in blocks():
        if info.startswith("file="):
            path = root / info[len("file="):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            written.append(info[len("file="):])
    return written


def test_follow_the_page(project, tiny_dir, capsys):
    assert write_files(project) == ["my_data/support.jsonl", "data/support.yaml", "recipes/support.yaml"]
    assert main(["ls", "datasets"]) == 0
    assert "support" in capsys.readouterr().out
    tiny = f"model.name={tiny_dir}"  # overrides go before options (argparse)
    assert main(["preview", "recipes/support.yaml", tiny, "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "example 2 of 4" in out and "Open Settings" in out and "\033[32m" in out and "label audit" in out
    assert main(["run", "recipes/support.yaml", tiny]) == 0
    run = project / "runs" / "support"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "format: prompt_completion" not in (run / "template.yaml").read_text()


def test_the_error_the_page_shows(project, tiny_dir, capsys):
    write_files(project)
    expected = next(body.strip() for lang, _, body in blocks() if lang == "text")
    rows = (project / "my_data" / "support.jsonl").read_text().splitlines()
    bad = rows + rows[:2] + [json.dumps({"ticket": "Hello?", "agent_reply": None})]
    (project / "my_data" / "support.jsonl").write_text("\n".join(bad) + "\n")
    assert main(["preview", "recipes/support.yaml", f"model.name={tiny_dir}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"


def test_every_yaml_snippet_is_a_valid_definition():
    snippets = [body for lang, info, body in blocks() if lang == "yaml" and not info.startswith("file=recipes")]
    assert len(snippets) >= 5
    for body in snippets:
        entry = build(RegistryEntry, body, str(DOC))
        assert entry.format in ("alpaca", "prompt_completion", "cot", "messages", "text"), body
        assert yaml.safe_load(body)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")
def test_gsm8k_trains_through_its_definition_with_the_path_override(tmp_path, tiny_dir, monkeypatch, capsys):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "gsm8k.yaml"
    recipe.write_text(f"""model: {{name: {tiny_dir}}}
method: {{name: lora, r: 4, alpha: 8}}
data:
  datasets:
    - name: gsm8k
      path: {SHARED_DATA / "gsm8k" / "train.jsonl"}
      limit: 8
  max_length: 1024
train: {{max_steps: 2, batch_size: 2, logging_steps: 1}}
output: {{dir: {tmp_path / "run"}}}
""")
    assert main(["preview", str(recipe), "-n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "#### " in out and "<|im_end|>" in out
    assert f"gsm8k: 8 rows from {SHARED_DATA / 'gsm8k' / 'train.jsonl'}" in out
    assert main(["run", str(recipe)]) == 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
