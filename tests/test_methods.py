"""lora | freeze | full on tiny models of several architectures, and the trainable table."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config

from finetune.methods import MethodError, apply_freeze, apply_method, find_blocks, trainable_table
from finetune.recipe import MethodConfig
from finetune.testing import tiny_model

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=100)
ARCHS = {
    "gpt2": (GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=100), "transformer.h"),
    "llama": (LlamaConfig(**SMALL), "model.layers"),
    "qwen2": (Qwen2Config(**SMALL), "model.layers"),
    "gemma3": (Gemma3TextConfig(**SMALL, head_dim=8), "model.layers"),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_discovered_for_each_layout(arch):
    config, expected = ARCHS[arch]
    model = AutoModelForCausalLM.from_config(config)
    name, blocks = find_blocks(model)
    assert name == expected and len(blocks) == 3
    apply_freeze(model, 2, [])
    table = trainable_table(model)
    per_block = [r["trainable"] for r in table["rows"] if r["group"].startswith("block")]
    assert per_block[0] == 0 and per_block[1] == per_block[2] > 0
    assert table["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_freeze_first_n_and_extra_modules():
    model = apply_freeze(tiny_model(layers=3), -1, ["norm"])
    table = {r["group"]: r for r in trainable_table(model)["rows"]}
    assert table["block 0"]["trainable"] == table["block 0"]["total"]
    assert table["block 1"]["trainable"] == table["block 2"]["trainable"] == 0
    assert table["model.norm"]["trainable"] == 64


def test_bad_module_name_lists_valid_names():
    with pytest.raises(MethodError) as e:
        apply_freeze(tiny_model(), 1, ["final_norm"])
    assert "unknown module(s) ['final_norm']" in str(e.value)
    assert "norm" in str(e.value) and "lm_head" in str(e.value) and "embed_tokens" in str(e.value)


def test_too_many_layers_is_an_error():
    with pytest.raises(MethodError, match=r"layers: 5 asks for more blocks than the model has \(2\)"):
        apply_freeze(tiny_model(), 5, [])


def test_lora_trains_only_adapters_and_bad_target_fails():
    model = apply_method(tiny_model(), MethodConfig(name="lora", r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # all-linear: 7 projections per block x 2 blocks x (A, B)
    assert len(trainable) == 7 * 2 * 2
    with pytest.raises(MethodError, match="not found among the model's linear layers"):
        apply_method(tiny_model(), MethodConfig(name="lora", target_modules=["qkv"]))


def test_full_trains_everything():
    model = apply_method(tiny_model(), MethodConfig(name="full"))
    table = trainable_table(model)
    assert table["trainable"] == table["total"] and table["percent"] == 100.0


def test_one_step_changes_only_trainable_params():
    torch.manual_seed(0)
    model = apply_freeze(tiny_model(), 1, [])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(before[n], p), n
        else:
            assert torch.equal(before[n], p), n
