"""Runtime faults and safe loading: NaN loss, OOM advice, pickle refusal, no secrets in run dirs."""

import json

import pytest
import torch

import finetune.train as train_mod
from conftest import TINY_RECIPE
from finetune.rundir import RunDir
from finetune.faults import TrainingError, explain_oom
from finetune.model import ModelError, load_model
from finetune.recipe import load_recipe


def test_nan_loss_stops_and_keeps_last_good_checkpoint(write_recipe, monkeypatch):
    real_setup = train_mod.setup_model
    calls = {"n": 0}

    def poisoned_setup(recipe):
        model, *rest = real_setup(recipe)

        def hook(module, inputs, output):
            calls["n"] += 1
            return output * float("nan") if calls["n"] > 3 else output  # forward 4 = step 4
        final_norm = next(m for n, m in model.named_modules() if n.endswith("model.norm"))
        final_norm.register_forward_hook(hook)
        return (model, *rest)

    monkeypatch.setattr(train_mod, "setup_model", poisoned_setup)
    recipe = load_recipe(write_recipe(TINY_RECIPE.replace("max_steps: 4", "max_steps: 8")))
    with pytest.raises(TrainingError, match=r"loss became nan at step 4; stopped before saving it"):
        train_mod.train(recipe)
    run = RunDir(recipe.run_dir())
    assert run.status() == "failed"
    assert run.last_checkpoint().endswith("checkpoint-2")
    from safetensors.torch import load_file
    weights = load_file(f"{run.last_checkpoint()}/adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_out_of_memory_names_the_batch_settings():
    err = explain_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"),
                      batch_size=16, grad_accum=1, max_length=2048)
    assert "train.batch_size=16" in str(err) and "data.max_length=2048" in str(err)
    assert "raise train.grad_accum" in str(err)
    assert explain_oom(ValueError("other"), 1, 1, 1) is None


def test_pickled_weights_are_refused_unless_allowed(tmp_path, tiny_dir):
    from finetune.testing import tiny_model, tiny_tokenizer
    folder = tmp_path / "pickled"
    model = tiny_model()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the pickled format
    (folder / "model.safetensors").unlink()
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    with pytest.raises(ModelError, match="only pickled .bin weights.*model.allow_pickle: true"):
        load_model(str(folder))
    model, _ = load_model(str(folder), allow_pickle=True)
    assert model is not None


def test_trust_remote_code_is_off_by_default(write_recipe, monkeypatch):
    seen = {}
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen["trust_remote_code"] = kwargs.get("trust_remote_code")
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    assert recipe.model.trust_remote_code is False
    load_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    assert seen["trust_remote_code"] is False


def test_no_secret_from_environment_reaches_the_run_dir(write_recipe, monkeypatch):
    secret = "hf_FAKEtoken1234567890abcdefSECRET"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("WANDB_API_KEY", secret)
    run_dir, *_ = train_mod.train(load_recipe(write_recipe(TINY_RECIPE)))
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret written to {path}"
    assert "HF_TOKEN" not in json.dumps(json.loads((run_dir / "manifest.json").read_text()))
