"""Export: merged LoRA folder equals the adapter model and loads with plain transformers; memory estimate."""

import subprocess
import sys

import pytest
import torch

from conftest import TINY_RECIPE
from finetune.rundir import load_for_eval
from finetune.export import ExportError, export_run
from finetune.memory import MemoryEstimateError, check_fits, estimate, use_checkpointing
from finetune.methods import apply_method
from finetune.recipe import load_recipe
from finetune.testing import tiny_model
from finetune.train import train


def test_merged_export_matches_adapter_and_loads_in_clean_python(write_recipe, tmp_path):
    run_dir, *_ = train(load_recipe(write_recipe(TINY_RECIPE)))
    with pytest.raises(ExportError, match="pass --merge"):
        export_run(run_dir, tmp_path / "x", merge=False)
    out = export_run(run_dir, tmp_path / "export", merge=True)
    adapter_model, tok = load_for_eval(run_dir)
    ids = tok("Emma has 3 coins.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = adapter_model(ids).logits
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(expected, tmp_path / "expected.pt")
    # a clean interpreter that imports only torch + transformers (not finetune, not peft)
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained({str(out)!r}); t = AutoTokenizer.from_pretrained({str(out)!r})
assert 'peft' not in sys.modules and 'finetune' not in sys.modules
ids = torch.load({str(tmp_path / 'ids.pt')!r}); exp = torch.load({str(tmp_path / 'expected.pt')!r})
with torch.no_grad(): got = m(ids).logits
print((got - exp).abs().max().item())
assert torch.allclose(got, exp, atol=1e-4), (got - exp).abs().max()
assert t.pad_token_id != t.eos_token_id and m.generation_config.eos_token_id == t.eos_token_id
assert t.chat_template
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_memory_estimate_counts_and_refuses(write_recipe):
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    model = apply_method(tiny_model(), recipe.method)
    est = estimate(model, recipe, checkpointing=True)
    assert est["weights"] == 4 * (81_088 + 8_192)  # fp32 base + LoRA r=4
    assert est["optimizer"] == 8 * 8_192 and est["gradients"] == 4 * 8_192
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    with pytest.raises(MemoryEstimateError, match=r"needs about .* GiB but only 0.0 GiB .*Lower train.batch_size"):
        check_fits(est, 1000.0, "available RAM", recipe)
    big = load_recipe(write_recipe(TINY_RECIPE), ["train.batch_size=64", "data.max_length=4096"])
    assert estimate(model, big, checkpointing=True)["activations"] > 100 * est["activations"]


def test_auto_checkpointing_only_where_memory_asks(write_recipe):
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    assert recipe.train.gradient_checkpointing == "auto"
    model = apply_method(tiny_model(), recipe.method)
    without = estimate(model, recipe, checkpointing=False)["total"]
    assert not use_checkpointing(model, recipe, available=2.1 * without)
    assert use_checkpointing(model, recipe, available=1.9 * without)
    for setting, available in ((True, 1e15), (False, 1.0)):
        fixed = load_recipe(write_recipe(TINY_RECIPE), [f"train.gradient_checkpointing={str(setting).lower()}"])
        assert use_checkpointing(model, fixed, available) is setting


def test_exported_folder_loads_in_lm_eval_hf(write_recipe, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    run_dir, *_ = train(load_recipe(write_recipe(TINY_RECIPE.replace("max_steps: 4", "max_steps: 1"))))
    out = export_run(run_dir, tmp_path / "export", merge=True)
    lm = HFLM(pretrained=str(out), device="cpu", batch_size=1)  # what `lm_eval --model hf` builds
    req = Instance(request_type="generate_until", doc={}, idx=0,
                   arguments=("Q: 1+1?\nA:", {"until": ["\n"], "max_gen_toks": 4}))
    assert len(lm.generate_until([req])) == 1
