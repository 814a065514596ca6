"""Where one training step's time goes: `torch.profiler` around one step of `finetune train`.

    python benchmarks/profile_step.py --method lora            # LoRA r16, step 3 of 4, GSM8K rows, batch 4
    python benchmarks/profile_step.py --method freeze --step 2
    python benchmarks/profile_step.py --method lora --precision bfloat16   # bf16 autocast (what `auto` picks on a bf16 CPU)

Trains the packaged SmolLM2-135M-Instruct on the first GSM8K train rows as train_throughput.py
does (fp32, padding-free rows, the project's defaults), profiles the chosen optimizer step
and prints: the step's wall time and tokens, the ops by self CPU time (share of the step and
GFLOP/s where the profiler counts FLOPs), and the matmuls and element-wise ops by input shape.
The profiler's own overhead falls mostly on the many small ops, so their shares read high;
the unprofiled steps' times are printed beside it. Nothing is written.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GSM8K_RECIPE, METHODS, matmul_peak_gflops, need_shared  # noqa: E402

SHAPED = ("aten::mm", "aten::addmm", "aten::mul", "aten::add", "aten::copy_", "aten::silu_backward")


def report(prof, wall: float, tokens: int, top: int) -> None:
    ops = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ops)
    print(f"profiled step: {tokens} tokens, {wall:.2f} s wall, {total / 1e6:.2f} s self CPU time")
    for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:top]:
        rate = e.flops / e.self_cpu_time_total / 1e3 if e.flops and e.self_cpu_time_total else 0.0
        print(f"  {e.key[:44]:44s} {e.self_cpu_time_total / 1e6:7.3f} s {100 * e.self_cpu_time_total / total:5.1f}%"
              f"  calls {e.count:5d}" + (f"  {rate:6.1f} GFLOP/s" if rate else ""))
    print("by input shape:")
    shaped = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in SHAPED]
    for e in sorted(shaped, key=lambda e: -e.self_cpu_time_total)[:top]:
        rate = e.flops / e.self_cpu_time_total / 1e3 if e.flops and e.self_cpu_time_total else 0.0
        print(f"  {e.key:20s} {str(e.input_shapes)[:64]:64s} {e.self_cpu_time_total / 1e6:6.3f} s  calls {e.count:4d}"
              + (f"  {rate:6.1f} GFLOP/s" if rate else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=sorted(METHODS), default="lora")
    ap.add_argument("--step", type=int, default=3, help="which optimizer step to profile (1 = the first)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                    help="what model.dtype auto is pinned to ($FINETUNE_AUTO_PRECISION): fp32, or bf16 autocast")
    args = ap.parse_args()
    if not 1 <= args.step <= args.steps:
        sys.exit(f"--step must be between 1 and --steps ({args.steps})")

    import finetune.train
    from finetune import precision
    from finetune.recipe import load_recipe
    from finetune.speed.perf import tune_allocator
    from finetune.trainer import FinetuneTrainer

    tune_allocator()
    os.environ[precision.PIN_ENV] = args.precision
    step_fn, seen = FinetuneTrainer.training_step, []

    def training_step(self, model, inputs, num_items_in_batch=None):
        seen.append(int(inputs["input_ids"].numel()))
        t0 = time.perf_counter()
        if len(seen) != args.step:
            out = step_fn(self, model, inputs, num_items_in_batch)
            print(f"step {len(seen)}: {seen[-1]} tokens, {time.perf_counter() - t0:.2f} s", flush=True)
            return out
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True,
                                    record_shapes=True) as prof:
            out = step_fn(self, model, inputs, num_items_in_batch)
        report(prof, time.perf_counter() - t0, seen[-1], args.top)
        return out

    FinetuneTrainer.training_step = training_step
    print(f"fp32 matmul peak before: {matmul_peak_gflops():.1f} GFLOP/s, bf16 "
          f"{matmul_peak_gflops(dtype=torch.bfloat16):.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "profile.yaml"
        recipe.write_text(GSM8K_RECIPE.format(
            dtype="auto", method=METHODS[args.method], data=need_shared("gsm8k/train.jsonl"),
            examples=args.steps * args.batch, steps=args.steps, batch=args.batch, accum=1, lr=2e-4,
            max_length=512, out=Path(tmp) / "run", seed=42))
        finetune.train.train(load_recipe(recipe))
    print(f"fp32 matmul peak after: {matmul_peak_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
