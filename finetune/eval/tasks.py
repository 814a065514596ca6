"""Eval tasks: small YAML files in eval/, close to lm-evaluation-harness's task format.

    task = load_task("gsm8k_cot_zeroshot")          # eval/gsm8k_cot_zeroshot.yaml, or a path
    for doc_id, doc in task.docs(limit=10):
        print(task.context(doc_id, doc), "->", task.target(doc))

Every `doc_to_*` key is a jinja template over the document's fields (`doc_to_choice` may
also be a jinja *expression* that yields a list, e.g. `choices`); `prompt_template` names
the prompts/ wrapper the rendered text is put in. See eval/README.md for every key.
"""

import difflib
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from finetune.eval.documents import load_docs
from finetune.eval.taskfile import TaskError, read_task_file, validate
from finetune.resources import data_root, resource_dir
from finetune.yamlfile import read_yaml_file

__all__ = ["Task", "TaskError", "load_task", "available_tasks"]

# Sandboxed: a task file from elsewhere must not reach Python internals through its templates.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
DEFAULT_GENERATION = {"until": [], "max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0}
DEFAULT_METRICS = {"generate_until": ["exact_match"], "multiple_choice": ["acc", "acc_norm"],
                   "loglikelihood_rolling": ["perplexity"]}
LOWER_IS_BETTER = {"perplexity", "bits_per_byte"}
CANARY_SEPARATOR = "-----"  # BIG-bench prompt files open with a canary line, then this line


@lru_cache(maxsize=None)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=None)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@dataclass
class Task:
    name: str
    path: Path
    spec: dict  # include-resolved and validated; saved with the results
    data_path: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # --- settings -------------------------------------------------------------------------
    @property
    def output_type(self) -> str:
        return self.spec["output_type"]

    @property
    def prompt_template(self) -> str:
        return self.spec.get("prompt_template", "chat")

    @property
    def generation(self) -> dict:
        return {**DEFAULT_GENERATION, **(self.spec.get("generation_kwargs") or {})}

    @property
    def repeats(self) -> int:
        return self.spec.get("repeats") or 1

    @property
    def filters(self) -> list[tuple[str, list[dict]]]:
        default = [{"name": "raw", "filter": [{"function": "take_first"}]}]
        return [(f["name"], f["filter"]) for f in (self.spec.get("filter_list") or default)]

    @property
    def metrics(self) -> list[str]:
        listed = self.spec.get("metric_list") or DEFAULT_METRICS[self.output_type]
        return [m["metric"] if isinstance(m, dict) else m for m in listed]

    def metric_keys(self) -> list[str]:
        """Score names: `metric:filter` for generation tasks (one per filter pipeline), else `metric`."""
        if self.output_type == "generate_until":
            return [f"{m}:{f}" for m in self.metrics for f, _ in self.filters]
        return list(self.metrics)

    @staticmethod
    def higher_is_better(key: str) -> bool:
        return key.split(":")[0] not in LOWER_IS_BETTER

    # --- documents ------------------------------------------------------------------------
    def _where(self) -> str:
        return str(self.path)

    def _docs_of(self, split: str | None) -> list[dict]:
        key = ("docs", split)
        if key not in self._cache:
            self._cache[key] = load_docs(self.spec["dataset"], self._where(), data_path=self.data_path, split=split)
        return self._cache[key]

    def docs(self, limit: int | None = None) -> list[tuple[int, dict]]:
        """(doc_id, doc) pairs: the first `limit` documents (default: dataset.limit, else all)."""
        docs = self._docs_of(None)
        limit = limit if limit is not None else self.spec["dataset"].get("limit")
        return list(enumerate(docs[:limit] if limit is not None else docs))

    def render(self, key: str, doc: dict, source: str | None = None) -> str:
        source = source if source is not None else self.spec.get(key)
        if source is None:
            raise TaskError(f"{self.path}: {key}: not set")
        try:
            return _template(source).render(**doc)
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
            raise TaskError(f"{self.path}: {key}: cannot render {source!r}: {e}; "
                            f"the doc's fields are {sorted(doc)}") from None

    def text(self, doc: dict) -> str:
        return self.render("doc_to_text", doc) if self.spec.get("doc_to_text") else ""

    def target(self, doc: dict) -> str:
        return self.render("doc_to_target", doc)

    def choices(self, doc: dict) -> list[str]:
        spec = self.spec["doc_to_choice"]
        if isinstance(spec, list):
            return [self.render("doc_to_choice", doc, str(c)) for c in spec]
        try:
            value = _expression(spec)(**doc)
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
            raise TaskError(f"{self.path}: doc_to_choice: cannot evaluate {spec!r}: {e}; "
                            f"the doc's fields are {sorted(doc)}") from None
        if not isinstance(value, (list, tuple)):
            raise TaskError(f"{self.path}: doc_to_choice: {spec!r} gave {type(value).__name__}, expected a list")
        return [str(v) for v in value]

    def gold(self, doc: dict) -> int:
        """multiple_choice: `doc_to_target` renders the index of the correct choice."""
        text = self.target(doc).strip()
        n = len(self.choices(doc))
        if not text.lstrip("-").isdigit() or not 0 <= int(text) < n:
            raise TaskError(f"{self.path}: doc_to_target: for multiple_choice it must render a choice index "
                            f"0..{n - 1}, got {text!r}")
        return int(text)

    @property
    def target_delimiter(self) -> str:
        return self.spec.get("target_delimiter", " ")

    # --- few-shot ---------------------------------------------------------------------------
    def _exemplars(self) -> list[dict]:
        ex = self.spec["fewshot"]["exemplars"]
        if isinstance(ex, list):
            return ex
        if "exemplars" not in self._cache:
            path = Path(ex) if Path(ex).is_absolute() else resource_dir("prompts") / ex
            if not path.is_file():
                raise TaskError(f"{self.path}: fewshot.exemplars: file {path} does not exist (a YAML list of docs, "
                                "relative to prompts/)")
            docs, _, _ = read_yaml_file(path, error=TaskError)
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise TaskError(f"{self.path}: fewshot.exemplars: {path} must be a YAML list of docs (mappings)")
            self._cache["exemplars"] = docs
        return self._cache["exemplars"]

    def _preamble(self) -> str:
        if "preamble" not in self._cache:
            rel = Path(self.spec["fewshot"]["text_file"])
            root = data_root(self.data_path)
            path = rel if rel.is_absolute() else (root / rel if root else None)
            if path is None or not path.is_file():
                raise TaskError(f"{self.path}: fewshot.text_file: {path or rel} not found; set FINETUNE_DATA_DIR or "
                                "pass data_path (a folder laid out like shared/data)")
            text = path.read_text(encoding="utf-8")
            lines = text.split("\n")
            if CANARY_SEPARATOR in lines:
                text = "\n".join(lines[lines.index(CANARY_SEPARATOR) + 1:])
            self._cache["preamble"] = text.strip()
        return self._cache["preamble"]

    def _shots(self, doc_id: int, doc: dict) -> list[dict]:
        fs = self.spec["fewshot"]
        num = fs.get("num")
        if fs.get("exemplars") is not None:
            return self._exemplars()[:num]
        pool = self._docs_of(fs["split"])
        same_split = fs["split"] == (self.spec["dataset"].get("split") or "test")
        rng = random.Random(f"{fs.get('seed', 1234)}-{doc_id}")  # per doc: stable under resume and --limit
        picks = rng.sample(range(len(pool)), min(len(pool), (num or 0) + 1))
        return [pool[i] for i in picks if not (same_split and pool[i] == doc)][:num]

    def fewshot_prefix(self, doc_id: int, doc: dict) -> str:
        fs = self.spec.get("fewshot")
        if not fs or fs.get("num") == 0:
            return ""
        delim = fs.get("delimiter", "\n\n")
        if fs.get("text_file"):
            return self._preamble() + delim
        target_source = fs.get("doc_to_target", self.spec.get("doc_to_target"))
        shots = [self.text(ex) + self.target_delimiter + self.render("fewshot.doc_to_target", ex, target_source)
                 for ex in self._shots(doc_id, doc)]
        return delim.join(shots) + delim

    def context(self, doc_id: int, doc: dict) -> str:
        """The task's text for one doc: few-shot exemplars, then `doc_to_text` (before the prompt template)."""
        return self.fewshot_prefix(doc_id, doc) + self.text(doc)


def available_tasks() -> list[str]:
    """Shipped task names (eval/*.yaml; files starting with '_' are include-only bases)."""
    return sorted(p.stem for p in resource_dir("eval").glob("*.yaml") if not p.name.startswith("_"))


def load_task(name_or_path: str, *, data_path: str | None = None) -> Task:
    """A task by name (eval/<name>.yaml) or by YAML path; `data_path` overrides FINETUNE_DATA_DIR."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = resource_dir("eval") / f"{name_or_path}.yaml"
    if not path.is_file():
        names = available_tasks()
        close = difflib.get_close_matches(str(name_or_path), names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TaskError(f"unknown eval task {name_or_path!r} (no file {path}).{hint} Accepted: a task YAML path or "
                        f"one of {', '.join(names)}")
    spec, lines = read_task_file(path)
    validate(spec, path, lines)
    _compile_templates(spec, lines, path)
    return Task(name=path.stem, path=path.resolve(), spec=spec, data_path=str(data_path) if data_path else None)


def _compile_templates(spec: dict, lines: dict[str, str], path: Path) -> None:
    """Template syntax errors surface when the task loads (`finetune validate`), not after training."""
    sources = [(k, spec.get(k)) for k in ("doc_to_text", "doc_to_target")]
    choice = spec.get("doc_to_choice")
    sources += [("doc_to_choice", c) for c in choice] if isinstance(choice, list) else []
    sources += [("fewshot.doc_to_target", (spec.get("fewshot") or {}).get("doc_to_target"))]
    for key, source in sources:
        if not isinstance(source, str):
            continue
        try:
            _template(source)
        except jinja2.TemplateSyntaxError as e:
            where = lines.get(key) or lines.get(key.split(".")[0]) or str(path)
            raise TaskError(f"{where}: {key}: not a valid template ({e.message}, template line {e.lineno})") from None
    if isinstance(choice, str):
        try:
            _expression(choice)
        except jinja2.TemplateSyntaxError as e:
            raise TaskError(f"{lines.get('doc_to_choice', path)}: doc_to_choice: not a valid expression "
                            f"({e.message})") from None
