"""The errors training raises: a fault explained to the user, a stop on request, out of memory.

The trainer that raises them is `finetune/trainer.py`; no torch import here.

- `TrainingError`: a non-finite loss (raised before the step is checkpointed) or out of
  memory, reported with the settings to change (exit status 2, no traceback).
- `Interrupted` (defined in finetune/errors.py, with every error class the CLI catches):
  Ctrl-C or SIGTERM stopped the run after writing a checkpoint.
"""

from finetune.errors import Interrupted, UserError

__all__ = ["Interrupted", "TrainingError", "explain_oom"]


class TrainingError(UserError):
    """A training-time fault explained to the user (exit status 2, no traceback)."""


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
