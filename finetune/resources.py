"""Where the user-editable folders live: recipes/, prompts/, eval/, data/.

They sit at the top of the repository, beside the package, so users read and copy them.
`FINETUNE_HOME` points at another checkout (e.g. when the package is installed elsewhere).
"""

import os
from pathlib import Path

KINDS = ("recipes", "prompts", "eval", "data")


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
