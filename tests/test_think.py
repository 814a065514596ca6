"""Reasoning traces with <think>: rendering, loss masks, bad rows, preview, a run end to end.

Think-aware extraction and failure buckets: test_think_eval.py.

The tiny tokenizer is one token per character, so a mask's size is the length of the text it
covers: `<think>\\nr1\\n</think>\\n\\n` is 7 + 1 + 2 + 1 + 8 + 2 = 21 tokens.
"""

import json

import pytest

from finetune.data.errors import DataError
from finetune.data.formats import to_record
from finetune.data.preview import BLUE, CYAN, GREEN, render_example, think_flags
from finetune.data.tokenize import IGNORE, encode_prompt, encode_record
from finetune.eval.scoring import BUCKETS
from finetune.prompts import load_template, render_prompt, thinking_mode
from finetune.recipe import DatasetSpec, RecipeError, load_recipe
from finetune.resources import resource_dir
from finetune.testing import CHATML, tiny_tokenizer

TOK = tiny_tokenizer()
CHAT, PLAIN = load_template("chat"), load_template("plain")
# A chat template with a thinking mode of its own (as Qwen3's): it reads reasoning_content and
# writes the block with one newline after </think>, so the tests can tell it from the fallback.
THINKING = CHATML.replace(
    "'\n' + message['content']",
    "'\n' + ('<think>\n' + message['reasoning_content'] + '\n</think>\n' if message['reasoning_content'] "
    "is defined else '') + message['content']")
BLOCK = "<think>\nr1\n</think>\n\n"
EMPTY = "<think>\n\n</think>\n\n"


def thinking_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = THINKING
    return tok


def encode(fmt, row, think="keep", cot_loss="full", tok=TOK, template=CHAT, train_on_prompt=False, **spec):
    record = to_record(row, DatasetSpec(format=fmt, **spec), "think.jsonl: row 1", think)
    return encode_record(record, fmt, template, tok, train_on_prompt, cot_loss, think)


def trained(ex, tok=TOK):
    return tok.decode([t for t in ex["labels"] if t != IGNORE])


def completion(ex, prompt="Q", tok=TOK, template=CHAT):
    return tok.decode(ex["input_ids"][len(encode_prompt(tok, render_prompt(template, tok, prompt))):])


# ── rendering and loss masks ──────────────────────────────────────────────────────────────────

def test_thinking_mode_is_read_from_the_chat_template():
    assert not thinking_mode(TOK), "SmolLM2's (and the tiny) ChatML template has none: the plain fallback"
    assert thinking_mode(thinking_tokenizer())


COT = {"question": "Q", "rationale": "r1", "answer": 7}


@pytest.mark.parametrize("think, cot_loss, text, masked_after_prompt", [
    ("render", "full", BLOCK + "#### 7<|im_end|>\n", 0),
    ("render", "answer_only", BLOCK + "#### 7<|im_end|>\n", len(BLOCK)),       # the block is -100
    ("none", "full", "r1\n#### 7<|im_end|>\n", 0),                               # today's layout
    ("keep", "full", "r1\n#### 7<|im_end|>\n", 0),                              # keep writes no block for cot
])
def test_cot_rationale_as_a_think_block(think, cot_loss, text, masked_after_prompt):
    ex = encode("cot", COT, think=think, cot_loss=cot_loss)
    assert completion(ex) == text
    assert ex["labels"].count(IGNORE) == 20 + masked_after_prompt   # 19 + len("Q") prompt tokens
    assert trained(ex) == text[masked_after_prompt:]
    assert ex["answer_end"] == 20 + len(text) - len("<|im_end|>\n")


def test_empty_rationale_renders_an_empty_block_kept_on_the_prompt_side():
    for cot_loss in ("full", "answer_only"):
        ex = encode("cot", {**COT, "rationale": ""}, think="render", cot_loss=cot_loss)
        assert completion(ex) == EMPTY + "#### 7<|im_end|>\n"
        assert trained(ex) == "#### 7<|im_end|>\n", "an empty block is never trained"
    ex = encode("cot", {**COT, "rationale": ""}, think="render", train_on_prompt=True)
    assert IGNORE not in ex["labels"], "train_on_prompt trains it, like the prompt"


@pytest.mark.parametrize("body, cot_loss, trained_text", [
    (BLOCK + "A", "full", BLOCK + "A<|im_end|>\n"),
    (BLOCK + "A", "answer_only", "A<|im_end|>\n"),
    (EMPTY + "A", "full", "A<|im_end|>\n"),                     # empty block: masked under either choice
    (EMPTY + "A", "answer_only", "A<|im_end|>\n"),
    ("<think></think>A", "full", "A<|im_end|>\n"),
    ("  " + BLOCK + "A", "answer_only", "A<|im_end|>\n"),         # leading blanks go with the block
    ("A, no block", "answer_only", "A, no block<|im_end|>\n"),   # nothing to mask
])
def test_keep_reads_a_completions_think_block(body, cot_loss, trained_text):
    ex = encode("prompt_completion", {"prompt": "Q", "completion": body}, cot_loss=cot_loss)
    assert completion(ex) == body + "<|im_end|>\n"
    assert trained(ex) == trained_text
    n_trained = len(TOK(trained_text, add_special_tokens=False)["input_ids"])
    assert ex["labels"].count(IGNORE) == len(ex["input_ids"]) - n_trained


def test_think_none_trains_the_tags_as_plain_text():
    ex = encode("prompt_completion", {"prompt": "Q", "completion": EMPTY + "A"}, think="none", cot_loss="answer_only")
    assert trained(ex) == EMPTY + "A<|im_end|>\n"
    off = encode("prompt_completion", {"prompt": "Q", "completion": "<think>a</think>b<think>"}, think="none")
    assert trained(off) == "<think>a</think>b<think><|im_end|>\n", "none never reads (nor rejects) tags"


def test_thinking_mode_template_writes_the_block_itself():
    tok = thinking_tokenizer()
    ex = encode("cot", COT, think="render", tok=tok)
    own = "<think>\nr1\n</think>\n#### 7<|im_end|>\n"          # the template's layout, not the fallback's
    assert completion(ex, tok=tok) == own and trained(ex, tok) == own
    only = encode("cot", COT, think="render", cot_loss="answer_only", tok=tok)
    assert trained(only, tok) == "#### 7<|im_end|>\n"
    kept = encode("prompt_completion", {"prompt": "Q", "completion": BLOCK + "A"}, tok=tok, cot_loss="answer_only")
    assert completion(kept, tok=tok) == "<think>\nr1\n</think>\nA<|im_end|>\n" and trained(kept, tok) == "A<|im_end|>\n"
    raw = encode("cot", COT, think="render", tok=tok, template=PLAIN)
    assert completion(raw, tok=tok, template=PLAIN) == BLOCK + "#### 7<|im_end|>", "raw wraps: the plain fallback"


def qwen3_tokenizer():
    """The tiny tokenizer with Qwen3's real chat template (shipped by TRL): a thinking mode of its own."""
    template = getattr(pytest.importorskip("trl.chat_template_utils"), "qwen3_chat_template", None)
    if template is None:
        pytest.skip("this TRL has no Qwen3 chat template")
    tok = tiny_tokenizer()
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("rationale, cot_loss, text", [
    ("r1", "full", BLOCK + "#### 7<|im_end|>\n"),
    ("r1", "answer_only", "#### 7<|im_end|>\n"),
    ("", "full", "#### 7<|im_end|>\n"),        # Qwen3 writes the empty block itself; still never trained
])
def test_qwen3_chat_template_renders_the_reasoning(rationale, cot_loss, text):
    tok = qwen3_tokenizer()
    assert thinking_mode(tok)
    ex = encode("cot", {**COT, "rationale": rationale}, think="render", cot_loss=cot_loss, tok=tok)
    assert completion(ex, tok=tok) == (BLOCK if rationale else EMPTY) + "#### 7<|im_end|>\n"
    assert trained(ex, tok) == text


def test_a_template_that_drops_the_reasoning_is_an_error():
    from finetune.prompts import TemplateError
    tok = tiny_tokenizer()
    tok.chat_template = CHATML.replace("message['content']", "message['content'] if message['reasoning_content'] "
                                       "is defined or true else message['content']")
    with pytest.raises(TemplateError, match="drops the reasoning"):
        encode("cot", COT, think="render", tok=tok)


def test_messages_think_blocks_in_every_assistant_turn():
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": BLOCK + "b"},
             {"role": "user", "content": "c"}, {"role": "assistant", "content": EMPTY + "d"}]
    full = encode("messages", {"messages": turns})
    assert trained(full) == BLOCK + "b<|im_end|>\n" + "d<|im_end|>\n"
    only = encode("messages", {"messages": turns}, cot_loss="answer_only")
    assert trained(only) == "b<|im_end|>\nd<|im_end|>\n"


# ── bad rows: one DataError naming the row and field ──────────────────────────────────────────

@pytest.mark.parametrize("fmt, row, think, message", [
    ("prompt_completion", {"prompt": "Q", "completion": "<think>a</think>b<think>c</think>d"}, "keep",
     "field 'completion': expected at most one <think>...</think> block, at the start of the text (data.think: "
     "keep), got 2 <think> and 2 </think> tag(s)"),
    ("prompt_completion", {"prompt": "Q", "completion": "<think>a, never closed"}, "keep",
     "got 1 <think> and 0 </think> tag(s)"),
    ("prompt_completion", {"prompt": "Q", "completion": "a</think>b<think>"}, "render", "got </think> before <think>"),
    ("alpaca", {"instruction": "Q", "output": "Sure. <think>a</think>b"}, "keep",
     "field 'output': expected at most one <think>...</think> block, at the start of the text (data.think: keep), "
     "got text before <think>: 'Sure. '"),
    ("messages", {"messages": [{"role": "user", "content": "<think>?"},
                               {"role": "assistant", "content": "a</think>"}]}, "keep",
     "field 'messages': expected turn 2 (assistant): at most one"),
    ("cot", {"question": "Q", "rationale": "<think>r</think>", "answer": 1}, "render",
     "field 'rationale': expected no <think> tags (data.think: render writes the block around the rationale; "
     "use data.think: keep for text that has its own), got <think>"),
])
def test_malformed_think_blocks_name_the_row_and_field(fmt, row, think, message):
    with pytest.raises(DataError) as e:
        to_record(row, DatasetSpec(format=fmt), "think.jsonl:3: row 3", think)
    assert str(e.value).startswith("think.jsonl:3: row 3: ") and message in str(e.value)


def test_a_bad_think_row_through_the_cli_is_one_message(tmp_path, tiny_dir, capsys, monkeypatch):
    from finetune.cli import main

    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    rows = tmp_path / "traces.jsonl"
    rows.write_text(json.dumps({"prompt": "Q", "completion": BLOCK + "A"}) + "\n"
                    + json.dumps({"prompt": "Q", "completion": "A<think>r</think>"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {tiny_dir}}}\ndata:\n  think: keep\n  datasets:\n"
                      f"    - {{source: {rows}, format: prompt_completion}}\n")
    assert main(["preview", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {rows}:2: row 2: field 'completion': expected at most one <think>") and \
        "got text before <think>: 'A'" in err and "Traceback" not in err, err
    recipe.write_text(recipe.read_text().replace("think: keep", "think: none"))
    assert main(["preview", str(recipe), "-n", "0"]) == 0, "none: the same rows are plain text"


def test_recipe_key_choices_are_checked(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  datasets: [{name: arith_cot}]\n  think: always\n")
    accepted = r"r.yaml:3: data.think: invalid choice 'always'; accepted: none, render, keep"
    with pytest.raises(RecipeError, match=accepted):
        load_recipe(path)
    assert load_recipe(path, ["data.think=render"]).data.think == "render"
    assert load_recipe(resource_dir("recipes") / "think_arith.yaml").data.think == "render"


# ── preview ───────────────────────────────────────────────────────────────────────────────────

def test_preview_colours_the_think_block():
    ex = encode("cot", COT, think="render")
    flags = think_flags(ex["input_ids"], TOK)
    assert TOK.decode([t for t, f in zip(ex["input_ids"], flags) if f]) == "<think>\nr1\n</think>"
    shown = render_example(ex["input_ids"], ex["labels"], TOK, 512, color=True)
    assert f"{CYAN}<think>\nr1\n</think>" in shown and f"{GREEN}\n\n#### 7" in shown
    masked = encode("cot", COT, think="render", cot_loss="answer_only")
    assert f"{BLUE}<think>\nr1\n</think>" in render_example(masked["input_ids"], masked["labels"], TOK, 512)


# ── end to end: a think dataset trains, previews and evaluates with the answer after </think> ──

def test_think_run_end_to_end(write_recipe, tmp_path, capsys, monkeypatch):
    from conftest import TINY_RECIPE
    from finetune.cli import main

    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    text = TINY_RECIPE.replace("  max_length: 512", "  max_length: 512\n  think: render").replace(
        "limit: 32", "limit: 8") + "eval: {tasks: [arith_think], limit: 2, batch_size: 2}\n"
    recipe = write_recipe(text.replace("max_steps: 4", "max_steps: 2"), name="think.yaml")
    assert main(["preview", str(recipe), "-n", "1"]) == 0
    assert f"{CYAN}<think>\n" in capsys.readouterr().out
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    scores = [json.loads(p.read_text()) for p in (tmp_path / "run").rglob("scores.json")]
    assert scores, "the eval wrote its scores"
    for s in scores:  # base and finetuned
        failures = s["tasks"]["arith_think"]["failures"]["strict"]
        assert set(failures) == set(BUCKETS) and sum(failures.values()) == 2
    records = [json.loads(line) for p in (tmp_path / "run").rglob("arith_think.jsonl") for line in p.open()]
    assert records and all(r["by_filter"]["strict"]["bucket"] in BUCKETS for r in records)
