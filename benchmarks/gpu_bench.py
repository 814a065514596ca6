"""GPU benchmark: training tokens/s and MFU (bf16, SDPA) and eval throughput, one script.

    python benchmarks/gpu_bench.py                   # on a CUDA machine
    python benchmarks/gpu_bench.py --smoke           # CPU fallback: 2 steps, fp32, a few eval examples

Trains the packaged SmolLM2-135M-Instruct with LoRA and full finetuning through `finetune
train` (model.dtype bfloat16 on CUDA, so TRL's bf16 autocast and SDPA attention), and
evaluates GSM8K zero-shot CoT with the harness. MFU is model FLOPs per token (see
train_throughput.py) x tokens/s over the card's measured bf16 matmul peak (and over its
datasheet peak when the card is known). Writes benchmarks/results/gpu_bench.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, machine  # noqa: E402
from train_throughput import flops_per_token  # noqa: E402

from finetune.rundir import RunDir  # noqa: E402

DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

RECIPE = """\
model: {{name: smollm2-135m-instruct, dtype: {dtype}}}
method: {{name: {method}}}
data:
  datasets: [{{name: {dataset}, limit: {examples}}}]
  max_length: 512
train: {{max_steps: {steps}, batch_size: {batch}, save_steps: 100000, logging_steps: 1}}
output: {{dir: "{out}"}}
"""


def matmul_peak_tflops(dtype, device) -> float:
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = 0.0
    for _ in range(20):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def train_once(method: str, args, work: Path, device: str) -> dict:
    gsm8k = (SHARED / "gsm8k" / "train.jsonl").is_file()
    recipe = work / f"{method}.yaml"
    recipe.write_text(RECIPE.format(dtype="bfloat16" if device == "cuda" else "float32", method=method,
                                    dataset="gsm8k" if gsm8k else "arith_cot", examples=args.steps * args.batch,
                                    steps=args.steps, batch=args.batch, out=work / method))
    env = {"FINETUNE_DATA_DIR": str(SHARED)} if gsm8k else {}
    subprocess.run([sys.executable, "-m", "finetune.cli", "train", str(recipe)], check=True,
                   env={**__import__("os").environ, **env}, stdout=subprocess.DEVNULL)
    run = RunDir(work / method)
    m = run.manifest()
    tokens = max(r.get("num_tokens", 0) for r in run.train_log())  # real tokens seen, as TRL logs them
    return {"tokens": tokens, "train_s": m["train_metrics"]["train_runtime"],
            "tokens_per_s": tokens / m["train_metrics"]["train_runtime"], "seq": tokens / (args.steps * args.batch),
            "trained_fraction": m["data_stats"]["trained_fraction"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-limit", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="tiny settings, runs on CPU too")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_bench.json"))
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke or device == "cpu":
        args.steps, args.batch, args.eval_limit = 2, 2, 2
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = matmul_peak_tflops(dtype, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    from transformers import AutoModelForCausalLM

    from finetune.model import resolve_model
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"))
    results = {"machine": machine(), "device": name, "measured_peak_tflops": peak, "datasheet_peak_tflops": sheet}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("lora", "full"):
            r = train_once(method, args, Path(tmp), device)
            fpt = flops_per_token(model, method, r["seq"], r["trained_fraction"])
            r["mfu_measured_peak"] = fpt * r["tokens_per_s"] / (peak * 1e12)
            r["mfu_datasheet"] = fpt * r["tokens_per_s"] / (sheet * 1e12) if sheet else None
            results[method] = r
            print(f"{method}: {r['tokens_per_s']:.0f} tok/s, MFU {100 * r['mfu_measured_peak']:.1f}% of measured "
                  f"{peak:.1f} TFLOP/s", flush=True)
    from finetune.eval.harness import evaluate
    from finetune.eval.tasks import load_task
    from finetune.model import load_model

    lm, tok = load_model("smollm2-135m-instruct", dtype="bfloat16" if device == "cuda" else "float32")
    lm.to(device)
    task = "gsm8k_cot_zeroshot" if (SHARED / "gsm8k" / "test.jsonl").is_file() else "arith_cot"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        evaluate(lm, tok, [load_task(task, data_path=str(SHARED))], Path(tmp), batch_size=64, limit=args.eval_limit)
        results["eval"] = {"task": task, "examples": args.eval_limit,
                           "examples_per_s": args.eval_limit / (time.time() - t0)}
    print(f"eval {task}: {results['eval']['examples_per_s']:.2f} ex/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
