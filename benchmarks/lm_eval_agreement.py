"""Cross-check this harness against lm-evaluation-harness on GSM8K 8-shot CoT.

    pip install lm-eval            # optional dependency (or: pip install -e '.[lm-eval]')
    python benchmarks/lm_eval_agreement.py --model /path/to/model_folder --data-path ../shared/data --limit 10

One model object (a local folder, no hub) is scored twice on the same GSM8K test
documents: by `lm_eval` running its own `gsm8k_cot` task (its YAML, pointed at the local
jsonl file instead of the hub) and by this harness running eval/gsm8k_cot_8shot.yaml. It
checks, document by document, that the prompts are the same text, that the greedy
generations are identical, and that the scores agree: with lm-eval's own filters
(`benchmarks/gsm8k_cot_8shot_lmeval_filters.yaml` uses the very same regexes, applied to the
same generations) the scores must be equal; the shipped task's strict/flexible scores are
printed next to them.
Exit status 0 when everything agrees, 1 when something differs (each difference is listed),
2 when lm-eval is not installed.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LMEVAL_TASK = "gsm8k_cot_local"
OURS_LMEVAL_FILTERS = REPO / "benchmarks" / "gsm8k_cot_8shot_lmeval_filters.yaml"


def lm_eval_task_dir(data_path: Path, folder: Path) -> Path:
    """lm-eval's gsm8k-cot.yaml, unchanged except that its data is the local test.jsonl (no hub)."""
    import lm_eval

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k-cot.yaml").read_text())
    spec.update(task=LMEVAL_TASK, dataset_path="json", dataset_name=None, tag=[],
                dataset_kwargs={"data_files": {"test": str((data_path / "gsm8k" / "test.jsonl").resolve())}})
    (folder / f"{LMEVAL_TASK}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def run_lm_eval(model, tokenizer, data_path: Path, limit: int, batch_size: int) -> tuple[dict, dict]:
    """({doc_id: {prompt, output, by filter: answer}}, {filter: score}) from lm_eval."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        manager = TaskManager(include_path=str(lm_eval_task_dir(data_path, Path(tmp))))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
        res = simple_evaluate(model=lm, tasks=[LMEVAL_TASK], task_manager=manager, limit=limit, log_samples=True,
                              bootstrap_iters=0)
    docs: dict = {}
    for s in res["samples"][LMEVAL_TASK]:
        d = docs.setdefault(s["doc_id"], {"prompt": s["arguments"][0][0], "output": s["resps"][0][0]})
        d[s["filter"]] = s["filtered_resps"][0]
        d[s["filter"] + ":correct"] = s["exact_match"]
    scores = {k.split(",")[1]: v for k, v in res["results"][LMEVAL_TASK].items()
              if k.startswith("exact_match,")}
    return docs, scores


def run_ours(model, tokenizer, data_path: Path, limit: int, batch_size: int, out: Path) -> tuple[dict, dict]:
    """Generate once with the shipped task; score the same outputs with the shipped and the lm-eval filters."""
    from finetune.eval.harness import evaluate
    from finetune.eval.records import read_records
    from finetune.eval.scoring import aggregate, score_generation
    from finetune.eval.tasks import load_task

    shipped = load_task("gsm8k_cot_8shot", data_path=data_path)
    mirror = load_task(str(OURS_LMEVAL_FILTERS), data_path=data_path)
    scores = evaluate(model, tokenizer, [shipped], out, batch_size=batch_size, limit=limit, label="finetune")
    records = {shipped.name: {r["doc_id"]: r for r in read_records(out / f"{shipped.name}.jsonl")}}
    records[mirror.name] = {i: {**r, **score_generation(mirror, [r["output"]], [r["truncated"]], r["target"])}
                            for i, r in records[shipped.name].items()}
    scores[mirror.name] = {k: aggregate(k, list(records[mirror.name].values())) for k in mirror.metric_keys()}
    return records, scores


def compare(lm_docs: dict, lm_scores: dict, ours: dict, our_scores: dict) -> list[str]:
    problems = []
    shipped, mirror = ours["gsm8k_cot_8shot"], ours[OURS_LMEVAL_FILTERS.stem]
    if sorted(lm_docs) != sorted(shipped):
        problems.append(f"different documents: lm-eval {sorted(lm_docs)[:5]}..., ours {sorted(shipped)[:5]}...")
    for doc_id in sorted(set(lm_docs) & set(shipped)):
        lm, rec = lm_docs[doc_id], shipped[doc_id]
        if lm["prompt"] != rec["prompt"]:
            problems.append(f"doc {doc_id}: prompts differ")
        if lm["output"] != rec["output"]:
            problems.append(f"doc {doc_id}: generations differ:\n  lm-eval: {lm['output']!r}\n  ours:    "
                            f"{rec['output']!r}")
        for f in ("strict-match", "flexible-extract"):
            mine = mirror[doc_id]["by_filter"][f]
            if (mine["extracted"] or "[invalid]") != lm[f] or mine["correct"] != bool(lm[f + ":correct"]):
                problems.append(f"doc {doc_id} {f}: lm-eval {lm[f]!r} ({lm[f + ':correct']}), ours "
                                f"{mine['extracted']!r} ({mine['correct']})")
    for f in ("strict-match", "flexible-extract"):
        a, b = lm_scores.get(f), our_scores[OURS_LMEVAL_FILTERS.stem].get(f"exact_match:{f}")
        if a is None or b is None or abs(a - b) > 1e-12:
            problems.append(f"score {f}: lm-eval {a}, ours {b}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a local transformers model folder")
    parser.add_argument("--data-path", default=str(REPO.parent / "shared" / "data"),
                        help="folder laid out like shared/data (needs gsm8k/test.jsonl)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="same for both harnesses (default 1)")
    parser.add_argument("--out", default="runs/lm_eval_agreement")
    args = parser.parse_args(argv)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("lm-eval is not installed; this cross-check needs it: pip install lm-eval "
              "(or pip install -e '.[lm-eval]')", file=sys.stderr)
        return 2
    data_path = Path(args.data_path)
    if not (data_path / "gsm8k" / "test.jsonl").is_file():
        print(f"no {data_path / 'gsm8k' / 'test.jsonl'}; pass --data-path", file=sys.stderr)
        return 2
    from finetune.model import load_model

    model, tokenizer = load_model(args.model)
    out = Path(args.out)
    ours, our_scores = run_ours(model, tokenizer, data_path, args.limit, args.batch_size, out / "finetune")
    lm_docs, lm_scores = run_lm_eval(model, tokenizer, data_path, args.limit, args.batch_size)
    problems = compare(lm_docs, lm_scores, ours, our_scores)
    same = sum(lm_docs[i]["output"] == ours["gsm8k_cot_8shot"][i]["output"] for i in lm_docs
               if i in ours["gsm8k_cot_8shot"])
    summary = {"model": args.model, "limit": args.limit, "documents": len(lm_docs), "identical_generations": same,
               "lm_eval": lm_scores, "finetune_lmeval_filters": our_scores[OURS_LMEVAL_FILTERS.stem],
               "finetune_shipped_task": our_scores["gsm8k_cot_8shot"], "problems": problems}
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "problems"}, indent=2))
    print("\n".join(problems) if problems else "AGREE: same prompts, identical greedy generations, equal scores")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
