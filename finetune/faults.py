"""Runtime faults during training: NaN loss, Ctrl-C, out of memory; and the loss log.

- A non-finite loss stops the run before the step that produced it is checkpointed, so
  the last checkpoint on disk is the last good one.
- The first Ctrl-C (SIGINT) or a SIGTERM finishes the current step, writes a checkpoint and
  stops; a second Ctrl-C aborts at once.
- Out of memory is reported with the batch settings to lower.
"""

import contextlib
import json
import math
import signal
from pathlib import Path

from transformers import TrainerCallback

from finetune.launch import is_main


class TrainingError(RuntimeError):
    """A training-time fault explained to the user (exit status 2, no traceback)."""


class Interrupted(Exception):
    """Training stopped on request after writing a checkpoint."""


class JsonlLogger(TrainerCallback):
    """Appends every trainer log record (loss, lr, grad norm) to logs/train_log.jsonl."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and is_main():  # drop records a killed run wrote after its last checkpoint
            keep = [l for l in path.read_text(encoding="utf-8").splitlines()
                    if l.strip() and _step(l) is not None and _step(l) <= resume_step]
            path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def _step(line: str):
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None  # a line cut short by a kill


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM: checkpoint at the end of the current step, then stop."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[finetune] stopping: writing a checkpoint after this step (Ctrl-C again to abort now)",
              flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def guarded_trainer_class():
    """SFTTrainer that refuses a non-finite loss on any micro-step. Speed: on CPU the loss head is the
    compact one (`lmhead`), and `_speed_paths` are on while it trains. Each checks the library internals
    it needs and otherwise leaves the library's path, with one notice."""
    from trl import SFTTrainer

    from finetune.lmhead import add_compact_lm_head
    from finetune.perf import fallback

    class GuardedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.args.device.type == "cpu":
                add_compact_lm_head(self.model.get_base_model() if hasattr(self.model, "get_base_model")
                                    else self.model)

        def _inner_training_loop(self, *args, **kwargs):
            # after train() has switched checkpointing on (and with it the embeddings' requires-grad hook)
            with _speed_paths(self):
                return super()._inner_training_loop(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at step {self.state.global_step + 1}; stopped before saving it, so "
                    "the last checkpoint in checkpoints/ is the last good one. Lower train.lr "
                    f"(now {self.args.learning_rate}) or set train.max_grad_norm, then rerun to resume.")
            return loss

    if not hasattr(SFTTrainer, "_inner_training_loop"):  # the override would never run: say so
        del GuardedSFTTrainer._inner_training_loop
        fallback("per-example attention, fused LoRA forward and backward stop", "transformers",
                 "Trainer._inner_training_loop, run after train() has switched checkpointing on")
    return GuardedSFTTrainer


@contextlib.contextmanager
def _speed_paths(trainer):
    """Backward stops at the first trainable module (`perf.stop_input_grads`), padding-free rows attend per
    example (`attention.segment_attention`), LoRA layers add their update inside one GEMM (`fused_lora`).

    Entered from transformers' private `Trainer._inner_training_loop` (proven against transformers
    5.23.0 and 5.24.0, README "Tested versions"); where that method is absent none of them is on.
    """
    from finetune.attention import segment_attention
    from finetune.fused_lora import fused_lora
    from finetune.perf import stop_input_grads

    args, model = trainer.args, trainer.model
    stop = stop_input_grads(model, args.activation_checkpointing_kwargs) if args.activation_checkpointing else None
    try:
        with segment_attention(model), fused_lora(model):
            yield
    finally:
        if stop is not None:
            stop.remove()


def explain_oom(error: BaseException, batch_size: int, grad_accum: int, max_length: int) -> TrainingError | None:
    text = str(error).lower()
    if "out of memory" not in text and "can't allocate memory" not in text and \
            type(error).__name__ != "OutOfMemoryError":
        return None
    return TrainingError(
        f"out of memory with train.batch_size={batch_size}, data.max_length={max_length}. Lower "
        f"train.batch_size (and raise train.grad_accum, now {grad_accum}, to keep the effective batch), "
        "lower data.max_length, or set train.gradient_checkpointing: true. Rerun to resume from the last "
        "checkpoint.")
