"""Multi-process training through accelerate (DDP; FSDP / DeepSpeed via preset configs).

    finetune run recipe.yaml --nproc 2                       # 2 processes (gloo on CPU, NCCL on GPU)
    finetune run recipe.yaml --accelerate-config recipes/accelerate/fsdp.yaml

re-executes the same command under `accelerate launch`. Each process reads
train.batch_size examples per step, so the global batch is nproc x batch_size x grad_accum.
Only rank 0 writes the run directory and runs the evaluation; every rank takes part in the
final save (finetune/train.py), then the process group ends.
"""

import os
import subprocess
import sys

from finetune.log import say


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def end_process_group() -> None:
    """After the last collective (the final save): what follows is rank 0's alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launched() -> bool:
    return world_size() > 1 or "ACCELERATE_CONFIG_FILE_USED" in os.environ


def strip_launch_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--nproc", "--accelerate-config"):
            skip = True
            continue
        if a.startswith(("--nproc=", "--accelerate-config=")):
            continue
        out.append(a)
    return out


def accelerate_command(argv: list[str], nproc: int | None, config: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config:
        cmd += ["--config_file", config]
    if nproc:
        cmd += ["--num_processes", str(nproc), "--num_machines", "1", "--dynamo_backend", "no"]
        if not config:
            # accelerate's "--multi_gpu" is its torchrun launcher; on a CPU-only machine the
            # processes then join a gloo group ("--cpu" would start a single process).
            cmd += ["--mixed_precision", "no", "--multi_gpu"]
    return cmd + ["-m", "finetune.cli", *strip_launch_args(argv)]


def relaunch(argv: list[str], nproc: int | None, config: str | None) -> int:
    """Run this same finetune command under accelerate; returns its exit status."""
    env = dict(os.environ, ACCELERATE_CONFIG_FILE_USED="1", OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(nproc or 1, 1)))))
    cmd = accelerate_command(argv, nproc, config)
    say(f"[finetune] launching: {' '.join(cmd[2:])}")
    return subprocess.call(cmd, env=env)
