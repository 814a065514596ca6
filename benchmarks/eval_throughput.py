"""Eval throughput: this harness vs `lm_eval --model hf` on GSM8K 8-shot CoT, greedy, same prompts.

    pip install lm-eval
    python benchmarks/eval_throughput.py --limit 100            # the packaged SmolLM2 by default

Both harnesses score the same model object on the same GSM8K test documents with lm-eval's
own `gsm8k_cot` prompt (see lm_eval_agreement.py). lm-eval runs with its defaults
(`--model hf`, batch size 1); this harness with its defaults (batch 16, length-sorted;
greedy decoding runs the shared 8-shot prefix once per batch, writes the KV cache in
place, and retires each row when it stops: finetune/eval/decode.py). Prints examples/s for each, the ratio, and how many
greedy predictions are identical. Writes benchmarks/results/eval_throughput.json.

    python benchmarks/eval_throughput.py --levers --limit 32     # this harness only

--levers times this harness alone on the same documents at batch 8, 16 and 32, and at
batch 16 through `model.generate` (the decode levers of finetune/eval/decode.py off),
and checks that every variant gives the same predictions. Writes eval_levers.json.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, machine  # noqa: E402
from lm_eval_agreement import run_lm_eval, run_ours  # noqa: E402

from finetune.eval import BATCH_SIZE  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                    help=f"this harness's slots (default {BATCH_SIZE}, as `finetune eval`; lm-eval keeps its default 1)")
    ap.add_argument("--lm-eval-batch-size", type=int, default=1)
    ap.add_argument("--levers", action="store_true", help="batch sizes and decode levers of this harness only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = args.out or str(REPO / "benchmarks" / "results" / ("eval_levers.json" if args.levers else
                                                                  "eval_throughput.json"))
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        if not args.levers:
            sys.exit("lm-eval is not installed: pip install lm-eval")
    from finetune.model import load_model
    from finetune.speed.perf import tune_allocator

    tune_allocator()  # as the `finetune` command does; lm-eval runs in this same process and gets it too
    model, tokenizer = load_model(args.model)
    if args.levers:
        return levers(model, tokenizer, args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        ours, _ = run_ours(model, tokenizer, SHARED, args.limit, args.batch_size, Path(tmp) / "ours")
        ours_s = time.time() - t0
        t0 = time.time()
        lm_docs, _ = run_lm_eval(model, tokenizer, SHARED, args.limit, args.lm_eval_batch_size)
        lm_s = time.time() - t0
    shipped = ours["gsm8k_cot_8shot"]
    same = sum(lm_docs[i]["output"] == shipped[i]["output"] for i in lm_docs if i in shipped)
    result = {"machine": machine(), "command": "python benchmarks/eval_throughput.py " + " ".join(sys.argv[1:]),
              "model": args.model, "examples": args.limit,
              "finetune": {"batch_size": args.batch_size, "seconds": ours_s, "examples_per_s": args.limit / ours_s},
              "lm_eval": {"batch_size": args.lm_eval_batch_size, "seconds": lm_s, "examples_per_s": args.limit / lm_s},
              "speedup": lm_s / ours_s, "identical_predictions": same}
    print(f"finetune {args.limit / ours_s:.3f} ex/s (batch {args.batch_size}) vs lm-eval {args.limit / lm_s:.3f} "
          f"ex/s (batch {args.lm_eval_batch_size}) = {lm_s / ours_s:.2f}x; identical greedy predictions: "
          f"{same}/{args.limit}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def levers(model, tokenizer, args) -> None:
    from finetune.eval import generate

    variants = [("batch 16 (default)", 16, True), ("batch 8", 8, True), ("batch 32", 32, True),
                ("batch 16, model.generate", 16, False)]
    results, reference = {}, None
    for name, batch, fast in variants:
        generate.plain_greedy = (lambda m: fast)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            ours, _ = run_ours(model, tokenizer, SHARED, args.limit, batch, Path(tmp) / "ours")
            seconds = time.time() - t0
        outputs = {i: r["output"] for i, r in ours["gsm8k_cot_8shot"].items()}
        reference = reference or outputs
        same = sum(outputs[i] == reference[i] for i in reference)
        results[name] = {"seconds": seconds, "examples_per_s": args.limit / seconds, "same_as_default": same}
        base = results[variants[0][0]]["seconds"]
        print(f"{name:26s} {args.limit / seconds:.3f} ex/s ({base / seconds:.2f}x the default); "
              f"predictions equal to the default's: {same}/{args.limit}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "model": args.model, "examples": args.limit,
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
