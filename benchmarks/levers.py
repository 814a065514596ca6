"""Levers: `finetune train` with one setting changed at a time, against the defaults, same run.

    python benchmarks/levers.py --examples 32 --steps 8                   # LoRA on SmolLM2, GSM8K rows
    python benchmarks/levers.py --method freeze --only "backward to the embeddings"

Every variant trains the packaged SmolLM2-135M-Instruct with LoRA r16 on all linear layers
(or freeze-last-2 with --method freeze) on the first N GSM8K train rows, batch 4, in its own
process (so peak memory is its own).
Reported per variant: steady-state real tokens/s (steps 3..N, past warm-up and compilation),
whole-run tokens/s, peak RSS, and the ratio of each to the defaults measured in this run.
Writes benchmarks/results/levers.json.

Variants (one change each from the project's defaults):
    checkpoint every 3rd block train.gradient_checkpointing=true (what `auto` picks where memory is short)
    checkpoint every block     train.gradient_checkpointing=true, train.checkpoint_every=1 (TRL's default)
    LoRA dropout 0.05          method.dropout=0.05
    no speed paths             train.speed_paths=false: every path of finetune/speed/ off (TRL's plain path)
    TRL's CPU loss head        speed path loss_head off (finetune/speed/lmhead.py)
    backward to the embeddings checkpoint every 3rd block with speed path backward_stop off
                               (finetune/speed/perf.py; compare with "checkpoint every 3rd block")
    masked attention           padding-free rows through transformers' sdpa with a block-diagonal mask
                               (speed path attention off, finetune/speed/attention.py)
    PEFT's LoRA forward        speed path fused_lora off (finetune/speed/fused_lora.py: scale and sum as
                               separate passes)
    no malloc tuning           finetune/speed/perf.py's tune_allocator not applied
    group by length            SFTConfig train_sampling_strategy="group_by_length"
    fused AdamW                SFTConfig optim="adamw_torch_fused"
    1 thread                   torch.set_num_threads(1) (2 cores here)
    torch.compile              SFTConfig torch_compile=True
    padded batches             data.padding_free=false (rows padded to the longest in the batch)
    packing                    data.packing=true (examples packed into full rows: more per step)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GSM8K_RECIPE, METHODS, REPO, machine, need_shared, peak_rss_mib  # noqa: E402

from finetune.rundir import RunDir  # noqa: E402

VARIANTS = {
    "defaults": {},
    "checkpoint every 3rd block": {"overrides": ["train.gradient_checkpointing=true"]},
    "checkpoint every block": {"overrides": ["train.gradient_checkpointing=true", "train.checkpoint_every=1"]},
    "LoRA dropout 0.05": {"overrides": ["method.dropout=0.05"]},
    "no speed paths": {"overrides": ["train.speed_paths=false"]},
    "TRL's CPU loss head": {"speed_off": ["loss_head"]},
    "backward to the embeddings": {"speed_off": ["backward_stop"], "overrides": ["train.gradient_checkpointing=true"]},
    "masked attention": {"speed_off": ["attention"]},
    "PEFT's LoRA forward": {"speed_off": ["fused_lora"]},
    "no malloc tuning": {"no_malloc": True},
    "group by length": {"config": {"train_sampling_strategy": "group_by_length"}},
    "fused AdamW": {"config": {"optim": "adamw_torch_fused"}},
    "1 thread": {"threads": 1},
    "torch.compile": {"config": {"torch_compile": True, "torch_compile_backend": "inductor"}},
    "padded batches": {"overrides": ["data.padding_free=false"]},
    "packing": {"overrides": ["data.packing=true"]},
}


def child(variant: str, recipe: str) -> None:
    """Trains in this process as `finetune train` does, with the variant's change; step times go to the log."""
    import torch

    import finetune.train
    from finetune.recipe import load_recipe
    from finetune.speed.perf import tune_allocator

    spec = VARIANTS[variant]
    if not spec.get("no_malloc"):
        tune_allocator()  # as the finetune command does when it starts
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("config"):  # SFTConfig settings the recipe does not expose
        make = finetune.train.sft_config

        def patched(*args, **kwargs):
            config = make(*args, **kwargs)
            for key, value in spec["config"].items():
                setattr(config, key, value)
            return config
        finetune.train.sft_config = patched
    finetune.train.train(load_recipe(recipe, spec.get("overrides", [])), speed_off=spec.get("speed_off", ()))


def measure(variant: str, args, work: Path) -> dict:
    out = work / "run"
    recipe = work / "lever.yaml"
    recipe.write_text(GSM8K_RECIPE.format(
        dtype="float32", method=METHODS[args.method], data=need_shared("gsm8k/train.jsonl"),
        examples=args.examples, steps=args.steps, batch=4, accum=1, lr=2.0e-4,
        max_length=512, out=out, seed=42))
    run, rss = peak_rss_mib([sys.executable, __file__, "--child", variant, str(recipe)])
    run = RunDir(out)
    steps = [r for r in run.train_log() if "num_tokens" in r and "time" in r]
    first, last = steps[1], steps[-1]   # from the end of step 2: warm-up and compilation excluded
    manifest = run.manifest()
    return {"steady_tokens_per_s": (last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"]),
            "tokens_per_s": last["num_tokens"] / manifest["train_metrics"]["train_runtime"],
            "tokens": last["num_tokens"], "peak_rss_mib": rss, "final_loss": steps[-1].get("loss")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--method", choices=["lora", "freeze"], default="lora", help="lora r16 or freeze-last-2")
    ap.add_argument("--only", default="", help="comma-separated variant names (defaults always run)")
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "RECIPE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "levers.json"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    names = ["defaults"] + [n for n in VARIANTS if n != "defaults" and (not args.only or n in args.only.split(","))]
    results = {}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            r = results[name] = measure(name, args, Path(tmp))
        base = results["defaults"]
        print(f"{name:24s} steady {r['steady_tokens_per_s']:6.1f} tok/s ({r['steady_tokens_per_s'] / base['steady_tokens_per_s']:.2f}x)"
              f" | whole run {r['tokens_per_s']:6.1f} tok/s ({r['tokens_per_s'] / base['tokens_per_s']:.2f}x)"
              f" | peak RSS {r['peak_rss_mib']:6.0f} MiB ({r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
