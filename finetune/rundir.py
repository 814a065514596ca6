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
      logs/train_log.jsonl  one JSON object per logging step (step, loss, lr, ...)
      plots/loss.png      the loss curve
      eval/               base vs finetuned results and report (finetune run)

Every file is written to a temporary name and renamed, so a kill never leaves a
half-written file under its final name.
"""

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

from finetune.launch import is_main

PACKAGES = ["finetune", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "gguf"]
STATES = ("running", "finished", "failed")


class RunDirError(ValueError):
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


def status(run_dir: Path) -> str | None:
    return (read_json(run_dir / "status.json") or {}).get("state")


def set_status(run_dir: Path, state: str, **extra) -> None:
    assert state in STATES
    write_json(run_dir / "status.json", {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def prepare(run_dir: Path, overwrite: bool) -> bool:
    """Create or reopen a run directory; True when resuming an unfinished run."""
    state = status(run_dir)
    if state == "finished" and not overwrite:
        raise RunDirError(f"{run_dir} holds a finished run; pass --overwrite (or output.overwrite: true) "
                          "to replace it, or set output.name to start a new one")
    # rank 0 alone judges the folder: the others may look while its first atomic write is under way
    if is_main() and run_dir.exists() and state is None and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} exists and is not a finetune run directory (no status.json); "
                          "choose another output.dir")
    if not is_main():
        return state in ("running", "failed")
    if state == "finished" and overwrite:
        shutil.rmtree(run_dir)
        state = None
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_writable(run_dir)
    return state in ("running", "failed")


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


def toolkit_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete trainer checkpoint (trainer_state.json is written last)."""
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    for ckpt in reversed(ckpts):
        if (ckpt / "trainer_state.json").is_file() and read_json(ckpt / "trainer_state.json") is not None:
            return str(ckpt)
    return None
