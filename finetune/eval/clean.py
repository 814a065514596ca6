"""The clean subset: a contaminated task scored again without the documents its training rows contain.

    add_clean_subsets(result, {"gsm8k_cot_zeroshot": [45, 46]}, out_dir, seed)   # after compare()
    clean_rows(result)                                                             # the report's rows

Which documents overlap is decided by finetune/data/contamination.py (13-gram rule) before
evaluation; here the same paired comparison runs on the records of the other documents.
"""

from pathlib import Path

from finetune.eval.compare import compare_task


CLEAN_HEAD = ("Contamination: documents that share a 13-gram with the training rows are left out of the clean "
              "subset (finetune/data/contamination.py)")
CLEAN_HEADER = ("task", "metric", "all documents A -> B", "clean subset A -> B", "clean B - A", "clean p", "left out")


def add_clean_subsets(result: dict, contaminated: dict, out_dir: Path, seed: int) -> None:
    """For each task with documents found in the training rows: the comparison without them, in place."""
    for name, ids in contaminated.items():
        if ids and name in result.get("tasks", {}):
            clean = compare_task(name, Path(out_dir) / "base", Path(out_dir) / "finetuned", seed=seed, exclude=ids)
            result["tasks"][name]["clean_subset"] = {"excluded_doc_ids": sorted(ids), "n": clean["n"],
                                                    "metrics": clean["metrics"]}


def clean_rows(result: dict) -> list[tuple]:
    out = []
    for name, task in result.get("tasks", {}).items():
        clean = task.get("clean_subset")
        for key, m in ((clean or {}).get("metrics") or {}).items():
            full = task["metrics"].get(key, {})
            out.append((name, key, f"{full.get('a', 0):.4g} -> {full.get('b', 0):.4g} (n {task.get('n')})",
                        f"{m['a']:.4g} -> {m['b']:.4g} (n {clean['n']})", f"{m['diff']:+.4g}",
                        f"{m.get('p_value', float('nan')):.3g}", len(clean["excluded_doc_ids"])))
    return out
