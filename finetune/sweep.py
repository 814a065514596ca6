"""Choose a recipe's hyper-parameters on its validation split, never on an eval task's test split.

    python -m finetune.sweep recipes/gsm8k_cot_freeze.yaml method.layers=2,4,8 \
        --set data.val_size=48 --set train.max_steps=25 --out /tmp/sweep --json recipes/results/sweeps/x.json

Each value (or each combination, when several keys are swept) is one `finetune train` in its own
process and run directory, with the recipe's own settings plus `--set` overrides; the score is the
validation loss TRL logs on `data.val_size` held-out training rows at each checkpoint (the last one
is the one compared). Eval tasks are not run. The table and the JSON name every setting tried, so a
recipe header can say what was tried and why the shipped value won.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from finetune.rundir import RunDir


def grid(specs: list[str]) -> list[dict[str, str]]:
    """key=v1,v2 ... -> every combination as {key: value} (values kept as the text given)."""
    axes = []
    for spec in specs:
        key, eq, values = spec.partition("=")
        if not eq or not key or not values:
            raise SystemExit(f"sweep: {spec!r}: expected KEY=V1,V2,... e.g. method.layers=2,4,8")
        axes.append([(key, v.strip()) for v in values.split(",") if v.strip()])
    return [dict(combo) for combo in itertools.product(*axes)]


def run_one(recipe: str, setting: dict, overrides: list[str], out: Path) -> dict:
    name = ",".join(f"{k}={v}" for k, v in setting.items())
    run_dir = out / name.replace("/", "_")
    cmd = [sys.executable, "-m", "finetune.cli", "train", recipe, *overrides,
           *(f"{k}={v}" for k, v in setting.items()), f"output.dir={run_dir}", "--overwrite"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = round(time.time() - t0, 1)
    if proc.returncode != 0:
        return {"setting": setting, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "wall_s": wall}
    log = RunDir(run_dir).train_log()
    evals = [(r["step"], r["eval_loss"]) for r in log if "eval_loss" in r]
    losses = [r["loss"] for r in log if "loss" in r]
    if not evals:
        return {"setting": setting, "error": ["no eval_loss logged: set data.val_size (and a save_steps "
                                              "that the run reaches)"], "wall_s": wall}
    return {"setting": setting, "val_loss": round(evals[-1][1], 4), "val_curve": evals,
            "train_loss_last": round(losses[-1], 4) if losses else None, "wall_s": wall}


def table(results: list[dict]) -> str:
    rows = ["| setting | validation loss | last train loss | wall s |", "|---|---|---|---|"]
    best = min((r for r in results if "val_loss" in r), key=lambda r: r["val_loss"], default=None)
    for r in results:
        name = ", ".join(f"{k}={v}" for k, v in r["setting"].items())
        mark = " (best)" if r is best else ""
        rows.append(f"| {name}{mark} | {r.get('val_loss', 'error: ' + ' '.join(r.get('error', [])))} | "
                    f"{r.get('train_loss_last', '')} | {r['wall_s']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("sweep", nargs="+", help="KEY=V1,V2,... (several: every combination)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out", default="runs/sweeps", help="parent folder of the sweep's run directories")
    p.add_argument("--json", help="write the results (settings, losses, load, command) here")
    args = p.parse_args(argv)
    out = Path(args.out) / Path(args.recipe).stem
    results = []
    for setting in grid(args.sweep):
        results.append(run_one(args.recipe, setting, args.set, out))
        print(f"[sweep] {setting}: {results[-1].get('val_loss', results[-1].get('error'))} "
              f"({results[-1]['wall_s']} s)", flush=True)
    print(table(results))
    if args.json:
        record = {"recipe": args.recipe, "command": "python -m finetune.sweep " + " ".join(argv or sys.argv[1:]),
                  "overrides": args.set, "results": results, "load_avg_1_5_15min": list(os.getloadavg()),
                  "cpus": os.cpu_count(), "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0 if any("val_loss" in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
