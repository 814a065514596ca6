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
    TRL's CPU loss head        the compact head (finetune/lmhead.py) not installed
    backward to the embeddings checkpoint every 3rd block without finetune/perf.py's stop_input_grads
                               (compare with "checkpoint every 3rd block")
    masked attention           padding-free rows through transformers' sdpa with a block-diagonal mask
                               (finetune/attention.py not used)
    PEFT's LoRA forward        finetune/fused_lora.py not used (scale and sum as separate passes)
    no malloc tuning           finetune/perf.py's tune_allocator not applied
    group by length            SFTConfig train_sampling_strategy="group_by_length"
    fused AdamW                SFTConfig optim="adamw_torch_fused"
    1 thread                   torch.set_num_threads(1) (2 cores here)
    torch.compile              SFTConfig torch_compile=True
    padded batches             data.padding_free=false (rows padded to the longest in the batch)
    packing                    data.packing=true (examples packed into full rows: more per step)
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GSM8K_RECIPE, METHODS, REPO, machine, need_shared, peak_rss_mib  # noqa: E402

VARIANTS = {
    "defaults": {},
    "checkpoint every 3rd block": {"overrides": ["train.gradient_checkpointing=true"]},
    "checkpoint every block": {"overrides": ["train.gradient_checkpointing=true", "train.checkpoint_every=1"]},
    "LoRA dropout 0.05": {"overrides": ["method.dropout=0.05"]},
    "TRL's CPU loss head": {"trl_head": True},
    "backward to the embeddings": {"keep_input_grads": True, "overrides": ["train.gradient_checkpointing=true"]},
    "masked attention": {"masked_attention": True},
    "PEFT's LoRA forward": {"peft_forward": True},
    "no malloc tuning": {"no_malloc": True},
    "group by length": {"config": {"train_sampling_strategy": "group_by_length"}},
    "fused AdamW": {"config": {"optim": "adamw_torch_fused"}},
    "1 thread": {"threads": 1},
    "torch.compile": {"config": {"torch_compile": True, "torch_compile_backend": "inductor"}},
    "padded batches": {"overrides": ["data.padding_free=false"]},
    "packing": {"overrides": ["data.packing=true"]},
}


def child(variant: str, recipe: str) -> None:
    """Runs `finetune train` in this process with the variant's change; step times go to the log."""
    import torch

    import finetune.attention
    import finetune.fused_lora
    import finetune.lmhead
    import finetune.perf
    import finetune.train
    import finetune.trainer
    from finetune import cli

    spec = VARIANTS[variant]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("trl_head"):
        finetune.lmhead.add_compact_lm_head = lambda model: False
    if spec.get("keep_input_grads"):
        finetune.perf.stop_input_grads = lambda model, kwargs: None
    if spec.get("masked_attention"):
        finetune.attention.segment_attention = contextlib.nullcontext
    if spec.get("peft_forward"):
        finetune.fused_lora.fused_lora = lambda model: contextlib.nullcontext(0)
    if spec.get("no_malloc"):
        finetune.perf.tune_allocator = lambda: False
    if spec.get("config"):
        make = finetune.train.sft_config

        def patched(*args, **kwargs):
            config = make(*args, **kwargs)
            for key, value in spec["config"].items():
                setattr(config, key, value)
            return config
        finetune.train.sft_config = patched
    on_log = finetune.trainer.TrainLog.on_log
    finetune.trainer.TrainLog.on_log = lambda self, args, state, control, logs=None, **kw: on_log(
        self, args, state, control, logs={**(logs or {}), "t": time.time()}, **kw)
    sys.exit(cli.main(["train", recipe, *spec.get("overrides", [])]))


def measure(variant: str, args, work: Path) -> dict:
    out = work / "run"
    recipe = work / "lever.yaml"
    recipe.write_text(GSM8K_RECIPE.format(method=METHODS[args.method], data=need_shared("gsm8k/train.jsonl"),
                                          examples=args.examples, steps=args.steps, batch=4, accum=1, lr=2.0e-4,
                                          max_length=512, out=out))
    run, rss = peak_rss_mib([sys.executable, __file__, "--child", variant, str(recipe)])
    log = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "num_tokens" in r and "t" in r]
    first, last = steps[1], steps[-1]   # from the end of step 2: warm-up and compilation excluded
    manifest = json.loads((out / "manifest.json").read_text())
    return {"steady_tokens_per_s": (last["num_tokens"] - first["num_tokens"]) / (last["t"] - first["t"]),
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
