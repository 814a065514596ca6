"""Run directory: layout, status, manifest, atomic writes.

    runs/<name>/
      recipe.yaml         the resolved recipe (file + command-line overrides)
      template.yaml       the prompt template the run trained with (eval reuses it)
      manifest.json       versions, toolkit git commit, recipe hash, data fingerprint,
                          trainable-parameter table, wall times
      status.json         running | finished | failed (+ error), updated atomically
      trainable.txt       the trainable-parameter table as printed
      adapter/            LoRA runs: adapter_model.safetensors + adapter_config.json
      model/              freeze / full runs: model.safetensors + config.json
      tokenizer/          tokenizer files and chat template
      checkpoints/        periodic trainer checkpoints (resume from the last complete one)
      logs/tensorboard/   train.report_to: [tensorboard]: the event files
      logs/train_log.jsonl  one JSON object per logging step (step, loss, lr, ...; task_accuracy)
      logs/task_eval/     eval.every_steps: the records of each scored step (step-N.jsonl)
      plots/loss.png      the loss curve
      eval/               base vs finetuned results and report (finetune run)

`RunDir` owns this layout: every name above is spelled once, in it. Every file is written to
a temporary name and renamed, so a kill never leaves a half-written file under its final name.

Status: training itself (`finetune.train.train`) writes `state`: `running` when it starts,
`finished` when the weights are saved, `failed` (+ error) when it raises; a library caller is
never left with `running`. `finetune run` evaluates after training and records that beside it,
in `eval`: `running`, then `finished` (or `failed` + `eval_error`); the results themselves are
eval/results.json and the manifest's `eval`. A finished run whose evaluation did not finish
reopens like an unfinished one: rerunning the command resumes (training is already at its last
checkpoint, the evaluation continues from its records).
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from finetune.errors import UserError
from finetune.launch import is_main

STATES = ("running", "finished", "failed")


class RunDirError(UserError):
    pass


def write_atomic(path: Path, text: str) -> None:
    if not is_main():  # multi-process runs: rank 0 alone writes the run directory
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dir_atomic(target: Path, write) -> Path:
    """Let `write(folder)` fill a fresh temporary folder, then swap it in for `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    write(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class RunDir:
    """One run directory: where each file lives, status, manifest, train log, and its model for eval/export."""

    RECIPE, TEMPLATE, TRAINABLE = "recipe.yaml", "template.yaml", "trainable.txt"
    MANIFEST, STATUS = "manifest.json", "status.json"
    ADAPTER, MODEL, TOKENIZER = "adapter", "model", "tokenizer"
    CHECKPOINTS, EVAL = "checkpoints", "eval"
    TRAIN_LOG, LOSS_PLOT = "logs/train_log.jsonl", "plots/loss.png"
    TENSORBOARD = "logs/tensorboard"  # train.report_to: [tensorboard] writes its event files here
    TASK_EVAL = "logs/task_eval"  # eval.every_steps: step-N.jsonl, the scored records of each pass

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def weights_dir(self, method: str) -> Path:
        """adapter/ for LoRA, model/ for freeze and full."""
        return self.path / (self.ADAPTER if method == "lora" else self.MODEL)

    def is_lora(self) -> bool:
        return (self.path / self.ADAPTER / "adapter_config.json").is_file()

    def has_weights(self) -> bool:
        """A trained run: a manifest, and an adapter or whole weights."""
        return (self.path / self.MANIFEST).is_file() and (
            self.is_lora() or (self.path / self.MODEL / "config.json").is_file())

    # status and manifest
    def status(self) -> str | None:
        return (read_json(self.path / self.STATUS) or {}).get("state")

    def set_status(self, state: str, **extra) -> None:
        """Training's state; a fresh status (a new training attempt has no evaluation yet)."""
        assert state in STATES
        write_json(self.path / self.STATUS, {"state": state, "time": _now(), **extra})

    def set_eval_status(self, state: str, **extra) -> None:
        """The evaluation after training (`finetune run`), beside training's state, which it leaves as it is."""
        assert state in STATES
        write_json(self.path / self.STATUS, {**(read_json(self.path / self.STATUS) or {}), "eval": state,
                                             "eval_time": _now(), **extra})

    @contextlib.contextmanager
    def evaluating(self):
        """Record the evaluation after training (`finetune run`): running, then finished, or failed + error."""
        self.set_eval_status("running")
        try:
            yield
        except BaseException as e:
            self.set_eval_status("failed", eval_error=f"{type(e).__name__}: {e}"[:500])
            raise
        self.set_eval_status("finished")

    def eval_unfinished(self) -> bool:
        return (read_json(self.path / self.STATUS) or {}).get("eval") in ("running", "failed")

    def manifest(self) -> dict:
        m = read_json(self.path / self.MANIFEST)
        if not isinstance(m, dict):
            raise RunDirError(f"{self.path / self.MANIFEST}: missing or not a JSON object; is {self.path} a run "
                              "directory?")
        return m

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.path / self.MANIFEST, manifest)

    def base_spec(self) -> str:
        """The base model the run trained on (its resolved path, else its name)."""
        m = self.manifest()
        spec = m.get("base_model_path") or m.get("base_model")
        if not spec:
            raise RunDirError(f"{self.path / self.MANIFEST}: no 'base_model_path'; cannot tell which base model "
                              "the run used")
        return spec

    # the train log: one JSON object per logging step
    def train_log(self) -> list[dict]:
        """Every record of the train log; a line cut short by a kill (or otherwise unreadable) is skipped."""
        try:
            lines = (self.path / self.TRAIN_LOG).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [r for r in map(_record, lines) if r is not None]

    def append_train_log(self, record: dict) -> None:
        path = self.path / self.TRAIN_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def keep_train_log_until(self, step: int) -> None:
        """Drop the records a killed run wrote after its last checkpoint (and any cut line): resume appends."""
        path = self.path / self.TRAIN_LOG
        if path.exists() and is_main():
            keep = [r for r in self.train_log() if isinstance(r.get("step"), int) and r["step"] <= step]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))

    def loss_points(self) -> list[tuple[float, float]]:
        """(step, loss) for every training-loss record."""
        return [(r["step"], r["loss"]) for r in self.train_log()
                if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))]

    # lifecycle
    def prepare(self, overwrite: bool) -> bool:
        """Create or reopen the run directory; True when resuming an unfinished run."""
        run_dir, state = self.path, self.status()
        if state == "finished" and self.eval_unfinished() and not overwrite:
            state = "running"  # trained, evaluation cut off: resume it
        if state == "finished" and not overwrite:
            raise RunDirError(f"{run_dir} holds a finished run; pass --overwrite (or output.overwrite: true) "
                              "to replace it, set output.name to start a new one, or evaluate it again with "
                              f"`finetune eval {run_dir} --with-base`")
        # rank 0 alone judges the folder: the others may look while its first atomic write is under way
        if is_main() and run_dir.exists() and state is None and any(run_dir.iterdir()):
            raise RunDirError(f"{run_dir} exists and is not a finetune run directory (no {self.STATUS}); "
                              "choose another output.dir")
        if not is_main():
            return state in ("running", "failed")
        if state == "finished" and overwrite:
            shutil.rmtree(run_dir)
            state = None
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_writable(run_dir)
        return state in ("running", "failed")

    def last_checkpoint(self) -> str | None:
        """The newest complete trainer checkpoint (trainer_state.json is written last)."""
        ckpts = sorted((self.path / self.CHECKPOINTS).glob("checkpoint-*"),
                       key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
        for ckpt in reversed(ckpts):
            if (ckpt / "trainer_state.json").is_file() and read_json(ckpt / "trainer_state.json") is not None:
                return str(ckpt)
        return None

    def load(self, *, dtype: str = "float32"):
        """(model, tokenizer) of the trained run: the LoRA adapter on its base, or the whole weights; eval mode."""
        from finetune.model import load_model, torch_dtype

        if self.is_lora():
            from peft import PeftModel

            model, tokenizer = load_model(self.base_spec(), dtype=dtype)
            tokenizer = self._tokenizer(model) or tokenizer
            model = PeftModel.from_pretrained(model, str(self.path / self.ADAPTER))
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(self.path / self.MODEL), dtype=torch_dtype(dtype),
                                                         use_safetensors=True)
            tokenizer = self._tokenizer(model, fallback=self.path / self.MODEL)
        model.eval()
        return model, tokenizer

    def _tokenizer(self, model, fallback: Path | None = None):
        """The tokenizer the run saved (tokenizer/: its chat template and pad token), set up like load_model's."""
        from transformers import AutoTokenizer

        from finetune.model import setup_tokenizer

        folder = self.path / self.TOKENIZER if (self.path / self.TOKENIZER).is_dir() else fallback
        return setup_tokenizer(AutoTokenizer.from_pretrained(str(folder)), model) if folder else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def is_run_dir(path) -> bool:
    """A folder holding a trained run (manifest and weights), as opposed to a model folder or hub id."""
    return Path(path).is_dir() and RunDir(path).has_weights()


def base_spec(run_dir) -> str:
    return RunDir(run_dir).base_spec()


def load_for_eval(path, *, dtype: str = "float32"):
    """(model, tokenizer) for a run directory (LoRA adapter on its base, or full weights) or any model spec."""
    if is_run_dir(path):
        return RunDir(path).load(dtype=dtype)
    from finetune.model import load_model

    return load_model(str(path), dtype=dtype)


def _check_writable(run_dir: Path, need_bytes: int = 50 * 2**20) -> None:
    try:
        write_atomic(run_dir / ".write-test", "ok")
        (run_dir / ".write-test").unlink()
    except OSError as e:
        raise RunDirError(f"output.dir: cannot write to {run_dir}: {e.strerror}") from None
    free = os.statvfs(run_dir).f_bavail * os.statvfs(run_dir).f_frsize
    if free < need_bytes:
        raise RunDirError(f"output.dir: only {free / 2**20:.0f} MiB free at {run_dir}; need at least "
                          f"{need_bytes / 2**20:.0f} MiB")
