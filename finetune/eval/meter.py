"""Decode throughput and decode MFU of a generation task, the way training reports MFU.

    decode MFU = generated tokens/s x 2N FLOPs / (dense matmul peak measured in this process)

N is the model's parameter count (a tied embedding counted once: its lookup is free, its
use as the output head is a matmul); 2N is a decoded token's matmul work, ~0.27 GFLOP for
SmolLM2-135M. Prompt tokens and attention are not counted (prefill is work, not output), so
100% would mean every FLOP of the run went into emitting tokens. The peak is the best of
repeated 2048-cube products in the model's dtype, measured once per process and dtype right
after the first task that needs it (on a shared machine the best-of is the least disturbed).
"""

import time

import torch

PEAK_N, PEAK_SECONDS = 2048, 1.5
_PEAKS: dict[torch.dtype, float] = {}


def matmul_peak_gflops(n: int = PEAK_N, seconds: float = PEAK_SECONDS, dtype=torch.float32) -> float:
    """Practical dense matmul peak of this machine: best of repeated n x n x n products."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def peak_gflops(dtype: torch.dtype) -> float:
    if dtype not in _PEAKS:
        _PEAKS[dtype] = matmul_peak_gflops(dtype=dtype)
    return _PEAKS[dtype]


class DecodeMeter:
    """Counts generated tokens from its creation; `summary()` is the task's decode figures."""

    def __init__(self, model):
        param = next(model.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.flops_per_token = 2 * sum(p.numel() for p in model.parameters())
        self.tokens, self.t0 = 0, time.perf_counter()

    def add(self, n_tokens: int) -> None:
        self.tokens += n_tokens

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.t0
        out = {"generated_tokens": self.tokens, "seconds": round(seconds, 3),
               "tokens_per_s": round(self.tokens / seconds, 2) if seconds > 0 else None,
               "flops_per_token": self.flops_per_token}
        if self.device.type == "cpu" and self.tokens and seconds > 0:  # a GPU's peak is another measurement
            peak = peak_gflops(self.dtype)
            out.update(matmul_peak_gflops=round(peak, 1), peak_dtype=str(self.dtype).removeprefix("torch."),
                       decode_mfu=round(self.tokens / seconds * self.flops_per_token / (peak * 1e9), 4))
        return out


def describe(task: str, d: dict) -> str:
    line = f"[eval] {task}: {d['generated_tokens']} tokens generated in {d['seconds']:.1f} s = {d['tokens_per_s']} tok/s"
    if "decode_mfu" in d:
        line += (f", decode MFU {100 * d['decode_mfu']:.1f}% ({d['flops_per_token'] / 1e9:.3g} GFLOP/token against "
                 f"{d['matmul_peak_gflops']} GFLOP/s {d['peak_dtype']} matmul peak measured now)")
    return line
