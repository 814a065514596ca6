"""Tiny offline models and tokenizers for tests and examples (no hub, seconds on CPU).

`tiny_tokenizer()` is a byte-level BPE-free tokenizer (one token per character) with the
ChatML special tokens and chat template of SmolLM2, so chat rendering, EOS handling and
loss masks behave like the real model's. `tiny_model()` is a 2-layer random Llama.
"""

import string

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    chars = list(dict.fromkeys(string.printable + "’“”—…é"))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + ["<unk>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.chat_template = CHATML
    return fast


def tiny_model(vocab_size: int | None = None, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny(path) -> str:
    """Write a tiny model + tokenizer folder that `finetune` can load like any local model."""
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)
