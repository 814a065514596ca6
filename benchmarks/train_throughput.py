"""Training throughput: `finetune train` (this project's defaults) vs plain TRL (TRL's defaults).

    python benchmarks/train_throughput.py --examples 256          # LoRA, then freeze-last-2

Same model (packaged SmolLM2-135M-Instruct), same data (GSM8K train from ../shared/data,
first N rows), same optimizer (AdamW), learning rate, effective batch and number of
examples. Reports real (non-padding) tokens/s, peak RSS, held-out loss after training
(64 GSM8K test rows, completion tokens, same code for both models), and MFU against
this machine's measured fp32 matmul peak. Writes benchmarks/results/train_throughput.json.

The matmul peak of a shared 2-core VM moves by up to 2x within minutes (70 GFLOP/s before a
4-minute LoRA run, 34 right after it, on 2026-12-03), so both sides train with
`common.peak_probe`: after every optimizer step, matmul_peak_gflops over 0.2 s (2048-cube, fp32).
Each side's MFU is against the step-time-weighted mean of its own probes, and its tokens/s
is over its training time less the probes' (~0.5 s a step). `speedup_at_equal_peak` is the
tokens/s ratio with each side divided by its own probed peak (the ratio of the MFUs): the
drift taken out of the ratio. MFU against the highest peak
seen in the whole benchmark is reported too (`mfu_vs_highest_peak`), the conservative
figure, and against the mean of the peaks measured right before and right after the run
(`mfu_before_after`, the figure this script reported before the probe). `fast_phase`: the
MFU over the steps whose probe read >= 90% of that run's highest (each step's own tokens and
time, so without logging and data loading between steps), the figure to read when the VM
spent part of the run slowed: there the step slows less than the matmul probe does.

Model FLOPs per token (N = linear weights in the blocks, H = the LM head, A = attention
score/value products 2 * layers * seq * d, c = fraction of tokens that carry a label: the
head is needed only where there is a loss):
    forward                        2N + 2Hc + A
    full finetune                  3 x forward
    LoRA (frozen base, adapters)   2 x forward (activation gradients everywhere) + 6 r (i + o)
                                   per adapted i -> o projection: the rank-r adapter's two
                                   products, their weight gradients and their input gradients
                                   (r = 16, all linear layers: +29 MFLOP on SmolLM2, ~6%)
    freeze last k blocks           forward + 2Hc + 2 x (2 N_k + A_k): activation and weight
                                   gradients only in the last k blocks (and through the head)
The same count is used for both sides; recomputation (gradient checkpointing) and work
on prompt positions of the head are not useful FLOPs and are not counted.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (GSM8K_RECIPE, LORA_R, METHODS, REPO, machine, matmul_peak_gflops, need_shared,  # noqa: E402
                    peak_probe, peak_rss_mib, probed_mfu)

from finetune.rundir import RunDir  # noqa: E402


def flops_per_token(model, method: str, seq: float, head_fraction: float = 1.0, k: int = 2,
                    lora_r: int = LORA_R) -> float:
    blocks = model.model.layers
    linears = lambda mods: [m for m in mods.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    n, h = sum(m.weight.numel() for m in linears(blocks)), model.lm_head.weight.numel() * head_fraction
    d, layers = model.config.hidden_size, len(blocks)
    attn = 2 * layers * seq * d
    fwd = 2 * n + 2 * h + attn
    if method == "full":
        return 3 * fwd
    if method == "lora":
        return 2 * fwd + 6 * lora_r * sum(m.in_features + m.out_features for m in linears(blocks))
    n_k = sum(m.weight.numel() for m in linears(blocks[-k:]))
    return fwd + 2 * h + 2 * (2 * n_k + 2 * k * seq * d)


def heldout_loss(weights: str, base: str, rows: list[dict]) -> float:
    """Mean completion-token loss on held-out rows, identical code for both runs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.data.tokenize import encode_example
    from finetune.prompts import load_template

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if (Path(weights) / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, weights)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    model.eval()
    template, total, count = load_template("chat"), 0.0, 0
    with torch.no_grad():
        for r in rows:
            ex = encode_example(template, tok, r["question"], r["answer"])
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            logits = model(ids).logits[0, :-1]
            tgt = labels[0, 1:]
            mask = tgt != -100
            total += torch.nn.functional.cross_entropy(logits[mask], tgt[mask], reduction="sum").item()
            count += int(mask.sum())
    return total / count


def run_pair(method: str, args, work: Path) -> dict:
    from finetune.model import resolve_model

    base = resolve_model("smollm2-135m-instruct")
    data = need_shared("gsm8k/train.jsonl")
    steps = args.examples // (args.batch * args.grad_accum)
    recipe = work / f"{method}.yaml"
    recipe.write_text(GSM8K_RECIPE.format(
        dtype="float32", method=METHODS[method], data=data, examples=args.examples, steps=steps,
        batch=args.batch, accum=args.grad_accum, lr=args.lr,
        max_length=args.max_length, out=work / f"ft_{method}", seed=42))
    probes = {side: work / f"probe_{side}_{method}.json" for side in ("finetune", "plain_trl")}
    peaks = {"finetune": [matmul_peak_gflops()]}
    ours, ours_rss = peak_rss_mib([sys.executable, __file__, "--child", str(recipe), str(probes["finetune"])])
    peaks["finetune"].append(matmul_peak_gflops())
    run = RunDir(work / f"ft_{method}")
    manifest = run.manifest()
    ours_tokens = max(r.get("num_tokens", 0) for r in run.train_log())
    ours_s = manifest["train_metrics"]["train_runtime"]
    peaks["plain_trl"] = [matmul_peak_gflops()]
    trl, trl_rss = peak_rss_mib([sys.executable, str(REPO / "benchmarks" / "plain_trl.py"), "--model", base,
                                 "--data", str(data), "--examples", str(args.examples), "--method", method,
                                 "--batch", str(args.batch), "--grad-accum", str(args.grad_accum),
                                 "--lr", str(args.lr), "--max-length", str(args.max_length),
                                 "--out", str(work / f"trl_{method}"), "--probe", str(probes["plain_trl"])])
    peaks["plain_trl"].append(matmul_peak_gflops())
    rows = [json.loads(l) for l in open(need_shared("gsm8k/test.jsonl"))][:64]
    ours_w = run.weights_dir(method)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base)
    seq = ours_tokens / args.examples
    fpt = flops_per_token(model, method, seq, manifest["data_stats"]["trained_fraction"])
    result = {"method": method, "examples": args.examples, "steps": steps, "flops_per_token": fpt,
              "trained_fraction": manifest["data_stats"]["trained_fraction"],
              "finetune": {"tokens": ours_tokens, "train_s": ours_s, "peak_rss_mib": ours_rss,
                           "heldout_loss": heldout_loss(str(ours_w), base, rows)},
              "plain_trl": {"tokens": trl["json"]["tokens"], "train_s": trl["json"]["train_s"],
                            "peak_rss_mib": trl_rss, "heldout_loss": heldout_loss(trl["json"]["weights"], base, rows),
                            "gradient_checkpointing": trl["json"]["gradient_checkpointing"]}}
    for side in ("finetune", "plain_trl"):
        r = result[side]
        r.update(probed_mfu(probes[side], fpt, r["tokens"], r["train_s"]))
        r["peak_gflops_before_after"] = list(peaks[side])   # the figure before the probe: mean of the two
        r["mfu_before_after"] = fpt * r["tokens_per_s"] / (sum(peaks[side]) / 2 * 1e9)
        peaks[side] += [p["peak_gflops"] for p in r["probes"]]
    result["speedup"] = result["finetune"]["tokens_per_s"] / result["plain_trl"]["tokens_per_s"]
    # the same ratio with each side's tokens/s divided by its own probed peak: the VM's drift taken out
    result["speedup_at_equal_peak"] = result["finetune"]["mfu"] / result["plain_trl"]["mfu"]
    return result, [p for side in peaks.values() for p in side]


def child(recipe: str, probe: str) -> None:
    """`finetune train RECIPE` in this process, as the command runs it, with the peak probe after every step."""
    import finetune.train
    from finetune.recipe import load_recipe
    from finetune.speed.perf import tune_allocator

    tune_allocator()  # as the finetune command does when it starts
    make = finetune.train.make_trainer

    def with_probe(*a, callbacks=(), **kw):
        return make(*a, callbacks=[*callbacks, peak_probe(Path(probe))], **kw)
    finetune.train.make_trainer = with_probe
    finetune.train.train(load_recipe(recipe))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--methods", default="lora,freeze")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    ap.add_argument("--child", nargs=2, metavar=("RECIPE", "PROBE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    args.peak_gflops = matmul_peak_gflops()
    print(f"measured fp32 matmul peak: {args.peak_gflops:.1f} GFLOP/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            r, peaks = run_pair(method, args, Path(tmp))
            args.peak_gflops = max(args.peak_gflops, *peaks)
            results.append(r)
            fast = {side: r[side].get("fast_phase") for side in ("finetune", "plain_trl")}
            if all(fast.values()):
                print(f"{method}: fast-phase MFU (steps probed >= 90% of the run's highest peak, step time "
                      f"only): finetune {100 * fast['finetune']['mfu']:.0f}% over {fast['finetune']['steps']}/"
                      f"{fast['finetune']['of']} steps, plain TRL {100 * fast['plain_trl']['mfu']:.0f}% over "
                      f"{fast['plain_trl']['steps']}/{fast['plain_trl']['of']}", flush=True)
            f, t = r["finetune"], r["plain_trl"]
            print(f"{method}: finetune {f['tokens_per_s']:.1f} tok/s vs plain TRL {t['tokens_per_s']:.1f} tok/s "
                  f"= {r['speedup']:.2f}x ({r['speedup_at_equal_peak']:.2f}x at equal probed peak) | peak RSS {f['peak_rss_mib']:.0f} vs {t['peak_rss_mib']:.0f} MiB | "
                  f"held-out loss {f['heldout_loss']:.4f} vs {t['heldout_loss']:.4f} | "
                  f"MFU {100 * f['mfu']:.0f}% vs {100 * t['mfu']:.0f}% (probed peak {f['probed_peak_gflops']:.0f} and "
                  f"{t['probed_peak_gflops']:.0f} GFLOP/s, ranges {f['probed_peak_min_max'][0]:.0f}-"
                  f"{f['probed_peak_min_max'][1]:.0f} and {t['probed_peak_min_max'][0]:.0f}-"
                  f"{t['probed_peak_min_max'][1]:.0f})", flush=True)
    for r in results:   # against the highest peak seen in the whole benchmark: the conservative figure
        for side in ("finetune", "plain_trl"):
            r[side]["mfu_vs_highest_peak"] = r["flops_per_token"] * r[side]["tokens_per_s"] / (args.peak_gflops * 1e9)
        print(f"{r['method']}: MFU against the highest peak measured ({args.peak_gflops:.1f} GFLOP/s): "
              f"{100 * r['finetune']['mfu_vs_highest_peak']:.0f}% vs {100 * r['plain_trl']['mfu_vs_highest_peak']:.0f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "peak_gflops": args.peak_gflops, "args": vars(args),
                               "results": results}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
