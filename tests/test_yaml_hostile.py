"""Hostile and unusual YAML, in every kind of YAML file the tool reads.

Each case is written as a recipe, a dataset definition (data/*.yaml), an eval task and a
prompt template, and `finetune validate` runs on a recipe that uses it. A hostile case must
give one message that names the file, exit status 2, no traceback, within a time bound;
an unusual but valid one must load with the values YAML gives it.
"""

import time
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.recipe import load_recipe
from finetune.yamlfile import MAX_BYTES, load_yaml

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

HOSTILE = {  # name -> (file text or bytes, fragment the message must hold)
    "billion_laughs": (LAUGHS, "billion laughs"),
    "anchor_contains_itself": ("a: &a [1, *a]\n", "alias to itself"),
    "mapping_contains_itself": ("a: &a {b: *a}\n", "alias to itself"),
    "merge_of_itself": ("a: &a {<<: *a}\n", "alias to itself"),
    "deep_flow_list": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "levels deep"),
    "deep_flow_mapping": ("a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n", "levels deep"),
    "deep_block_mapping": ("".join("  " * i + "k:\n" for i in range(300)) + "  " * 300 + "v: 1\n", "levels deep"),
    "complex_key": ("? [a, b]\n: c\n", "a key must be text"),
    "flow_mapping_key": ("{[1]: x}\n", "a key must be text"),
    "integer_key": ("1: x\n", "quote it"),
    "boolean_key": ("yes: x\n", "quote it"),
    "null_key": ("~: x\n", "quote it"),
    "binary_tag": ("a: !!binary aGVsbG8=\n", "!!binary"),
    "python_tag": ("a: !!python/object/apply:os.system ['echo hi']\n", "python/object"),
    "custom_tag": ("a: !custom x\n", "!custom"),
    "set_tag": ("a: !!set {x, y}\n", "!!set"),
    "omap_tag": ("a: !!omap [b: 1]\n", "!!omap"),
    "merge_scalar": ("<<: 5\n", "merge key"),
    "merge_list_of_scalars": ("<<: [1, 2]\n", "merge key"),
    "nul_byte": ("a: 1\nb: x\0y\n", "NUL byte"),
    "control_character": ("a: 1\nb: \x07\n", "U+0007"),
    "tab_indent": ("a:\n\tb: 1\n", "tabs"),
    "undefined_alias": ("a: *nope\n", "undefined alias"),
    "duplicate_anchor": ("a: &x 1\nb: &x 2\nc: *x\n", "duplicate anchor"),
    "two_documents": ("a: 1\n---\nb: 2\n", "single document"),
    "duplicate_key": ("a: 1\na: 2\n", "key given twice"),
    "not_utf8": (b"a: \xff\xfe\n", "UTF-8"),
    "too_large": ("# " + "x" * (MAX_BYTES + 10) + "\n", "KiB"),
    "unclosed_quote": ('a: "x\n', "not valid YAML"),
    "bad_indent": ("a: 1\n  b: 2\n", "not valid YAML"),
}

KINDS = ("recipe", "dataset", "task", "template")


def _write(path: Path, content) -> Path:
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def _recipe_using(tmp_path: Path, kind: str, file: Path) -> Path:
    """A valid recipe whose `kind` part is `file` (for kind 'recipe', `file` itself)."""
    if kind == "recipe":
        return file
    dataset = f"{file}" if kind == "dataset" else "arith_cot"
    template = f"{file}" if kind == "template" else "chat"
    tasks = f"[{file}]" if kind == "task" else "[]"
    text = (f"data:\n  datasets:\n    - name: {dataset}\n  template: {template}\n"
            f"eval:\n  tasks: {tasks}\noutput:\n  dir: {tmp_path / 'run'}\n")
    return _write(tmp_path / "recipe.yaml", text)


def _validate(recipe: Path, capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = main(["validate", str(recipe)])
    return code, capsys.readouterr().err, time.perf_counter() - start


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_gives_one_error_naming_the_file(case, kind, tmp_path, capsys):
    content, fragment = HOSTILE[case]
    file = _write(tmp_path / f"{case}.yaml", content)
    code, err, seconds = _validate(_recipe_using(tmp_path, kind, file), capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    assert str(file) in err, err
    assert fragment in err, err
    assert seconds < 10, f"{case} as a {kind} took {seconds:.1f} s"


def test_billion_laughs_stops_fast_and_small():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="billion laughs"):
        load_yaml(LAUGHS, "x.yaml")
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n# two\n# comments\n"])
def test_empty_and_comment_only_files(text):
    assert load_yaml(text, "x.yaml") == (None, {})


def test_empty_recipe_says_what_is_missing(tmp_path, capsys):
    code, err, _ = _validate(_write(tmp_path / "r.yaml", "# nothing here yet\n"), capsys)
    assert code == 2 and "data.datasets: required key is missing" in err, err


def test_merge_keys_resolve_like_yaml():
    value, lines = load_yaml("base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\n"
                             "m:\n  <<: [*b, *o]\n  x: 9\n", "m.yaml")
    assert value["m"] == {"x": 9, "y": 2, "z": 4}  # explicit first, then the earlier merge
    assert lines["m.x"] == 5


def test_valid_recipe_with_anchors_loads(tmp_path):
    text = ("data:\n  datasets:\n    - &ds {name: arith_cot, limit: 8}\n    - *ds\n"
            "train: &t\n  <<: {batch_size: 2, lr: 1.0e-3}\n  lr: 2.0e-3\n  max_steps: 3\n"
            f"output: {{dir: '{tmp_path / 'run'}', name: 2024-01-01}}\n")
    for name, data in {"plain": text.encode(), "bom": b"\xef\xbb\xbf" + text.encode(),
                       "crlf": text.replace("\n", "\r\n").encode(), "no_newline": text.rstrip("\n").encode()}.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        recipe = load_recipe(path)
        assert [d.limit for d in recipe.data.datasets] == [8, 8], name
        assert (recipe.train.batch_size, recipe.train.lr, recipe.train.max_steps) == (2, 2e-3, 3), name
        assert recipe.output.name == "2024-01-01", name  # an unquoted date is the text written
        assert recipe.where("train.lr") == f"{path}:7", name


def test_override_values_go_through_the_same_reader(tmp_path):
    path = _write(tmp_path / "r.yaml", f"data:\n  datasets: [{{name: arith_cot}}]\noutput: {{dir: '{tmp_path}'}}\n")
    assert load_recipe(path, ["train.max_steps=7"]).train.max_steps == 7
    for bad in ["train.max_steps=!!binary aGk=", "train.max_steps=*x", "train.max_steps=[[[[[[" * 50]:
        with pytest.raises(Exception, match="train.max_steps: expected an integer"):
            load_recipe(path, [bad])
