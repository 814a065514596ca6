"""The `finetune` command.

    finetune run recipes/quickstart.yaml            train, then compare base vs finetuned
    finetune train recipes/quickstart.yaml train.max_steps=20
    finetune validate recipes/quickstart.yaml
    finetune preview recipes/quickstart.yaml -n 3
    finetune eval runs/quickstart --tasks arith_cot
    finetune compare runs/a/eval/finetuned runs/b/eval/finetuned
    finetune rescore runs/quickstart/eval            re-apply edited task filters to the saved outputs
    finetune export runs/quickstart --merge          a standard transformers folder (default RUN/export)
    finetune ls datasets|tasks|templates|recipes

User errors (bad recipe, data, paths) print one message and exit with status 2;
`--debug` shows the traceback.
"""

import argparse
import importlib
import os
import sys

from finetune.errors import Interrupted, UserError


def _add_recipe_args(p: argparse.ArgumentParser, launch: bool = False):
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=20 method.r=8")
    if launch:
        p.add_argument("--overwrite", action="store_true", help="replace a finished run directory")
        p.add_argument("--nproc", type=int, default=None, help="data-parallel processes (accelerate launch)")
        p.add_argument("--accelerate-config", default=None,
                       help="accelerate config file, e.g. recipes/accelerate/fsdp.yaml")


def _load(args):
    from finetune import preflight
    from finetune.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    preflight.check(recipe)
    return recipe


def cmd_validate(args):
    recipe = _load(args)
    if args.explain:
        from finetune.reference import schema_reference
        print(schema_reference())
    print(f"{args.recipe}: OK ({recipe.method.name} on {recipe.model.name}, "
          f"{len(recipe.data.datasets)} dataset(s), run dir {recipe.run_dir()})")
    from finetune.preflight import print_contamination
    print_contamination(recipe)


def cmd_train(args, evaluate: bool = False):
    from finetune import launch
    from finetune.train import train

    recipe = _load(args)
    if recipe.star.rounds:  # STaR: rounds of sample -> keep -> train -> eval (finetune/star/)
        return _star(recipe, args)
    if (args.nproc or args.accelerate_config) and not launch.launched():
        raise SystemExit(launch.relaunch(sys.argv[1:], args.nproc, args.accelerate_config))
    run_dir, model, tokenizer, manifest = train(recipe, overwrite=args.overwrite)
    if not launch.is_main():
        return  # rank 0 alone writes the run directory and evaluates
    if evaluate and (recipe.eval.tasks or recipe.eval.guard_tasks) and not args.no_eval:
        from finetune.eval.run import evaluate_run
        from finetune.rundir import RunDir
        with RunDir(run_dir).evaluating():  # status.json: training stays finished, eval beside it
            evaluate_run(recipe, run_dir, model, tokenizer, manifest)
        if recipe.output.card:
            from finetune.cards import write_card
            print(f"[finetune] result card: {write_card(recipe, run_dir, _command(args))}")
    print(f"[finetune] done: {run_dir}")


def _star(recipe, args):
    from finetune.star import StarError, run_star

    if args.nproc or args.accelerate_config:
        raise StarError("star: one process only; drop --nproc / --accelerate-config")
    run_star(recipe, overwrite=args.overwrite)
    print(f"[finetune] done: {recipe.run_dir()} (STaR report: {recipe.run_dir() / 'report.md'})")


def _command(args) -> str:
    """The command that reproduces this run, as a user would type it."""
    env = os.environ.get("FINETUNE_DATA_DIR")
    data = f"FINETUNE_DATA_DIR={os.path.relpath(env)} " if env else ""
    return f"{data}finetune run {args.recipe}" + "".join(f" {o}" for o in args.overrides)


def cmd_run(args):
    cmd_train(args, evaluate=True)


def cmd_ls(args):
    from finetune.listing import list_things
    print(list_things(args.what))


def build_parser(argv=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description="Instruction and CoT finetuning that tells you "
                                     "whether it helped.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train, then evaluate base vs finetuned and write the report")
    _add_recipe_args(p, launch=True)
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train only")
    _add_recipe_args(p, launch=True)
    p.set_defaults(func=cmd_train, no_eval=True)

    p = sub.add_parser("validate", help="check a recipe and report every problem")
    _add_recipe_args(p)
    p.add_argument("--explain", action="store_true", help="also print every recipe key with its help")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("ls", help="list datasets, eval tasks, prompt templates or recipes")
    p.add_argument("what", choices=["datasets", "tasks", "templates", "recipes"])
    p.set_defaults(func=cmd_ls)

    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    for name, (module, add_args, func, help) in LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=help)
        if name == chosen:  # only the command that runs imports its module (and torch, if it needs it)
            mod = importlib.import_module(module)
            getattr(mod, add_args)(p)
            p.set_defaults(func=WRAPPERS.get(name, lambda f: f)(getattr(mod, func)))
    return parser


def _then_contamination(cmd_preview):
    """preview (in finetune/data/, which never imports eval) followed by the contamination lines."""
    def run(args):
        code = cmd_preview(args)
        from finetune.preflight import print_contamination
        from finetune.recipe import load_recipe
        print_contamination(load_recipe(args.recipe, args.overrides or []))
        return code
    return run


WRAPPERS = {"preview": _then_contamination}
# name -> (module, its add-arguments function, its command function, help); imported only when chosen
LAZY_COMMANDS = {
    "preview": ("finetune.data.preview", "add_preview_args", "cmd_preview",
                "show rendered examples with trained tokens coloured, the label audit and contamination"),
    "eval": ("finetune.eval.commands", "add_eval_args", "cmd_eval", "evaluate a model or run directory on eval tasks"),
    "compare": ("finetune.eval.commands", "add_compare_args", "cmd_compare",
                "compare eval result folders or runs (paired tests, flips, report)"),
    "rescore": ("finetune.eval.rescore", "add_rescore_args", "cmd_rescore",
                "apply tasks' current filters to saved eval outputs; rewrite scores and report (no model)"),
    "export": ("finetune.export", "add_export_args", "cmd_export",
               "write a standard transformers folder (LoRA: --merge the adapter)"),
}


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from finetune.speed.perf import tune_allocator
    tune_allocator()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except Interrupted as e:
        print(f"\n[finetune] {e}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; the run directory keeps its last complete checkpoint (rerun to resume)",
              file=sys.stderr)
        return 130
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Exception, RecursionError, MemoryError) as e:  # a bug of ours: one line, not a traceback
        if args.debug:
            raise
        command = " ".join(["finetune", *(argv if argv is not None else sys.argv[1:])])
        print(f"error: internal error in `{command[:300]}`: {type(e).__name__}: {str(e)[:500]} (this is a bug "
              "in finetune: rerun with --debug for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
