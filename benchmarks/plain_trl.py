"""Baseline: what a practitioner writes with TRL alone, TRL's defaults kept.

    python benchmarks/plain_trl.py --model DIR --data gsm8k/train.jsonl --examples 256 --method lora --out DIR

Changed from TRL's `SFTConfig()` defaults, each only because it is needed here:
  - use_cpu=True, bf16=False: SFTConfig refuses to start on a CPU-only machine otherwise;
  - output_dir, report_to="none", save_strategy="no": no hub, no trackers, no checkpoints;
  - learning_rate, per_device_train_batch_size, gradient_accumulation_steps, max_steps,
    max_length, seed, logging_steps: set equal to the finetune run being compared.
Everything else is TRL's default (gradient checkpointing on, padding to the longest
example in the batch, completion-only loss for prompt/completion data, AdamW torch).
Prints one JSON line with the metrics. `--probe PATH` (train_throughput.py) adds benchmarks/common.py's
peak probe after every step; its time is subtracted by the caller.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--method", choices=["lora", "freeze"], default="lora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe", default=None, help="write common.peak_probe's per-step matmul peaks here")
    args = ap.parse_args()

    rows = [json.loads(l) for l in open(args.data)][: args.examples]
    # GSM8K as conversational prompt/completion, the format TRL's docs recommend
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}],
                             "completion": [{"role": "assistant", "content": r["answer"]}]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    peft_config = None
    if args.method == "lora":
        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    else:  # train the last 2 blocks, as a practitioner would by hand
        for p in model.parameters():
            p.requires_grad_(False)
        for block in model.model.layers[-2:]:
            for p in block.parameters():
                p.requires_grad_(True)
    steps = args.examples // (args.batch * args.grad_accum)
    config = SFTConfig(output_dir=args.out, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                       learning_rate=args.lr, per_device_train_batch_size=args.batch,
                       gradient_accumulation_steps=args.grad_accum, max_steps=steps, max_length=args.max_length,
                       seed=42, logging_steps=1)
    callbacks = []
    if args.probe:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import peak_probe
        callbacks.append(peak_probe(args.probe))
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    t0 = time.time()
    result = trainer.train()
    wall = time.time() - t0
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    trainer.model.save_pretrained(f"{args.out}/final")
    print(json.dumps({"name": "plain_trl", "train_s": wall, "tokens": tokens, "steps": steps,
                      "gradient_checkpointing": config.gradient_checkpointing,
                      "train_loss": result.metrics.get("train_loss"), "weights": f"{args.out}/final"}))


if __name__ == "__main__":
    main()
