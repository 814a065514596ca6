"""Data parallel through accelerate: 2 CPU processes (gloo) match 1 process; presets load."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RECIPE
from finetune.recipe import load_recipe
from finetune.resources import resource_dir
from finetune.rundir import RunDir
from finetune.train import train

# Same global batch: 1 process x 4 examples == 2 processes x 2 examples.
DDP_RECIPE = TINY_RECIPE.replace("limit: 32", "limit: 64").replace("alpha: 8}", "alpha: 8, dropout: 0.0}").replace(
    "train: {max_steps: 4, batch_size: 4, save_steps: 2, logging_steps: 1, lr: 1.0e-3}",
    "train: {max_steps: 6, batch_size: 4, save_steps: 3, logging_steps: 1, lr: 1.0e-3}")
TOLERANCE = 1e-4  # relative, per logged step: gradient all-reduce changes the float summation order


def curve(run_dir):
    return [(r["step"], r["loss"], r["num_tokens"]) for r in RunDir(run_dir).train_log() if "loss" in r]


def test_two_processes_match_one(write_recipe, tmp_path):
    path = write_recipe(DDP_RECIPE)
    single, *_ = train(load_recipe(path, [f"output.dir={tmp_path}/single"]))
    proc = subprocess.run([sys.executable, "-m", "finetune.cli", "train", str(path), "train.batch_size=2",
                           f"output.dir={tmp_path}/ddp", "--nproc", "2"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = curve(single), curve(tmp_path / "ddp")
    assert [s for s, *_ in one] == [s for s, *_ in two] == [1, 2, 3, 4, 5, 6]
    assert [t for *_, t in one] == [t for *_, t in two], "both see the same examples at each step"
    for (_, a, _), (_, b, _) in zip(one, two):
        assert abs(a - b) <= TOLERANCE * abs(a)
    # rank 0 alone wrote the run directory: one status, one log line per step
    assert RunDir(tmp_path / "ddp").status() == "finished"
    # every rank joined the trainer's save and exited (process group ended); the adapter is whole and the same
    adapter = RunDir(tmp_path / "ddp") / RunDir.ADAPTER
    assert sorted(p.name for p in adapter.iterdir()) == sorted(p.name for p in (single / RunDir.ADAPTER).iterdir())
    a = load_file(single / RunDir.ADAPTER / "adapter_model.safetensors")
    b = load_file(adapter / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


@pytest.mark.parametrize("path", sorted((resource_dir("recipes") / "accelerate").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_accelerate_presets_load(path):
    from accelerate.commands.config.config_args import load_config_from_file
    config = load_config_from_file(str(path))
    assert config.num_processes >= 2 and config.num_machines == 1
    if config.distributed_type.value == "FSDP":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if config.distributed_type.value == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)


def test_launch_command_strips_launch_flags():
    from finetune.launch import accelerate_command
    cmd = accelerate_command(["run", "r.yaml", "--nproc", "2", "train.lr=0.1"], 2, None)
    assert cmd[-4:] == ["finetune.cli", "run", "r.yaml", "train.lr=0.1"]
    assert "--num_processes" in cmd and "--multi_gpu" in cmd
