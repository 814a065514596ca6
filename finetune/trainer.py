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
(a second Ctrl-C aborts at once); `TaskEval` (eval.every_steps) scores task accuracy on a
validation subset (finetune/eval/during.py) every N steps and at the last, into the train log.

Keeping the best checkpoint (eval.keep_best) goes through transformers' own fields: `TaskEval` sets
`state.best_metric` / `best_global_step` before the step's save, so the trainer's `_save_checkpoint`
records `best_model_checkpoint`, checkpoint rotation never deletes it, a resumed run reads all three
from trainer_state.json, and `load_best` loads it with the trainer's `_load_best_model` at the end.
(`load_best_model_at_end` itself is not set: it needs an eval_dataset and evaluation at every save.)
"""

import math
import signal
import time

from transformers import TrainerCallback
from trl import SFTTrainer

from finetune import speed
from finetune.eval import during
from finetune.faults import TrainingError
from finetune.log import say
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
        if logs:
            self.write(state, logs)

    def write(self, state, values: dict) -> None:
        if state.is_world_process_zero:
            self.run.append_train_log({"step": state.global_step, "epoch": round(state.epoch or 0, 4), **values,
                                       "time": round(time.time(), 3)})  # wall clock: benchmarks time steps from it


class TaskEval(TrainerCallback):
    """eval.every_steps: score `probe` every N steps and at the last, log it beside the loss, print its time.

    keep_best: a checkpoint is written at every scored step, and a better score becomes transformers'
    `state.best_metric` / `best_global_step` before that save (see the module docstring).
    """

    def __init__(self, probe, tokenizer, every_steps: int, keep_best: bool, log: TrainLog):
        self.probe, self.tokenizer, self.every, self.keep_best, self.log = probe, tokenizer, every_steps, keep_best, log

    @classmethod
    def for_recipe(cls, recipe, bundle, tokenizer, log: TrainLog) -> list:
        """[the callback] for recipe.eval.every_steps (the probe is built now: a bad source fails before training);
        [] when it is off."""
        e = recipe.eval
        if not e.every_steps:
            return []
        probe = during.build_probe(recipe, bundle, tokenizer)
        say(f"[finetune] eval.every_steps {e.every_steps}: {probe.metric} on {probe.n} documents of {probe.label} "
            f"every {e.every_steps} steps and at the last (a generation pass each; its time is printed)")
        return [cls(probe, tokenizer, e.every_steps, e.keep_best, log)]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every and step < state.max_steps:
            return
        started = time.time()
        scores, records = self.probe.score(model, self.tokenizer)
        seconds = time.time() - started
        value = scores[self.probe.metric]
        self.log.write(state, {during.VALUE: value, during.SCORES: scores, during.SECONDS: round(seconds, 3),
                               "task_metric": self.probe.metric, "task_source": self.probe.label,
                               "task_n": self.probe.n, "task_higher_is_better": self.probe.higher_is_better})
        during.write_records(self.log.run, step, records)
        new_best = self.keep_best and self.probe.better(value, state.best_metric)
        say(f"[finetune] step {step}: {self.probe.metric} {value:.4g} on {self.probe.n} documents of "
            f"{self.probe.label}, scored in {seconds:.1f} s{' (best so far, kept)' if new_best else ''}")
        if self.keep_best:
            control.should_save = True  # the scored weights become a checkpoint, so they can be kept
            if new_best:
                state.best_metric, state.best_global_step = value, step


def load_best(trainer) -> int | None:
    """eval.keep_best: load the best-scored checkpoint into trainer.model (the trainer's own loader); its step."""
    best = trainer.state.best_model_checkpoint
    if best is None:
        return None
    trainer._load_best_model()
    say(f"[finetune] eval.keep_best: the run's output is {best} ({trainer.state.best_metric:.4g}), not the last step")
    return trainer.state.best_global_step


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
