"""Benchmark scripts: they compile, and their pure parts compute what they claim."""

import itertools
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmark_script_compiles(script):
    py_compile.compile(str(script), doraise=True)


def test_flops_per_token_orders_methods():
    from train_throughput import flops_per_token

    from finetune.testing import tiny_model
    model = tiny_model(layers=8)
    full, lora, freeze = (flops_per_token(model, m, seq=64) for m in ("full", "lora", "freeze"))
    base_only = flops_per_token(model, "lora", seq=64, lora_r=0)
    assert full == pytest.approx(1.5 * base_only)   # 3 x forward vs 2 x forward
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    adapters = 6 * 16 * sum(m.in_features + m.out_features for m in linears)  # 2 products, fwd + 2 in bwd
    assert lora == pytest.approx(base_only + adapters)
    assert freeze < base_only < full           # backward through 2 of 8 blocks only


def test_peak_probe_runs_after_each_step_and_weights_mfu_by_step_time(tmp_path, monkeypatch):
    import common
    from transformers import TrainerControl, TrainerState, TrainingArguments

    monkeypatch.setattr(common, "PROBE_N", 64)
    path = tmp_path / "probe.json"
    probe, state = common.peak_probe(path), TrainerState()
    args, control = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none"), TrainerControl()
    for step in (1, 2, 3):
        probe.on_step_begin(args, state, control)
        state.global_step = step
        probe.on_step_end(args, state, control)
        probe.on_log(args, state, control, logs={"loss": 1.0, "num_tokens": 10.0 * step})
    probe.on_train_end(args, state, control)
    steps = json.loads(path.read_text())
    assert [s["step"] for s in steps] == [1, 2, 3] and [s["num_tokens"] for s in steps] == [10.0, 20.0, 30.0]
    assert all(s["peak_gflops"] > 0 and s["probe_s"] > 0 and s["step_s"] >= 0 for s in steps)
    # two steps: 1 s at 100 GFLOP/s and 3 s at 50 -> the weighted peak is 62.5; 10 s of training, 2 of probes
    path.write_text(json.dumps([{"step": 1, "step_s": 1.0, "peak_gflops": 100.0, "probe_s": 1.0},
                                {"step": 2, "step_s": 3.0, "peak_gflops": 50.0, "probe_s": 1.0}]))
    r = common.probed_mfu(path, flops_per_token=1e9, tokens=400, train_s=10.0)
    assert r["tokens_per_s"] == pytest.approx(50.0) and r["probe_s"] == pytest.approx(2.0)
    assert r["probed_peak_gflops"] == pytest.approx(62.5) and r["probed_peak_min_max"] == [50.0, 100.0]
    assert r["mfu"] == pytest.approx(50.0 / 62.5) and "fast_phase" not in r   # no per-step tokens logged
    # with per-step tokens (100 then 300): step MFUs 100/(1x100) and 300/(3x50); fast phase = step 1 only
    path.write_text(json.dumps([{"step": 1, "step_s": 1.0, "peak_gflops": 100.0, "probe_s": 1.0, "num_tokens": 50},
                                {"step": 2, "step_s": 3.0, "peak_gflops": 50.0, "probe_s": 1.0, "num_tokens": 350}]))
    r = common.probed_mfu(path, flops_per_token=1e9, tokens=350, train_s=10.0)
    assert [s["mfu"] for s in r["probes"]] == pytest.approx([0.5, 2.0])
    assert r["fast_phase"] == {"steps": 1, "of": 2, "mfu": pytest.approx(0.5)}


def test_matmul_peak_is_positive_and_plausible():
    from common import matmul_peak_gflops
    assert 0.1 < matmul_peak_gflops(n=256, seconds=0.2) < 1e6


@pytest.mark.slow
def test_gpu_bench_cpu_fallback_runs_end_to_end(tmp_path):
    """Without a GPU, `gpu_bench.py --smoke` trains LoRA and full on SmolLM2 for 2 steps and evaluates 2 documents."""
    import json
    import subprocess

    out = tmp_path / "gpu_bench.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for method in ("lora", "full"):
        assert result[method]["tokens"] > 0 and result[method]["tokens_per_s"] > 0
        assert 0 < result[method]["mfu_measured_peak"] < 1.5
    assert result["eval"]["examples"] == 2


def test_eval_decode_schedule_is_abba_with_the_baseline_at_the_first_size():
    from eval_decode import schedule

    order = schedule(["float32", "bfloat16"], [16, 32], passes=2)
    first, second = order[:len(order) // 2], order[len(order) // 2:]
    assert [v[1:] for v in second] == [v[1:] for v in first][::-1]   # pass 2 is pass 1 reversed
    assert {p for p, *_ in first} == {1} and {p for p, *_ in second} == {2}
    baseline = [v[1:] for v in first if v[2] == "generate"]
    assert baseline == [("float32", "generate", 16), ("bfloat16", "generate", 16)]
    assert len(first) == 2 * (1 + 2 + 2)   # per dtype: generate at 16; batched and continuous at 16 and 32
    only = schedule(["float32"], [16, 64], passes=1, decoders=("continuous",))
    assert only == [(1, "float32", "generate", 16), (1, "float32", "continuous", 16), (1, "float32", "continuous", 64)]
    apart = schedule(["float32"], [128], passes=1, decoders=("continuous",), baseline_slots=16)
    assert apart == [(1, "float32", "generate", 16), (1, "float32", "continuous", 128)]


def test_eval_decode_tiny_run_reports_every_variant(tiny_dir, tmp_path, monkeypatch):
    """`eval_decode.py` end to end on the 2-layer model: 3 GSM8K documents, 4 new tokens, both dtypes, 2 passes."""
    import json

    import eval_decode
    from common import SHARED
    from finetune.eval import meter

    if not (SHARED / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K data under {SHARED}")
    peaks = {torch.float32: 100.0, torch.bfloat16: 400.0}   # GFLOP/s, fixed so the MFU arithmetic can be checked
    monkeypatch.setattr(meter, "matmul_peak_gflops", lambda dtype=torch.float32, **_: peaks[dtype])
    monkeypatch.setattr(meter, "_PEAKS", {})
    threads = torch.get_num_threads()
    try:  # 1 thread: 2-thread matmuls on a 2-core machine another job shares wait on each other (seconds, not ms)
        out = eval_decode.main(["--model", tiny_dir, "--limit", "3", "--max-new-tokens", "4", "--batch-sizes", "2,3",
                                "--passes", "2", "--threads", "1", "--out", str(tmp_path / "eval_decode.json")])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    rows = {(r["dtype"], r["decoder"], r["slots"]): r for r in result["results"]}
    variants = [("generate", 2), ("batched", 2), ("batched", 3), ("continuous", 2), ("continuous", 3)]
    assert sorted(rows) == sorted((dt, d, b) for dt in ("float32", "bfloat16") for d, b in variants)
    flops = result["flops_per_token"]
    assert result["fp32_ceiling_tokens_per_s"] == pytest.approx(100e9 / flops, rel=1e-3)
    for (dtype, decoder, _), r in rows.items():
        assert [p["pass"] for p in r["passes"]] == [1, 2] and r["tokens"] == sum(p["tokens"] for p in r["passes"])
        assert 0 < r["tokens"] <= 2 * 3 * 4
        assert r["decode_mfu"] == pytest.approx(r["tokens_per_s"] * flops / (peaks[getattr(torch, dtype)] * 1e9),
                                                rel=1e-2)
        assert r["fp32_ceiling_fraction"] == pytest.approx(r["tokens_per_s"] * flops / 100e9, rel=1e-2)
        assert r["identical_to_generate"]["n"] == 3
        assert ("identical_to_fp32_continuous" in r) == (dtype == "bfloat16")
    for dtype in ("float32", "bfloat16"):
        base = rows[(dtype, "generate", 2)]
        assert base["vs_generate"] == 1.0 and base["identical_to_generate"]["identical"] == 3
        assert len(base["outputs"]) == 3
    fp32 = rows[("float32", "generate", 2)]
    assert fp32["decode_mfu"] == pytest.approx(fp32["fp32_ceiling_fraction"])   # fp32: the ceiling is the MFU


def test_decode_levers_tiny_run_compares_a_committed_decoder_with_the_current_one(tiny_dir, tmp_path):
    """`decode_levers.py` end to end on the 2-layer model against HEAD's continuous.py: same ids, every run split."""
    import json

    import decode_levers
    from common import SHARED

    if not (SHARED / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K data under {SHARED}")
    if subprocess.run(["git", "cat-file", "-e", "HEAD:finetune/eval/continuous.py"], cwd=BENCH.parent).returncode:
        pytest.skip("not a git checkout with finetune/eval/continuous.py committed")
    decode_levers.main(["--model", tiny_dir, "--rev", "HEAD", "--limit", "5", "--slots", "2", "--max-new-tokens", "4",
                        "--order", "ABBA", "--out", str(tmp_path / "levers.json")])
    result = json.loads((tmp_path / "levers.json").read_text())
    assert result["identical_ids"] is True and result["documents"] == 5
    assert [len(result["runs"][s]) for s in "AB"] == [2, 2]
    for run in result["runs"]["A"] + result["runs"]["B"]:
        assert 0 < run["tokens"] <= 5 * 4 and run["split_s"]["fill"] > 0 and run["split_s"]["step"] >= 0
        assert sum(run["split_s"].values()) == pytest.approx(run["seconds"], abs=0.05)
    assert result["ratio_now_vs_rev"] == pytest.approx(result["tokens_per_s"]["B"] / result["tokens_per_s"]["A"],
                                                       rel=1e-2)


def _table_after(text: str, marker: str) -> list[list[str]]:
    """Cells of the first markdown table after `marker` in benchmarks/README.md (header and rule dropped)."""
    lines = text[text.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    return [[c.strip() for c in line.strip("|").split("|")] for line in list(table)[2:]]


def test_readme_peer_and_slots_tables_are_the_committed_runs():
    """benchmarks/README.md's LLaMA-Factory and eval-slots figures are the ones results/*.json hold."""
    text = (BENCH / "README.md").read_text()
    peer = json.loads((BENCH / "results" / "peer_llamafactory.json").read_text())["results"]
    rows = _table_after(text, "results/peer_llamafactory.json`), 64 rows")
    assert len(rows) == len(peer)
    for row, r in zip(rows, peer):
        assert row[0].lower().startswith(r["method"])
        assert float(row[1]) == round(r["finetune"]["tokens_per_s"], 1)
        assert float(row[2]) == round(r["llamafactory"]["tokens_per_s"], 1)
        assert row[3] == f"**{r['ratios']['tokens_per_s']:.2f}x**"
    for name in ("eval_decode_slots.json", "eval_decode_slots_avx2.json", "eval_decode_continuous_avx2.json"):
        slots = json.loads((BENCH / "results" / name).read_text())["results"]
        rows = _table_after(text, f"(`results/{name}`)")
        assert [(r[1], int(r[2]), float(r[3])) for r in rows] == \
            [(s["decoder"], s["slots"], round(s["tokens_per_s"], 1)) for s in slots], name


def test_readme_decode_levers_and_seed_figures_are_the_committed_runs():
    """benchmarks/README.md's decode-lever table and finetune's held-out losses over seeds are what the runs wrote."""
    text = (BENCH / "README.md").read_text()
    levers = json.loads((BENCH / "results" / "decode_levers.json").read_text())
    rows = _table_after(text, "(`results/decode_levers.json`)")
    assert [float(r[2]) for r in rows] == [levers["tokens_per_s"]["A"], levers["tokens_per_s"]["B"]]
    assert rows[1][3] == f"**{levers['ratio_now_vs_rev']:.2f}x**" and levers["identical_ids"]
    for row, side in zip(rows, "AB"):
        split = [r["split_s"] for r in levers["runs"][side]]
        assert row[4] == ", ".join(f"{s['fill']:.1f}" for s in split)
        assert row[5] == ", ".join(f"{s['step']:.1f}" for s in split)
    seeds = json.loads((BENCH / "results" / "peer_finetune_seeds.json").read_text())["finetune_heldout_by_seed"]
    flat = " ".join(text.split())
    assert "gives held-out " + ", ".join(f"{seeds[k]:.4f}" for k in ("42", "1")) + f" and {seeds['2']:.4f}" in flat


def test_readme_eval_figures_are_the_committed_runs():
    """The 8-shot lm-eval ratio and the best zero-shot slot figures in both READMEs are what the runs wrote."""
    ev = json.loads((BENCH / "results" / "eval_throughput.json").read_text())
    rows = _table_after((BENCH / "README.md").read_text(), "(`results/eval_throughput.json`)")
    assert float(rows[0][1]) == round(ev["finetune"]["examples_per_s"], 3)
    assert float(rows[1][1]) == round(ev["lm_eval"]["examples_per_s"], 3)
    assert rows[2][1] == f"**{ev['speedup']:.2f}x**"
    assert rows[2][2] == f"identical greedy predictions: **{ev['identical_predictions']}/{ev['examples']}**"
    run = json.loads((BENCH / "results" / "eval_decode_continuous_avx2.json").read_text())
    best = max(run["results"], key=lambda r: r["tokens_per_s"])
    main = " ".join((BENCH.parent / "README.md").read_text().split())
    assert f"runs at **{ev['speedup']:.2f}x** `lm_eval --model hf`" in main
    assert f"fp32 peak {run['peak_gflops']['float32']} GFLOP/s)" in main
    assert (f"at {best['vs_generate']:.2f}x `model.generate` with {best['slots']} slots, identical outputs, "
            f"{100 * best['fp32_ceiling_fraction']:.1f}% of the fp32 matmul ceiling ({best['tokens_per_s']:.1f} "
            f"tokens/s)") in main
    assert best["identical_to_generate"]["identical"] == best["identical_to_generate"]["n"]


def test_readme_probed_training_table_is_the_committed_run():
    """benchmarks/README.md's probed-peak training table and the main README's sentence are what the run wrote."""
    run = json.loads((BENCH / "results" / "train_throughput_avx2.json").read_text())["results"]
    rows = _table_after((BENCH / "README.md").read_text(), "### Training with the probed peak")
    assert len(rows) == len(run) == 2
    main = " ".join((BENCH.parent / "README.md").read_text().split())
    for row, r in zip(rows, run):
        f, t = r["finetune"], r["plain_trl"]
        assert row[0].lower().startswith(r["method"])
        assert (float(row[1]), float(row[2])) == (round(f["tokens_per_s"], 1), round(t["tokens_per_s"], 1))
        assert row[3].replace("*", "") == f"{r['speedup']:.2f}x ({r['speedup_at_equal_peak']:.2f}x)"
        assert row[7].replace("*", "").startswith(f"{100 * f['mfu']:.0f}% / {100 * t['mfu']:.0f}%")
        assert f"{r['method']} {r['speedup']:.2f}x" in main.lower().replace("freeze-last-2", "freeze")
    freeze = run[1]["finetune"]
    assert min(p["peak_gflops"] for p in freeze["probes"]) > 0.95 * freeze["probed_peak_gflops"]  # a stable phase


def test_readme_lora_rerun_figures_are_the_committed_run():
    r = json.loads((BENCH / "results" / "train_throughput_avx2_lora.json").read_text())["results"][0]
    text = " ".join((BENCH / "README.md").read_text().split())
    f = r["finetune"]
    assert (f"finetune **{f['tokens_per_s']:.1f}** vs plain TRL {r['plain_trl']['tokens_per_s']:.1f} tok/s = "
            f"**{r['speedup']:.2f}x** ({r['speedup_at_equal_peak']:.2f}x at equal probed peak)") in text
    assert f"**MFU {100 * f['mfu']:.0f}%** against the probed peak" in text
    assert f"{100 * f['mfu_vs_highest_peak']:.0f}% against the single highest probe" in text


def test_readme_bf16_training_table_is_the_committed_runs():
    """benchmarks/README.md's bf16-vs-fp32 training table (AVX512-BF16 EPYC) and the main README's ratios are
    what precision.py wrote, before (a08ad01) and after."""
    rows = _table_after((BENCH / "README.md").read_text(), "### bf16 training on an AVX512-BF16 CPU")
    runs = {rev: json.loads((BENCH / "results" / name).read_text()) for rev, name in
            (("a08ad01", "precision_train_epyc_bf16_a08ad01.json"), ("f921aec", "precision_train_epyc_bf16.json"))}
    assert len(rows) == 4
    for row in rows:
        run = runs[row[1]]
        assert run["revision"] == row[1] and run["machine"]["bf16_flags"] == ["avx512_bf16"]
        r = run["results"]["lora" if row[0].startswith("LoRA") else "freeze"]
        assert (float(row[2]), float(row[3])) == (round(r["float32"]["tokens_per_s"], 1),
                                                  round(r["bfloat16"]["tokens_per_s"], 1))
        assert row[4].replace("*", "") == f"{r['tokens_per_s_ratio']:.2f}x"
        assert row[5] == f"{r['float32']['heldout_loss_fp32']:.4f} / {r['bfloat16']['heldout_loss_fp32']:.4f}"
        assert abs(r["heldout_loss_diff"]) < 0.01
    after = runs["f921aec"]["results"]
    main = " ".join((BENCH.parent / "README.md").read_text().split())
    assert (f"LoRA {after['lora']['tokens_per_s_ratio']:.2f}x and freeze-last-2 "
            f"{after['freeze']['tokens_per_s_ratio']:.2f}x fp32's training tokens/s") in main


def test_readme_grouped_decode_table_is_the_committed_run():
    run = json.loads((BENCH / "results" / "grouped_decode.json").read_text())
    rows = _table_after((BENCH / "README.md").read_text(), "(`results/grouped_decode.json`)")
    r = run["results"]
    assert [float(row[1]) for row in rows] == [r[v]["tokens_per_s"] for v in ("fp32", "bf16-grouped", "bf16-sdpa")]
    assert [row[3] for row in rows] == [f"{100 * r[v]['fp32_ceiling_fraction']:.1f}%"
                                        for v in ("fp32", "bf16-grouped", "bf16-sdpa")]
    text = " ".join((BENCH / "README.md").read_text().split())
    ratio = r["bf16-grouped"]["tokens_per_s"] / r["bf16-sdpa"]["tokens_per_s"]
    assert f"Grouped is **{ratio:.2f}x** bf16 through sdpa" in text
    assert all(v["same_ids_both_passes"] for v in r.values()) and run["machine"]["bf16_flags"] == ["avx512_bf16"]
