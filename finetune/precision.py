"""Precision by what the machine runs fast: `model.dtype: auto` (the default).

    prec = resolve("auto")      # Precision(train="bf16-autocast", eval="bfloat16", reason="...") on an AMX CPU
    say(prec.line())

CPUs differ by far more than a constant. On an AVX2-only x86 CPU bf16 matmul is emulated
(~100x slower than fp32), so fp32 is the only sensible choice. A CPU with AVX-512-BF16 or
AMX has bf16 dot-product instructions: on the reference AMX machine a 2048-cube matmul ran
287 GFLOP/s in fp32 and 1,625 GFLOP/s in bf16 (issue #17). `auto` therefore:

- CPU without the `avx512_bf16` / `amx_bf16` flags: fp32 for training and evaluation, with no
  measurement (an emulated bf16 matmul would take most of a second to time).
- CPU with them: times a training-shaped (512 x 576 by 576 x 1536) and a decode-shaped
  (BATCH_SIZE x 576 by 576 x 1536: the default decode slots) matmul in fp32 and bf16,
  interleaved, best of a few rounds (~0.2 s, once per process), and uses bf16 where it is at
  least `MIN_SPEEDUP` times faster:
  training as bf16 mixed precision (fp32 weights, gradients and AdamW state; matmuls under
  `torch.autocast` bf16, which is TRL's `bf16=True` with `use_cpu=True`: accelerate wraps the
  model's forward in the autocast), evaluation with the weights cast to bf16 (autocast would
  cast every weight again at every decoded token).
- CUDA: bf16 mixed precision where `torch.cuda.is_bf16_supported()`, fp32 otherwise.

An explicit `float32`, `bfloat16` or `float16` keeps its old meaning: the weights in that
dtype, and on a GPU TRL's bf16 / fp16 autocast with them. $FINETUNE_AUTO_PRECISION (float32 or
bfloat16) fixes what `auto` means without measuring: the test suite pins it to float32 so expected
numbers do not depend on the CPU, and a multi-process run can pin it so no rank measures differently.
No torch import at module level (the recipe validator imports nothing heavy).
"""

import contextlib
import functools
import os
import time
from dataclasses import asdict, dataclass

from finetune.eval import BATCH_SIZE

DTYPES = ("auto", "float32", "bfloat16", "float16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 dot products
TRAIN_SHAPE = (512, 576, 1536)   # 512 tokens through a SmolLM2-135M MLP projection
DECODE_SHAPE = (BATCH_SIZE, 576, 1536)  # one decode step of the default slots through the same projection
MIN_SPEEDUP = 1.1                # bf16 must beat fp32 by this much; timing noise stays fp32
PIN_ENV = "FINETUNE_AUTO_PRECISION"  # float32 | bfloat16: what auto means, unmeasured (tests, every rank alike)


@dataclass(frozen=True)
class Precision:
    requested: str            # the recipe's model.dtype
    weights: str              # dtype the weights are loaded (and, for mixed precision, kept) in
    autocast: str | None      # TRL's mixed precision: "bfloat16" -> bf16=True, "float16" -> fp16=True
    eval: str                 # dtype the evaluation model runs in
    reason: str
    measured: dict | None = None  # {"train": bf16/fp32 speed ratio, "decode": ...} where timed

    @property
    def train(self) -> str:
        """A short name for the training precision: fp32, bf16-autocast, bfloat16 (pure), ..."""
        if self.autocast:
            return f"{'bf16' if self.autocast == 'bfloat16' else 'fp16'}-autocast (fp32 master weights)" \
                if self.weights == "float32" else f"{self.weights} weights, {self.autocast} autocast"
        return "fp32" if self.weights == "float32" else f"{self.weights} (pure)"

    def line(self) -> str:
        return f"[finetune] precision: training {self.train}, evaluation {self.eval} ({self.reason})"

    def to_dict(self) -> dict:
        return {**asdict(self), "train": self.train}


def explicit(dtype: str, on_gpu: bool) -> Precision:
    """A fixed model.dtype: weights in it; TRL's autocast in it on a GPU only (as before `auto`)."""
    autocast = dtype if on_gpu and dtype != "float32" else None
    return Precision(dtype, dtype, autocast, dtype, f"model.dtype: {dtype}")


def decide_cuda(bf16_supported: bool, name: str) -> Precision:
    if bf16_supported:
        return Precision("auto", "float32", "bfloat16", "bfloat16", f"CUDA device {name} supports bf16")
    return Precision("auto", "float32", None, "float32", f"CUDA device {name} has no bf16 support")


def decide_cpu(flags: set, capability: str, measure=None) -> Precision:
    """The CPU choice from its flags and, where bf16 is native, a measured bf16/fp32 speed ratio per shape."""
    native = [f for f in BF16_FLAGS if f in flags]
    if not native:
        return Precision("auto", "float32", None, "float32",
                         f"CPU {capability} without AVX512-BF16/AMX: bf16 matmul is emulated there, "
                         "far slower than fp32")
    measure = measure or measure_speedup
    train, decode = measure(TRAIN_SHAPE), measure(DECODE_SHAPE)
    wins = {"train": train >= MIN_SPEEDUP, "decode": decode >= MIN_SPEEDUP}
    reason = (f"CPU {capability} with {'+'.join(native)}: bf16 matmul measured {train:.2f}x fp32 "
              f"training-shaped, {decode:.2f}x decode-shaped; bf16 where >= {MIN_SPEEDUP}x")
    return Precision("auto", "float32", "bfloat16" if wins["train"] else None,
                     "bfloat16" if wins["decode"] else "float32", reason,
                     {"train": round(train, 3), "decode": round(decode, 3)})


def pinned_choice(value: str) -> Precision:
    """`auto` as $FINETUNE_AUTO_PRECISION fixes it: float32, or bfloat16 (bf16 mixed precision and bf16 eval)."""
    if value not in ("float32", "bfloat16"):
        raise ValueError(f"${PIN_ENV}={value!r}: expected float32 or bfloat16")
    bf16 = value == "bfloat16"
    return Precision("auto", "float32", "bfloat16" if bf16 else None, value, f"${PIN_ENV}={value}")


def _cpuinfo(prefixes: tuple[str, ...]) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of `prefixes` (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(prefixes):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    return set((_cpuinfo(("flags", "Features")) or "").split())


def cpu_kind() -> dict:
    """What a measured figure needs beside it: the CPU model and its native bf16 flags (none: AVX2-class)."""
    return {"cpu_model": _cpuinfo(("model name",)), "bf16_flags": sorted(cpu_flags() & set(BF16_FLAGS))}


def measure_speedup(shape: tuple[int, int, int], rounds: int = 3, budget_s: float = 0.3) -> float:
    """bf16 / fp32 matmul throughput at `shape` (m, k, n): fp32 and bf16 interleaved, best round of each.

    Interleaving and taking each one's best round keeps a neighbour's load on shared cores
    from favouring either side.
    """
    import torch

    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    pairs = {dt: (torch.randn(m, k, generator=gen).to(dt), torch.randn(k, n, generator=gen).to(dt))
             for dt in (torch.float32, torch.bfloat16)}
    best = {dt: float("inf") for dt in pairs}
    for a, b in pairs.values():
        a @ b  # warm-up: oneDNN picks its kernel on the first call
    deadline = time.perf_counter() + budget_s
    for _ in range(rounds):
        for dt, (a, b) in pairs.items():
            t = time.perf_counter()
            a @ b
            a @ b
            best[dt] = min(best[dt], time.perf_counter() - t)
        if time.perf_counter() > deadline:
            break
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


@functools.lru_cache(maxsize=1)
def _auto() -> Precision:
    """`auto` decided once per process: the device, its flags, and (bf16-capable CPUs) a ~0.2 s measurement."""
    import torch

    if torch.cuda.is_available():
        return decide_cuda(torch.cuda.is_bf16_supported(), torch.cuda.get_device_name())
    return decide_cpu(cpu_flags(), torch.backends.cpu.get_cpu_capability())


def resolve(dtype: str) -> Precision:
    """The precision for a recipe's `model.dtype` (auto, float32, bfloat16, float16)."""
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if dtype == "auto":
        pinned = os.environ.get(PIN_ENV)
        return pinned_choice(pinned) if pinned else _auto()
    import torch

    return explicit(dtype, torch.cuda.is_available())


def eval_dtype(dtype: str) -> str:
    """The dtype an evaluation loads or casts the model in, for a model.dtype / --dtype value."""
    return resolve(dtype).eval


def eval_line(dtype: str) -> str:
    """What an evaluation says it runs in, and why, for a model.dtype / --dtype value."""
    prec = resolve(dtype)
    return f"evaluating in {prec.eval} ({prec.reason})"


@contextlib.contextmanager
def cast_for_eval(model, dtype: str):
    """The model's floating-point parameters in `dtype` inside the block; the original tensors back after it.

    The fp32 tensors are kept, not converted back, so training weights leave the block bit-identical
    (the block costs the cast copy: half the fp32 weights' memory for bf16). Buffers (e.g. rotary
    frequencies) stay as they are.
    """
    import torch

    target = getattr(torch, dtype)
    kept = [(p, p.data) for p in model.parameters() if p.is_floating_point() and p.dtype != target]
    for p, data in kept:
        p.data = data.to(target)
    try:
        yield model
    finally:
        for p, data in kept:
            p.data = data


def drop_autocast_forward(model) -> bool:
    """Undo the autocast wrapper accelerate puts on `model.forward` for mixed precision; True where it did.

    The wrapper stays on the model after training, so generation afterwards would run every
    decoding step under autocast, casting each fp32 weight to bf16 again per token. Only a
    forward that still wraps the one accelerate saw is undone (a speed path may have put its
    own back since).
    """
    original = vars(model).pop("_original_forward", None)
    if original is None:
        return False
    current = vars(model).get("forward")
    func, target = getattr(current, "__func__", current), getattr(original, "__func__", original)
    while func is not None and func is not target:
        func = getattr(func, "__wrapped__", None)
    if func is None:
        return False
    if target is getattr(type(model), "forward", None):
        del model.forward  # the class's own forward again
    else:
        model.forward = original
    return True
