"""End to end on a tiny model: run directory, what trains, loss masks, loss falls, no overwrite."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RECIPE
from finetune.rundir import RunDir, RunDirError
from finetune.data.tokenize import IGNORE, encode_example
from finetune.prompts import load_template
from finetune.recipe import load_recipe
from finetune.testing import tiny_tokenizer
from finetune.train import train

RUN_FILES = {
    "recipe.yaml", "template.yaml", "manifest.json", "status.json", "trainable.txt", "logs/train_log.jsonl",
    "plots/loss.png", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
    "tokenizer/chat_template.jinja",
}


def files_in(run_dir):
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and not p.relative_to(run_dir).parts[0] == "checkpoints"}


def test_masked_label_count_for_known_example():
    tok = tiny_tokenizer()
    ex = encode_example(load_template("chat"), tok, "Q?", "A b")
    # "<|im_start|>" "user" "\n" "Q?" "<|im_end|>" "\n" "<|im_start|>" "assistant" "\n": 1+4+1+2+1+1+1+9+1
    assert ex["labels"].count(IGNORE) == 21
    trained = [t for t in ex["labels"] if t != IGNORE]
    assert tok.decode(trained) == "A b<|im_end|>\n"
    assert tok.eos_token_id in trained, "EOS must be trained"
    assert tok.pad_token_id != tok.eos_token_id


def test_lora_run_dir_and_only_adapters_train(write_recipe, tiny_dir):
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    run_dir, model, tok, manifest = train(recipe)
    assert RunDir(run_dir).status() == "finished", "training itself finishes the run, not the CLI"
    assert files_in(run_dir) == RUN_FILES | {"adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                                             "adapter/README.md"}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == \
        ["checkpoint-2", "checkpoint-4"]
    m = json.loads((run_dir / "manifest.json").read_text())
    for key in ("versions", "toolkit_commit", "recipe_hash", "dataset_fingerprint", "trainable", "wall_times"):
        assert key in m
    # r=4 on all 7 linear layers of 2 blocks (hidden 64, kv 32, mlp 128): 4,096 per block
    assert m["trainable"]["trainable"] == 8192
    base = load_file(f"{tiny_dir}/model.safetensors")
    merged_names = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                    for n, p in model.named_parameters() if "lora_" not in n}
    for name, tensor in base.items():
        assert torch.equal(merged_names[name], tensor), f"base weight {name} changed"
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items()), "lora_B never moved from zero"
    lines = [json.loads(l) for l in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "loss" in l] == [1, 2, 3, 4]


def test_freeze_keeps_frozen_weights_bit_identical(write_recipe, tiny_dir):
    text = TINY_RECIPE.replace("method: {name: lora, r: 4, alpha: 8}", "method: {name: freeze, layers: 1}") \
        .replace("train: {", "train: {gradient_checkpointing: true, ")
    run_dir, model, *_ = train(load_recipe(write_recipe(text)))
    assert "model/model.safetensors" in files_in(run_dir)
    assert model.config._attn_implementation == "sdpa", "the per-example attention is for training only"
    assert "attn_implementation" not in (run_dir / "model" / "config.json").read_text()
    base = load_file(f"{tiny_dir}/model.safetensors")
    tuned = load_file(run_dir / "model" / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == {k for k in base if k.startswith("model.layers.1.")}


def test_loss_falls_on_a_repeated_batch(write_recipe):
    text = TINY_RECIPE.replace("limit: 32", "limit: 1").replace(
        "train: {max_steps: 4, batch_size: 4, save_steps: 2, logging_steps: 1, lr: 1.0e-3}",
        "train: {max_steps: 30, batch_size: 1, save_steps: 100, logging_steps: 1, lr: 1.0e-2, "
        "scheduler: constant}").replace("method: {name: lora, r: 4, alpha: 8}", "method: {name: full}")
    run_dir, *_ = train(load_recipe(write_recipe(text)))
    losses = [json.loads(l)["loss"] for l in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()
              if "\"loss\"" in l]
    assert losses[-1] < 0.5 * losses[0], losses


def test_finished_run_is_not_overwritten(write_recipe):
    path = write_recipe(TINY_RECIPE.replace("max_steps: 4", "max_steps: 1"))
    train(load_recipe(path))
    with pytest.raises(RunDirError, match="holds a finished run; pass --overwrite"):
        train(load_recipe(path))
    train(load_recipe(path), overwrite=True)


def test_padding_free_rows_train_like_padded_ones(write_recipe, tmp_path):
    """One row per batch, no padding: the same losses as padded batches (no attention across examples)."""
    losses = {}
    for padding_free in (True, False):
        text = TINY_RECIPE.replace("data:", f"data:\n  padding_free: {str(padding_free).lower()}")
        recipe = load_recipe(write_recipe(text.replace("{out}", str(tmp_path / f"pf_{padding_free}"))))
        run_dir, *_ = train(recipe)
        rows = [json.loads(l) for l in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
        losses[padding_free] = [r["loss"] for r in rows if "loss" in r]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_cut_to_max_length_keeps_the_start_and_drops_rows_without_labels():
    from datasets import Dataset

    from finetune.train import cut_to_max_length
    ds = Dataset.from_list([{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
                            {"input_ids": [5, 6, 7], "labels": [-100, -100, -100]},
                            {"input_ids": [8, 9], "labels": [8, 9]}])
    cut = cut_to_max_length(ds, 2)
    assert cut["input_ids"] == [[8, 9]] and cut["labels"] == [[8, 9]]
    assert cut_to_max_length(ds, 3)["input_ids"] == [[1, 2, 3], [8, 9]]
