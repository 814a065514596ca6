"""model.dtype auto: the choice by device (capability and measurement mocked), and training under it.

The choice: an AVX2-only CPU gets fp32 unmeasured; a CPU with AMX / AVX512-BF16 gets bf16 where the
measured bf16/fp32 ratio wins (training and decoding apart); CUDA follows its bf16 support. Under
bf16 autocast every speed path is as close to fp32 as the library path it replaces is, and a tiny
model trains with all four paths on. Runs on either kind of CPU: autocast bf16 works on both (only
slower without native bf16), and nothing here depends on which one this is.
"""

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl.trainer.utils import add_fused_lm_head

from conftest import TINY_RECIPE
from finetune import precision, speed
from finetune.recipe import load_recipe
from finetune.speed import lmhead
from finetune.speed.attention import segment_attention
from finetune.speed.fused_lora import fused_lora
from finetune.testing import tiny_model
from finetune.train import sft_config, train

ALL_PATHS = TINY_RECIPE.replace("train: {", "train: {gradient_checkpointing: true, ")


def _never(shape):
    raise AssertionError("an AVX2-only CPU is not measured")


@pytest.mark.parametrize("flags", [set(), {"avx2", "fma"}, {"avx512f", "avx2"}])
def test_cpu_without_native_bf16_is_fp32_unmeasured(flags):
    p = precision.decide_cpu(flags, "AVX2", measure=_never)
    assert (p.weights, p.autocast, p.eval, p.train) == ("float32", None, "float32", "fp32")
    assert "without AVX512-BF16/AMX" in p.reason


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_cpu_with_native_bf16_takes_bf16_where_measured_faster(flag):
    ratios = {precision.TRAIN_SHAPE: 4.5, precision.DECODE_SHAPE: 1.8}
    p = precision.decide_cpu({"avx2", flag}, "AVX512", measure=ratios.__getitem__)
    assert (p.weights, p.autocast, p.eval) == ("float32", "bfloat16", "bfloat16")
    assert p.train == "bf16-autocast (fp32 master weights)" and p.measured == {"train": 4.5, "decode": 1.8}
    assert flag in p.reason and "4.50x" in p.reason


def test_each_side_falls_back_to_fp32_where_bf16_does_not_win():
    slow_decode = {precision.TRAIN_SHAPE: 3.0, precision.DECODE_SHAPE: 0.9}
    p = precision.decide_cpu({"amx_bf16"}, "AVX512", measure=slow_decode.__getitem__)
    assert (p.autocast, p.eval) == ("bfloat16", "float32")
    p = precision.decide_cpu({"amx_bf16"}, "AVX512", measure=lambda shape: 1.0)  # noise: not a win
    assert (p.autocast, p.eval) == (None, "float32")


def test_cuda_follows_the_devices_bf16_support():
    assert (precision.decide_cuda(True, "H100").autocast, precision.decide_cuda(True, "H100").eval) == \
        ("bfloat16", "bfloat16")
    p = precision.decide_cuda(False, "Tesla T4")
    assert (p.weights, p.autocast, p.eval) == ("float32", None, "float32") and "T4" in p.reason


@pytest.fixture
def unpinned(monkeypatch):
    monkeypatch.delenv(precision.PIN_ENV, raising=False)
    precision._auto.cache_clear()
    yield monkeypatch
    precision._auto.cache_clear()


def test_auto_on_a_cpu_is_measured_once_per_process(unpinned):
    calls = []
    unpinned.setattr(torch.cuda, "is_available", lambda: False)
    unpinned.setattr(precision, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    unpinned.setattr(precision, "measure_speedup", lambda shape: calls.append(shape) or 3.0)
    first, second = precision.resolve("auto"), precision.resolve("auto")
    assert first is second and first.autocast == "bfloat16" and len(calls) == 2
    unpinned.setattr(precision, "cpu_flags", lambda: {"avx2"})
    precision._auto.cache_clear()
    assert precision.resolve("auto").autocast is None and len(calls) == 2


def test_auto_on_cuda(unpinned):
    unpinned.setattr(torch.cuda, "is_available", lambda: True)
    unpinned.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    unpinned.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    p = precision.resolve("auto")
    assert (p.weights, p.autocast, p.eval) == ("float32", "bfloat16", "bfloat16") and "H200" in p.reason


def test_explicit_dtypes_keep_their_meaning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve("float32").train == "fp32"
    p = precision.resolve("bfloat16")  # on a CPU: bf16 weights, no autocast, as before `auto`
    assert (p.weights, p.autocast, p.eval) == ("bfloat16", None, "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.resolve("float16").autocast == "float16" and precision.resolve("float32").autocast is None
    with pytest.raises(ValueError, match="expected one of auto"):
        precision.resolve("fp8")


def test_pin_fixes_auto_and_sets_trls_flags(monkeypatch, write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(TINY_RECIPE))
    assert recipe.model.dtype == "auto"
    monkeypatch.setenv(precision.PIN_ENV, "bfloat16")
    config = sft_config(recipe, tmp_path, False)
    assert config.bf16 and not config.fp16 and config.use_cpu == (not torch.cuda.is_available())
    monkeypatch.setenv(precision.PIN_ENV, "float32")
    assert not sft_config(recipe, tmp_path, False).bf16
    monkeypatch.setenv(precision.PIN_ENV, "fp16")
    with pytest.raises(ValueError, match="expected float32 or bfloat16"):
        precision.resolve("auto")


def test_measurement_is_quick_and_positive():
    ratio = precision.measure_speedup((64, 64, 64))
    assert ratio > 0 and ratio == ratio


def test_cast_for_eval_gives_the_fp32_tensors_back():
    model = tiny_model()
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    with precision.cast_for_eval(model, "bfloat16"):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    assert all(p.dtype == torch.float32 and p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])
               for n, p in model.named_parameters()), "the same fp32 storage, bit-identical"


def _err(got, ref):
    return float((got.float() - ref.float()).abs().max())


def _within_library_error(ours, library, reference):
    """Ours under autocast is as close to fp32 as the library path under autocast is (2x, plus a bf16 ulp)."""
    assert _err(ours, reference) <= 2 * _err(library, reference) + 1e-2, (_err(ours, reference),
                                                                           _err(library, reference))


def _lora_model():
    torch.manual_seed(0)
    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def _grads(model, ids, autocast: bool, **kw):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, use_cache=False, **kw).logits
    logits.float().pow(2).mean().backward()
    return [logits.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_fused_lora_under_autocast_is_as_close_to_fp32_as_peft(monkeypatch):
    model, ids = _lora_model(), torch.randint(0, 90, (2, 24))
    reference, library = _grads(model, ids, False), _grads(model, ids, True)
    real_addmm, calls = torch.addmm, []
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real_addmm(*a, **k))
    with fused_lora(model) as n:
        ours = _grads(model, ids, True)
    assert n == 14 and len(calls) == 14, "every adapted layer fused, bf16 inputs too"
    for o, lib, ref in zip(ours, library, reference):
        _within_library_error(o, lib, ref)


def test_segment_attention_under_autocast_is_as_close_to_fp32_as_sdpa():
    model = tiny_model().train()
    ids = torch.randint(0, 90, (1, 24))
    pos = torch.cat([torch.arange(n) for n in (7, 12, 5)])[None]
    reference, library = _grads(model, ids, False, position_ids=pos), _grads(model, ids, True, position_ids=pos)
    with segment_attention(model) as used:
        ours = _grads(model, ids, True, position_ids=pos)
    assert used
    for o, lib, ref in zip(ours, library, reference):
        _within_library_error(o, lib, ref)


@pytest.mark.parametrize("frozen_head", [True, False])
def test_compact_head_under_autocast_is_as_close_to_fp32_as_trls(frozen_head, monkeypatch):
    monkeypatch.setattr(lmhead, "CHUNK", 16)
    trl_model = tiny_model()
    trl_model.get_output_embeddings().weight.requires_grad_(not frozen_head)
    ours = copy.deepcopy(trl_model)
    add_fused_lm_head(trl_model, outputs=("log_probs",))
    add_fused_lm_head(ours, outputs=("log_probs",))
    assert lmhead.add_compact_lm_head(ours)
    torch.manual_seed(0)
    ids = torch.randint(0, 90, (3, 40))
    labels = ids.clone()
    labels[:, :12] = -100

    def run(model, autocast):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        (-out.log_probs.sum()).backward()
        return [out.log_probs.detach()] + [p.grad.clone() for p in model.parameters() if p.requires_grad]

    reference, library, got = run(trl_model, False), run(trl_model, True), run(ours, True)
    for o, lib, ref in zip(got, library, reference):
        _within_library_error(o, lib, ref)


@pytest.fixture
def entered(monkeypatch):
    calls, real = [], speed._enter
    monkeypatch.setattr(speed, "_enter", lambda path, *a: calls.append((path, bool(real(path, *a)))) or calls[-1][1])
    return calls


def _curve(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_tiny_model_trains_under_bf16_autocast_with_every_speed_path(write_recipe, monkeypatch, entered, tmp_path):
    fp32_dir, *_ = train(load_recipe(write_recipe(ALL_PATHS), [f"output.dir={tmp_path / 'fp32'}"]))
    monkeypatch.setenv(precision.PIN_ENV, "bfloat16")
    autocast_seen = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda *a, **k: autocast_seen.append(torch.is_autocast_enabled("cpu")) or real_linear(*a, **k))
    entered.clear()
    run_dir, model, _, manifest = train(load_recipe(write_recipe(ALL_PATHS)))
    assert entered == [(p, True) for p in speed.PATHS], "every speed path on under bf16"
    assert autocast_seen and all(autocast_seen)
    assert manifest["precision"]["autocast"] == "bfloat16"
    assert json.loads((run_dir / "manifest.json").read_text())["precision"]["train"].startswith("bf16-autocast")
    assert {p.dtype for p in model.parameters()} == {torch.float32}, "fp32 master weights"
    autocast_seen.clear()
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert autocast_seen and not any(autocast_seen), "the autocast wrapper is gone after training"
    for a, b in zip(_curve(run_dir), _curve(fp32_dir)):
        assert abs(a - b) <= 0.01 * b, (a, b)


def test_finetune_eval_auto_loads_in_the_chosen_dtype(monkeypatch, tiny_dir, tmp_path, capsys):
    from finetune.cli import main
    from finetune.eval import commands

    loaded, real = [], commands.load_for_eval
    monkeypatch.setattr(commands, "load_for_eval", lambda path, dtype: loaded.append(dtype) or real(path, dtype=dtype))
    monkeypatch.setenv(precision.PIN_ENV, "bfloat16")
    assert main(["eval", tiny_dir, "--tasks", "arith_cot", "--limit", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "bf16")]) == 0
    assert "evaluating in bfloat16" in capsys.readouterr().out
    monkeypatch.setenv(precision.PIN_ENV, "float32")
    assert main(["eval", tiny_dir, "--tasks", "arith_cot", "--limit", "2", "--out", str(tmp_path / "fp32")]) == 0
    assert main(["eval", tiny_dir, "--tasks", "arith_cot", "--limit", "2", "--dtype", "bfloat16",
                 "--out", str(tmp_path / "explicit")]) == 0
    assert loaded == ["bfloat16", "float32", "bfloat16"]
    for name in ("bf16", "fp32"):
        assert (tmp_path / name / "arith_cot.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize("sizes", [(24,), (7, 12, 5), (1, 1, 22)])
def test_segment_attention_runs_fp32_under_cpu_autocast(sizes):
    """Per-example SDPA under CPU bf16 autocast is computed in fp32 (CPU flash attention's fp32 kernels are the
    faster ones): equal to fp32 SDPA on the same inputs, per example; with FP32_ON_CPU off, autocast's bf16."""
    from finetune.speed import attention

    torch.manual_seed(len(sizes))
    q, k = torch.randn(1, 6, 24, 8), torch.randn(1, 2, 24, 8)
    v = torch.randn(1, 2, 24, 8).bfloat16()                  # v_proj's output is bf16 under autocast
    pos = torch.cat([torch.arange(n) for n in sizes])[None]
    module = torch.nn.Module()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention.segment_sdpa(module, q, k, v, None, scaling=0.3, position_ids=pos)
    want = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        a, b, c, scale=0.3, is_causal=True, enable_gqa=True).transpose(1, 2)
        for a, b, c in zip(q.split(sizes, 2), k.split(sizes, 2), v.float().split(sizes, 2))], 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    attention.FP32_ON_CPU = False
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16, _ = attention.segment_sdpa(module, q, k, v, None, scaling=0.3, position_ids=pos)
    finally:
        attention.FP32_ON_CPU = True
    assert out16.dtype == torch.bfloat16
