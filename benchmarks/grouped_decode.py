"""bf16 decode attention on CPU: the continuous decoder with grouped-matmul steps vs SDPA, and fp32, in one process.

    python benchmarks/grouped_decode.py --limit 64 --max-new-tokens 128 --slots 64

The packaged SmolLM2-135M-Instruct on the first `--limit` GSM8K test documents of gsm8k_cot_zeroshot,
prompts encoded as the harness does; `greedy_continuous` runs three times, ABC order then CBA
(two passes): fp32 (SDPA, the path tested identical to `model.generate`), bf16 with the grouped
decode attention (finetune/eval/grouped.py, the default) and bf16 with it off (transformers' sdpa,
the code before). Reports generated tokens/s per variant (both passes together), the ratio to
bf16-SDPA, decode MFU of each against its dtype's peak and the fraction of the fp32 ceiling, and
how many outputs each bf16 variant shares with fp32 and with the other. Writes
benchmarks/results/grouped_decode.json (or --out).
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, load, machine, need_shared  # noqa: E402
from eval_decode import TASK, encode_docs  # noqa: E402

from finetune import precision  # noqa: E402
from finetune.eval import continuous, grouped, meter  # noqa: E402

VARIANTS = ("fp32", "bf16-grouped", "bf16-sdpa")


def run(model, tokenizer, prompts, variant: str, args) -> dict:
    off = variant == "bf16-sdpa"
    patch = contextlib.nullcontext() if not off else _grouped_off()
    dtype = "float32" if variant == "fp32" else "bfloat16"
    with precision.cast_for_eval(model, dtype), patch:
        before, t0 = load(), time.perf_counter()
        ids = continuous.greedy_continuous(model, tokenizer, prompts, slots=args.slots,
                                           max_new_tokens=args.max_new_tokens, eos=[tokenizer.eos_token_id],
                                           until=[])
        seconds = time.perf_counter() - t0
    tokens = sum(len(x) for x in ids)
    print(f"{variant}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s, load {before} -> {load()}",
          flush=True)
    return {"ids": ids, "tokens": tokens, "seconds": seconds}


@contextlib.contextmanager
def _grouped_off():
    real = continuous.grouped_decode_attention
    continuous.grouped_decode_attention = lambda model: contextlib.nullcontext(False)
    try:
        yield
    finally:
        continuous.grouped_decode_attention = real


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from finetune.eval.tasks import load_task
    from finetune.model import load_model
    from finetune.speed.perf import tune_allocator

    tune_allocator()
    need_shared("gsm8k/test.jsonl")
    model, tokenizer = load_model("smollm2-135m-instruct", dtype="float32")
    task = load_task(TASK, data_path=str(SHARED))
    prompts = encode_docs(model, tokenizer, task, task.docs(args.limit), args.max_new_tokens)
    peaks = {"float32": meter.matmul_peak_gflops(), "bfloat16": meter.matmul_peak_gflops(dtype=torch.bfloat16)}
    runs = {v: [] for v in VARIANTS}
    for order in (VARIANTS, VARIANTS[::-1]):
        for v in order:
            runs[v].append(run(model, tokenizer, prompts, v, args))
    flops = meter.DecodeMeter(model).flops_per_token
    ceiling = peaks["float32"] * 1e9 / flops
    out = {}
    for v, rs in runs.items():
        tps = sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs)
        peak = peaks["float32" if v == "fp32" else "bfloat16"]
        out[v] = {"tokens_per_s": round(tps, 2), "seconds": [round(r["seconds"], 1) for r in rs],
                  "decode_mfu": round(tps * flops / (peak * 1e9), 4), "fp32_ceiling_fraction": round(tps / ceiling, 4),
                  "same_ids_both_passes": rs[0]["ids"] == rs[1]["ids"]}
    ids = {v: rs[0]["ids"] for v, rs in runs.items()}
    agree = {f"{a} vs {b}": sum(x == y for x, y in zip(ids[a], ids[b]))
             for a, b in (("bf16-grouped", "fp32"), ("bf16-sdpa", "fp32"), ("bf16-grouped", "bf16-sdpa"))}
    ratio = out["bf16-grouped"]["tokens_per_s"] / out["bf16-sdpa"]["tokens_per_s"]
    for v, r in out.items():
        print(f"{v:13s} {r['tokens_per_s']:8.1f} tok/s  decode MFU {100 * r['decode_mfu']:5.1f}%  "
              f"of the fp32 ceiling {100 * r['fp32_ceiling_fraction']:5.1f}%")
    print(f"bf16 grouped / bf16 sdpa: {ratio:.2f}x; identical outputs of {len(prompts)}: {agree}")
    path = Path(args.out or REPO / "benchmarks" / "results" / "grouped_decode.json")
    path.write_text(json.dumps({"machine": machine(), "args": vars(args), "peak_gflops": peaks,
                                "fp32_ceiling_tokens_per_s": round(ceiling, 1), "results": out,
                                "grouped_vs_sdpa": round(ratio, 3), "identical_outputs": agree,
                                "documents": len(prompts),
                                "command": "python benchmarks/grouped_decode.py " + " ".join(sys.argv[1:])},
                               indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
