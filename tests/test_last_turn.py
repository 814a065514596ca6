"""Last-turn-only loss for multi-turn `messages` data (data.messages_loss: last).

Tiny tokenizer: one token per character; a ChatML turn is `<|im_start|>` + role + `\\n` +
content + `<|im_end|>` + `\\n`.
"""

import json

import pytest

from finetune.data.build import build_datasets
from finetune.data.formats import to_record
from finetune.data.tokenize import IGNORE, encode_record
from finetune.prompts import load_template
from finetune.recipe import DataConfig, DatasetSpec, RecipeError, load_recipe
from finetune.testing import tiny_tokenizer

TOK = tiny_tokenizer()
CHAT, PLAIN = load_template("chat"), load_template("plain")
TURNS = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
         {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"},
         {"role": "user", "content": "u3"}, {"role": "assistant", "content": "a3"}]


def encode(turns, messages_loss, template=CHAT, train_on_prompt=False, think="none", cot_loss="full"):
    record = to_record({"messages": turns}, DatasetSpec(format="messages"), "chat.jsonl: row 1", think)
    return encode_record(record, "messages", template, TOK, train_on_prompt, cot_loss, think, messages_loss)


def trained(ex):
    return TOK.decode([t for t in ex["labels"] if t != IGNORE])


@pytest.mark.parametrize("turns, loss, template, text", [
    (TURNS, "all", CHAT, "a1<|im_end|>\na2<|im_end|>\na3<|im_end|>\n"),
    (TURNS, "last", CHAT, "a3<|im_end|>\n"),
    (TURNS, "last", PLAIN, "a3<|im_end|>"),                                   # raw wraps: EOS ends the turn
    (TURNS[:3], "last", CHAT, "a1<|im_end|>\n"),                              # one turn: all == last
    (TURNS + [{"role": "user", "content": "u4"}], "last", CHAT, "a3<|im_end|>\n"),  # trailing user turn dropped
    (TURNS[:5] + [{"role": "assistant", "content": "a3"}], "last", CHAT, "a3<|im_end|>\n"),  # two in a row
])
def test_last_turn_only_trains_the_final_assistant_turn(turns, loss, template, text):
    ex = encode(turns, loss, template)
    assert trained(ex) == text
    assert ex["input_ids"] == encode(turns, "all", template)["input_ids"], "the same tokens; only labels differ"
    n_trained = len(TOK(text, add_special_tokens=False)["input_ids"])
    assert ex["labels"].count(IGNORE) == len(ex["input_ids"]) - n_trained


def test_last_turn_with_train_on_prompt_trains_everything():
    ex = encode(TURNS, "last", train_on_prompt=True)
    assert IGNORE not in ex["labels"]


def test_last_turn_with_a_think_block_in_it():
    turns = TURNS[:6] + [{"role": "assistant", "content": "<think>\nr\n</think>\n\na3"}]
    assert trained(encode(turns, "last", think="keep")) == "<think>\nr\n</think>\n\na3<|im_end|>\n"
    assert trained(encode(turns, "last", think="keep", cot_loss="answer_only")) == "a3<|im_end|>\n"


def test_last_turn_with_a_template_that_rewrites_earlier_turns():
    """Qwen3's template (shipped by TRL) drops the reasoning of earlier turns: per-turn masks cannot be cut
    from it, but the final turn can be trained (and that is the turn whose reasoning it keeps)."""
    from finetune.prompts import TemplateError
    template = getattr(pytest.importorskip("trl.chat_template_utils"), "qwen3_chat_template", None)
    if template is None:
        pytest.skip("this TRL has no Qwen3 chat template")
    tok = tiny_tokenizer()
    tok.chat_template = template
    turns = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\na1"},
             {"role": "user", "content": "u2"}, {"role": "assistant", "content": "<think>\nr2\n</think>\n\na2"}]
    record = to_record({"messages": turns}, DatasetSpec(format="messages"), "chat.jsonl: row 1", "keep")
    with pytest.raises(TemplateError, match="rewrites earlier turns.*data.messages_loss: last trains the final turn"):
        encode_record(record, "messages", CHAT, tok, think="keep", messages_loss="all")
    ex = encode_record(record, "messages", CHAT, tok, think="keep", messages_loss="last")
    assert tok.decode([t for t in ex["labels"] if t != IGNORE]) == "<think>\nr2\n</think>\n\na2<|im_end|>\n"
    assert "r1" not in tok.decode(ex["input_ids"]), "the template's own history, without the earlier reasoning"
    only = encode_record(record, "messages", CHAT, tok, cot_loss="answer_only", think="keep", messages_loss="last")
    assert tok.decode([t for t in only["labels"] if t != IGNORE]) == "a2<|im_end|>\n"


def test_messages_loss_reaches_the_built_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    rows = tmp_path / "chat.jsonl"
    rows.write_text(json.dumps({"messages": TURNS}) + "\n")
    spec = DatasetSpec(source=str(rows), format="messages")
    texts = {}
    for loss in ("all", "last"):
        bundle = build_datasets(DataConfig(datasets=[spec], messages_loss=loss), TOK)
        texts[loss] = trained(bundle.train[0])
    assert texts == {"all": "a1<|im_end|>\na2<|im_end|>\na3<|im_end|>\n", "last": "a3<|im_end|>\n"}, \
        "the option is part of the tokenization cache key"


def test_recipe_key_choices_are_checked(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  datasets: [{name: arith_cot}]\n  messages_loss: final\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: data.messages_loss: invalid choice 'final'; accepted: all, last"):
        load_recipe(path)
    assert load_recipe(path, ["data.messages_loss=last"]).data.messages_loss == "last"
