"""Read any YAML file the tool reads (recipes, data/, eval/, prompts/), bounded and plain.

    value, lines = load_yaml(text, "recipes/x.yaml", error=RecipeError)   # lines: {"train.lr": 12}

One reader for every file kind, so hostile or merely unusual YAML gets the same treatment
everywhere, as one `error(message)` that names the file and line:

- Size: at most MAX_BYTES of text, MAX_DEPTH levels of nesting and MAX_VALUES values after
  alias expansion. Aliases (`*name`) are accepted, since users share settings with anchors,
  but a value that expands past the bound (the "billion laughs" shape) or an anchor that
  contains its own alias is refused. Refusing aliases outright would break ordinary files;
  counting the expanded values costs nothing for them and stops the hostile ones at once.
- Values: text, numbers, true/false, null, lists and mappings. Other tags (`!!binary`,
  `!!set`, `!custom`) are refused; an unquoted date is read as the text it is.
- Keys: text only; a key YAML reads as a number, a boolean (`on:`, `yes:`) or null must be
  quoted. A key given twice is an error. Merge keys (`<<: *base`) merge mappings, explicit
  keys winning, as YAML defines them.
- Characters: NUL and other control characters are named with their line; tabs used for
  indentation get a hint.
"""

import re
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped YAML is under 20 KB
MAX_DEPTH = 64
MAX_VALUES = 100_000

_T = "tag:yaml.org,2002:"
_PLAIN = {_T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"}
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps the anchor names after composing, for messages."""

    def compose_document(self):
        self.get_event()
        node = self.compose_node(None, None)
        self.get_event()
        self.kept_anchors, self.anchors = self.anchors, {}
        return node


def read_yaml_file(path: Path, error=ValueError) -> tuple[Any, dict[str, int], str]:
    """(value, {dotted key: line}, text) of one file; `error` for every problem."""
    text = read_text(path, error)
    value, lines = load_yaml(text, str(path), error)
    return value, lines, text


def read_text(path: Path, error=ValueError, what: str = "file") -> str:
    """The UTF-8 text of a settings file (`what`: its kind, for messages), read no further than MAX_BYTES."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise error(f"{path}: larger than {MAX_BYTES // 1024} KiB; a YAML file here is a few KB of settings")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not valid UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def load_yaml(text: str, filename: str, error=ValueError) -> tuple[Any, dict[str, int]]:
    """(value, {dotted key: line}) of YAML text; None for an empty file or one of comments only."""
    if len(text) > MAX_BYTES:
        raise error(f"{filename}: larger than {MAX_BYTES // 1024} KiB")
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        what = "a NUL byte" if bad.group() == "\0" else f"the control character U+{ord(bad.group()):04X}"
        raise error(f"{filename}:{line}: contains {what}, which YAML does not allow (is it a binary file?)")
    try:
        _check_depth(text, filename, error)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise error(_yaml_message(e, filename)) from None
    except RecursionError:
        raise error(f"{filename}: nested too deeply to read (more than {MAX_DEPTH} levels)") from None
    if node is None:
        return None, {}
    walker = _Walker(loader, filename, error)
    return walker.value(node, "", 0), walker.lines


def _yaml_message(e: yaml.YAMLError, filename: str) -> str:
    mark = getattr(e, "problem_mark", None)
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    problem = ", ".join(p for p in parts if p) or str(e).splitlines()[0]
    hint = " (indent with spaces: YAML does not allow tabs there)" if "'\\t'" in problem else ""
    return f"{filename}{f':{mark.line + 1}' if mark else ''}: not valid YAML: {problem}{hint}"


def _check_depth(text: str, filename: str, error) -> None:
    """Refuse deep nesting from the event stream (no recursion) before composing."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise error(f"{filename}:{event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Walker:
    """Node graph -> plain Python values, counting values through aliases."""

    def __init__(self, loader: _Loader, filename: str, error):
        self.loader, self.filename, self.error = loader, filename, error
        self.lines: dict[str, int] = {}
        self.count = 0
        self.stack: set[int] = set()
        self.names = {id(n): name for name, n in getattr(loader, "kept_anchors", {}).items()}

    def fail(self, node, message: str):
        raise self.error(f"{self.filename}:{node.start_mark.line + 1}: {message}")

    def value(self, node, path: str, depth: int):
        self.count += 1
        if self.count > MAX_VALUES:
            self.fail(node, f"expands to more than {MAX_VALUES:,} values; aliases (*name) nested inside one "
                      "another multiply (the 'billion laughs' shape): write the values out instead")
        if depth > MAX_DEPTH:
            self.fail(node, f"nested more than {MAX_DEPTH} levels deep (through aliases)")
        if id(node) in self.stack:
            name = self.names.get(id(node))
            self.fail(node, f"the anchor {'&' + name if name else ''} contains an alias to itself, so its value "
                      "never ends")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path, depth)
            return self.mapping(node, path, depth)
        finally:
            self.stack.discard(id(node))

    def scalar(self, node):
        if node.tag == _T + "timestamp":
            return node.value  # an unquoted date or time: keep the text the user wrote
        if node.tag not in _PLAIN:
            self.fail(node, f"the tag {_short_tag(node.tag)} is not accepted; use plain text, numbers, "
                      "true/false, null, lists and mappings")
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as e:
            self.fail(node, f"cannot read the value {node.value[:60]!r}: {e}")

    def sequence(self, node, path: str, depth: int) -> list:
        if node.tag != _T + "seq":
            self.fail(node, f"the tag {_short_tag(node.tag)} is not accepted on a list")
        out = []
        for i, item in enumerate(node.value):
            self.lines[f"{path}[{i}]"] = item.start_mark.line + 1
            out.append(self.value(item, f"{path}[{i}]", depth + 1))
        return out

    def mapping(self, node, path: str, depth: int) -> dict:
        if node.tag != _T + "map":
            self.fail(node, f"the tag {_short_tag(node.tag)} is not accepted on a mapping")
        merged: dict = {}
        for k, v in node.value:
            if k.tag == _T + "merge":
                for source in self.merge_sources(v):
                    for key, val in self.value(source, path, depth + 1).items():
                        merged.setdefault(key, val)
        out: dict = {}
        for k, v in node.value:
            if k.tag == _T + "merge":
                continue
            key = self.key(k)
            sub = f"{path}.{key}" if path else key
            if key in out:
                self.fail(k, f"{sub}: key given twice")
            self.lines[sub] = k.start_mark.line + 1
            out[key] = self.value(v, sub, depth + 1)
        return {**merged, **out}

    def merge_sources(self, node) -> list:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items or not all(isinstance(n, yaml.MappingNode) for n in items):
            self.fail(node, "a merge key (<<:) takes a mapping or a list of mappings, e.g. <<: *defaults")
        return items

    def key(self, node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, "a key must be text, not a list or mapping")
        if node.tag != _T + "str":
            shown = node.value or "(empty)"
            self.fail(node, f"the key {shown!r} is not text to YAML ({_short_tag(node.tag)}); quote it, e.g. "
                      f"'{node.value}':")
        return node.value


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag
