"""bf16 vs fp32, side by side in one process: training (LoRA r16, freeze-last-2) and the eval decoder.

    python benchmarks/precision.py --part train --methods lora      # ~4 min on the 2-core AMX machine
    python benchmarks/precision.py --part train --methods freeze
    python benchmarks/precision.py --part decode                     # 40 GSM8K zero-shot CoT prompts

What `model.dtype: auto` chooses on this machine is printed first (finetune/precision.py, measured,
not pinned). Then each side runs with `auto` pinned ($FINETUNE_AUTO_PRECISION) to float32 and to
bfloat16, i.e. exactly the two paths `auto` can take:

- train: `finetune train` in this process on the packaged SmolLM2-135M-Instruct and the first
  `--examples` GSM8K train rows (../shared/data), same seed, data order, steps and learning rate
  for both; fp32 then bf16 for the first method, bf16 then fp32 for the next (ABBA, so drift on a
  shared machine does not favour one side). Reports real (non-padding) tokens/s of the training
  loop, their ratio, and the held-out loss on `--heldout` GSM8K test rows (completion tokens, the
  run's own template), each trained model scored in fp32 by the same code (and the bf16 one also
  under the bf16 autocast it trained with).
- decode: the eval harness's greedy generation runner on the first `--limit` GSM8K test documents
  (gsm8k_cot_zeroshot, up to 256 new tokens), the same fp32 weights cast to bf16 for the bf16 side
  (`precision.cast_for_eval`, what `auto` does for evaluation); the documents in two halves, fp32
  then bf16 on the first, bf16 then fp32 on the second. Reports generated tokens/s, the ratio, and
  how many outputs are identical (agreement rate); scores for both.

The load average (`os.getloadavg`) is recorded before and after each measurement: the reference
machine's 2 cores are shared. Writes benchmarks/results/precision_<part>.json.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GSM8K_RECIPE, METHODS, REPO, SHARED, load, machine, matmul_peak_gflops, need_shared  # noqa: E402

from finetune import precision  # noqa: E402

SIDES = ("float32", "bfloat16")


def heldout_loss(model, tokenizer, template, rows: list[dict], autocast: bool) -> float:
    """Mean loss over the completion tokens of held-out rows (batch 1, no padding)."""
    from finetune.data.tokenize import encode_example

    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for r in rows:
            ex = encode_example(template, tokenizer, r["question"], r["answer"])
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            tgt = labels[0, 1:]
            mask = tgt != -100
            total += torch.nn.functional.cross_entropy(logits[mask], tgt[mask], reduction="sum").item()
            count += int(mask.sum())
    return total / count


def train_once(method: str, side: str, args, work: Path, rows: list[dict]) -> dict:
    from finetune.prompts import load_template
    from finetune.recipe import load_recipe
    from finetune.rundir import RunDir
    from finetune.train import train

    os.environ[precision.PIN_ENV] = side
    out = work / f"{method}_{side}"
    recipe = work / f"{method}_{side}.yaml"
    recipe.write_text(GSM8K_RECIPE.format(
        dtype="auto", method=METHODS[method], data=need_shared("gsm8k/train.jsonl"),
        examples=args.examples, steps=args.examples // args.batch,
        batch=args.batch, accum=1, lr=args.lr, max_length=args.max_length,
        out=out, seed=42))
    before = load()
    run_dir, model, tokenizer, manifest = train(load_recipe(recipe))
    after = load()
    run = RunDir(run_dir)
    tokens = max(r.get("num_tokens", 0) for r in run.train_log())
    seconds = manifest["train_metrics"]["train_runtime"]
    template = load_template(str(run / RunDir.TEMPLATE))
    result = {"precision": manifest["precision"]["train"], "tokens": tokens, "train_s": seconds,
              "tokens_per_s": tokens / seconds, "load_before": before, "load_after": after,
              "final_train_loss": [r["loss"] for r in run.train_log() if "loss" in r][-1],
              "heldout_loss_fp32": heldout_loss(model, tokenizer, template, rows, autocast=False)}
    if side == "bfloat16":
        result["heldout_loss_bf16_autocast"] = heldout_loss(model, tokenizer, template, rows, autocast=True)
    print(f"{method} {side}: {result['tokens_per_s']:.1f} tok/s, held-out loss (fp32 scoring) "
          f"{result['heldout_loss_fp32']:.4f}, load {before} -> {after}", flush=True)
    return result


def part_train(args) -> dict:
    rows = [json.loads(line) for line in open(need_shared("gsm8k/test.jsonl"))][:args.heldout]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, method in enumerate(args.methods.split(",")):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            runs = {side: train_once(method, side, args, Path(tmp), rows) for side in order}
            f, b = runs["float32"], runs["bfloat16"]
            results[method] = {**runs, "order": list(order),
                               "tokens_per_s_ratio": b["tokens_per_s"] / f["tokens_per_s"],
                               "heldout_loss_diff": b["heldout_loss_fp32"] - f["heldout_loss_fp32"]}
            print(f"{method}: bf16/fp32 tokens/s {results[method]['tokens_per_s_ratio']:.2f}x, held-out loss "
                  f"{b['heldout_loss_fp32']:.4f} vs {f['heldout_loss_fp32']:.4f} "
                  f"(diff {results[method]['heldout_loss_diff']:+.4f})", flush=True)
    return results


def decode_once(model, tokenizer, task, template, docs, side: str, args) -> dict:
    from finetune.eval.runners import run_generation

    records = []
    before, t0 = load(), time.perf_counter()
    with precision.cast_for_eval(model, side):
        run_generation(model, tokenizer, task, template, docs, records.append, batch_size=args.batch_size, seed=0)
    seconds = time.perf_counter() - t0
    return {"records": records, "seconds": seconds, "load_before": before, "load_after": load()}


def part_decode(args) -> dict:
    from finetune.eval.tasks import load_task
    from finetune.model import load_model
    from finetune.prompts import load_template

    model, tokenizer = load_model("smollm2-135m-instruct", dtype="float32")
    task = load_task("gsm8k_cot_zeroshot", data_path=str(SHARED))
    template = load_template(task.prompt_template)
    docs = task.docs(args.limit)
    halves = [docs[:len(docs) // 2], docs[len(docs) // 2:]]
    runs = {side: [] for side in SIDES}
    for i, half in enumerate(halves):
        for side in (SIDES if i == 0 else SIDES[::-1]):
            runs[side].append(decode_once(model, tokenizer, task, template, half, side, args))
            r = runs[side][-1]
            n = sum(rec["output_tokens"][0] for rec in r["records"])
            print(f"half {i + 1} {side}: {n} tokens in {r['seconds']:.1f} s = {n / r['seconds']:.1f} tok/s, "
                  f"load {r['load_before']} -> {r['load_after']}", flush=True)
    out = {}
    for side, parts in runs.items():
        recs = {rec["doc_id"]: rec for p in parts for rec in p["records"]}
        tokens, seconds = sum(rec["output_tokens"][0] for rec in recs.values()), sum(p["seconds"] for p in parts)
        out[side] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                     "load": [(p["load_before"], p["load_after"]) for p in parts],
                     "scores": {k: sum(float(rec["scores"][k]) for rec in recs.values()) / len(recs)
                                for k in next(iter(recs.values()))["scores"]},
                     "outputs": {str(i): recs[i]["output"] for i in sorted(recs)}}
    same = [i for i in out["float32"]["outputs"] if out["float32"]["outputs"][i] == out["bfloat16"]["outputs"][i]]
    summary = {"documents": len(docs), "identical_outputs": len(same), "agreement_rate": len(same) / len(docs),
               "tokens_per_s_ratio": out["bfloat16"]["tokens_per_s"] / out["float32"]["tokens_per_s"],
               "batch_size": args.batch_size}
    print(f"decode: bf16/fp32 generated tokens/s {summary['tokens_per_s_ratio']:.2f}x; identical outputs "
          f"{len(same)}/{len(docs)} ({100 * summary['agreement_rate']:.0f}%)", flush=True)
    return {**summary, **out}


def matmuls() -> dict:
    """The micro-benchmark `auto` uses, and the 2048-cube peaks of both dtypes (1 s each)."""
    return {"auto_train_shape_ratio": precision.measure_speedup(precision.TRAIN_SHAPE),
            "auto_decode_shape_ratio": precision.measure_speedup(precision.DECODE_SHAPE),
            "peak_fp32_gflops": matmul_peak_gflops(seconds=1.0),
            "peak_bf16_gflops": matmul_peak_gflops(seconds=1.0, dtype=torch.bfloat16)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["train", "decode"], required=True)
    ap.add_argument("--methods", default="lora,freeze")
    ap.add_argument("--examples", type=int, default=96, help="training rows: examples / batch steps")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--heldout", type=int, default=32, help="GSM8K test rows for the held-out loss")
    ap.add_argument("--limit", type=int, default=40, help="decode: GSM8K test documents")
    ap.add_argument("--batch-size", type=int, default=20, help="decode: rows per generation batch")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from finetune.speed.perf import tune_allocator

    tune_allocator()  # as the `finetune` command does
    os.environ.pop(precision.PIN_ENV, None)
    chosen = precision.resolve("auto")
    print(chosen.line(), flush=True)
    started, load_start = time.time(), load()
    result = part_train(args) if args.part == "train" else part_decode(args)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"precision_{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(),
                               "auto": chosen.to_dict(), "matmuls": matmuls(), "args": vars(args),
                               "wall_s": round(time.time() - started, 1), "load_start": load_start,
                               "load_end": load(), "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:]),
                               "results": result}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
