"""Training: recipe -> model -> method -> data -> TRL SFTTrainer -> run directory.

    finetune train recipes/quickstart.yaml train.max_steps=20

Reads top to bottom: `train` (status) -> `_train` (the story: recipe, model, data, manifest,
fit, save) -> the helpers it calls, in the order it calls them. TRL does the training loop
(`finetune/trainer.py`); `sft_config` lists the TRL defaults this project changes, each with
its reason (bf16 autocast only where the device runs it fast, gradient checkpointing only where memory
asks for it). An unfinished
run resumes from its last complete checkpoint.

Multi-process runs (`--nproc`, FSDP / DeepSpeed presets): after training every rank takes part
in the final save (`save_outputs`: the trainer's own save path, which gathers a full state dict
under FSDP / ZeRO-3), then the process group ends, then rank 0 alone reloads the saved, unsharded
weights from the run directory for what follows (evaluation); the other ranks return None.
Tested on CPU with 2 gloo processes (DDP: tests/test_distributed.py: both ranks save and exit,
the saved adapter equals a 1-process run's). Only a multi-GPU machine can show the sharded
cases: that the FSDP FULL_STATE_DICT / ZeRO-3 gather completes without a hang and the gathered
weights are whole (recipes/accelerate/*.yaml).
"""

import time
from pathlib import Path

import torch
from transformers import set_seed

from finetune.log import say
from finetune import launch, memory, precision, provenance, rundir
from finetune.launch import is_main
from finetune.rundir import RunDir
from finetune.data.audit import audit
from finetune.data.build import build_datasets
from finetune.data.tokenize import IGNORE
from finetune.errors import Interrupted
from finetune.eval import during
from finetune.faults import explain_oom
from finetune.methods import apply_method, format_table, trainable_table
from finetune.model import load_base, resolve_model
from finetune.recipe import Recipe, dump_recipe
from finetune.trainer import FinetuneTrainer, StopOnSignal, TaskEval, TrainLog, load_best


def train(recipe: Recipe, *, overwrite: bool = False, speed_off=()):
    """Train per the recipe; returns (run_dir, model, tokenizer, manifest), the trained model in memory.

    `speed_off`: speed paths to leave off (`finetune.speed.PATHS`), for benchmarks/levers.py.
    """
    run = RunDir(recipe.run_dir())
    resuming = run.prepare(overwrite or recipe.output.overwrite)
    run.set_status("running")
    try:
        result = _train(recipe, run.path, resuming, speed_off)
    except BaseException as e:
        error = "interrupted; rerun the same command to resume" if isinstance(e, (Interrupted, KeyboardInterrupt)) \
            else f"{type(e).__name__}: {e}"[:500]
        run.set_status("failed", error=error)
        raise
    run.set_status("finished")  # training's own state; an evaluation after it records its results apart
    return result


def _train(recipe: Recipe, run_dir: Path, resuming: bool, speed_off=()):
    started = time.time()
    run = RunDir(run_dir)
    rundir.write_atomic(run / RunDir.RECIPE, dump_recipe(recipe))
    set_seed(recipe.train.seed)
    base_path = resolve_model(recipe.model.name)
    model, tokenizer, table, est, checkpointing = setup_model(recipe)
    rundir.write_atomic(run / RunDir.TRAINABLE, format_table(table) + "\n")

    t_data = time.time()
    bundle = build_datasets(recipe.data, tokenizer, seed=recipe.train.seed)
    data_stats = audit(bundle, tokenizer, recipe.data.max_length)  # stops on zero/EOS-less/cut-off labels
    rundir.write_atomic(run / RunDir.TEMPLATE, bundle.template.source)
    manifest = _manifest(recipe, base_path, bundle, data_stats, table, est, checkpointing)
    manifest["wall_times"] = {"data_s": round(time.time() - t_data, 2)}
    run.write_manifest(manifest)

    t_train = time.time()
    trainer, metrics = fit(recipe, run_dir, model, tokenizer, bundle, resuming, checkpointing, speed_off)
    manifest["wall_times"]["train_s"] = round(time.time() - t_train, 2)
    manifest["train_metrics"] = metrics
    save_outputs(trainer, tokenizer, run, recipe.method.name)  # every rank: the last collective
    model = trainer.model.eval()
    precision.drop_autocast_forward(model)  # bf16 autocast was for training; evaluation chooses its own
    if launch.world_size() > 1:  # sharded (FSDP / ZeRO-3) or not, rank 0 goes on with the saved weights alone
        launch.end_process_group()
        model, tokenizer = run.load(dtype=recipe.model.dtype) if is_main() else (None, None)
    if is_main():
        plot_loss(run)
    manifest["wall_times"]["total_s"] = round(time.time() - started, 2)
    run.write_manifest(manifest)
    return run_dir, model, tokenizer, manifest


def _manifest(recipe: Recipe, base_path: str, bundle, data_stats: dict, table: dict, est, checkpointing: bool):
    """What a later reader needs to trust or reproduce the run (manifest.json)."""
    return {"recipe_hash": recipe.hash(), "recipe_file": recipe.source_path, "base_model": recipe.model.name,
            "base_model_path": base_path, "method": recipe.method.name, "template": bundle.template.name,
            "dataset_fingerprint": bundle.fingerprint, "data_stats": data_stats, "train_examples": len(bundle.train),
            "val_examples": len(bundle.val) if bundle.val is not None else 0,
            "toolkit_commit": provenance.toolkit_commit(), "versions": provenance.versions(), "trainable": table,
            "memory_estimate_bytes": est, "gradient_checkpointing": checkpointing,
            "precision": precision.resolve(recipe.model.dtype).to_dict()}


def setup_model(recipe: Recipe):
    """Base model + tokenizer with the method applied, and whether to checkpoint (train.gradient_checkpointing
    with `auto` decided); prints the trainable table and memory estimate."""
    say(precision.resolve(recipe.model.dtype).line())
    model, tokenizer = load_base(recipe.model)
    model = apply_method(model, recipe.method)
    table = trainable_table(model)
    say(format_table(table))
    available, where = memory.available_bytes()
    checkpointing = memory.use_checkpointing(model, recipe, available)
    est = memory.estimate(model, recipe, checkpointing)
    say(memory.format_estimate(est) + f" (gradient checkpointing {'on' if checkpointing else 'off'})")
    memory.check_fits(est, available, where, recipe)
    return model, tokenizer, table, est, checkpointing


def fit(recipe: Recipe, run_dir: Path, model, tokenizer, bundle, resuming: bool, checkpointing: bool,
        speed_off=()):
    """TRL SFTTrainer.train(), resuming from the last complete checkpoint; returns the trainer and metrics."""
    run = RunDir(run_dir)
    ckpt = run.last_checkpoint() if resuming else None
    stopper = StopOnSignal()
    log = TrainLog(run, int(ckpt.rsplit("-", 1)[1]) if ckpt else 0)
    scoring = TaskEval.for_recipe(recipe, bundle, tokenizer, log)  # eval.every_steps; [] when off
    trainer = make_trainer(recipe, run_dir, model, tokenizer, bundle, checkpointing, speed_off=speed_off,
                           callbacks=[log, stopper, *scoring])
    if ckpt:
        say(f"[finetune] resuming from {ckpt}")
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=ckpt)
    except BaseException as e:
        oom = explain_oom(e, recipe.train.batch_size, recipe.train.grad_accum, recipe.data.max_length)
        if oom:
            raise oom from e
        raise
    finally:
        stopper.uninstall()
    if stopper.requested:
        raise Interrupted(f"stopped at step {trainer.state.global_step}; checkpoint written to "
                          f"{run.last_checkpoint()}. Rerun the same command to resume.")
    kept = load_best(trainer) if recipe.eval.keep_best else None
    task_eval = during.finish(run, kept)
    return trainer, {**result.metrics, **({"task_eval": task_eval} if task_eval else {})}


def make_trainer(recipe: Recipe, run_dir: Path, model, tokenizer, bundle, checkpointing: bool, callbacks=(),
                 speed_off=(), trainer_class=None):
    """Our trainer on the recipe's data and TRL settings; `trainer_class=SFTTrainer` gives TRL's own on the same."""
    train_set, val_set = bundle.train, bundle.val
    if _padding_free(recipe):
        train_set, val_set = (cut_to_max_length(d, recipe.data.max_length) for d in (train_set, val_set))
    kwargs = dict(model=model, args=sft_config(recipe, run_dir, checkpointing), train_dataset=train_set,
                  eval_dataset=val_set, processing_class=tokenizer, callbacks=list(callbacks))
    trainer = (trainer_class or FinetuneTrainer)(**kwargs, **({} if trainer_class else dict(
        speed_paths=recipe.train.speed_paths, speed_off=speed_off)))
    for callback in trainer.callback_handler.callbacks:  # report_to's TensorBoard: inside the run directory
        if type(callback).__name__ == "TensorBoardCallback":
            callback.logging_dir = str(RunDir(run_dir) / RunDir.TENSORBOARD)
    return trainer


def sft_config(recipe: Recipe, run_dir: Path, checkpointing: bool):
    """TRL's config: the recipe's values, and below them each TRL default we change, with its reason.

    `checkpointing` is train.gradient_checkpointing with `auto` decided (memory.use_checkpointing).
    """
    from trl import SFTConfig

    t, on_gpu = recipe.train, torch.cuda.is_available()
    prec = precision.resolve(recipe.model.dtype)
    return SFTConfig(
        # from the recipe (train.*, data.*)
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the steps to transformers
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        packing=recipe.data.packing,
        padding_free=recipe.data.padding_free and t.neftune_alpha is None,  # packed rows: TRL makes them so
        # changed from TRL's defaults
        output_dir=str(run_dir / RunDir.CHECKPOINTS),  # checkpoints live inside the run directory
        data_seed=t.seed,  # TRL: None (data order from the global RNG); train.seed alone fixes the order
        save_total_limit=2,  # TRL: keep all; two suffice to resume when the newest was cut by a kill
        eval_strategy="steps" if recipe.data.val_size else "no",  # validation loss when data.val_size sets one
        eval_steps=t.save_steps,  # one validation loss per checkpoint
        # TRL: bf16 on. model.dtype auto: bf16 autocast over fp32 weights where the device runs bf16 fast
        # (CUDA with bf16, a CPU with AMX/AVX512-BF16, measured), fp32 elsewhere (finetune/precision.py)
        bf16=prec.autocast == "bfloat16",
        fp16=prec.autocast == "float16",
        use_cpu=not on_gpu,  # TRL refuses to start on a CPU-only machine without it
        # TRL: checkpoint every block; only where memory asks for it, every n-th block (train.checkpoint_every)
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"every_n_layers": t.checkpoint_every} if checkpointing else None,
        # padding-free rows are cut to max_length by `cut_to_max_length` (TRL refuses max_length with them)
        max_length=None if _padding_free(recipe) else recipe.data.max_length,
        disable_tqdm=False,  # TRL: None, which hides the progress bar when logging is quiet
        neftune_noise_alpha=t.neftune_alpha,  # transformers' embedding hook; None: off
        report_to=list(t.report_to) or "none",  # trackers only when asked; TensorBoard's folder: make_trainer
    )


def _padding_free(recipe: Recipe) -> bool:
    # NEFTune scales its noise by the row's length: one padding-free row of a whole batch would get
    # 1/sqrt(batch) of the noise each example gets in a padded batch, so NEFTune trains on padded batches
    return recipe.data.padding_free and not recipe.data.packing and recipe.train.neftune_alpha is None


def cut_to_max_length(dataset, max_length: int):
    """What TRL does with max_length when it may: keep the first max_length tokens, drop rows left without labels."""
    if dataset is None:
        return None
    cut = dataset.map(lambda r: {"input_ids": r["input_ids"][:max_length], "labels": r["labels"][:max_length]})
    return cut.filter(lambda r: any(t != IGNORE for t in r["labels"]))


def save_outputs(trainer, tokenizer, run: RunDir, method: str) -> None:
    """Final weights as safetensors (the adapter for LoRA, the whole model otherwise) and the tokenizer.

    Every rank calls the trainer's own save: under FSDP / ZeRO-3 it gathers the full state dict, a
    collective all ranks must join (rank 0 alone saving hangs there); rank 0 alone writes.
    """
    if not is_main():
        trainer.save_model(str(run.weights_dir(method)) + ".tmp")  # joins the gather, writes nothing
        trainer.accelerator.wait_for_everyone()
        return
    rundir.write_dir_atomic(run / RunDir.TOKENIZER, tokenizer.save_pretrained)

    def write(tmp: Path):
        trainer.save_model(str(tmp))
        for name in ["training_args.bin", *(p.name for p in (run / RunDir.TOKENIZER).iterdir())]:
            (tmp / name).unlink(missing_ok=True)  # the trainer saves these beside the weights; tokenizer/ has them
    rundir.write_dir_atomic(run.weights_dir(method), write)
    trainer.accelerator.wait_for_everyone()


def plot_loss(run: RunDir) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, out_path = run.train_log(), run / RunDir.LOSS_PLOT
    pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if pts:
        ax.plot(*zip(*pts), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    task = during.summary(rows)  # eval.every_steps: task accuracy on a second axis
    if task:
        from finetune.eval.plots import draw_task_axis
        draw_task_axis(ax, task["points"], task["metric"])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
