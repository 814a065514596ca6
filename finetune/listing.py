"""`finetune ls datasets|tasks|templates|recipes`."""

from finetune.resources import resource_dir


def list_things(what: str) -> str:
    if what == "datasets":
        from finetune.data.registry import format_listing
        return format_listing()
    if what == "tasks":
        from finetune.eval.tasks import available_tasks
        return "\n".join(available_tasks())
    if what == "templates":
        from finetune.prompts import available_templates
        return "\n".join(available_templates())
    return "\n".join(sorted(p.stem for p in resource_dir("recipes").glob("*.yaml")))
