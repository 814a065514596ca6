"""Paired comparison of two eval folders (A = base, B = finetuned), document by document.

    comparison = compare(Path("runs/x/eval/base"), Path("runs/x/eval/finetuned"))

For each task both folders hold, records are paired by doc id. For each metric: A, B,
B - A with a 95% bootstrap CI, and a paired test: the exact McNemar test for pass/fail
metrics, a paired bootstrap otherwise. Flips (fail->pass, pass->fail) come with a few
example outputs side by side. The prompts of paired records are compared too: a base and
a finetuned model are only comparable if they saw identical prompts.
"""

import json
from pathlib import Path

import numpy as np

from finetune.eval.harness import SCORES_FILE
from finetune.eval.records import read_records
from finetune.eval.scoring import sample_terms
from finetune.eval.stats import mcnemar_exact, paired_bootstrap
from finetune.eval.taskfile import TaskError

N_EXAMPLES = 3
PROMPT_TAIL = 1500  # characters of the prompt kept with each flip example


def _load_summary(d: Path) -> dict:
    path = Path(d) / SCORES_FILE
    if not path.is_file():
        raise TaskError(f"{d}: not an eval folder (no {SCORES_FILE}); run `finetune eval` into it first")
    return json.loads(path.read_text(encoding="utf-8"))


def _side(d: Path, summary: dict) -> dict:
    return {"dir": str(d), "label": summary.get("label"), "model": summary.get("model"), "seed": summary.get("seed"),
            "versions": summary.get("versions"), "template_override": summary.get("template_override"),
            "records": {t: str(Path(d) / s["records"]) for t, s in summary["tasks"].items()}}


def _extracted(rec: dict, key: str):
    """The answer the metric `key` scored: its filter's extraction for generation tasks."""
    _, _, filt = key.partition(":")
    return rec["by_filter"][filt]["extracted"] if filt and filt in rec.get("by_filter", {}) else rec.get("extracted")


def _text(value):
    """Model or data text for a report: a lone surrogate (not UTF-8, so not writable to a file) becomes '?'."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def _example(key: str, doc_id, ra: dict, rb: dict) -> dict:
    ex = {"doc_id": doc_id, "prompt": (ra.get("prompt") or "")[-PROMPT_TAIL:], "target": ra.get("target"),
          "a_output": ra.get("output"), "b_output": rb.get("output"),
          "a_extracted": _extracted(ra, key), "b_extracted": _extracted(rb, key)}
    return {k: _text(v) for k, v in ex.items()}


def _metric(key: str, pairs: list, n_boot: int, seed: int, higher: bool) -> tuple[dict, dict | None]:
    ta = np.array([sample_terms(key, ra) for _, ra, _ in pairs], dtype=float)
    tb = np.array([sample_terms(key, rb) for _, _, rb in pairs], dtype=float)
    res = paired_bootstrap(ta, tb, key.split(":")[0], n_boot=n_boot, seed=seed)
    binary = bool(np.all(ta[:, 1] == 1) and np.all(np.isin(ta[:, 0], (0, 1))) and np.all(np.isin(tb[:, 0], (0, 1))))
    out = {"a": res["a"], "b": res["b"], "diff": res["diff"], "ci": res["ci"], "ci_a": res["ci_a"],
           "ci_b": res["ci_b"], "higher_is_better": higher, "n": len(pairs)}
    if not binary:
        return {**out, "test": "paired_bootstrap", "p_value": res["p_bootstrap"]}, None
    up = [(d, ra, rb) for d, ra, rb in pairs if ra["scores"][key] == 0 and rb["scores"][key] == 1]
    down = [(d, ra, rb) for d, ra, rb in pairs if ra["scores"][key] == 1 and rb["scores"][key] == 0]
    flips = {"fail_to_pass": len(up), "pass_to_fail": len(down),
             "examples": {"fail_to_pass": [_example(key, *p) for p in up[:N_EXAMPLES]],
                          "pass_to_fail": [_example(key, *p) for p in down[:N_EXAMPLES]]}}
    return {**out, "test": "mcnemar_exact", "p_value": mcnemar_exact(len(down), len(up)),
            "fail_to_pass": len(up), "pass_to_fail": len(down)}, flips


def _compare_task(name: str, sa: dict, sb: dict, da: Path, db: Path, n_boot: int, seed: int,
                  warnings: list, exclude: frozenset = frozenset()) -> dict:
    ra = {r["doc_id"]: r for r in read_records(Path(da) / sa["records"]) if r["doc_id"] not in exclude}
    rb = {r["doc_id"]: r for r in read_records(Path(db) / sb["records"]) if r["doc_id"] not in exclude}
    ids = sorted(set(ra) & set(rb))
    if len(ids) != len(ra) or len(ids) != len(rb):
        warnings.append(f"{name}: A has {len(ra)} records, B has {len(rb)}; comparing the {len(ids)} shared doc ids")
    if sa.get("config") != sb.get("config"):
        warnings.append(f"{name}: A and B were evaluated with different task configs, templates or seeds")
    mismatched = [i for i in ids if ra[i].get("prompt") != rb[i].get("prompt")]
    if mismatched:
        warnings.append(f"{name}: {len(mismatched)} paired documents have different prompts (e.g. doc "
                        f"{mismatched[0]}); the comparison is not like for like")
    pairs = [(i, ra[i], rb[i]) for i in ids]
    out = {"n": len(ids), "output_type": sa.get("output_type"), "prompt_mismatches": len(mismatched),
           "config_match": sa.get("config") == sb.get("config"), "metrics": {}, "flips": {},
           "failures": {"a": sa.get("failures") or {}, "b": sb.get("failures") or {}}}
    if not pairs:
        return out
    for key in sa["scores"]:
        if key not in sb["scores"]:
            continue
        higher = (sa.get("metrics") or {}).get(key, {}).get("higher_is_better", True)
        out["metrics"][key], flips = _metric(key, pairs, n_boot, seed, higher)
        if flips is not None:  # every pass/fail metric
            out["flips"][key] = flips
    return out


def compare(dir_a: Path, dir_b: Path, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of every task both folders hold; B - A is the reported difference."""
    sa, sb = _load_summary(dir_a), _load_summary(dir_b)
    warnings: list[str] = []
    only = sorted(set(sa["tasks"]) ^ set(sb["tasks"]))
    if only:
        warnings.append(f"tasks in only one folder (skipped): {', '.join(only)}")
    tasks = {name: _compare_task(name, sa["tasks"][name], sb["tasks"][name], dir_a, dir_b, n_boot, seed, warnings)
             for name in sa["tasks"] if name in sb["tasks"]}
    configs = {name: {"task_spec": sa["tasks"][name].get("task_spec"), "template": sa["tasks"][name].get("template"),
                      "config_a": sa["tasks"][name].get("config"), "config_b": sb["tasks"][name].get("config")}
               for name in tasks}
    return {"a": _side(dir_a, sa), "b": _side(dir_b, sb), "n_boot": n_boot, "seed": seed, "tasks": tasks,
            "configs": configs, "warnings": warnings}


def compare_task(name: str, dir_a: Path, dir_b: Path, *, n_boot: int = 2000, seed: int = 0,
                 exclude=()) -> dict:
    """One task of two eval folders, paired by doc id exactly as `compare` does it, with its own warnings;
    documents whose id is in `exclude` are left out (the clean subset of a contaminated task)."""
    sa, sb = _load_summary(dir_a), _load_summary(dir_b)
    warnings: list[str] = []
    out = _compare_task(name, sa["tasks"][name], sb["tasks"][name], dir_a, dir_b, n_boot, seed, warnings,
                        frozenset(exclude))
    return {**out, "warnings": warnings}
