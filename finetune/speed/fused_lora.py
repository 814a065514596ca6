"""LoRA forward with the adapter's scale and sum folded into one matmul.

PEFT's `lora.Linear` computes `base(x) + lora_B(lora_A(x)) * scaling`: besides the
matmuls, that is an output-sized multiply and an output-sized add in forward and another
output-sized multiply in backward, for each of the 7 adapted projections of every block.
On the 2-core reference CPU those three element-wise passes took ~10% of a LoRA step on
SmolLM2-135M. `torch.addmm(base(x), lora_A(x), lora_B^T, alpha=scaling)` does the scale
and the sum inside the second GEMM, and its backward scales only rank-sized tensors. The
function and its gradients are the same (up to float rounding); the trainer switches
adapted layers to it for the length of `train()` (`fused_lora`) and back afterwards.

Only the plain case is taken: one active adapter, no dropout, no DoRA or other variant,
no LoRA bias, not merged, a `torch.nn.Linear` base. Anything else runs PEFT's forward.
Under bf16 autocast (model.dtype auto on a bf16-capable device) the three matmuls run in bf16
as PEFT's do, and the sum is rounded to bf16 once instead of after the scale and the add
(tests/test_precision.py compares both under autocast).

Proven against peft 0.18.0 and 0.21.2 (README "Tested versions"). It reads the attributes of
`peft.tuners.lora.layer.Linear` listed in `_READS`; where PEFT lacks one of them (or the class),
every layer keeps PEFT's own forward, with one notice.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from finetune.speed.perf import fallback

_READS = ("base_layer", "lora_A", "lora_B", "scaling", "lora_dropout", "lora_variant", "active_adapters",
          "disable_adapters", "merged")


def _plain_adapter(layer, x, args, kwargs) -> str | None:
    if args or kwargs or layer.disable_adapters or layer.merged or not isinstance(layer.base_layer, torch.nn.Linear):
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    a, b = layer.lora_A[name], layer.lora_B[name]
    # under autocast (bf16 mixed precision) every matmul, the fused addmm too, runs in the autocast dtype
    # whatever the input's dtype; without it the input and both weights must share one dtype
    same_dtype = x.dtype == a.weight.dtype == layer.base_layer.weight.dtype or torch.is_autocast_enabled(x.device.type)
    if name in layer.lora_variant or not isinstance(layer.lora_dropout[name], torch.nn.Identity) \
            or a.bias is not None or b.bias is not None or not same_dtype:
        return None
    return name


def fused_forward(layer, x, *args, **kwargs):
    name = _plain_adapter(layer, x, args, kwargs)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.base_layer
    out = F.linear(x, base.weight, base.bias)
    low = F.linear(x, layer.lora_A[name].weight)
    fused = torch.addmm(out.reshape(-1, out.shape[-1]), low.reshape(-1, low.shape[-1]),
                        layer.lora_B[name].weight.t(), alpha=layer.scaling[name])
    return fused.view(out.shape)


def _lora_layers(model) -> list:
    """PEFT `lora.Linear` layers of `model`; none, with one notice, where PEFT's layer lacks what we read."""
    if not any(hasattr(m, "lora_A") for m in model.modules()):
        return []  # no LoRA here: nothing to fuse, nothing to announce
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        Linear = None
    layers = [m for m in model.modules() if Linear is not None and type(m) is Linear]
    if Linear is None or "forward" not in vars(Linear) or \
            not all(hasattr(layer, a) for layer in layers for a in _READS):
        fallback("fused LoRA forward", "peft", "peft.tuners.lora.layer.Linear.forward internals: " + ", ".join(_READS))
        return []
    return layers


@contextmanager
def fused_lora(model):
    """Route PEFT `lora.Linear` layers of `model` through `fused_forward` inside the block."""
    layers = _lora_layers(model)
    for layer in layers:
        layer.forward = fused_forward.__get__(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
