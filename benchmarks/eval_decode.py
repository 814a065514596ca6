"""Eval decode, side by side in one process: transformers' `model.generate` vs the batched and continuous decoders.

    python benchmarks/eval_decode.py                                # 40 GSM8K docs, slots 16 and 32, fp32 + bf16
    python benchmarks/eval_decode.py --limit 4 --max-new-tokens 16  # smoke run: the whole path, short
    python benchmarks/eval_decode.py --dtypes float32 --passes 1    # fp32 only, one pass
    python benchmarks/eval_decode.py --limit 200 --dtypes float32 --passes 1 --decoders continuous \
        --batch-sizes 128 --baseline-slots 16                       # the default slots vs generate at 16

Issue #17 s1 ("generation eval close to the compute limit"). The packaged SmolLM2-135M-Instruct on
the first `--limit` GSM8K test documents of `gsm8k_cot_zeroshot` (eval/gsm8k_cot_zeroshot.yaml:
greedy, up to 256 new tokens, stop at "Question:"), each prompt rendered and encoded with the calls
the harness's generation runner makes (`render_prompt`, `encode_prompt`, left-truncated to the
window less max_new_tokens: finetune/eval/runners.py). A variant is one call of
`generate_batch(..., decoder=D, slots=B)` over all the documents (finetune/eval/generate.py):

- generate    `model.generate` per length-sorted batch of B: the baseline, at the first batch size only
- batched     the shared-prefix decoder per length-sorted batch of B, finished rows retired
- continuous  B slots, each refilled with the next prompt as its row stops (the harness's default)

in each of `--dtypes` (bf16: the fp32 weights cast by `precision.cast_for_eval`, what `auto` does
for evaluation). `--passes` (default 2) run the whole list of variants, every second pass in reverse
order (ABBA), so drift on a shared machine does not favour one side; a variant's tokens/s is its
tokens over its seconds summed over the passes. An untimed warm-up (2 documents, 8 new tokens, each
decoder and dtype) runs first; the meter measures each dtype's matmul peak once, right after that
dtype's first warm-up run. The load average (`os.getloadavg`) is recorded before and after each run.

Per variant: generated tokens (sum of Generation.n_tokens, what the harness's meter counts),
seconds, tokens/s, decode MFU as the harness reports it (finetune/eval/meter.py: tokens/s x 2N over
the dense matmul peak measured in this process for the dtype in use), the ratio to `generate` in
the same dtype, how many greedy outputs are identical to `generate`'s (and the first doc ids that
differ); for bf16 also the agreement with fp32 `continuous` at the same B. The fp32 ceiling the
issue uses is peak_fp32 / 2N tokens/s; each variant's fraction of it is reported too (for fp32
variants it equals their decode MFU). Writes benchmarks/results/eval_decode.json (`--out`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, load, machine, need_shared  # noqa: E402

from finetune import precision  # noqa: E402
from finetune.eval import meter  # noqa: E402
from finetune.eval.generate import DECODERS, generate_batch  # noqa: E402

TASK = "gsm8k_cot_zeroshot"
BASELINE = "generate"
WARMUP_DOCS, WARMUP_TOKENS = 2, 8
SHOW_DIFFERING = 10  # doc ids listed per comparison


def encode_docs(model, tokenizer, task, docs, max_new_tokens: int) -> list[list[int]]:
    """Each document's prompt ids, exactly as the harness's generation runner builds them."""
    from finetune.eval.runners import generation_prompts
    from finetune.prompts import load_template

    items = generation_prompts(model, tokenizer, task, load_template(task.prompt_template), docs, max_new_tokens)
    return [ids for _, _, _, ids, _ in items]


def schedule(dtypes: list[str], sizes: list[int], passes: int, decoders: tuple[str, ...] = DECODERS,
             baseline_slots: int | None = None) -> list[tuple[int, str, str, int]]:
    """(pass, dtype, decoder, slots) in run order: the baseline first, at `baseline_slots` only (default: the
    first size); even passes reversed."""
    decoders = sorted({BASELINE, *decoders}, key=lambda d: (d != BASELINE, DECODERS.index(d)))
    base = [baseline_slots or sizes[0]]
    one = [(dt, d, b) for dt in dtypes for d in decoders for b in (base if d == BASELINE else sizes)]
    return [(p, *v) for p in range(1, passes + 1) for v in (one if p % 2 else one[::-1])]


def run_once(model, tokenizer, prompts, dtype: str, decoder: str, slots: int, kw: dict) -> dict:
    """One `generate_batch` over all prompts in `dtype`, counted and timed by the harness's DecodeMeter."""
    before = load()
    with precision.cast_for_eval(model, dtype):
        m = meter.DecodeMeter(model)
        gens = generate_batch(model, tokenizer, prompts, slots=slots, decoder=decoder,
                              on_done=lambda i, g: m.add(sum(x.n_tokens for x in g)), **kw)
        figures = m.summary()
    tokens = sum(g[0].n_tokens for g in gens)
    assert tokens == figures["generated_tokens"], (tokens, figures)
    return {"tokens": tokens, "seconds": figures["seconds"], "tokens_per_s": figures["tokens_per_s"],
            "truncated": sum(g[0].truncated for g in gens), "load_before": before, "load_after": load(),
            "outputs": [g[0].text for g in gens]}


def agreement(outputs: list[str], reference: list[str], doc_ids: list[int]) -> dict:
    differ = [d for d, a, b in zip(doc_ids, outputs, reference, strict=True) if a != b]
    return {"identical": len(doc_ids) - len(differ), "n": len(doc_ids), "first_differing": differ[:SHOW_DIFFERING]}


def summarise(runs: dict, doc_ids: list[int], baseline_slots: int, flops: int, peaks: dict) -> list[dict]:
    """Per variant: summed tokens and seconds over its passes, MFU, ratio and agreement with the baselines."""
    ceiling = peaks["float32"] * 1e9 / flops
    out = []
    for (dtype, decoder, slots), parts in runs.items():
        tokens, seconds = sum(p["tokens"] for p in parts), sum(p["seconds"] for p in parts)
        tps, outputs = tokens / seconds, parts[0]["outputs"]
        base = runs[(dtype, BASELINE, baseline_slots)]
        base_tps = sum(p["tokens"] for p in base) / sum(p["seconds"] for p in base)
        row = {"dtype": dtype, "decoder": decoder, "slots": slots, "tokens": tokens, "seconds": round(seconds, 3),
               "tokens_per_s": round(tps, 2), "decode_mfu": tps * flops / (peaks[dtype] * 1e9),
               "fp32_ceiling_fraction": tps / ceiling, "vs_generate": round(tps / base_tps, 3),
               "identical_to_generate": agreement(outputs, base[0]["outputs"], doc_ids),
               "same_outputs_every_pass": all(p["outputs"] == outputs for p in parts),
               "truncated": parts[0]["truncated"],
               "passes": [{k: v for k, v in p.items() if k != "outputs"} for p in parts]}
        fp32 = runs.get(("float32", "continuous", slots))
        if dtype != "float32" and fp32:
            row["identical_to_fp32_continuous"] = agreement(outputs, fp32[0]["outputs"], doc_ids)
        if decoder == BASELINE:
            row["outputs"] = dict(zip(map(str, doc_ids), outputs))
        else:  # only where it differs from the baseline, to keep the file readable
            row["differing_outputs"] = {str(d): o for d, o, b in zip(doc_ids, outputs, base[0]["outputs"]) if o != b}
        out.append(row)
    return out


def table(rows: list[dict], ceiling: float) -> str:
    def agree(a: dict | None) -> str:
        if a is None:
            return "-"
        first = f" (first differing: {', '.join(map(str, a['first_differing'][:3]))})" if a["first_differing"] else ""
        return f"{a['identical']}/{a['n']}{first}"

    head = (f"{'dtype':<9} {'decoder':<10} {'slots':>5} {'tokens':>7} {'s':>8} {'tok/s':>8} {'vs gen':>7} "
            f"{'MFU':>6} {'fp32 ceil':>9}  {'= generate':<34} = fp32 continuous")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['dtype']:<9} {r['decoder']:<10} {r['slots']:>5} {r['tokens']:>7} {r['seconds']:>8.1f} "
                     f"{r['tokens_per_s']:>8.1f} {r['vs_generate']:>6.2f}x {100 * r['decode_mfu']:>5.1f}% "
                     f"{100 * r['fp32_ceiling_fraction']:>8.1f}%  {agree(r['identical_to_generate']):<34} "
                     f"{agree(r.get('identical_to_fp32_continuous'))}")
    lines.append(f"fp32 ceiling (peak_fp32 / 2N): {ceiling:.1f} tokens/s")
    return "\n".join(lines)


def measure(model, tokenizer, prompts: list[list[int]], args, kw: dict) -> tuple[dict, dict]:
    """Warm-up, then every variant in schedule order; {(dtype, decoder, slots): [run per pass]} and the peaks."""
    n = min(WARMUP_DOCS, len(prompts))
    for dtype in args.dtypes:  # the meter measures each dtype's peak right after its first (warm-up) run
        for decoder in DECODERS:
            run_once(model, tokenizer, prompts[:n], dtype, decoder, n, {**kw, "max_new_tokens": WARMUP_TOKENS})
    peaks = {dt: meter.peak_gflops(getattr(torch, dt)) for dt in dict.fromkeys(["float32", *args.dtypes])}
    runs: dict = {}
    for p, dtype, decoder, slots in schedule(args.dtypes, args.batch_sizes, args.passes, args.decoders,
                                             args.baseline_slots):
        r = run_once(model, tokenizer, prompts, dtype, decoder, slots, kw)
        runs.setdefault((dtype, decoder, slots), []).append({"pass": p, **r})
        print(f"pass {p} {dtype} {decoder} slots {slots}: {r['tokens']} tokens in {r['seconds']:.1f} s = "
              f"{r['tokens_per_s']} tok/s, load {r['load_before']} -> {r['load_after']}", flush=True)
    return runs, peaks


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40, help="the first N GSM8K test documents")
    ap.add_argument("--batch-sizes", type=csv(int), default=[16, 32],
                    help="slots (rows decoded together), comma-separated; the generate baseline at the first only")
    ap.add_argument("--baseline-slots", type=int, default=None,
                    help="the generate baseline's batch size instead (it then runs at that size only)")
    ap.add_argument("--dtypes", type=csv(str), default=["float32", "bfloat16"], help="float32, bfloat16, float16")
    ap.add_argument("--decoders", type=csv(str), default=list(DECODERS),
                    help=f"decoders to time besides the baseline ({BASELINE}, always run): {', '.join(DECODERS)}")
    ap.add_argument("--passes", type=int, default=2, help="runs of every variant, every second pass reversed (ABBA)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's (256)")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="any spec finetune.model.load_model takes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/eval_decode.json")
    args = ap.parse_args(argv)
    bad = [d for d in args.dtypes if d not in ("float32", "bfloat16", "float16")]
    bad += [d for d in args.decoders if d not in DECODERS]
    if bad or not args.dtypes or not args.batch_sizes or min(args.batch_sizes) < 1 or args.passes < 1 \
            or (args.baseline_slots is not None and args.baseline_slots < 1):
        ap.error(f"need dtypes among float32, bfloat16, float16 (got {args.dtypes}), decoders among "
                 f"{', '.join(DECODERS)} (got {args.decoders}), batch sizes >= 1, passes >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    from finetune.eval.continuous import supports
    from finetune.eval.tasks import load_task
    from finetune.model import load_model
    from finetune.speed.perf import tune_allocator

    args = parse(argv)
    tune_allocator()  # as the `finetune` command does
    if args.threads:  # on a machine another job shares, fewer threads than cores avoid waiting on a descheduled one
        torch.set_num_threads(args.threads)
    need_shared("gsm8k/test.jsonl")
    started, load_start = time.time(), load()
    model, tokenizer = load_model(args.model, dtype="float32")
    task = load_task(TASK, data_path=str(SHARED))
    gen = task.generation
    if task.repeats != 1 or float(gen["temperature"]) > 0:
        sys.exit(f"{TASK}: not greedy with one generation per document; the decoders compared here are greedy")
    max_new = args.max_new_tokens or gen["max_new_tokens"]
    docs = task.docs(args.limit)
    prompts = encode_docs(model, tokenizer, task, docs, max_new)
    runs, peaks = measure(model, tokenizer, prompts, args, dict(max_new_tokens=max_new, until=list(gen["until"])))
    flops = meter.DecodeMeter(model).flops_per_token  # 2N
    rows = summarise(runs, [i for i, _ in docs], args.baseline_slots or args.batch_sizes[0], flops, peaks)
    ceiling = peaks["float32"] * 1e9 / flops
    print(table(rows, ceiling), flush=True)
    out = Path(args.out or REPO / "benchmarks" / "results" / "eval_decode.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": machine(), "args": vars(args),
        "command": "python benchmarks/eval_decode.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "task": TASK, "documents": len(docs), "max_new_tokens": max_new,
        "prompt_tokens": sum(map(len, prompts)), "continuous_fallback": supports(model),
        "flops_per_token": flops, "peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "peak_gflops_end": {k: round(meter.matmul_peak_gflops(dtype=getattr(torch, k)), 1) for k in peaks},
        "fp32_ceiling_tokens_per_s": round(ceiling, 1), "order": [list(s) for s in schedule(
            args.dtypes, args.batch_sizes, args.passes, args.decoders)], "wall_s": round(time.time() - started, 1),
        "load_start": load_start, "load_end": load(), "results": rows}, indent=2))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
