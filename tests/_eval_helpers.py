"""Shared helpers for the eval tests: a tiny model with sharp logits and task files in tmp dirs."""

from pathlib import Path

import torch

from finetune.testing import tiny_model, tiny_tokenizer

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def sharp_model(seed: int = 0, scale: float = 20.0):
    """The 2-layer random Llama with weights scaled up: varied text and large logit margins, so greedy
    decoding does not hinge on float rounding (batched and unbatched runs must agree exactly)."""
    model = tiny_model(seed=seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(scale)
    return model.eval()


def tokenizer():
    return tiny_tokenizer()


ARITH_TASK = """\
dataset:
  generator: arithmetic_cot
  generator_args: {{n: 50, seed: 0}}
  split: test
  limit: 6
output_type: generate_until
prompt_template: chat
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: {until}
  max_new_tokens: {max_new}
filter_list:
  - name: strict
    filter: [{{function: answer_format, format: "#### {{answer}}"}}, {{function: take_first}}]
  - name: flexible
    filter: [{{function: last_number}}, {{function: take_first}}]
"""


def write_task(folder: Path, name: str, text: str) -> Path:
    path = Path(folder) / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def arith_task(folder: Path, name: str = "mini_arith", until: str = "[]", max_new: int = 12) -> Path:
    return write_task(folder, name, ARITH_TASK.format(until=until, max_new=max_new))
