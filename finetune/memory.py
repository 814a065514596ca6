"""Memory estimate before training starts; refuse what cannot fit.

    weights      = all parameters x bytes per weight
    gradients    = trainable parameters x bytes per weight
    optimizer    = trainable parameters x 8 bytes (AdamW: two fp32 moments)
    activations  = blocks that need a backward pass x batch x seq x (34 h + 5 a seq) x bytes/2
                   (Korthikanti et al. 2022, per transformer layer, 16-bit; scaled by dtype),
                   or batch x seq x h x bytes per recomputed block with gradient checkpointing
                   (every `train.checkpoint_every`-th block) plus one block being recomputed,
                   plus the logits and their gradient (batch x seq x vocab x 4 bytes x 2).

`seq` is data.max_length, an upper bound. The device's capacity is free GPU memory, or
MemAvailable from /proc/meminfo on CPU. `train.gradient_checkpointing: auto` (the default)
turns checkpointing on only when the estimate without it passes AUTO_FRACTION of that:
recomputation costs time (LoRA on SmolLM2, CPU: every 3rd block checkpointed ran at
0.84x the speed, benchmarks/README.md), so it is spent only where memory asks for it.
"""

import torch

from finetune.errors import UserError
from finetune.methods import find_blocks

GIB = 2**30
AUTO_FRACTION = 0.5


class MemoryEstimateError(UserError):
    pass


def _blocks_in_backward(model, method) -> int:
    _, blocks = find_blocks(model)
    n = len(blocks)
    if method.name == "freeze" and method.layers > 0 and not method.extra_modules:
        return method.layers  # frozen earlier blocks run without autograd
    return n


def use_checkpointing(model, recipe, available: float) -> bool:
    """train.gradient_checkpointing, with `auto` decided: on when the estimate without it passes AUTO_FRACTION."""
    setting = recipe.train.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    return estimate(model, recipe, checkpointing=False)["total"] > AUTO_FRACTION * available


def estimate(model, recipe, checkpointing: bool) -> dict:
    """Bytes per part; `checkpointing` is train.gradient_checkpointing with `auto` decided (use_checkpointing)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    h = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
    vocab = cfg.vocab_size
    bytes_w = next(model.parameters()).element_size()
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    b, s = recipe.train.batch_size, recipe.data.max_length
    layers = _blocks_in_backward(model, recipe.method)
    per_block = b * s * (34 * h + 5 * heads * s) * bytes_w / 2
    if checkpointing:
        recomputed = -(-layers // recipe.train.checkpoint_every)  # every n-th block, the first included
        act = recomputed * b * s * h * bytes_w + (layers - recomputed) * per_block + per_block
    else:
        act = layers * per_block
    parts = {"weights": total * bytes_w, "gradients": trainable * bytes_w, "optimizer": trainable * 8,
             "activations": act, "logits": b * s * vocab * 4 * 2}
    return {**{k: float(v) for k, v in parts.items()}, "total": float(sum(parts.values()))}


def available_bytes() -> tuple[float, str]:
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return float(free), f"free memory on {torch.cuda.get_device_name()}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    return float("inf"), "unknown"


def format_estimate(est: dict) -> str:
    return "memory estimate: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in est.items())


def check_fits(est: dict, available: float, where: str, recipe) -> None:
    if est["total"] > 0.95 * available:
        raise MemoryEstimateError(
            f"this configuration needs about {est['total'] / GIB:.1f} GiB but only {available / GIB:.1f} GiB "
            f"is {where} ({format_estimate(est)}). Lower train.batch_size (now {recipe.train.batch_size}) or "
            f"data.max_length (now {recipe.data.max_length}), use method lora or freeze, or set "
            "train.gradient_checkpointing: true.")
