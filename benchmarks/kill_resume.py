"""Longer crash test: kill -9 a real run at many random moments, resume each, compare.

    python benchmarks/kill_resume.py --kills 10 [--model smollm2-135m-instruct]

Runs the recipe once uninterrupted, then for each kill point starts `finetune run`, kills it
with SIGKILL after a random number of logged steps (or during evaluation), checks no file
in the run directory is corrupt, resumes with the same command, and checks the loss curve,
the weights and the evaluation records equal the uninterrupted run's. The default model is
a tiny random one (seconds per run); pass --model for a real one.
"""

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from finetune.rundir import RunDir

RECIPE = """\
model: {{name: "{model}"}}
method: {{name: lora, r: 4, alpha: 8}}
data:
  datasets: [{{name: arith_cot, limit: 64}}]
  max_length: 512
train: {{max_steps: 16, batch_size: 2, save_steps: 3, logging_steps: 1, lr: 1.0e-3}}
eval: {{tasks: [arith_cot], limit: 6, batch_size: 2}}
output: {{dir: "{out}"}}
"""


def start(recipe: Path, out: Path):
    return subprocess.Popen([sys.executable, "-m", "finetune.cli", "run", str(recipe), f"output.dir={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def snapshot(run: Path) -> dict:
    log = RunDir(run).loss_points()
    weights = load_file(RunDir(run) / RunDir.ADAPTER / "adapter_model.safetensors")
    recs = {side: (RunDir(run) / RunDir.EVAL / side / "arith_cot.jsonl").read_text() for side in ("base", "finetuned")}
    recs = {k: sorted(json.loads(l)["output"] for l in v.splitlines()) for k, v in recs.items()}
    return {"log": log, "weights": weights, "records": recs}


def check_files(run: Path):
    for p in run.rglob("*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(l) for l in p.read_text().splitlines()]
        elif p.suffix == ".safetensors":
            load_file(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="default: a tiny random model saved to a temp folder")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from finetune.testing import save_tiny
            model = save_tiny(tmp / "tiny")
        recipe = tmp / "r.yaml"
        recipe.write_text(RECIPE.format(model=model, out=tmp / "ref"))
        assert start(recipe, tmp / "ref").wait() == 0
        ref = snapshot(tmp / "ref")
        ok = 0
        for k in range(args.kills):
            out = tmp / f"k{k}"
            in_eval = rng.random() < 0.3
            target = rng.randint(1, 15)
            proc = start(recipe, out)
            log, rec = RunDir(out) / RunDir.TRAIN_LOG, RunDir(out) / RunDir.EVAL / "finetuned/arith_cot.jsonl"
            while proc.poll() is None and not (lines(rec) >= 2 if in_eval else lines(log) >= target):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            check_files(out)
            assert start(recipe, out).wait() == 0, f"resume {k} failed"
            got = snapshot(out)
            same = got["log"] == ref["log"] and got["records"] == ref["records"] and all(
                torch.equal(got["weights"][n], ref["weights"][n]) for n in ref["weights"])
            ok += same
            print(f"kill {k}: {'during eval' if in_eval else f'after {target} steps'} -> "
                  f"{'identical' if same else 'DIFFERENT'}", flush=True)
        print(f"{ok}/{args.kills} resumed runs identical to the uninterrupted run")
        sys.exit(0 if ok == args.kills else 1)


if __name__ == "__main__":
    main()
