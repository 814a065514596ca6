"""Speed paths: replacements for library code that compute the same thing with less work.

    with speed.enabled(trainer, on=trainer.speed_paths, off=trainer.speed_off):   # FinetuneTrainer, around its loop
        ...

One entry point, `enabled`, entered by the trainer (`finetune/trainer.py`) for the length of
transformers' training loop; each path is switched back off when the block ends, so saved
configs and later generation never see it. `train.speed_paths: false` turns them all off
(training is then TRL's plain path); `off=` leaves single paths out, which is how
benchmarks/levers.py measures each one. Every path has a test that it equals the library path it
replaces, and checks the library internals it needs: where they are absent it leaves the
library's path, with one notice (`perf.fallback`).

    loss_head      lmhead.py      CPU only: project only labelled positions (trl 1.16)
    backward_stop  perf.py        with checkpointing, backward stops at the first trainable module
                                  (transformers 5.23, 5.24)
    attention      attention.py   padding-free rows: SDPA per example, causal, unmasked (transformers 5.23, 5.24)
    fused_lora     fused_lora.py  LoRA scale and sum inside one GEMM (peft 0.18, 0.21)

The versions are the ones each path was proven against (README "Tested versions").
`perf.tune_allocator` is not a path: the `finetune` command sets it when it starts.
No torch import here: the `finetune` command imports this package before it parses arguments.
"""

import contextlib
from collections.abc import Collection

PATHS = ("loss_head", "backward_stop", "attention", "fused_lora")


@contextlib.contextmanager
def enabled(trainer, on: bool = True, off: Collection[str] = ()):
    """Speed paths on for the block, for `trainer.model` under `trainer.args`; yields the names switched on.

    `on=False` (train.speed_paths: false) leaves every one off; `off` names single paths to leave off.
    """
    unknown = sorted(set(off) - set(PATHS))
    if unknown:
        raise ValueError(f"unknown speed path(s) {unknown}; known: {', '.join(PATHS)}")
    wanted = [p for p in PATHS if on and p not in off]
    args, model = trainer.args, trainer.model
    with contextlib.ExitStack() as stack:
        used = [p for p in wanted if _enter(p, stack, model, args)]
        yield used


def _enter(path: str, stack: contextlib.ExitStack, model, args) -> bool:
    """Switch `path` on inside `stack`; False where it does not apply or falls back to the library."""
    if path == "loss_head":  # on a GPU TRL's Triton head stays
        from finetune.speed.lmhead import compact_lm_head
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return args.device.type == "cpu" and stack.enter_context(compact_lm_head(base))
    if path == "backward_stop":  # only checkpointing marks the embeddings' output as requiring grad
        from finetune.speed.perf import stop_input_grads
        handle = stop_input_grads(model, args.activation_checkpointing_kwargs) if args.activation_checkpointing \
            else None
        if handle is not None:
            stack.callback(handle.remove)
        return handle is not None
    if path == "attention":
        from finetune.speed.attention import segment_attention
        return stack.enter_context(segment_attention(model))
    from finetune.speed.fused_lora import fused_lora
    return stack.enter_context(fused_lora(model)) > 0
