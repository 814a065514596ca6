"""Crash safety: kill -9 at random moments, resume, and get the uninterrupted result exactly."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RECIPE
from finetune.recipe import load_recipe
from finetune.train import train

KILL_RECIPE = TINY_RECIPE.replace("limit: 32", "limit: 64").replace(
    "train: {max_steps: 4, batch_size: 4, save_steps: 2, logging_steps: 1, lr: 1.0e-3}",
    "train: {max_steps: 16, batch_size: 2, save_steps: 3, logging_steps: 1, lr: 1.0e-3}")


def losses(run_dir):
    lines = (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "finetune.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def assert_no_corrupt_files(run_dir):
    for path in run_dir.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(l) for l in path.read_text().splitlines()]
        elif path.suffix == ".safetensors":
            load_file(path)


def test_same_seed_gives_identical_loss_curve(write_recipe, tmp_path):
    a, *_ = train(load_recipe(write_recipe(TINY_RECIPE), [f"output.dir={tmp_path}/a"]))
    b, *_ = train(load_recipe(write_recipe(TINY_RECIPE), [f"output.dir={tmp_path}/b"]))
    assert losses(a) == losses(b) and len(losses(a)) == 4


def test_kill_at_random_moments_then_resume_matches_uninterrupted(write_recipe, tmp_path):
    recipe = write_recipe(KILL_RECIPE)
    ref, *_ = train(load_recipe(recipe, [f"output.dir={tmp_path}/ref"]))
    ref_losses, ref_adapter = losses(ref), load_file(ref / "adapter" / "adapter_model.safetensors")

    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    for i, kill_after in enumerate(sorted(rng.sample(range(2, 15), 2))):
        out = tmp_path / f"killed{i}"
        proc = cli("train", str(recipe), f"output.dir={out}")
        log = out / "logs" / "train_log.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= kill_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before the kill point: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert json.loads((out / "status.json").read_text())["state"] == "running"
        assert_no_corrupt_files(out)
        resumed = cli("train", str(recipe), f"output.dir={out}")
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
        assert losses(out) == ref_losses, f"kill after {kill_after} log lines"
        adapter = load_file(out / "adapter" / "adapter_model.safetensors")
        assert all(torch.equal(adapter[k], ref_adapter[k]) for k in ref_adapter)
        assert json.loads((out / "status.json").read_text())["state"] == "finished"
        assert_no_corrupt_files(out)


def test_half_written_checkpoint_is_never_loaded(write_recipe, tmp_path):
    from finetune.rundir import RunDir
    recipe = load_recipe(write_recipe(KILL_RECIPE), [f"output.dir={tmp_path}/r", "train.max_steps=6"])
    run_dir, *_ = train(recipe)
    broken = run_dir / "checkpoints" / "checkpoint-9"
    broken.mkdir()
    (broken / "trainer_state.json").write_text('{"global_step": 9, "log_hi')  # killed mid-write
    assert RunDir(run_dir).last_checkpoint().endswith("checkpoint-6")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_writes_checkpoint_and_exits_cleanly(write_recipe, tmp_path, sig):
    recipe = write_recipe(KILL_RECIPE.replace("save_steps: 3", "save_steps: 100"))
    out = tmp_path / "run"
    proc = cli("train", str(recipe), f"output.dir={out}")
    log = out / "logs" / "train_log.jsonl"
    while proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read()
    assert "checkpoint written to" in err and "Traceback" not in err
    ckpts = list((out / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1, "one checkpoint at the interrupted step (save_steps is 100)"
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


def records(path):
    return {r["doc_id"]: (r.get("output"), r.get("correct")) for r in map(json.loads, path.read_text().splitlines())}


def test_kill_during_evaluation_resumes_from_records(write_recipe, tmp_path):
    text = TINY_RECIPE.replace("output:", "eval: {tasks: [arith_cot], limit: 4, batch_size: 2}\noutput:")
    recipe = write_recipe(text)
    ref = tmp_path / "ref"
    assert cli("run", str(recipe), f"output.dir={ref}").wait(timeout=600) == 0
    out = tmp_path / "killed"
    proc = cli("run", str(recipe), f"output.dir={out}")
    first = out / "eval" / "finetuned" / "arith_cot.jsonl"
    while proc.poll() is None and not (first.exists() and len(first.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(first.read_text().splitlines())
    assert 2 <= done_before < 4 and not (out / "eval" / "results.json").exists()
    resumed = cli("run", str(recipe), f"output.dir={out}")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    for side in ("finetuned", "base"):
        assert records(out / "eval" / side / "arith_cot.jsonl") == records(ref / "eval" / side / "arith_cot.jsonl")
    a = json.loads((ref / "eval" / "results.json").read_text())
    b = json.loads((out / "eval" / "results.json").read_text())
    assert a["comparison"]["tasks"]["arith_cot"]["metrics"] == b["comparison"]["tasks"]["arith_cot"]["metrics"]
    assert_no_corrupt_files(out)
