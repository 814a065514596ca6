"""Each format's exact tokens and labels on a known example (char-level tiny tokenizer).

With the tiny tokenizer one character is one token, and the ChatML prompt of a user
message of k characters is `<|im_start|>user\n` + k + `<|im_end|>\n<|im_start|>assistant\n`
= 1 + 4 + 1 + k + 1 + 1 + 1 + 9 + 1 = 19 + k tokens.
"""

import pytest

from finetune.data.formats import to_record
from finetune.data.tokenize import IGNORE, encode_example, encode_prompt, encode_record
from finetune.prompts import load_template, render_prompt
from finetune.recipe import DatasetSpec
from finetune.testing import tiny_tokenizer

TOK = tiny_tokenizer()
CHAT = load_template("chat")


def encode(fmt, row, template=CHAT, train_on_prompt=False, cot_loss="full", **spec):
    record = to_record(row, DatasetSpec(format=fmt, **spec), "test.jsonl: row 1")
    return encode_record(record, fmt, template, TOK, train_on_prompt, cot_loss)


def trained_text(ex):
    return TOK.decode([t for t in ex["labels"] if t != IGNORE])


def test_prompt_completion_masks_prompt_trains_completion_and_eos():
    ex = encode("prompt_completion", {"q": "Q?", "a": "A b"}, columns={"prompt": "q", "completion": "a"})
    assert ex["labels"].count(IGNORE) == 19 + 2
    assert trained_text(ex) == "A b<|im_end|>\n"
    assert ex["labels"].count(TOK.eos_token_id) == 1, "the end-of-turn token closing the answer is trained"
    assert ex["answer_end"] == -1
    assert ex["input_ids"][:21] == encode_prompt(TOK, render_prompt(CHAT, TOK, "Q?")), \
        "training prompt ids are exactly what generation starts from"


def test_train_on_prompt_trains_every_token():
    ex = encode("prompt_completion", {"prompt": "Q?", "completion": "A b"}, train_on_prompt=True)
    assert IGNORE not in ex["labels"] and ex["labels"] == ex["input_ids"]


def test_alpaca_prompt_is_instruction_then_input():
    ex = encode("alpaca", {"instruction": "Add", "input": "2 3", "output": "5"})
    assert ex == {**encode_example(CHAT, TOK, "Add\n\n2 3", "5"), "answer_end": -1}
    assert ex["labels"].count(IGNORE) == 19 + len("Add\n\n2 3")
    assert trained_text(ex) == "5<|im_end|>\n"
    no_input = encode("alpaca", {"instruction": "Add", "input": "", "output": "5"})
    assert no_input["labels"].count(IGNORE) == 19 + 3
    missing_input = encode("alpaca", {"instruction": "Add", "output": "5"})
    assert missing_input == no_input, "input is optional"


def test_alpaca_with_raw_alpaca_template():
    tpl = load_template("alpaca")
    ex = encode("alpaca", {"instruction": "Add", "output": "5"}, template=tpl)
    prompt = render_prompt(tpl, TOK, "Add")
    assert prompt.endswith("### Instruction:\nAdd\n\n### Response:\n")
    assert ex["labels"].count(IGNORE) == len(prompt)
    assert trained_text(ex) == "5<|im_end|>", "raw templates end the completion with EOS"


def test_cot_full_and_answer_only():
    row = {"question": "Q", "rationale": "r1", "answer": 7}
    full = encode("cot", row)
    assert TOK.decode(full["input_ids"][20:]) == "r1\n#### 7<|im_end|>\n"
    assert full["labels"].count(IGNORE) == 19 + 1
    assert full["answer_end"] == 20 + len("r1\n#### 7")
    only = encode("cot", row, cot_loss="answer_only")
    assert only["input_ids"] == full["input_ids"]
    assert only["labels"].count(IGNORE) == 20 + len("r1\n")
    assert trained_text(only) == "#### 7<|im_end|>\n"


def test_cot_answer_format_and_split_answer():
    ex = encode("cot", {"question": "Q", "rationale": "r", "answer": "yes"}, answer_format="The answer is {answer}.")
    assert trained_text(ex) == "r\nThe answer is yes.<|im_end|>\n"
    gsm = encode("cot", {"question": "Q", "answer": "Half of 48 is <<48/2=24>>24.\n#### 24"},
                 columns={"rationale": "answer"}, split_answer=True)
    assert trained_text(gsm) == "Half of 48 is <<48/2=24>>24.\n#### 24<|im_end|>\n"


MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
            {"role": "assistant", "content": "A2"}]


def test_messages_train_every_assistant_turn_with_its_end_token():
    ex = encode("messages", {"conversation": MESSAGES}, columns={"messages": "conversation"})
    assert TOK.decode(ex["input_ids"]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n")
    assert len(ex["input_ids"]) == 61 and ex["labels"].count(IGNORE) == 61 - 8
    assert trained_text(ex) == "A1<|im_end|>\nA2<|im_end|>\n"
    trained_ends = [t for t in ex["labels"] if t == TOK.eos_token_id]
    assert len(trained_ends) == 2 and ex["input_ids"].count(TOK.eos_token_id) == 5
    every = encode("messages", {"messages": MESSAGES}, train_on_prompt=True)
    assert IGNORE not in every["labels"]


def test_messages_column_map_reads_sharegpt_turns():
    sharegpt = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]}
                for m in MESSAGES]
    ex = encode("messages", {"conversations": sharegpt}, columns={
        "messages": "conversations", "role": "from", "content": "value", "user": "human", "assistant": "gpt"})
    assert ex == encode("messages", {"messages": MESSAGES})


@pytest.mark.parametrize("template", ["chat", "alpaca", "plain"])
def test_one_turn_conversation_equals_prompt_completion(template):
    tpl = load_template(template)
    ex = encode("messages", {"messages": MESSAGES[1:3]}, template=tpl)
    assert ex == encode("prompt_completion", {"prompt": "U1", "completion": "A1"}, template=tpl)


def test_text_trains_every_token_and_appends_eos():
    ex = encode("text", {"body": "hi"}, columns={"text": "body"})
    assert TOK.decode(ex["input_ids"]) == "hi<|im_end|>"
    assert ex["labels"] == ex["input_ids"]


def test_fewshot_template_renders_the_exemplars_file():
    tpl = load_template("fewshot_cot")
    text = tpl.user_text("How many?")
    assert text.startswith("Q: There are 15 trees in the grove.") and text.count("Q: ") == 9
    assert text.endswith("The answer is 8.\n\nQ: How many?\nA:")
