"""Benchmark scripts: they compile, and their pure parts compute what they claim."""

import py_compile
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
