"""What produced a result: package versions and the toolkit commit, recorded in manifests and scores.

Read from package metadata and git, so recording them imports nothing heavy.
"""

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ["finetune", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "gguf"]


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
