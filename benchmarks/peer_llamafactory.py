"""Peer benchmark: `finetune train` vs LLaMA-Factory (`llamafactory-cli train`), freeze-last-2 and LoRA r16.

    python benchmarks/peer_llamafactory.py --lf-venv /work/lf-venv            # freeze, then LoRA
    python benchmarks/peer_llamafactory.py --seeds 42,1,2,3 --finetune-only   # finetune's held-out spread over seeds

Optional, not a project dependency: LLaMA-Factory lives in its own venv (it pins older
transformers/peft/trl/datasets); this script only runs its `llamafactory-cli` as a
subprocess. Install and CPU workarounds: benchmarks/README.md, "Peer: LLaMA-Factory".

Same for both tools:
  - model: the packaged SmolLM2-135M-Instruct folder (`resolve_model`), fp32 on CPU;
  - rows: the first N GSM8K train rows (../shared/data) whose full example fits in the
    cutoff (so neither tool truncates: their truncation rules differ), N = steps x batch,
    one epoch, so every row is trained exactly once by both whatever order they shuffle in;
  - template: SmolLM2's ChatML with its default system line. finetune uses the model's own
    chat template (`prompts/chat.yaml`); LLaMA-Factory its `smollm2` template with the
    system text passed per row, because LLaMA-Factory's default system line ends in a
    full stop and the model's chat template's does not. The script checks that the first
    example LLaMA-Factory prints (input_ids and labels) equals finetune's encoding;
  - trained tokens: the completion and its `<|im_end|>\\n`, prompt masked (both);
  - cutoff, batch, steps, learning rate, linear schedule, no warmup, AdamW, seed 42;
  - LoRA: r 16, alpha 32, dropout 0, all linear layers of the blocks; freeze: the last 2
    blocks trained, everything else frozen.
Everything else is each tool's default (LLaMA-Factory: gradient checkpointing on, padding
to the longest row of the batch rounded to a multiple of 8; finetune: padding-free rows,
checkpointing `auto`).

Reported per tool and method, from one invocation, the two tools interleaved (freeze:
finetune then LLaMA-Factory; LoRA: LLaMA-Factory then finetune):
  - real tokens/s = the non-padding tokens of the N rows (counted once, by this script,
    with the project's tokenizer) / the Trainer's `train_runtime` (both tools report the
    same HF Trainer metric); each tool's own token count is kept as a cross-check;
  - peak RSS: the child's ru_maxrss (wait4) and the polled RSS sum of its process tree;
  - the whole process's CPU seconds (user + system, startup and saving included): on a
    loaded machine a figure that depends less on the other processes than wall time;
  - final loss: the last logged step loss, the mean step loss (`train_loss`), and the
    held-out loss on the first K GSM8K test rows, the same code for both models
    (train_throughput.heldout_loss);
  - `uptime` load averages before and after each run (the reference VM is shared);
  - with `--seeds a,b,..`: finetune again with each further seed (data order, LoRA init),
    and the spread of its held-out loss, which a gap between the tools is read against.
Writes benchmarks/results/peer_llamafactory.json.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GSM8K_RECIPE, LORA_R, METHODS, REPO, load, need_shared, run_measured  # noqa: E402

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # the model's chat template's

LF_YAML = """\
model_name_or_path: {model}
stage: sft
do_train: true
{method}
dataset: peer_gsm8k
dataset_dir: {dataset_dir}
template: smollm2
cutoff_len: {cutoff}
overwrite_cache: true
preprocessing_num_workers: 1
output_dir: {out}
overwrite_output_dir: true
logging_steps: 1
save_strategy: "no"
plot_loss: false
report_to: none
include_num_input_tokens_seen: non_padding
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
learning_rate: {lr}
max_steps: {steps}
lr_scheduler_type: linear
warmup_ratio: 0.0
seed: {seed}
"""
LF_METHODS = {
    "freeze": "finetuning_type: freeze\nfreeze_trainable_layers: 2\nfreeze_trainable_modules: all",
    "lora": f"finetuning_type: lora\nlora_rank: {LORA_R}\nlora_alpha: {2 * LORA_R}\nlora_dropout: 0.0\n"
            "lora_target: all",
}


def select_rows(tok, cutoff: int, n: int) -> tuple[list[dict], list[dict]]:
    """The first n GSM8K train rows whose whole example fits in the cutoff, and their encodings."""
    from finetune.data.tokenize import encode_example
    from finetune.prompts import load_template

    template, rows, encs = load_template("chat"), [], []
    with open(need_shared("gsm8k/train.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            ex = encode_example(template, tok, r["question"], r["answer"])
            if len(ex["input_ids"]) <= cutoff:
                rows.append(r)
                encs.append(ex)
                if len(rows) == n:
                    break
    if len(rows) < n:
        sys.exit(f"only {len(rows)} GSM8K train rows fit in {cutoff} tokens; lower --steps/--batch")
    return rows, encs


def lf_first_example(log_text: str) -> tuple[list[int], list[int]]:
    """input_ids and label_ids of the example LLaMA-Factory prints before training."""
    ids = re.search(r"^input_ids:\n(\[[^\]]*\])", log_text, re.M)
    labels = re.search(r"^label_ids:\n(\[[^\]]*\])", log_text, re.M)
    return (json.loads(ids.group(1)) if ids else []), (json.loads(labels.group(1)) if labels else [])


def run_finetune(method: str, args, work: Path, data: Path, seed: int) -> dict:
    from finetune.rundir import RunDir

    out = work / f"ft_{method}_{seed}"
    recipe = work / f"ft_{method}_{seed}.yaml"
    recipe.write_text(GSM8K_RECIPE.format(
        dtype=args.dtype, method=METHODS[method], data=data, examples=args.rows, steps=args.steps,
        batch=args.batch, accum=1, lr=args.lr, max_length=args.cutoff, out=out, seed=seed))
    before = load()
    m = run_measured([sys.executable, "-m", "finetune.cli", "train", str(recipe)], work / f"ft_{method}_{seed}.log")
    m["load_before"], m["load_after"] = before, load()
    run = RunDir(out)
    manifest, logs = run.manifest(), run.train_log()
    steps = [r for r in logs if "loss" in r and "train_loss" not in r]
    m.update({"train_runtime_s": manifest["train_metrics"]["train_runtime"],
              "own_token_count": max(r.get("num_tokens", 0) for r in logs),
              "data_stats_tokens": manifest["data_stats"]["tokens"],
              "truncated_examples": manifest["data_stats"]["truncated_examples"],
              "last_step_loss": steps[-1]["loss"], "last_step": steps[-1]["step"],
              "train_loss": manifest["train_metrics"]["train_loss"],
              "gradient_checkpointing": manifest.get("gradient_checkpointing"),
              "precision": (manifest.get("precision") or {}).get("train"),
              "trainable": manifest.get("trainable"), "weights": str(run.weights_dir(method))})
    return m


def run_llamafactory(method: str, args, work: Path, model: str) -> dict:
    out = work / f"lf_{method}"
    cfg = work / f"lf_{method}.yaml"
    cfg.write_text(LF_YAML.format(model=model, method=LF_METHODS[method], dataset_dir=work / "lf_data",
                                  cutoff=args.cutoff, out=out, batch=args.batch, lr=args.lr, steps=args.steps,
                                  seed=args.seeds[0]))
    cli = Path(args.lf_venv) / "bin" / "llamafactory-cli"
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DISABLE_VERSION_CHECK": "1", "VIRTUAL_ENV": str(args.lf_venv),
           "PATH": f"{Path(args.lf_venv) / 'bin'}:{os.environ.get('PATH', '')}"}
    before = load()
    log = work / f"lf_{method}.log"
    m = run_measured([str(cli), "train", str(cfg)], log, env)
    m["load_before"], m["load_after"] = before, load()
    metrics = json.loads((out / "train_results.json").read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [r for r in history if "loss" in r and "train_loss" not in r]
    ids, labels = lf_first_example(log.read_text())
    m.update({"train_runtime_s": metrics["train_runtime"],
              "own_token_count": max((r.get("num_input_tokens_seen", 0) for r in history), default=None),
              "last_step_loss": steps[-1]["loss"], "last_step": steps[-1]["step"],
              "train_loss": metrics["train_loss"], "first_example": {"input_ids": ids, "label_ids": labels},
              "weights": str(out)})
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lf-venv", default=os.environ.get("LF_VENV", "/work/lf-venv"),
                    help="venv with llamafactory installed (bin/llamafactory-cli)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cutoff", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--dtype", default="float32", help="finetune's model.dtype (LLaMA-Factory trains fp32 on CPU); "
                    "auto: bf16 autocast where the CPU runs it fast")
    ap.add_argument("--methods", default="freeze,lora")
    ap.add_argument("--heldout", type=int, default=32, help="GSM8K test rows for the held-out loss (0: skip)")
    ap.add_argument("--work", default=None, help="keep run folders, logs and the converted data here (default: temp)")
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[42],
                    help="the first: both tools' seed; the others: finetune again with each, for the spread of its "
                         "held-out loss over data order (and LoRA init) that a gap between the tools is read against")
    ap.add_argument("--finetune-only", action="store_true", help="skip LLaMA-Factory (the seed spread alone)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "peer_llamafactory.json"))
    args = ap.parse_args()
    args.rows = args.steps * args.batch
    cli = Path(args.lf_venv) / "bin" / "llamafactory-cli"
    if not args.finetune_only and not cli.is_file():
        sys.exit(f"{cli} not found: install LLaMA-Factory in its own venv first (benchmarks/README.md)")

    from transformers import AutoTokenizer

    from finetune.model import resolve_model

    model = str(resolve_model("smollm2-135m-instruct"))
    tok = AutoTokenizer.from_pretrained(model)
    rows, encs = select_rows(tok, args.cutoff, args.rows)
    tokens = sum(len(e["input_ids"]) for e in encs)
    labelled = sum(sum(1 for x in e["labels"] if x != -100) for e in encs)
    print(f"{len(rows)} GSM8K rows <= {args.cutoff} tokens: {tokens} tokens, {labelled} trained", flush=True)

    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    (work / "lf_data").mkdir(parents=True, exist_ok=True)
    data = work / "gsm8k_rows.jsonl"   # the selected raw rows, for finetune's gsm8k dataset loader
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "lf_data" / "rows.json").write_text(json.dumps(
        [{"instruction": r["question"], "input": "", "output": r["answer"], "system": SYSTEM} for r in rows]))
    (work / "lf_data" / "dataset_info.json").write_text(json.dumps({"peer_gsm8k": {
        "file_name": "rows.json", "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                              "system": "system"}}}))
    lf_version = None if args.finetune_only else subprocess.run(
        [str(Path(args.lf_venv) / "bin" / "python"), "-c",
         "import llamafactory, transformers, peft, trl, torch; print(llamafactory.__version__,"
         " transformers.__version__, peft.__version__, trl.__version__, torch.__version__)"],
        capture_output=True, text=True).stdout.split()
    sides = ["finetune"] if args.finetune_only else ["finetune", "llamafactory"]

    results = []
    for i, method in enumerate(args.methods.split(",")):
        order = sides if i % 2 == 0 else sides[::-1]
        r = {"method": method, "order": order}
        for side in order:
            print(f"{method}: {side} ... (load {' '.join(f'{x:.1f}' for x in load())})", flush=True)
            r[side] = run_finetune(method, args, work, data, args.seeds[0]) if side == "finetune" else \
                run_llamafactory(method, args, work, model)
            r[side]["tokens_per_s"] = tokens / r[side]["train_runtime_s"]
            print(f"  {r[side]['tokens_per_s']:.1f} tok/s, train {r[side]['train_runtime_s']:.0f} s, "
                  f"wall {r[side]['wall_s']:.0f} s, process CPU {r[side]['cpu_s']:.0f} s, "
                  f"peak RSS {r[side]['maxrss_mib']:.0f} MiB", flush=True)
        r["finetune_other_seeds"] = [{"seed": s, **run_finetune(method, args, work, data, s)} for s in args.seeds[1:]]
        if "llamafactory" in r:
            first = r["llamafactory"]["first_example"]
            r["first_example_identical"] = first["input_ids"] == encs[0]["input_ids"] and \
                first["label_ids"] == encs[0]["labels"]
        results.append(r)
    if args.heldout:
        from train_throughput import heldout_loss

        test = [json.loads(line) for line in open(need_shared("gsm8k/test.jsonl"))][: args.heldout]
        for r in results:
            for side in [*sides, *r["finetune_other_seeds"]]:
                run = r[side] if isinstance(side, str) else side
                run["heldout_loss"] = heldout_loss(run["weights"], model, test)
            spread = [r["finetune"]["heldout_loss"]] + [s["heldout_loss"] for s in r["finetune_other_seeds"]]
            r["finetune_heldout_over_seeds"] = {"seeds": args.seeds, "heldout_loss": spread,
                                                "min": min(spread), "max": max(spread)}
            print(f"{r['method']}: finetune held-out loss over seeds {args.seeds}: "
                  f"{', '.join(f'{x:.4f}' for x in spread)}", flush=True)
    for r in results:
        if args.finetune_only:
            continue
        f, p = r["finetune"], r["llamafactory"]
        r["ratios"] = {"tokens_per_s": f["tokens_per_s"] / p["tokens_per_s"],
                       "maxrss": f["maxrss_mib"] / p["maxrss_mib"],
                       "process_cpu_s": f["cpu_s"] / p["cpu_s"],
                       "tree_peak_rss": f["tree_peak_rss_mib"] / p["tree_peak_rss_mib"]}
        held = f" | held-out loss {f['heldout_loss']:.4f} vs {p['heldout_loss']:.4f}" if args.heldout else ""
        print(f"{r['method']}: finetune {f['tokens_per_s']:.1f} vs LLaMA-Factory {p['tokens_per_s']:.1f} tok/s = "
              f"{r['ratios']['tokens_per_s']:.2f}x | peak RSS {f['maxrss_mib']:.0f} vs {p['maxrss_mib']:.0f} MiB "
              f"({r['ratios']['maxrss']:.2f}x) | last step loss {f['last_step_loss']:.4f} vs "
              f"{p['last_step_loss']:.4f}, mean {f['train_loss']:.4f} vs {p['train_loss']:.4f}{held} | "
              f"first example identical: {r['first_example_identical']}", flush=True)
    from common import machine

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "llamafactory_venv": lf_version, "args": vars(args),
                               "rows": len(rows), "tokens": tokens, "trained_tokens": labelled,
                               "results": results}, indent=2, default=str))
    print(f"wrote {out}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
