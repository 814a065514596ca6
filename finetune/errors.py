"""The exceptions that mean "the user's input is wrong": printed as one message, exit status 2."""

import importlib

# module -> exception class names; looked up lazily so optional parts may be absent
_SOURCES = {
    "finetune.schema": ["RecipeError"],
    "finetune.model": ["ModelError"],
    "finetune.methods": ["MethodError"],
    "finetune.prompts": ["TemplateError"],
    "finetune.rundir": ["RunDirError"],
    "finetune.data.errors": ["DataError"],
    "finetune.eval.taskfile": ["TaskError"],
    "finetune.faults": ["TrainingError"],
    "finetune.export": ["ExportError"],
    "finetune.memory": ["MemoryEstimateError"],
}


def _collect() -> tuple:
    found = []
    for module, names in _SOURCES.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(dict.fromkeys(found))


USER_ERRORS = _collect()
