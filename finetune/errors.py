"""The exceptions that mean "the user's input is wrong": printed as one message, exit status 2.

Every such exception derives from `UserError` (directly, or through a module's own class such
as RecipeError or DataError), so the CLI catches one class and imports nothing heavy to do so.
`Interrupted` is the stop a signal asks for (exit status 130), not an error.
"""

import sys


class UserError(ValueError):
    """A problem in what the user gave (file, key, row, path); str() is the whole message."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; rerunning resumes."""


# module -> exception class names that predate UserError; looked up only in modules already
# imported (an exception of a module never imported cannot have been raised)
_LEGACY = {
    "finetune.faults": ["TrainingError", "Interrupted"],
    "finetune.trainer": ["TrainingError", "Interrupted"],
    "finetune.export": ["ExportError"],
    "finetune.memory": ["MemoryEstimateError"],
    "finetune.rundir": ["RunDirError"],
}


def user_errors() -> tuple:
    """UserError and the classes of already-imported modules that do not derive from it yet."""
    found = [UserError]
    for module, names in _LEGACY.items():
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n) and n != "Interrupted"]
    return tuple(dict.fromkeys(found))


def interruptions() -> tuple:
    """Interrupted, wherever it is defined (finetune.faults kept its own class)."""
    found = [Interrupted]
    for module in ("finetune.faults", "finetune.trainer"):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, "Interrupted", None), type):
            found.append(mod.Interrupted)
    return tuple(dict.fromkeys(found))
