"""Every numeric key of every schema, checked against the values Python and YAML blur.

Table-driven over the schema itself, so a key added later is covered: `true` where a
number is expected (bool is an int in Python), 1.0e+100, a 30-digit integer, .nan/.inf,
and zero or negative values where they make no sense. The tables below say where 0 or a
negative value is meaningful; everywhere else they must be refused.
"""

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml

from finetune.eval.taskfile import BOUNDS, SCHEMA, TaskError
from finetune.eval.tasks import load_task
from finetune.recipe import Recipe, RecipeError, load_recipe
from finetune.resources import resource_dir

ZERO_OK = {  # 0 means something here
    "method.dropout": "no dropout", "method.layers": "freeze: only extra_modules",
    "data.val_size": "no validation split", "train.epochs": "with max_steps set",
    "train.warmup_ratio": "no warmup", "train.weight_decay": "none", "train.max_grad_norm": "no clipping",
    "train.seed": "a seed", "eval.every_steps": "no accuracy during training", "star.rounds": "no STaR: a plain run",
}
NEGATIVE_OK = {"method.layers": "-N: the first N blocks", "train.max_steps": "-1: use epochs"}
BASE = {"data": {"datasets": [{"name": "arith_cot"}]}}
NEEDS = {  # a key that is only valid with another one set: that one too, so the key's own bounds are what is tested
    "eval.every_steps": ("data.val_size", 8), "eval.every_limit": ("data.val_size", 8),
    "star.rounds": ("eval.tasks", ["arith_cot"]),
}


def _numeric_keys(cls, prefix="") -> list[tuple[str, type]]:
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = f.type
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        inner = next((a for a in [tp, *typing.get_args(tp)] if dataclasses.is_dataclass(a)), None)
        if typing.get_origin(tp) is list and inner:
            out += _numeric_keys(inner, f"{prefix}{f.name}[0].")
        elif inner:
            out += _numeric_keys(inner, f"{prefix}{f.name}.")
        elif args[0] in (int, float) and len(args) == 1:
            out.append((f"{prefix}{f.name}", args[0]))
    return out


KEYS = _numeric_keys(Recipe)


def test_the_table_sees_every_numeric_key():
    names = {k for k, _ in KEYS}
    assert {"train.batch_size", "train.seed", "eval.limit", "data.datasets[0].weight", "method.alpha"} <= names
    assert set(ZERO_OK) | set(NEGATIVE_OK) <= names


def _set(doc: dict, key: str, value):
    node, parts = doc, key.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value


def _recipe(tmp_path: Path, key: str, value) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    if key in NEEDS:
        _set(doc, *NEEDS[key])
    _set(doc, key, value)
    doc.setdefault("output", {})["dir"] = str(tmp_path / "run")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _refused(tmp_path, key, value) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(_recipe(tmp_path, key, value))
    message = str(e.value)
    assert key in message and f"{tmp_path / 'r.yaml'}:" in message, message
    return message


BLURRED = [True, False, 1.0e100, 10**30, -(10**30), math.nan, math.inf, -math.inf, "12"]


@pytest.mark.parametrize("key,tp", KEYS, ids=[k for k, _ in KEYS])
def test_blurred_values_are_refused(key, tp, tmp_path):
    for value in BLURRED:
        _refused(tmp_path, key, value)
    if tp is int:
        _refused(tmp_path, key, 1.5)


@pytest.mark.parametrize("key,tp", KEYS, ids=[k for k, _ in KEYS])
def test_zero_and_negative_only_where_they_mean_something(key, tp, tmp_path):
    if key not in ZERO_OK and key != "train.max_steps":
        _refused(tmp_path, key, 0)
    if key not in NEGATIVE_OK:
        _refused(tmp_path, key, -2 if tp is int else -0.5)


@pytest.mark.parametrize("key,tp", KEYS, ids=[k for k, _ in KEYS])
def test_a_sensible_value_is_accepted(key, tp, tmp_path):
    value = {"data.max_length": 64, "train.seed": 0}.get(key, 1 if tp is int else 0.5)
    load_recipe(_recipe(tmp_path, key, value))


@pytest.mark.parametrize("key,value", [("train.seed", 2**32), ("train.seed", 10**29), ("train.max_steps", 0),
                                       ("train.lr", 0.0), ("train.epochs", 1.0e100)])
def test_values_torch_or_numpy_would_refuse_later(key, value, tmp_path):
    _refused(tmp_path, key, value)


# --- eval task files -----------------------------------------------------------------------

def _numeric_task_keys(schema=SCHEMA, prefix="") -> list[str]:
    out = []
    for key, tp in schema.items():
        if isinstance(tp, dict):
            out += _numeric_task_keys(tp, f"{prefix}{key}.")
        elif tp in (int, float) or (isinstance(tp, tuple) and set(tp) <= {int, float}):
            out.append(f"{prefix}{key}")
    return out


TASK_KEYS = _numeric_task_keys()


def test_every_numeric_task_key_has_bounds():
    assert set(TASK_KEYS) == set(BOUNDS)


@pytest.mark.parametrize("key", TASK_KEYS)
def test_task_numbers_are_checked(key, tmp_path):
    base = yaml.safe_load((resource_dir("eval") / "arith_cot.yaml").read_text())
    lowest_ok = BOUNDS[key][-2]
    for value in [True, 1.0e100, 10**30, math.nan, math.inf, -1, "3"] + ([0] if lowest_ok >= 1 else []):
        spec = yaml.safe_load(yaml.safe_dump(base))
        head, _, tail = key.rpartition(".")
        (spec.setdefault(head, {}) if head else spec)[tail] = value
        path = tmp_path / "arith_cot.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(TaskError, match=key.replace(".", r"\.")):
            load_task(str(path))
