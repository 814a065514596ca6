"""The trainer: TRL's SFTTrainer, guarded against a non-finite loss, with the speed paths on while it trains.

    trainer = FinetuneTrainer(model=model, args=sft_config(...), train_dataset=rows, processing_class=tok,
                              callbacks=[TrainLog(RunDir(path)), StopOnSignal()])

TRL runs the training loop; this subclass adds two things to it:

- a non-finite loss on any micro-step raises `TrainingError` before the step is checkpointed,
  so the last checkpoint on disk is the last good one;
- the speed paths are entered for the length of transformers' `_inner_training_loop`, which
  runs after `train()` has switched checkpointing on (and with it the embeddings'
  requires-grad hook that the backward stop must follow).

The callbacks: `TrainLog` appends every log record to the run's train log; `StopOnSignal`
turns the first Ctrl-C (SIGINT) or a SIGTERM into "checkpoint after this step, then stop"
(a second Ctrl-C aborts at once).
"""

import math
import signal
import time

from transformers import TrainerCallback
from trl import SFTTrainer

from finetune import speed
from finetune.faults import TrainingError
from finetune.rundir import RunDir


class FinetuneTrainer(SFTTrainer):
    """SFTTrainer that refuses a non-finite loss and turns the speed paths on while it trains.

    `speed_paths=False` (train.speed_paths: false) trains on TRL's plain path; `speed_off` leaves single
    paths (`finetune.speed.PATHS`) off.
    """

    def __init__(self, *args, speed_paths: bool = True, speed_off=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.speed_paths, self.speed_off = speed_paths, tuple(speed_off)

    def train(self, *args, **kwargs):
        if self.speed_paths and not hasattr(SFTTrainer, "_inner_training_loop"):  # the override never runs
            from finetune.speed.perf import fallback
            fallback("speed paths (compact loss head, per-example attention, fused LoRA forward, backward stop)",
                     "transformers",
                     "Trainer._inner_training_loop, run after train() has switched checkpointing on")
        return super().train(*args, **kwargs)

    def _inner_training_loop(self, *args, **kwargs):
        with speed.enabled(self, on=self.speed_paths, off=self.speed_off):
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


class TrainLog(TrainerCallback):
    """Appends every trainer log record (loss, lr, grad norm, wall-clock time) to the run's train log."""

    def __init__(self, run: RunDir, resume_step: int = 0):
        self.run = run
        run.keep_train_log_until(resume_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.run.append_train_log({"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs,
                                   "time": round(time.time(), 3)})  # wall clock: benchmarks time steps from it


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
