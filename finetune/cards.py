"""Result cards: what a recipe measured, written by its own run, and the table made from them.

    output: {card: recipes/results/{name}.json}    # in a recipe: `finetune run` writes its card there
    python -m finetune.cards                         # recipes/README.md's table and each recipe's
                                                     # `# measured:` line, rewritten from the cards

A card holds the base and finetuned scores of every task (target or guard) with the paired
difference, its 95% CI, p and n, the guard verdicts, wall times, the machine, the package
versions and the toolkit commit, and the command that reproduces it. It is read from the
files the run wrote (`manifest.json`, `eval/results.json`), never typed by hand.
"""

import json
import os
import platform
import time
from pathlib import Path

from finetune.eval.verdict import outcome
from finetune.resources import project_root
from finetune.rundir import RunDir

TABLE_HEADER = "| recipe | method | task | metric | base | finetuned | B − A [95% CI] | p | n | verdict | time |"


def _machine() -> dict:
    out = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
           # the load when the card is written: above the core count, other work shared the CPU during the run
           "load_avg_1_5_15min": [round(x, 2) for x in os.getloadavg()]}
    try:
        import torch
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
    except (ImportError, AttributeError):
        pass
    from finetune.precision import cpu_kind
    return {**out, **cpu_kind()}


def _task_rows(results: dict) -> dict:
    """Per task: role, metrics (base, finetuned, diff, CI, p, n) and guard verdicts of eval/results.json."""
    out = {}
    comparison = results.get("comparison") or results  # the cumulative report nests the latest comparison
    for name, task in (comparison.get("tasks") or {}).items():
        metrics = {key: {"base": m.get("a"), "finetuned": m.get("b"), "diff": m.get("diff"), "ci": m.get("ci"),
                         "p": m.get("p_value"), "n": m.get("n"), "test": m.get("test"),
                         "higher_is_better": m.get("higher_is_better", True)}
                   for key, m in (task.get("metrics") or {}).items()}
        verdicts = {key: v.get("label") for key, v in (task.get("verdicts") or {}).items()}
        out[name] = {"role": task.get("role", "target"), "metrics": metrics, "verdicts": verdicts}
    return out


def build_card(recipe, run_dir: Path, command: str) -> dict:
    """The card of a finished run, from the files it wrote."""
    manifest = RunDir(run_dir).manifest()
    results_path = Path(run_dir) / "eval" / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    return {
        "recipe": recipe.source_path, "name": Path(recipe.source_path).stem, "command": command,
        "model": recipe.model.name, "precision": manifest.get("precision") or {"requested": recipe.model.dtype},
        "method": recipe.to_dict()["method"],
        "data": [{k: v for k, v in d.items() if v not in (None, {}, [], False)} for d in recipe.to_dict()["data"]["datasets"]],
        "train": {"steps": recipe.train.max_steps, "batch_size": recipe.train.batch_size,
                  "grad_accum": recipe.train.grad_accum, "lr": recipe.train.lr,
                  "examples": manifest.get("train_examples")},
        "eval": {"limit": recipe.eval.limit, "tasks": recipe.eval.tasks, "guard_tasks": recipe.eval.guard_tasks},
        "tasks": _task_rows(results), "wall_s": manifest.get("wall_times", {}),
        "train_metrics": manifest.get("train_metrics"), "machine": _machine(),
        "versions": manifest.get("versions"), "toolkit_commit": manifest.get("toolkit_commit"),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_card(recipe, run_dir: Path, command: str) -> Path:
    name = Path(recipe.source_path).stem or "run"
    path = Path(recipe.output.card.replace("{name}", name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_card(recipe, run_dir, command), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _row(card: dict, task: str, key: str, m: dict, verdict: str) -> str:
    ci = m.get("ci") or [None, None]
    change = f"{m['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if m.get("diff") is not None and None not in ci else "—"
    minutes = (card.get("wall_s") or {}).get("total_s", 0) + (card.get("wall_s") or {}).get("eval_s", 0)
    return (f"| [{card['name']}]({Path(card['recipe']).name}) | {card['method']['name']} | {task} | {key} | "
            f"{_fmt(m.get('base'))} | {_fmt(m.get('finetuned'))} | {change} | {_fmt(m.get('p'))} | {_fmt(m.get('n'))} | "
            f"{verdict or _outcome(m)} | {minutes / 60:.0f} min |")


def _outcome(m: dict) -> str:
    """A target task's word (verdict.outcome); a dash where the card has no p."""
    if m.get("p") is None or m.get("diff") is None:
        return "—"
    return outcome(m["diff"], m["p"], m.get("higher_is_better", True))


def table(cards: list[dict]) -> str:
    """The recipes/README.md table: one row per recipe, task and metric."""
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for card in sorted(cards, key=lambda c: c["name"]):
        for task, t in card["tasks"].items():
            for key, m in t["metrics"].items():
                lines.append(_row(card, task + (" (guard)" if t["role"] == "guard" else ""), key, m,
                                  t["verdicts"].get(key, "")))
    return "\n".join(lines)


def headline(card: dict) -> str:
    """The recipe header's `# measured:` line: time, machine, and each metric's base -> finetuned."""
    wall = card.get("wall_s") or {}
    minutes = (wall.get("total_s", 0) + wall.get("eval_s", 0)) / 60
    machine = card.get("machine") or {}
    parts = []
    for task, t in card["tasks"].items():
        for key, m in t["metrics"].items():
            word = t["verdicts"].get(key) or _outcome(m)
            parts.append(f"{task} {key} {_fmt(m.get('base'))} -> {_fmt(m.get('finetuned'))} ({word})")
    load = machine.get("load_avg_1_5_15min") or [0, 0, 0]
    shared = f", shared: 15-min load {load[2]:g}" if load[2] > (machine.get("cpus") or 1) + 0.5 else ""
    return "\n#   ".join([f"# measured: {minutes:.0f} min on {machine.get('cpus')} CPU cores "
                          f"({_cpu(machine)}{shared}):", *parts])


def _cpu(machine: dict) -> str:
    """AVX512, with the bf16 flags a card records (older cards have none recorded: the capability alone)."""
    if "bf16_flags" not in machine:
        return str(machine.get("cpu_capability"))
    return f"{machine.get('cpu_capability')}, bf16: {'+'.join(machine['bf16_flags']) or 'none'}"


def _rewrite(path: Path, pattern: str, new_text: str) -> bool:
    import re

    text = path.read_text(encoding="utf-8")
    new = re.sub(pattern, lambda m: new_text, text, count=1, flags=re.MULTILINE)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def update(root: Path | None = None) -> list[str]:
    """Rewrite recipes/README.md's table and each carded recipe's `# measured:` line; the files changed."""
    import re

    folder = Path(root or project_root()) / "recipes"
    cards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "results").glob("*.json"))]
    changed = []
    if _rewrite(folder / "README.md", re.escape(TABLE_HEADER) + r"\n(\|.*\|\n?)+", table(cards) + "\n"):
        changed.append("recipes/README.md")
    for card in cards:
        recipe = folder / Path(card["recipe"]).name
        if recipe.is_file() and _rewrite(recipe, r"^# measured:.*(?:\n#   .*)*$", headline(card)):
            changed.append(f"recipes/{recipe.name}")
    return changed


if __name__ == "__main__":
    done = update()
    print(f"updated {', '.join(done)}" if done else "recipes/README.md and recipe headers already up to date")
