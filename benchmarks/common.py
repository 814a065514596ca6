"""Shared by the benchmark scripts: run a command measuring its peak memory, matmul peak, data paths."""

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FINETUNE_DATA_DIR", REPO.parent / "shared" / "data"))

# `finetune train` on the packaged SmolLM2 and the first N GSM8K train rows (train_throughput, levers, peer,
# precision); dtype explicit: float32 where the baseline runs fp32 (plain TRL, LLaMA-Factory), auto in precision.py
GSM8K_RECIPE = """\
model: {{name: smollm2-135m-instruct, dtype: {dtype}}}
method: {method}
data:
  datasets: [{{name: gsm8k, path: "{data}", limit: {examples}}}]
  max_length: {max_length}
train: {{max_steps: {steps}, batch_size: {batch}, grad_accum: {accum}, lr: {lr}, save_steps: 100000,
        logging_steps: 1, warmup_ratio: 0.0, scheduler: linear, seed: {seed}}}
output: {{dir: "{out}", overwrite: true}}
"""
LORA_R = 16
METHODS = {"lora": f"{{name: lora, r: {LORA_R}, alpha: {2 * LORA_R}}}", "freeze": "{name: freeze, layers: 2}"}


def need_shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        sys.exit(f"benchmark data not found: {path}\nSet FINETUNE_DATA_DIR to a folder laid out like ../shared/data.")
    return path


def peak_rss_mib(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Like run_measured, but also the child's own peak RSS via wait4."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    out_chunks, err_chunks = [], []
    threads = [threading.Thread(target=lambda s, b: b.append(s.read()), args=(proc.stdout, out_chunks)),
               threading.Thread(target=lambda s, b: b.append(s.read()), args=(proc.stderr, err_chunks))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = "".join(out_chunks), "".join(err_chunks)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return {"wall_s": time.time() - t0, "json": last_json(out), "stdout": out}, usage.ru_maxrss / 1024


def last_json(text: str) -> dict:
    """The last line of `text` that is a JSON object (progress bars print Python dicts too)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def matmul_peak_gflops(n: int = 2048, seconds: float = 3.0, dtype=torch.float32) -> float:
    """Practical dense matmul peak of this machine (eval/meter.py's, with a longer default window)."""
    from finetune.eval.meter import matmul_peak_gflops as peak

    return peak(n, seconds, dtype)


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run cmd (output to log), polling its process tree's RSS; also the child's ru_maxrss via wait4."""
    import psutil

    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        tree_peak, done = [0], threading.Event()

        def poll():
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    procs = [root] + root.children(recursive=True)
                    tree_peak[0] = max(tree_peak[0], sum(p.memory_info().rss for p in procs))
                except psutil.Error:
                    pass
                done.wait(0.2)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        poller.join()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        sys.exit(f"command failed ({rc}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return {"wall_s": time.time() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
            "maxrss_mib": usage.ru_maxrss / 1024, "tree_peak_rss_mib": tree_peak[0] / 2**20}


def load() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded: recorded beside every timing on a shared machine."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    import transformers
    from finetune.precision import cpu_kind
    import trl
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), **cpu_kind(),
            "capability": torch.backends.cpu.get_cpu_capability()}


PROBE_N, PROBE_SECONDS = 2048, 0.2   # a warm-up product, then timed ones for 0.2 s (at least one)
FAST_PHASE = 0.9   # steps whose probe read >= 90% of the run's highest: the machine at full speed


def peak_probe(path: Path):
    """TrainerCallback: a short fp32 matmul peak probe (`matmul_peak_gflops` over PROBE_SECONDS) after
    every optimizer step, so MFU is taken against the machine's speed while it trained: a shared VM's
    peak moved from 70 to 34 GFLOP/s within one 4-minute run. Writes, at the end of training,
    [{step, step_s, peak_gflops, probe_s}] to `path`; `probed_mfu` reads it."""
    from transformers import TrainerCallback

    class PeakProbe(TrainerCallback):
        def __init__(self):
            self.steps, self.t = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s, t0 = time.perf_counter() - self.t, time.perf_counter()
            best = matmul_peak_gflops(PROBE_N, PROBE_SECONDS)
            self.steps.append({"step": state.global_step, "step_s": step_s, "peak_gflops": best,
                               "probe_s": time.perf_counter() - t0})

        def on_log(self, args, state, control, logs=None, **kwargs):  # after on_step_end; TRL logs num_tokens
            if logs and "num_tokens" in logs and self.steps and self.steps[-1]["step"] == state.global_step:
                self.steps[-1]["num_tokens"] = float(logs["num_tokens"])

        def on_train_end(self, args, state, control, **kwargs):
            Path(path).write_text(json.dumps(self.steps))

    return PeakProbe()


def probed_mfu(path: Path, flops_per_token: float, tokens: float, train_s: float) -> dict:
    """Tokens/s over the training time less the probes', and MFU against the step-time-weighted mean of
    the peaks probed after each step (each step against the machine's speed right after it). Where every
    step logged num_tokens: each step's MFU (its tokens over its own time, against its own probe), and
    `fast_phase`, the MFU over the steps whose probe read >= FAST_PHASE of the highest (step time only,
    so logging and data loading between steps are not in it)."""
    steps = json.loads(Path(path).read_text())
    probe_s = sum(s["probe_s"] for s in steps)
    step_s = sum(s["step_s"] for s in steps)
    peak = sum(s["step_s"] * s["peak_gflops"] for s in steps) / step_s
    tokens_per_s = tokens / (train_s - probe_s)
    peaks = [s["peak_gflops"] for s in steps]
    out = {"tokens_per_s": tokens_per_s, "probe_s": probe_s, "train_s_less_probes": train_s - probe_s,
           "probed_peak_gflops": peak, "probed_peak_min_max": [min(peaks), max(peaks)],
           "mfu": flops_per_token * tokens_per_s / (peak * 1e9), "probes": steps}
    if all("num_tokens" in s for s in steps):  # per step: the step's own tokens against its own probe
        seen = [0.0] + [s["num_tokens"] for s in steps]
        for s, before in zip(steps, seen):
            s["mfu"] = flops_per_token * (s["num_tokens"] - before) / s["step_s"] / (s["peak_gflops"] * 1e9)
        fast = [(s, b) for s, b in zip(steps, seen) if s["peak_gflops"] >= FAST_PHASE * max(peaks)]
        out["fast_phase"] = {"steps": len(fast), "of": len(steps), "mfu": flops_per_token * sum(
            s["num_tokens"] - b for s, b in fast) / sum(s["step_s"] * s["peak_gflops"] * 1e9 for s, _ in fast)}
    return out
