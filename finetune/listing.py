"""`finetune ls datasets|tasks|templates|recipes`."""

from finetune.resources import resource_dir


def list_things(what: str) -> str:
    if what == "datasets":
        from finetune.data import registry
        return registry.format_listing() if hasattr(registry, "format_listing") else _files("data")
    if what == "tasks":
        from finetune.eval.tasks import available_tasks
        return "\n".join(available_tasks())
    if what == "templates":
        from finetune.prompts import available_templates
        return "\n".join(available_templates())
    return _files("recipes")


def _files(kind: str) -> str:
    return "\n".join(sorted(p.stem for p in resource_dir(kind).glob("*.yaml")))
