"""Packing through TRL: no attention across packed examples, and token counts without padding."""

import pytest
import torch
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from finetune.data.audit import audit
from finetune.data.build import build_datasets
from finetune.data.tokenize import IGNORE
from finetune.recipe import DataConfig, DatasetSpec
from finetune.testing import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))


def arith(n, max_length=512):
    return build_datasets(DataConfig(datasets=[DatasetSpec(name="arith_cot", limit=n)], max_length=max_length),
                          TOK, seed=0)


def collate(rows):
    return DataCollatorForLanguageModeling(pad_token_id=TOK.pad_token_id, padding_free=True)(rows)


def test_packed_example_sees_only_itself():
    train = arith(2).train
    a, b = (list(x) for x in train["input_ids"])
    packed = pack_dataset(train, seq_length=len(a) + len(b), strategy="bfd")
    assert len(packed) == 1 and sorted(packed[0]["seq_lengths"]) == sorted([len(a), len(b)])
    batch = collate([packed[0]])
    assert batch["input_ids"].shape == (1, len(a) + len(b)) and "attention_mask" not in batch
    model = tiny_model().eval()
    with torch.no_grad():
        # As in TRL's compute_loss: use_cache=False, no attention mask; transformers then reads the
        # sequence boundaries from the restarting position_ids and masks attention across them.
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]  # one long causal sequence
        start = 0
        for n in packed[0]["seq_lengths"]:
            ids = batch["input_ids"][:, start:start + n]
            alone = model(input_ids=ids).logits[0]
            torch.testing.assert_close(together[start:start + n], alone, atol=1e-5, rtol=1e-4)
            start += n
    second = packed[0]["seq_lengths"][0]
    assert not torch.allclose(leaky[second:], together[second:], atol=1e-3), "the control must see the leak"


def test_stats_count_real_tokens_like_the_packed_batches():
    bundle = arith(12, max_length=256)  # some examples are longer than 256 and get truncated
    stats = audit(bundle, TOK, max_length=256, max_cut_answers=1.0)
    assert stats["truncated_examples"] > 0
    packed = pack_dataset(bundle.train, seq_length=256, strategy="bfd")
    batch = collate([packed[i] for i in range(len(packed))])
    assert batch["input_ids"].shape[1] == stats["tokens_kept"], "packed tokens: every kept token, no padding"
    assert int((batch["labels"] != IGNORE).sum()) == stats["trained_tokens"]
    padded = DataCollatorForLanguageModeling(pad_token_id=TOK.pad_token_id)(
        [{"input_ids": r["input_ids"][:256], "labels": r["labels"][:256]} for r in bundle.train])
    assert padded["input_ids"].numel() > stats["tokens_kept"] == int(padded["attention_mask"].sum())


def test_sft_trainer_trains_on_the_bundle_with_packing(tmp_path):
    from trl import SFTConfig, SFTTrainer

    bundle = arith(16, max_length=384)
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, max_length=384,
                     packing=True, learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no",
                     logging_steps=1, bf16=False, disable_tqdm=True, completion_only_loss=None)
    trainer = SFTTrainer(model=tiny_model(), args=args, train_dataset=bundle.train, processing_class=TOK)
    assert trainer.data_collator.padding_free, "bfd packing trains padding-free, boundaries from position_ids"
    trained = sum(sum(t != IGNORE for t in row["labels"]) for row in trainer.train_dataset)
    assert trained == sum(sum(t != IGNORE for t in lab[:384]) for lab in bundle.train["labels"]), \
        "TRL keeps our labels as they are"
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
