"""`finetune preview RECIPE`: see exactly what the model will be trained on, before training.

    finetune preview recipes/quickstart.yaml -n 3
    finetune preview recipes/quickstart.yaml data.max_length=128 --no-color

Builds the recipe's data exactly as training does (same template, tokenizer, masks and
cache), prints N examples with trained tokens in green, masked tokens (-100) in grey and
tokens beyond max_length in red, a `<think> ... </think>` block in cyan (trained) or blue
(masked), then the totals and the label audit that training runs before its first step.
Exit status 1 when the audit would stop training.
"""

import argparse
import os
import sys

from finetune.answers import THINK_CLOSE, THINK_OPEN
from finetune.data.audit import format_stats, problems_of
from finetune.data.build import DataBundle, build_datasets
from finetune.data.tokenize import IGNORE

GREEN, GREY, RED, BOLD, RESET = "\033[32m", "\033[90m", "\033[31m", "\033[1m", "\033[0m"
CYAN, BLUE = "\033[36m", "\033[34m"  # a think block: trained, masked
COLORS = {"trained": GREEN, "masked": GREY, "cut": RED, "think": CYAN, "think_masked": BLUE}


def add_preview_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. data.max_length=256")
    parser.add_argument("-n", "--num", type=int, default=3, metavar="N", help="examples to show (default 3)")
    parser.add_argument("--no-color", action="store_true", help="mark trained text with «» instead of colours")
    return parser


def think_flags(ids: list[int], tokenizer) -> list[bool]:
    """Per token: inside a `<think> ... </think>` block of the decoded text (tags included; an open one runs on)."""
    pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    text = "".join(pieces)
    spans, i = [], text.find(THINK_OPEN)
    while i >= 0:
        j = text.find(THINK_CLOSE, i)
        end = len(text) if j < 0 else j + len(THINK_CLOSE)
        spans.append((i, end))
        i = text.find(THINK_OPEN, end)
    flags, pos, k = [], 0, 0
    for piece in pieces:
        start, pos = pos, pos + len(piece)
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        flags.append(k < len(spans) and spans[k][0] < max(pos, start + 1))
    return flags


def _spans(ids: list[int], labels: list[int], max_length: int, think: list[bool] | None = None):
    """Runs of tokens with the same state: 'trained', 'masked', 'think', 'think_masked' or 'cut' (beyond max_length)."""
    state, run = None, []
    think = think or [False] * len(ids)
    for i, (tok, lab) in enumerate(zip(ids, labels)):
        s = "cut" if i >= max_length else "masked" if lab == IGNORE or i == 0 else "trained"
        if think[i] and s != "cut":
            s = "think" if s == "trained" else "think_masked"
        if s != state and run:
            yield state, run
            run = []
        state = s
        run.append(tok)
    if run:
        yield state, run


def render_example(ids: list[int], labels: list[int], tokenizer, max_length: int, color: bool = True) -> str:
    """One example's text, its loss mask shown by colour (or «trained» marks without colour)."""
    out = []
    for state, run in _spans(ids, labels, max_length, think_flags(ids, tokenizer)):
        text = tokenizer.decode(run, skip_special_tokens=False)
        if state == "cut":  # one run, at the end: every token from max_length on
            out.append(f"\n✂ max_length {max_length}: {len(ids) - max_length} more token(s) cut ✂\n")
        if color:
            out.append(COLORS[state] + text + RESET)
        else:
            out.append(f"«{text}»" if state in ("trained", "think") else text)
    return "".join(out)


def print_preview(bundle: DataBundle, tokenizer, max_length: int, n: int, color: bool, out=None) -> list[str]:
    """Print N examples and the totals; return the audit's problems (empty when training may start)."""
    out = out or sys.stdout
    paint = (lambda c, s: f"{c}{s}{RESET}") if color else (lambda c, s: s)
    legend = (f"{paint(GREEN, 'trained')} / {paint(GREY, 'masked (-100)')} / {paint(RED, 'cut (beyond max_length)')}"
              f" / {paint(CYAN, '<think> trained')} / {paint(BLUE, '<think> masked')}"
              if color else "«trained» / masked (-100) unmarked / ✂ cut beyond max_length")
    print(f"template {bundle.template.name} · max_length {max_length} · {legend}", file=out)
    for k in range(min(n, len(bundle.train))):
        row = bundle.train[k]
        trained = sum(1 for i, t in enumerate(row["labels"][:max_length]) if t != IGNORE and i)
        print(paint(BOLD, f"\n── example {k + 1} of {len(bundle.train)} · {len(row['input_ids'])} tokens · "
                          f"{trained} trained ──"), file=out)
        print(render_example(row["input_ids"], row["labels"], tokenizer, max_length, color), file=out)
    s = bundle.stats
    print(paint(BOLD, "\n── totals (train split) ──"), file=out)
    print(format_stats(s), file=out)
    for d in s["datasets"]:
        skipped = f", {d['skipped_rows']} invalid row(s) skipped" if d["skipped_rows"] else ""
        print(f"  {d['name']}: {d['rows']:,} rows from {d['read']}{skipped}"
              f"{' (tokenized earlier: cache hit)' if d['cache_hit'] else ''}", file=out)
        for msg in d["skipped_first"]:
            print(f"    skipped: {msg}", file=out)
    if s.get("val_examples"):
        print(f"validation examples {s['val_examples']:,}", file=out)
    problems = problems_of(s, tokenizer)
    verdict = paint(RED, "FAIL") if problems else paint(GREEN, "OK")
    print(f"label audit         {verdict}" + "".join(f"\n  - {p}" for p in problems), file=out)
    return problems


def cmd_preview(args) -> int:
    """Build the recipe's data as training would and print it; 1 when the label audit fails.

    Recipe, data and template errors propagate (the CLI prints them as one message).
    """
    from finetune.model import load_tokenizer
    from finetune.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides or [])
    tokenizer = load_tokenizer(recipe.model.name, revision=recipe.model.revision,
                               trust_remote_code=recipe.model.trust_remote_code)
    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)
    color = not args.no_color and "NO_COLOR" not in os.environ
    problems = print_preview(bundle, tokenizer, recipe.data.max_length, args.num, color)
    return 1 if problems else 0
