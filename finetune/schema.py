"""Strict YAML -> nested dataclasses, with file:line for every problem.

Generic over any dataclass tree (recipes, dataset definitions): unknown keys get the
closest valid key as a suggestion, types and choices are checked, numeric bounds come
from field metadata (`min`, `max`, `gt`; an integer without `max` is capped at INT_MAX), a
field's own rule from `check` (value -> problem or None), and every problem is collected
before raising once. The YAML itself is read by `finetune.yamlfile` (bounded, plain values).
"""

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union

from finetune.errors import UserError
from finetune.yamlfile import load_yaml


class RecipeError(UserError):
    """All problems found in one file, each with its place; str() is the user-facing text."""

    def __init__(self, problems: list[str], header: str | None = None):
        self.problems = problems
        head = header or (f"{len(problems)} problem(s) found" if len(problems) > 1 else "invalid configuration")
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems) if len(problems) > 1
                         else problems[0])


class _Ctx:
    def __init__(self, filename: str, lines: dict[str, int | str], root_cls):
        self.filename, self.lines, self.root_cls, self.problems = filename, lines, root_cls, []

    def where(self, path: str) -> str:
        while path:
            loc = self.lines.get(path)
            if isinstance(loc, str):
                return loc
            if loc is not None:
                return f"{self.filename}:{loc}"
            path = path.rpartition(".")[0] if "." in path else ""
        return self.filename

    def add(self, path: str, message: str, at: str | None = None):
        self.problems.append(f"{self.where(at if at is not None else path)}: {path}: {message}")


def _compose(text: str, filename: str) -> tuple[Any, dict[str, int]]:
    value, lines = load_yaml(text, filename, error=lambda message: RecipeError([message]))
    return ({} if value is None else value), lines


def parse_overrides(items) -> list[tuple[str, Any, str]]:
    """['train.lr=1e-4'] -> [('train.lr', 0.0001, "command-line override 'train.lr=1e-4'")]."""
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RecipeError([f"command-line override {item!r}: expected KEY=VALUE, e.g. train.max_steps=20"])
        try:
            parsed = load_yaml(value, "", error=ValueError)[0] if value.strip() else None
        except ValueError:
            parsed = value  # not YAML on its own (e.g. 'a: b'): the text as given
        out.append((key.strip(), parsed, f"command-line override {item!r}"))
    return out


def _apply_override(raw: dict, key: str, value, where: str, lines: dict):
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        lines.setdefault(".".join(parts[: i + 1]), where)
    node[parts[-1]] = value
    for old in [k for k in lines if k.startswith((key + ".", key + "["))]:
        del lines[old]  # the file's positions inside the replaced value no longer apply
    lines[key] = where


def build(cls, text: str, filename: str, overrides=()):
    raw, lines = _compose(text, filename)
    if not isinstance(raw, dict):
        raise RecipeError([f"{filename}: expected a mapping of sections at the top level, got {_tname(raw)}"])
    for key, value, where in overrides:
        _apply_override(raw, key, value, where, lines)
    ctx = _Ctx(filename, lines, cls)
    obj = _build_dc(cls, raw, "", ctx)
    if hasattr(obj, "source_lines"):
        obj.source_lines = {k: ctx.where(k) for k in lines}
    if ctx.problems:
        raise RecipeError(ctx.problems, header=f"{filename}: {len(ctx.problems)} problem(s)"
                          if len(ctx.problems) > 1 else None)
    return obj


def all_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree (for suggestions and docs)."""
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}{f.name}"
        keys.append(path)
        inner = _dataclass_in(f.type)
        if inner:
            keys += all_keys(inner, path + ("[].") if _is_list(f.type) else path + ".")
    return keys


def _dataclass_in(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list


def _suggest(ctx: _Ctx, key: str, fields: dict, prefix: str) -> str:
    valid = list(fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    # Names other tools use (TRL / HF Trainer / PEFT) for the same thing.
    aliases = {a: name for name, f in fields.items() for a in f.metadata.get("aliases", ())}
    close = difflib.get_close_matches(key, list(aliases), n=1, cutoff=0.75)
    if close:
        return f"; did you mean '{prefix}{aliases[close[0]]}'?"
    elsewhere = [k for k in all_keys(ctx.root_cls) if k.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"; it belongs at '{elsewhere[0]}'"
    return f"; valid keys here: {', '.join(valid)}"


def _build_dc(cls, raw, path: str, ctx: _Ctx):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        ctx.add(path or "(top level)", f"expected a mapping of keys, got {_tname(raw)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    prefix = f"{path}." if path else ""
    for key in raw:
        if key not in fields:
            ctx.add(f"{prefix}{key}", "unknown key" + _suggest(ctx, str(key), fields, prefix))
    kwargs = {}
    for name, f in fields.items():
        sub = f"{prefix}{name}"
        if name not in raw:
            if f.metadata.get("required"):
                ctx.add(sub, f"required key is missing ({f.metadata['help']})", at=path)
            elif dataclasses.is_dataclass(f.type):
                kwargs[name] = _build_dc(f.type, {}, sub, ctx)  # a missing section may hold required keys
            continue
        before = len(ctx.problems)
        kwargs[name] = _check(f.type, raw[name], sub, ctx, f.metadata)
        problem = (len(ctx.problems) == before and kwargs[name] is not None and f.metadata.get("check")
                   and f.metadata["check"](kwargs[name]))
        if problem:  # a field's own rule, once its type is right
            ctx.add(sub, problem)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a __post_init__ check
        ctx.add(path or "(top level)", str(e))
        return cls()


def _check(tp, value, path: str, ctx: _Ctx, meta: dict):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:  # first arm that accepts the value without problems
            trial = _Ctx(ctx.filename, ctx.lines, ctx.root_cls)
            result = _check(arm, value, path, trial, meta)
            if not trial.problems:
                return result
        if len(arms) == 1:
            return _check(arms[0], value, path, ctx, meta)
        ctx.add(path, f"expected {_describe(tp)}, got {_tname(value)} {_short(value)}")
        return None
    if origin is Literal:
        if value not in args:
            ctx.add(path, f"invalid choice {_short(value)}; accepted: {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dc(tp, value, path, ctx)
    if origin is list:
        if not isinstance(value, list):
            ctx.add(path, f"expected a list of {_describe(args[0])}, got {_tname(value)} {_short(value)}")
            return []
        return [_check(args[0], v, f"{path}[{i}]", ctx, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            ctx.add(path, f"expected a mapping of text to text, got {_short(value)}")
            return {}
        return dict(value)
    return _check_scalar(tp, value, path, ctx, meta)


# YAML 1.1 (PyYAML) reads `2e-4` (no dot) as text; a number field takes it as the number meant.
_EXP_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


# An integer key with no `max` of its own: nothing the tool counts comes near 2**31.
INT_MAX = 2**31 - 1


def _check_scalar(tp, value, path, ctx, meta):
    if tp is float and isinstance(value, str) and _EXP_NUMBER.fullmatch(value.strip()):
        value = float(value)
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, str) if tp is str else True)
    if not ok:
        ctx.add(path, f"expected {_describe(tp)}, got {_tname(value)} {_short(value)}")
        return value
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            value = float("inf")
        if value != value or value in (float("inf"), float("-inf")):
            ctx.add(path, f"expected a finite number, got {_short(value)}")
            return value
    if tp is str and "\0" in value:
        ctx.add(path, "text contains a NUL character (\\0)")
    if tp in (int, float):
        _check_bounds(tp, value, path, ctx, meta)
    return value


def _check_bounds(tp, value, path, ctx, meta):
    lo, hi = meta.get("min"), meta.get("max", INT_MAX if tp is int else None)
    if meta.get("gt") is not None and value <= meta["gt"]:
        ctx.add(path, f"must be > {meta['gt']}, got {_short(value)}")
    elif lo is not None and value < lo:
        ctx.add(path, f"must be >= {lo}, got {_short(value)}")
    elif hi is not None and value > hi:
        ctx.add(path, f"must be <= {hi:,}, got {_short(value)}" if tp is int else
                f"must be <= {hi}, got {_short(value)}")


def _short(value, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = "(a number with thousands of digits)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + \
            (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))


def _tname(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "text", list: "list", dict: "mapping",
            type(None): "null"}.get(type(v), type(v).__name__)
