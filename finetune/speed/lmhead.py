"""Loss head for training on CPU: project only the positions that carry a label.

TRL's SFTTrainer patches the model with a fused LM head (`fused_lm_head=True`) whose
tiles run as Triton kernels on a GPU. Without Triton it folds every position of the batch
(prompt and padding included) through torch ops in 32k-column tiles and recomputes them
in the backward pass; on this project's 2-core reference CPU that head was 42% of a LoRA
step (SmolLM2-135M, GSM8K, batch 4). This head answers the same call with the same
fields, but projects only the completion positions, in chunks, each as one matmul.

When the head's weight is frozen (LoRA, freeze-last-k), the gradient of a token's
log-probability with respect to its hidden state, W^T (onehot - softmax), is known in the
forward pass; it is computed there chunk by chunk and kept (hidden-sized), so neither the
logits nor a recomputation are kept for backward: the same FLOPs as the plain head, and
peak memory falls by the logits (~0.5 GB at batch 4 here).

The trainer switches it on, on CPU only, for the length of its training loop (`compact_lm_head`, entered
through `finetune.speed.enabled`); on a GPU TRL's kernel stays. Proven against trl 1.16.0 (tests/test_lmhead.py compares it with TRL's
head; README "Tested versions"). It needs what trl 1.15 introduced: SFTTrainer patches
`model.forward` with `fused_lm_head` and expects `trl.trainer.utils.FusedCausalLMOutput`.
With trl 1.0-1.14, which have neither, the head is left to TRL, with one notice. trl 1.15.0
is excluded: its own fused head needs Triton, which a CPU build of torch lacks.
"""

import inspect
import types
from contextlib import contextmanager

import torch

from finetune.speed.perf import fallback

CHUNK = 512  # completion tokens per projection: a 512 x vocab fp32 tile (~100 MB for a 49k vocab)

# Output scaling that TRL's head applies and this one does not: leave such models to TRL.
_SCALED = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
# The fields of TRL's output this head fills; TRL's loss and metrics read them.
_FIELDS = {"loss", "log_probs", "entropy", "is_top1", "label_mask"}


def _fused_output_class(model):
    """TRL's FusedCausalLMOutput when TRL has patched `model.forward` with its fused head; else None, with a notice."""
    try:
        from trl.trainer.utils import FusedCausalLMOutput
    except ImportError:
        FusedCausalLMOutput = None
    fields = getattr(FusedCausalLMOutput, "__dataclass_fields__", {})
    patched = "fused_lm_head" in inspect.signature(model.forward, follow_wrapped=False).parameters
    if FusedCausalLMOutput is None or not _FIELDS <= fields.keys() or not patched:
        fallback("compact loss head", "trl", "trl.trainer.utils.FusedCausalLMOutput and the model.forward("
                 "fused_lm_head=...) of trl's add_fused_lm_head")
        return None
    return FusedCausalLMOutput


def add_compact_lm_head(model) -> bool:
    """Wrap `model.forward` (already patched by TRL) so `fused_lm_head=True` uses the compact head.

    Returns False, leaving the model as it was, for models whose logits TRL scales or caps, and
    where TRL lacks the fused head this one answers for (with one notice).
    """
    config = model.config.get_text_config()
    if any(getattr(config, k, None) not in (None, 1.0) for k in _SCALED) or \
            getattr(config, "output_router_logits", False):
        return False
    FusedCausalLMOutput = _fused_output_class(model)
    if FusedCausalLMOutput is None:
        return False
    fused_forward = model.forward
    frozen = _AutocastWeight()

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits"):
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:]
        mask = labels != -100
        target, head = labels[mask], self.get_output_embeddings()
        if head.weight.requires_grad or head.bias is not None:
            token_logp, entropy, is_top1 = _plain_head(head, hidden[mask], target)
        else:
            token_logp, entropy, is_top1 = _FrozenHeadLogProb.apply(hidden[mask], frozen(head.weight), target)

        def spread(x):  # back to (batch, seq - 1), zero where there is no label
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-token_logp.sum() / count, log_probs=spread(token_logp),
                                   entropy=spread(entropy), is_top1=spread(is_top1), label_mask=mask)

    model.forward = types.MethodType(forward, model)
    return True


@contextmanager
def compact_lm_head(model):
    """`add_compact_lm_head` inside the block; afterwards `model.forward` is the one TRL patched again."""
    before = vars(model).get("forward")
    used = add_compact_lm_head(model)
    try:
        yield used
    finally:
        if used and before is not None:
            model.forward = before
        elif used:
            del model.forward


def _plain_head(head, hidden, target):
    """Trainable head (full finetune): autograd through one projection of the completion positions."""
    logits = head(hidden).float()
    logp = torch.log_softmax(logits, dim=-1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
        is_top1 = logits.argmax(-1) == target
    return logp.gather(-1, target[:, None]).squeeze(-1), entropy, is_top1


class _AutocastWeight:
    """A frozen weight in the autocast dtype, cast once and kept while the weight is unchanged.

    Autocast casts a weight that needs no gradient again at every product; for the head that is a
    (vocab x hidden) copy per step (28M values for SmolLM2). Outside autocast the weight itself.
    """

    def __init__(self):
        self.key, self.cast = None, None  # the key holds the source tensor: its memory is not reused meanwhile

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        device = weight.device.type
        if not torch.is_autocast_enabled(device):
            return weight
        dtype = torch.get_autocast_dtype(device)
        key = (weight.data_ptr(), weight._version, weight.dtype, dtype, tuple(weight.shape))
        if self.key is None or self.key[0] is not weight or self.key[1:] != key:
            with torch.no_grad():
                self.cast, self.key = weight.to(dtype), (weight, *key)
        return self.cast


class _FrozenHeadLogProb(torch.autograd.Function):
    """log p(target | hidden) through a frozen head; the input gradient is formed in the forward pass.

    Under autocast (bf16 mixed precision) the two products per chunk run in the autocast dtype, as
    autocast would run them, with the weight cast once per call; everything else runs in fp32 with
    autocast off, as in an fp32 run. Left to autocast, every chunk cast the weight again through a
    strided copy of its transpose and the entropy's row dot products cast both (chunk x vocab) operands
    to bf16: 0.38 of a 1.41 s freeze-last-2 step on an AVX512-BF16 CPU (benchmarks/profile_step.py).
    The caller passes the weight already cast (`_AutocastWeight`), so it is cast once, not every step.
    """

    @staticmethod
    def forward(ctx, hidden, weight, target):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        with torch.autocast(device, enabled=False):
            return _FrozenHeadLogProb._chunks(ctx, hidden, weight.to(dtype), target)

    @staticmethod
    def _chunks(ctx, hidden, weight, target):
        n = hidden.shape[0]
        token_logp = hidden.new_empty(n, dtype=torch.float32)
        entropy, is_top1 = torch.empty_like(token_logp), torch.empty(n, dtype=torch.bool, device=hidden.device)
        want_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        for start in range(0, n, CHUNK):  # 7 reads and 3 writes of the chunk's logits, each a plain pass
            end = min(start + CHUNK, n)
            logits = (hidden[start:end].to(weight.dtype) @ weight.t()).float()
            t = target[start:end]
            top, best = logits.max(-1)
            is_top1[start:end] = best == t
            picked = logits.gather(-1, t[:, None]).squeeze(-1)
            shifted = logits.sub_(top[:, None])                 # in place of the logits: z - max
            probs = shifted.exp()                               # unnormalised
            total = probs.sum(-1)
            log_total = total.log()
            token_logp[start:end] = picked - top - log_total
            # entropy = log(sum e) - sum(e * shifted) / sum(e), the dot products without a product tensor
            entropy[start:end] = log_total - (probs[:, None, :] @ shifted[:, :, None]).flatten() / total
            del shifted, logits
            if want_grad:  # d log p_t / d hidden = W^T (onehot(t) - softmax)
                probs.mul_((-1 / total)[:, None])
                probs[torch.arange(end - start, device=probs.device), t] += 1
                grad_hidden[start:end] = (probs.to(weight.dtype) @ weight)
        ctx.save_for_backward(grad_hidden)
        ctx.mark_non_differentiable(entropy, is_top1)
        return token_logp, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_logp, _entropy, _top1):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_logp[:, None].to(grad_hidden.dtype), None, None
