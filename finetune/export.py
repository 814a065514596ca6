"""`finetune export RUN [--merge] [--out DIR]`: a standard transformers folder.

LoRA runs with --merge get the adapter folded into the base weights (PEFT
merge_and_unload); freeze / full runs already hold whole weights. The folder has
safetensors weights, the tokenizer with its chat template, and a generation config whose
EOS and pad tokens match training, so it loads with plain transformers:

    AutoModelForCausalLM.from_pretrained("runs/quickstart/export")
    lm_eval --model hf --model_args pretrained=runs/quickstart/export --tasks gsm8k
"""

import argparse
from pathlib import Path

from finetune import rundir
from finetune.errors import UserError
from finetune.rundir import RunDir


class ExportError(UserError):
    pass


def add_export_args(p: argparse.ArgumentParser):
    p.add_argument("run", help="run directory")
    p.add_argument("--merge", action="store_true", help="LoRA: merge the adapter into the base weights")
    p.add_argument("--out", default=None, help="output folder (default RUN/export)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")


def export_run(run_dir: Path, out: Path, merge: bool, force: bool = False) -> Path:
    run = RunDir(run_dir)
    if not run.has_weights():
        raise ExportError(f"{run_dir}: not a finished run directory (needs {RunDir.MANIFEST} and "
                          f"{RunDir.ADAPTER}/ or {RunDir.MODEL}/)")
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it")
    is_lora = run.is_lora()
    if is_lora and not merge:
        raise ExportError(f"{run_dir} is a LoRA run: pass --merge to fold the adapter into the base weights "
                          f"(the adapter alone is already in {run / RunDir.ADAPTER} and loads with PEFT)")
    model, tokenizer = run.load()
    if is_lora:
        model = model.merge_and_unload()
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    def write(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    rundir.write_dir_atomic(out, write)
    rundir.write_atomic(out / "EXPORTED_FROM.txt", f"{run_dir.resolve()}\nmerged: {is_lora}\n")
    return out


def cmd_export(args) -> int:
    run_dir = Path(args.run)
    out = export_run(run_dir, Path(args.out) if args.out else run_dir / "export", args.merge, args.force)
    print(f"[finetune] exported to {out}")
    return 0
