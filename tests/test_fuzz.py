"""Fuzzing: mutated shipped files are accepted or give one message with exit status 2.

Seeds are the shipped recipes, bad recipes, dataset definitions (data/), eval tasks (eval/),
prompt templates (prompts/) and rows of every dataset format. Each case applies a few
random mutations (delete, rename or duplicate keys, change a value's type or scalar, swap a
section for a list, truncate the file at a random byte, insert random bytes) and runs
`finetune validate` (or `finetune preview` for rows). Never a traceback (exit status 1 is
the CLI's "internal error" line), never a hang: each case has a time bound.

    pytest tests/test_fuzz.py                # a fixed seed, seconds
    pytest tests/test_fuzz.py --long         # many more cases
"""

import json
import math
import random
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from finetune.cli import main

REPO = Path(__file__).resolve().parent.parent
SECONDS = 30  # per case; validate takes well under a second once imports are warm
SEEDS = {
    "recipe": sorted((REPO / "recipes").glob("*.yaml")) + sorted((REPO / "tests" / "bad_recipes").glob("*.yaml"))[:8],
    "dataset": sorted((REPO / "data").glob("*.yaml")),
    "task": sorted(p for p in (REPO / "eval").glob("*.yaml") if not p.name.startswith("_")),
    "template": sorted((REPO / "prompts").glob("*.yaml")),
}
ROWS = {  # format -> a valid row
    "alpaca": {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    "prompt_completion": {"prompt": "2 + 3 =", "completion": " 5"},
    "messages": {"messages": [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"}]},
    "cot": {"question": "2 + 3?", "rationale": "2 plus 3 is 5.", "answer": "5"},
    "text": {"text": "Two plus three is five."},
}
ODD_VALUES = [None, True, False, 0, -1, 1.0e100, 10**30, math.nan, math.inf, "", "x" * 300, "∞ 🙂",
              [], {}, [1, "a"], {"a": {"b": None}}, "*alias", "!!binary aGk=", "file:///etc/passwd", "\x00"]


@contextmanager
def time_bound(seconds: int, what: str):
    def expired(*_):
        raise TimeoutError(f"{what} ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _paths(node, prefix=()):
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


def _mutate_tree(tree, rng: random.Random):
    paths = [p for p in _paths(tree) if p]
    if not paths:
        return rng.choice(ODD_VALUES)
    path = rng.choice(paths)
    parent = tree
    for k in path[:-1]:
        parent = parent[k]
    key, op = path[-1], rng.choice(["delete", "rename", "value", "listify", "duplicate"])
    if op == "delete":
        del parent[key]
    elif op == "rename" and isinstance(parent, dict):
        parent[str(key)[:-1] + rng.choice(["", "s", "_", "X"])] = parent.pop(key)
    elif op == "listify":
        parent[key] = [parent[key]]
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(parent[key])
    else:
        parent[key] = rng.choice(ODD_VALUES)
    return tree


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    op = rng.choice(["truncate", "insert", "duplicate_lines"])
    if op == "truncate":
        return data[: rng.randrange(len(data) + 1)]
    if op == "insert":
        at = rng.randrange(len(data) + 1)
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[at:]
    lines = data.split(b"\n")
    a = rng.randrange(len(lines))
    return b"\n".join(lines + lines[a: a + rng.randint(1, 6)])  # a repeated block: duplicate keys


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations: on the parsed tree when it parses, else on the bytes."""
    for _ in range(rng.randint(1, 3)):
        try:
            tree = yaml.safe_load(data.decode("utf-8"))
        except Exception:
            tree = None
        if tree is not None and rng.random() < 0.6:
            data = yaml.safe_dump(_mutate_tree(tree, rng), allow_unicode=True).encode("utf-8")
        else:
            data = _mutate_bytes(data, rng)
    return data


def _recipe_for(kind: str, file: Path, tmp: Path) -> Path:
    if kind == "recipe":
        return file
    text = {"data": {"datasets": [{"name": str(file) if kind == "dataset" else "arith_cot"}],
                     "template": str(file) if kind == "template" else "chat"},
            "eval": {"tasks": [str(file)] if kind == "task" else []}, "output": {"dir": str(tmp / "run")}}
    path = tmp / "using.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def _stage(kind: str, seed_file: Path, tmp: Path) -> Path:
    """Where the mutated copy goes: beside copies of what it includes (task bases, exemplars)."""
    folder = tmp / kind
    if not folder.exists():
        shutil.copytree(seed_file.parent, folder, ignore=shutil.ignore_patterns("README*"))
    return folder / seed_file.name


def run_cli(argv: list[str], capsys, what: str) -> tuple[int, str]:
    start = time.perf_counter()
    with time_bound(SECONDS, what):
        code = main(argv)
    out = capsys.readouterr()
    assert time.perf_counter() - start < SECONDS
    return code, out.err


def check_outcome(code: int, err: str, what: str):
    assert "Traceback" not in err, f"{what}:\n{err}"
    assert code in (0, 2), f"{what}: exit {code}\n{err}"
    if code == 2:
        assert err.startswith("error: "), f"{what}:\n{err}"


def fuzz(cases: int):
    """Hypothesis settings: a fixed seed (derandomize), no example database, no per-example deadline."""
    return settings(max_examples=cases, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                    database=None, phases=[Phase.generate])


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_mutated_files_validate_or_fail_cleanly(kind, tmp_path, capsys, monkeypatch, fuzz_cases):
    monkeypatch.chdir(tmp_path)

    @fuzz(fuzz_cases)
    @given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, len(SEEDS[kind]) - 1))
    def case(seed, index):
        source = SEEDS[kind][index]
        target = _stage(kind, source, tmp_path)
        target.write_bytes(mutate(source.read_bytes(), random.Random(seed)))
        what = f"{kind} {source.name} seed {seed}"
        check_outcome(*run_cli(["validate", str(_recipe_for(kind, target, tmp_path))], capsys, what), what)
        target.write_bytes(source.read_bytes())  # the next case starts from the shipped file

    case()


def _rows_file(fmt: str, rng: random.Random, tmp: Path) -> Path:
    rows = [json.loads(json.dumps(ROWS[fmt])) for _ in range(rng.randint(1, 5))]
    i = rng.randrange(len(rows))
    rows[i] = _mutate_tree(rows[i], rng)
    data = "\n".join(json.dumps(r, allow_nan=True, ensure_ascii=rng.random() < 0.5) for r in rows).encode()
    if rng.random() < 0.3:
        data = _mutate_bytes(data, rng)
    path = tmp / "rows.jsonl"
    path.write_bytes(data)
    return path


def test_mutated_rows_preview_or_fail_cleanly(tmp_path, tiny_dir, capsys, monkeypatch, fuzz_cases):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))

    @fuzz(max(4, fuzz_cases // 3))
    @given(seed=st.integers(0, 2**32 - 1), fmt=st.sampled_from(sorted(ROWS)))
    def case(seed, fmt):
        rows = _rows_file(fmt, random.Random(seed), tmp_path)
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"model": {"name": tiny_dir}, "data": {
            "datasets": [{"name": "fuzz", "source": str(rows), "format": fmt}], "template": "plain"}}))
        what = f"rows {fmt} seed {seed}"
        code, err = run_cli(["preview", str(recipe), "-n", "1", "--no-color"], capsys, what)
        assert code in (0, 1, 2), f"{what}: exit {code}\n{err}"  # 1: the label audit failed, said as such
        check_outcome(0 if code == 1 else code, err, what)

    case()
