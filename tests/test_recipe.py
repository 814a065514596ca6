"""Recipe schema: every shipped recipe loads; bad recipes give file:line, dotted key, suggestion."""

import subprocess
import sys

import pytest

from finetune.recipe import RecipeError, load_recipe
from finetune.resources import resource_dir
from finetune.schema import all_keys
from finetune.recipe import Recipe


@pytest.mark.parametrize("path", sorted(resource_dir("recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.data.datasets, "a shipped recipe trains on something"


def test_key_count_is_small():
    # nested by stage, not a flat god-config; no stage past ~20 keys (star.* is its own stage: STaR, issue #16)
    keys = [k for k in all_keys(Recipe) if "[]" not in k]
    assert 30 <= len(keys) <= 80
    per_stage = {}
    for k in keys:
        per_stage[k.split(".")[0]] = per_stage.get(k.split(".")[0], 0) + 1
    assert max(per_stage.values()) <= 20, per_stage


def test_misspelled_key_names_file_line_key_and_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  datasets: [{name: arith_cot}]\ntrain:\n  max_stpes: 3\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}:4: train.max_stpes: unknown key; did you mean 'train.max_steps'?"


def test_alias_from_other_tools_is_suggested(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: train.learning_rate: unknown key; did you mean 'train.lr'"):
        load_recipe(path)


def test_key_in_wrong_section_points_to_its_home(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("method:\n  batch_size: 4\n")
    with pytest.raises(RecipeError, match=r"method.batch_size: unknown key; it belongs at 'train.batch_size'"):
        load_recipe(path)


def test_all_problems_reported_together(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  dtyp: float32\nmethod:\n  name: lorra\n  r: sixteen\ntrain:\n  lr: -1\n"
                    "data:\n  datasets:\n    - name: arith_cot\n      limt: 5\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert len(e.value.problems) == 5
    assert f"{path}:2: model.dtyp: unknown key; did you mean 'model.dtype'?" in msg
    assert f"{path}:4: method.name: invalid choice 'lorra'; accepted: lora, freeze, full" in msg
    assert f"{path}:5: method.r: expected an integer, got text 'sixteen'" in msg
    assert f"{path}:7: train.lr: must be > 0.0, got -1.0" in msg
    assert f"{path}:11: data.datasets[0].limt: unknown key; did you mean 'data.datasets[0].limit'?" in msg


def test_overrides_go_through_the_same_checks(tmp_path):
    path = resource_dir("recipes") / "quickstart.yaml"
    recipe = load_recipe(path, ["train.max_steps=20", "method.r=8", "method.target_modules=[q_proj, v_proj]"])
    assert (recipe.train.max_steps, recipe.method.r, recipe.method.target_modules) == (20, 8, ["q_proj", "v_proj"])
    with pytest.raises(RecipeError) as e:
        load_recipe(path, ["train.max_step=20", "method.name=qlora"])
    assert "command-line override 'train.max_step=20': train.max_step: unknown key; did you mean " \
           "'train.max_steps'?" in str(e.value)
    assert "method.name: invalid choice 'qlora'; accepted: lora, freeze, full" in str(e.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  name: [unclosed\ntrain: {}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: not valid YAML"):
        load_recipe(path)


def test_cli_validate_exits_2_without_traceback(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  datasets: [{name: arith_cot}]\ntrian:\n  lr: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "finetune.cli", "validate", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert f"{path}:3: trian: unknown key; did you mean 'train'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "finetune.cli", "validate",
                         str(resource_dir("recipes") / "quickstart.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_readme_documents_every_recipe_key():
    from finetune.reference import schema_reference
    readme = (resource_dir("recipes").parent / "README.md").read_text()
    assert schema_reference() in readme, "README recipe reference is stale: run python -m finetune.reference"
    assert readme.count("| `train.lr` |") == 1, "README holds more than one recipe reference table"


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `2e-4` as text; a number field takes it as the number written
    p = tmp_path / "r.yaml"
    p.write_text("data: {datasets: [{name: arith_cot}]}\ntrain: {lr: 2e-4, weight_decay: 1E-2}\n")
    r = load_recipe(str(p), ["train.max_grad_norm=5e-1"])
    assert (r.train.lr, r.train.weight_decay, r.train.max_grad_norm) == (2e-4, 1e-2, 0.5)
    p.write_text("data: {datasets: [{name: arith_cot}]}\ntrain: {lr: 2e-x}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: train.lr: expected a number, got text '2e-x'"):
        load_recipe(str(p))
