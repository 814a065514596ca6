"""The base model is scored once: its per-sample records are cached under a key of everything that shapes them.

    cache = BaseCache(weights=weights_fingerprint("runs/x/base-model-folder"), dtype="float32", source="runs/x")
    hit = cache.restore(task, template, limit=50, seed=0, out_dir=Path("runs/y/eval/base"))  # (where, key) or None

The key hashes: the base weights fingerprint (each weight file's size and a SHA-256 of its
first and last MiB), the task file's bytes, the resolved task spec (decoding settings
included), the documents themselves, the prompt template, limit, seed, dtype, the eval batch
size (it shapes the matmul kernels, so a bf16 greedy output can change with it) and the
harness version (a hash of the harness source files). Any change gives another key, so the
base is recomputed; a matching key copies the records into the run's eval/base folder and
says where they came from. The cache lives in `<finetune cache>/base_results/<key>/` ($FINETUNE_BASE_RESULTS moves it).
"""

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

from finetune.eval.records import config_hash
from finetune.resources import cache_dir

CHUNK = 1 << 20  # 1 MiB read from each end of every weight file
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "config.json")
HARNESS_FILES = tuple(f"eval/{f}" for f in ("harness.py", "runners.py", "generate.py", "loglik.py", "scoring.py",
                                             "decode.py", "documents.py", "tasks.py", "taskfile.py", "records.py")
                      ) + ("answers.py", "prompts.py")  # under finetune/: the code that turns a model into scores


def _file_digest(path: Path) -> str:
    """SHA-256 of the size, the first MiB and the last MiB of a file: seconds for gigabytes, and any re-save,
    re-quantisation or different checkpoint changes it."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(CHUNK))
        if size > CHUNK:
            f.seek(max(CHUNK, size - CHUNK))
            h.update(f.read(CHUNK))
    return h.hexdigest()[:16]


def weights_fingerprint(spec) -> str:
    """A local model folder: a digest of its weight files (see _file_digest); a hub id: the id itself."""
    folder = Path(str(spec)).expanduser()
    if not folder.is_dir():
        return f"id:{spec}"
    files = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g) if p.is_file()})
    if not files:
        return f"id:{spec}"
    return "sha:" + config_hash([(p.name, _file_digest(p)) for p in files])


def harness_version() -> str:
    import finetune

    package = Path(finetune.__file__).resolve().parent
    parts = [finetune.__version__] + [hashlib.sha256((package / f).read_bytes()).hexdigest() for f in HARNESS_FILES]
    return config_hash(parts)


def _task_file_digest(task) -> str | None:
    path = Path(str(task.path))
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def key_parts(task, template, *, weights: str, limit, seed: int, dtype: str, batch_size: int | None = None) -> dict:
    docs = task.docs(limit)
    return {"weights": weights, "task_file": _task_file_digest(task), "task_spec": task.spec,
            "decoding": task.generation, "docs": config_hash(docs), "template": template.source,
            "exemplars": template.exemplars, "limit": limit, "n_docs": len(docs), "seed": seed, "dtype": dtype,
            "batch_size": batch_size, "harness": harness_version()}


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_json(path: Path, data) -> None:
    from finetune.eval.harness import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)


class BaseCache:
    """Base-model records shared across runs that use the same base weights (see the module docstring)."""

    def __init__(self, *, weights: str, dtype: str = "float32", batch_size: int | None = None, source: str = "",
                 root: Path | None = None):
        self.weights, self.dtype, self.batch_size, self.source = weights, dtype, batch_size, source
        self.root = Path(root or os.environ.get("FINETUNE_BASE_RESULTS") or cache_dir() / "base_results")

    def key(self, task, template, *, limit, seed: int) -> str:
        return config_hash(key_parts(task, template, weights=self.weights, limit=limit, seed=seed, dtype=self.dtype,
                                     batch_size=self.batch_size))

    def restore(self, task, template, *, limit, seed: int, out_dir: Path) -> tuple[str, str] | None:
        """Copy cached base records of `task` into out_dir (records + scores.json entry); (where, key) or None."""
        key = self.key(task, template, limit=limit, seed=seed)
        folder = self.root / key
        entry_path = folder / "entry.json"
        if not entry_path.is_file() or not (folder / f"{task.name}.jsonl").is_file():
            return None
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
        out_dir = Path(out_dir)
        _copy_atomic(folder / f"{task.name}.jsonl", out_dir / f"{task.name}.jsonl")
        scores_path = out_dir / "scores.json"
        summary = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else {}
        summary = {**entry["side"], **summary, "tasks": summary.get("tasks") or {}}
        summary["tasks"][task.name] = {**entry["task"], "base_cache": {"key": key, "from": entry["source"]}}
        _write_json(scores_path, summary)
        return entry["source"], key

    def store(self, task, template, *, limit, seed: int, out_dir: Path) -> str:
        """Save the base records of `task` just computed in out_dir; returns the key."""
        key = self.key(task, template, limit=limit, seed=seed)
        summary = json.loads((Path(out_dir) / "scores.json").read_text(encoding="utf-8"))
        side = {k: v for k, v in summary.items() if k != "tasks"}
        task_summary = {k: v for k, v in summary["tasks"][task.name].items() if k != "base_cache"}
        folder = self.root / key
        _copy_atomic(Path(out_dir) / f"{task.name}.jsonl", folder / f"{task.name}.jsonl")
        _write_json(folder / "entry.json", {
            "key": key, "task": task_summary, "side": side, "source": self.source or str(out_dir),
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "parts": key_parts(task, template, weights=self.weights, limit=limit, seed=seed, dtype=self.dtype,
                                batch_size=self.batch_size)})
        return key
