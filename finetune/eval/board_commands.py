"""What `finetune eval --with-base` and `finetune compare RUN RUN ...` (the board) do with run directories.

    eval_run_with_base(Path("runs/x"), ["arith_cot"])      # RUN/eval: finetuned + base (cached), cumulative report
    cmd_board(args)                                        # finetune compare runs/a runs/b [--fill]
"""

from pathlib import Path

from finetune.eval import BATCH_SIZE
from finetune.eval.pipeline import eval_base_and_finetuned, run_side_names
from finetune.rundir import base_spec, load_for_eval


def eval_run_with_base(run: Path, task_names: list[str], *, model=None, out: Path | None = None,
                       template: str | None = None, limit=None, seed: int = 0, batch_size: int = BATCH_SIZE,
                       dtype: str = "float32", data_path=None, cache: bool = True,
                       command: str = "finetune eval --with-base") -> dict:
    """Evaluate a run directory and its base on tasks into RUN/eval (base records from the cache where the key
    matches); the run's report then covers every task evaluated on it. `model`: (model, tokenizer) if loaded."""
    from finetune.eval.basecache import BaseCache, weights_fingerprint
    from finetune.model import load_model

    run = Path(run)
    if template is None and (run / "template.yaml").is_file():
        template = str(run / "template.yaml")
    model, tokenizer = model or load_for_eval(run, dtype=dtype)
    base_cache = BaseCache(weights=weights_fingerprint(base_spec(run)), dtype=dtype, batch_size=batch_size,
                           source=str(run)) \
        if cache else None
    return eval_base_and_finetuned(
        model, tokenizer, base_loader=lambda: load_model(base_spec(run), dtype=dtype), task_names=task_names,
        out_dir=out or run / "eval", template_name=template, batch_size=batch_size, limit=limit, seed=seed,
        data_path=data_path, run_dir=run, names=run_side_names(run), meta={"command": command},
        base_cache=base_cache)


def add_board_args(parser) -> None:
    """The board's options of `finetune compare` (its positional PATHs are compare's)."""
    parser.add_argument("--pair", action="store_true",
                        help="two run directories: compare their finetuned eval folders only (no board)")
    parser.add_argument("--fill", action="store_true",
                        help="board: evaluate each run on the tasks other runs have and it lacks (base records "
                             "from the base cache where the key matches); without it they are shown as missing")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"--fill: prompts decoded together (default {BATCH_SIZE})")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="--fill: dtype the runs are evaluated in")


def _fill(runs: list, args) -> None:
    """Evaluate each run (and its base, cached where the key matches) on the tasks other runs have and it lacks."""
    from finetune.eval.board import missing_tasks

    by_name = {r.name: r for r in runs}
    for name, tasks in missing_tasks(runs).items():
        for task in tasks:
            donor = next(r for r in runs if task in (r.tuned.get("tasks") or {}))
            entry = donor.tuned["tasks"][task]
            print(f"fill: evaluating {name} on {task} ({entry['task_path']}), as {donor.name} was", flush=True)
            eval_run_with_base(by_name[name].path, [entry["task_path"]],
                               limit=entry.get("limit", donor.tuned.get("limit")), seed=donor.tuned.get("seed", 0),
                               batch_size=args.batch_size, dtype=args.dtype, data_path=entry.get("data_path"),
                               command="finetune compare --fill")


def cmd_board(args) -> int:
    from finetune.eval.board import build_board, load_run, missing_tasks
    from finetune.eval.board_report import format_board, write_board

    runs = [load_run(p) for p in args.paths]
    if args.fill and missing_tasks(runs):
        _fill(runs, args)
        runs = [load_run(p) for p in args.paths]
    board = build_board(runs, n_boot=args.n_boot, seed=args.seed)
    out = Path(args.out) if args.out else Path(args.paths[0]).parent / "board"
    paths = write_board(out, board)
    print(format_board(board))
    print(f"\nwrote: {paths['html']} (also board.md, board.json)")
    return 0
