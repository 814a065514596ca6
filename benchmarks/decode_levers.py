"""Decode levers: the continuous decoder now vs as it was at an earlier commit, same prompts, one process.

    python benchmarks/decode_levers.py                          # 200 GSM8K zero-shot docs, 128 slots, vs 68e8640
    python benchmarks/decode_levers.py --limit 8 --max-new-tokens 8 --slots 4   # smoke run

Issue #17 s1, "keep what wins and report each". The earlier decoder is `finetune/eval/continuous.py`
as committed at `--rev` (read with `git show`, imported from a temp file; 68e8640: one document per
prefill forward, finished slots dropped by indexing every buffer with the kept rows). The current
one prefills the slots that come free together in one forward and drops a slot by moving the last
live slot into it. Both run `greedy_continuous` on the prompts the harness builds (eval_decode's
`encode_docs`), in `--order` (default AB then BA: ABBA), each call timed whole and split into its
prefill forwards, decode steps and slot drops (wrapped methods), with the load average around it.
Reported: tokens/s per side (summed over its runs), the ratio, whether the generated ids are
identical, and the split. Writes benchmarks/results/decode_levers.json (`--out`).
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, load, machine, need_shared  # noqa: E402
from eval_decode import TASK, encode_docs  # noqa: E402

from finetune.eval import continuous  # noqa: E402
from finetune.eval.generate import eos_ids  # noqa: E402
from finetune.speed.perf import tune_allocator  # noqa: E402

TIMED = ("fill", "step", "drop", "keep")  # the decoder's methods split out (keep: the earlier drop)


def module_at(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:finetune/eval/continuous.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"continuous_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed_run(mod, model, tokenizer, prompts, slots, kw) -> dict:
    split, originals = {}, {}
    for name in TIMED:
        fn = getattr(mod._Decoder, name, None)
        if fn is None:
            continue
        originals[name] = fn

        def wrapper(self, *a, _fn=fn, _name=name):
            t = time.perf_counter()
            out = _fn(self, *a)
            split[_name] = split.get(_name, 0.0) + time.perf_counter() - t
            return out
        setattr(mod._Decoder, name, wrapper)
    before, t0 = load(), time.perf_counter()
    try:
        out = mod.greedy_continuous(model, tokenizer, prompts, slots=slots, **kw)
    finally:
        for name, fn in originals.items():
            setattr(mod._Decoder, name, fn)
    seconds = time.perf_counter() - t0
    split["other"] = seconds - sum(split.values())
    return {"seconds": seconds, "tokens": sum(map(len, out)), "split_s": {k: round(v, 2) for k, v in split.items()},
            "load_before": before, "load_after": load(), "ids": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="68e8640", help="the commit whose continuous.py is the baseline")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--slots", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's (256)")
    ap.add_argument("--order", default="ABBA", help="A: --rev, B: now")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decode_levers.json"))
    args = ap.parse_args(argv)
    from finetune.eval.tasks import load_task
    from finetune.model import load_model

    tune_allocator()
    need_shared("gsm8k/test.jsonl")
    model, tokenizer = load_model(args.model, dtype="float32")
    task = load_task(TASK, data_path=str(SHARED))
    max_new = args.max_new_tokens or task.generation["max_new_tokens"]
    prompts = encode_docs(model, tokenizer, task, task.docs(args.limit), max_new)
    kw = dict(max_new_tokens=max_new, eos=eos_ids(model, tokenizer), until=list(task.generation["until"]))
    sides = {"A": module_at(args.rev), "B": continuous}
    sides["A"].greedy_continuous(model, tokenizer, prompts[:2], slots=2, **{**kw, "max_new_tokens": 8})  # warm-up
    runs = {"A": [], "B": []}
    for side in args.order:
        r = timed_run(sides[side], model, tokenizer, prompts, args.slots, kw)
        runs[side].append(r)
        print(f"{side} ({args.rev if side == 'A' else 'now'}): {r['tokens']} tokens in {r['seconds']:.1f} s = "
              f"{r['tokens'] / r['seconds']:.2f} tok/s, split {r['split_s']}, load {r['load_before']} -> "
              f"{r['load_after']}", flush=True)
    tps = {s: sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs) for s, rs in runs.items() if rs}
    same = all(r["ids"] == runs["A"][0]["ids"] for rs in runs.values() for r in rs)
    summary = {"tokens_per_s": {k: round(v, 2) for k, v in tps.items()},
               "ratio_now_vs_rev": round(tps["B"] / tps["A"], 3) if len(tps) == 2 else None,
               "identical_ids": same}
    print(json.dumps(summary), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": machine(), "args": vars(args), "threads": torch.get_num_threads(),
        "command": "python benchmarks/decode_levers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "documents": len(prompts), "prompt_tokens": sum(map(len, prompts)), **summary,
        "runs": {s: [{k: v for k, v in r.items() if k != "ids"} for r in rs] for s, rs in runs.items()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
