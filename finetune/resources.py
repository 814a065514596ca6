"""Where things live: the user-editable folders (recipes/, prompts/, eval/, data/), the
cache, and the data dir of local dataset copies.

The folders sit at the top of the repository, beside the package, so users read and copy
them. `FINETUNE_HOME` points at another checkout (e.g. when the package is installed
elsewhere). The data dir (a folder laid out like shared/data) is the one home of that
lookup for training data (`local:` paths) and eval tasks (`dataset.file`) alike.
"""

import os
from pathlib import Path

KINDS = ("recipes", "prompts", "eval", "data")
DATA_ENV = "FINETUNE_DATA_DIR"


def project_root() -> Path:
    home = os.environ.get("FINETUNE_HOME")
    return Path(home) if home else Path(__file__).resolve().parent.parent


def resource_dir(kind: str) -> Path:
    assert kind in KINDS, kind
    return project_root() / kind


def cache_dir() -> Path:
    """User cache for converted models (never inside a run directory)."""
    base = os.environ.get("FINETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "finetune")
    return Path(base)


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data dir: `explicit` (data.data_dir, --data-path), else $FINETUNE_DATA_DIR, else None."""
    chosen = explicit or os.environ.get(DATA_ENV)
    return Path(chosen).expanduser() if chosen else None
