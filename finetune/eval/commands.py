"""`finetune eval` and `finetune compare`.

    finetune eval runs/quickstart --tasks arith_cot --limit 50          # the finetuned model
    finetune eval runs/quickstart --tasks arith_cot --with-base         # + base, paired report
    finetune eval /path/to/model --tasks gsm8k_cot_zeroshot --data-path ../shared/data
    finetune compare runs/a/eval/finetuned runs/b/eval/finetuned --out runs/a_vs_b
    finetune compare runs/a runs/b runs/c [--fill]                       # a board: every finetune vs the base
"""

import re
import sys
from pathlib import Path

from finetune.eval import BATCH_SIZE
from finetune.eval.compare import compare
from finetune.eval.harness import SCORES_FILE, evaluate
from finetune.eval.pipeline import run_side_names, single_side
from finetune.eval.report import format_table, write_report
from finetune.eval.tasks import TaskError, available_tasks, load_task
from finetune.log import say
from finetune.precision import eval_dtype, eval_line
from finetune.rundir import RunDir, is_run_dir, load_for_eval


def add_eval_args(parser):
    parser.add_argument("model", metavar="MODEL_OR_RUN",
                        help="a run directory (runs/<name>), a model folder, a hub id or a packaged model name")
    parser.add_argument("--tasks", required=True,
                        help="comma-separated task names or YAML paths (`finetune ls tasks`); 'all' for every task")
    parser.add_argument("--limit", type=int, default=None, help="at most N documents per task")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"prompts decoded together, lowered to fit the KV cache budget (default {BATCH_SIZE})")
    parser.add_argument("--out", default=None, help="results folder (default: RUN/eval[/finetuned] or runs/eval/NAME)")
    parser.add_argument("--template", default=None,
                        help="prompt template for every task (default: the run's own template, else each task's)")
    parser.add_argument("--data-path", default=None,
                        help="folder laid out like shared/data for local task data (default: $FINETUNE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and sampled decoding")
    parser.add_argument("--label", default="", help="name of this model in reports")
    parser.add_argument("--with-base", action="store_true",
                        help="run directories: also evaluate the base model and write the comparison report")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="auto (default): bf16 where this device decodes bf16 faster (a CPU with AMX/AVX512-BF16, "
                             "measured; CUDA with bf16), else float32")
    parser.add_argument("--no-base-cache", action="store_true",
                        help="score the base model even when the base cache holds records under the same key")


def add_compare_args(parser):
    from finetune.eval.board_commands import add_board_args

    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="two eval folders A B (A the reference), or two or more run directories sharing a base "
                             "(a board: each finetune against the base, the two best against each other)")
    parser.add_argument("--out", default=None,
                        help="report folder (default: B/../compare; a board: the runs' parent folder/board)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_board_args(parser)


def _task_names(spec: str) -> list[str]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    return available_tasks() if names == ["all"] else names


def _default_out(model: str, run: bool, with_base: bool) -> Path:
    if run:
        return Path(model) / "eval" if with_base else Path(model) / "eval" / "finetuned"
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or str(model))


def _warn_if_template_differs(run_dir: Path, template: str) -> None:
    """Loudly report evaluating a finetuned model with another prompt template than it trained with."""
    from finetune.prompts import load_template

    trained = run_dir / "template.yaml"
    if trained.is_file() and load_template(template).source != trained.read_text(encoding="utf-8"):
        bar = "!" * 78
        print(f"{bar}\nWARNING: {run_dir} was trained with the prompt template in {trained}, but is being "
              f"evaluated with {template!r}.\nScores will not reflect the model as trained; drop --template to "
              f"use the run's own.\n{bar}", file=sys.stderr, flush=True)


def cmd_eval(args) -> int:
    run = is_run_dir(args.model)
    names = _task_names(args.tasks)
    tasks = [load_task(n, data_path=args.data_path) for n in names]  # fail on a bad task before loading a model
    template = args.template or (str(Path(args.model) / "template.yaml")
                                 if run and (Path(args.model) / "template.yaml").is_file() else None)
    if run and args.template:
        _warn_if_template_differs(Path(args.model), args.template)
    out = Path(args.out) if args.out else _default_out(args.model, run, args.with_base)
    dtype = eval_dtype(args.dtype)
    if args.dtype == "auto":
        say(f"[finetune] {eval_line(args.dtype)}")
    model, tokenizer = load_for_eval(args.model, dtype=dtype)
    if args.with_base:
        if not run:
            raise TaskError(f"--with-base needs a run directory (it reads the base model from manifest.json); "
                            f"{args.model} is not one")
        from finetune.eval.board_commands import eval_run_with_base

        comparison = eval_run_with_base(Path(args.model), names, model=(model, tokenizer), out=out, template=template,
                                        limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                                        dtype=dtype, data_path=args.data_path, cache=not args.no_base_cache)
        print(format_table(comparison))
        print(f"\nwrote: report {out / 'report.html'} (also report.md, results.json; every task evaluated on this "
              f"run so far)\n       records {out / 'finetuned'} and {out / 'base'}")
        return 0
    scores = evaluate(model, tokenizer, tasks, out, template_name=template, batch_size=args.batch_size,
                      limit=args.limit, seed=args.seed, label=args.label or Path(args.model).name)
    print(format_table(single_side(out, scores)))
    print(f"\nwrote: per-sample records and scores.json in {out}")
    return 0


def _eval_dir(path) -> Path:
    """An eval folder, or a run directory's eval/finetuned folder."""
    p = Path(path)
    if (p / SCORES_FILE).is_file():
        return p
    if (p / "eval" / "finetuned" / SCORES_FILE).is_file():
        return p / "eval" / "finetuned"
    raise TaskError(f"{path}: no {SCORES_FILE} here or in {p / 'eval' / 'finetuned'}; run `finetune eval` first")


def _side_name(eval_dir: Path) -> str | None:
    """RUN/eval/base or RUN/eval/finetuned: the model as its run names it (see run_side_names); else None."""
    run, side = eval_dir.parent.parent, {"base": "a", "finetuned": "b"}.get(eval_dir.name)
    if side is None or eval_dir.parent.name != "eval" or not (RunDir(run) / RunDir.MANIFEST).is_file():
        return None
    try:
        return run_side_names(run)[side]
    except (OSError, ValueError, AttributeError):  # an unreadable manifest: fall back to the folder
        return None


def cmd_compare(args) -> int:
    """Two eval folders: the paired report; two or more run directories: the board (board_commands.cmd_board)."""
    if all(is_run_dir(p) for p in args.paths) and len(args.paths) >= 2 and not args.pair:
        from finetune.eval.board_commands import cmd_board
        return cmd_board(args)
    if len(args.paths) != 2:
        raise TaskError(f"compare takes two eval folders, or two or more run directories; got {len(args.paths)} "
                        f"paths, not all run directories: {', '.join(p for p in args.paths if not is_run_dir(p))}")
    args.a, args.b = args.paths
    a, b = _eval_dir(args.a), _eval_dir(args.b)
    comparison = compare(a, b, n_boot=args.n_boot, seed=args.seed)
    comparison["a"]["name"], comparison["b"]["name"] = _side_name(a), _side_name(b)
    if comparison["a"].get("label") == comparison["b"].get("label"):  # e.g. two runs' "finetuned": use paths
        comparison["a"]["label"], comparison["b"]["label"] = str(args.a), str(args.b)
    out = Path(args.out) if args.out else b.parent / "compare"
    write_report(out, comparison, meta={"A": str(a), "B": str(b)})
    print(format_table(comparison))
    print(f"\nreport: {out / 'report.html'}  (also report.md, results.json)")
    return 0
