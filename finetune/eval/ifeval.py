"""IFEval scoring: does a response follow each verifiable instruction of its prompt?

    follow({"prompt": ..., "instruction_id_list": [...], "kwargs": [...]}, response)
    # -> {"strict": [True, False], "loose": [True, True], "checker": "lm-eval 0.4.13"}

With the optional `lm-eval` package (and its ifeval extras: langdetect, immutabledict,
nltk) every instruction is checked by lm-eval's own checkers
(`lm_eval.tasks.ifeval.instructions_registry`), exactly as its `process_results` does:
strict on the response, loose on the response or any of 7 variants (first line, last
line or both dropped, `*` removed). Without it, the 15 instruction types in OWN_CHECKERS
are checked by the code below (the same rules as lm-eval's, for the types that need no
language detection or sentence tokenizer); an instruction of another type is *not
checked* (None). An lm-eval checker that needs nltk data absent here (the punkt sentence
tokenizer of `length_constraints:number_sentences`) is not checked either. Where lm-eval
replaces a rejected argument by a random draw, the draw is seeded by the prompt; the
subset checks the argument as given.

Scores (see scoring.py's ratio-of-sums convention): instruction-level accuracy is
(followed, checked) per response, so the aggregate is followed / checked over all
responses (lm-eval's agg_inst_level_acc); prompt-level accuracy is (all followed, 1) for
a prompt whose every instruction was checked and (0, 0) -- left out -- otherwise.
"""

import collections
import json
import random
import re
from functools import lru_cache

from finetune.eval.taskfile import TaskError

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
_LESS, _AT_LEAST = "less than", "at least"


def _compare(count: int, relation: str, n: int) -> bool:
    return count < n if relation == _LESS else count >= n


def _postscript(value: str, kw: dict) -> bool:
    marker = kw["postscript_marker"].strip()
    pattern = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}.get(marker, r"\s*" + marker.lower() + r".*$")
    return bool(re.findall(pattern, value.lower(), flags=re.MULTILINE))


def _highlights(value: str, kw: dict) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", value) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", value) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= kw["num_highlights"]


def _json(value: str, kw: dict) -> bool:
    value = value.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(fence)
    try:
        json.loads(value.removesuffix("```").strip())
    except ValueError:
        return False
    return True


OWN_CHECKERS = {  # instruction id -> check(response, kwargs); the rules of lm-eval's instructions.py
    "punctuation:no_comma": lambda v, kw: "," not in v,
    "length_constraints:number_words": lambda v, kw: _compare(len(re.findall(r"\w+", v)), kw["relation"],
                                                              kw["num_words"]),
    "keywords:existence": lambda v, kw: all(re.search(k, v, flags=re.IGNORECASE) for k in kw["keywords"]),
    "keywords:forbidden_words": lambda v, kw: not any(re.search(r"\b" + w + r"\b", v, flags=re.IGNORECASE)
                                                      for w in kw["forbidden_words"]),
    "keywords:frequency": lambda v, kw: _compare(len(re.findall(kw["keyword"].strip(), v, flags=re.IGNORECASE)),
                                                 kw["relation"], kw["frequency"]),
    "keywords:letter_frequency": lambda v, kw: _compare(collections.Counter(v.lower())[kw["letter"].strip().lower()],
                                                        kw["let_relation"], kw["let_frequency"]),
    "startend:quotation": lambda v, kw: len(v.strip()) > 1 and v.strip()[0] == '"' and v.strip()[-1] == '"',
    "startend:end_checker": lambda v, kw: v.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower()),
    "detectable_format:title": lambda v, kw: any(t.lstrip("<").rstrip(">").strip()
                                                 for t in re.findall(r"<<[^\n]+>>", v)),
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:number_bullet_lists": lambda v, kw: (len(re.findall(r"^\s*\*[^\*].*$", v, flags=re.MULTILINE))
                                                           + len(re.findall(r"^\s*-.*$", v, flags=re.MULTILINE))
                                                           == kw["num_bullets"]),
    "detectable_format:json_format": _json,
    "detectable_content:postscript": _postscript,
    "detectable_content:number_placeholders": lambda v, kw: len(re.findall(r"\[.*?\]", v)) >= kw["num_placeholders"],
    "combination:repeat_prompt": lambda v, kw: v.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower()),
}


@lru_cache(maxsize=1)
def official():
    """(lm-eval's INSTRUCTION_DICT, its version), or None when lm-eval or its ifeval extras are not installed."""
    try:
        from importlib.metadata import version

        from lm_eval.tasks.ifeval import instructions_registry
    except Exception:  # ImportError, or an extra (langdetect, nltk) failing at import
        return None
    return instructions_registry.INSTRUCTION_DICT, version("lm_eval")


def checker_name() -> str:
    off = official()
    return f"lm-eval {off[1]}" if off else f"finetune subset ({len(OWN_CHECKERS)} instruction types)"


def _official_check(registry: dict, iid: str, kwargs: dict, prompt: str):
    """A callable(response) -> bool built like lm-eval's test_instruction_following_*, or None if iid is unknown."""
    if iid not in registry:
        return None
    state = random.getstate()
    # lm-eval draws a random value for an argument it rejects (IFEval doc 1170 asks for the letter '#'): seeded by
    # the prompt, both models of a comparison are checked against the same draw, and every run agrees
    random.seed(f"{iid}\n{prompt}")
    try:
        inst = registry[iid](iid)
        inst.build_description(**{k: v for k, v in kwargs.items() if v})
        args = inst.get_instruction_args()
        if args and "prompt" in args:
            inst.build_description(prompt=prompt)
    finally:
        random.setstate(state)
    return inst.check_following


def _checker(iid: str, kwargs: dict, prompt: str):
    off = official()
    if off:
        return _official_check(off[0], iid, kwargs, prompt)
    own = OWN_CHECKERS.get(iid)
    return None if own is None else (lambda value: own(value, kwargs))


def loose_variants(response: str) -> list[str]:
    """The response and the 7 variants lm-eval's loose score also accepts."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def _followed(check, variants: list[str]):
    """True / False, or None when the check cannot run here (nltk data missing)."""
    try:
        return any(v.strip() and check(v) for v in variants)
    except LookupError:  # nltk: resource punkt not found (no network to fetch it)
        return None
    except (KeyError, TypeError):  # own checkers: the doc lacks an argument its instruction needs
        return None


def follow(doc: dict, response: str | None) -> dict:
    """Per instruction of `doc`: followed strictly, followed loosely (None: not checked here)."""
    response = response or ""
    strict, loose = [], []
    for iid, kwargs in zip(doc["instruction_id_list"], doc["kwargs"]):
        kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
        check = _checker(iid, kwargs, doc.get("prompt", ""))
        strict.append(None if check is None else _followed(check, [response]))
        loose.append(None if check is None else _followed(check, loose_variants(response)))
    return {"strict": strict, "loose": loose, "checker": checker_name()}


def _terms(flags: list) -> dict[str, list[float]]:
    checked = [f for f in flags if f is not None]
    complete = len(checked) == len(flags) and bool(flags)
    return {"prompt": [float(complete and all(checked)), float(complete)],
            "inst": [float(sum(checked)), float(len(checked))]}


def score_response(target: str, response: str | None, filt: str) -> tuple[dict, dict, dict]:
    """(scores, terms, detail) for one filtered response; `target` is the doc as JSON (the task's doc_to_target)."""
    try:
        doc = json.loads(target)
        doc["instruction_id_list"], doc["kwargs"]
    except (ValueError, TypeError, KeyError):
        raise TaskError("IFEval metrics: doc_to_target must render the doc as JSON with instruction_id_list and "
                        f"kwargs (see eval/ifeval.yaml), got {str(target)[:80]!r}") from None
    res = follow(doc, response)
    terms = {}
    for mode in ("strict", "loose"):
        t = _terms(res[mode])
        terms[f"prompt_level_{mode}_acc:{filt}"] = t["prompt"]
        terms[f"inst_level_{mode}_acc:{filt}"] = t["inst"]
    scores = {k: (n / d if d else float("nan")) for k, (n, d) in terms.items()}
    return scores, terms, {**res, "instruction_id_list": doc["instruction_id_list"]}
