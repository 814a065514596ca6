"""Recipe: the typed, strict schema a recipe YAML maps onto.

    finetune validate recipes/quickstart.yaml

Nested dataclasses are the schema; each field's `help` is its one line of documentation
(`finetune validate --explain` prints them). Loading collects every problem in the file
(unknown keys with a suggestion, wrong types, invalid choices, absurd values) and raises
one `RecipeError` listing them all with file:line and the dotted key. Command-line
overrides (`train.max_steps=20`) go through the same checks. No torch import here.
"""

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import yaml

from finetune.eval import BATCH_SIZE as EVAL_BATCH_SIZE, KV_CACHE_BUDGET
from finetune.recipe_checks import cross_checks
from finetune.schema import RecipeError, build, parse_overrides
from finetune.yamlfile import read_text


def _check_targets(value) -> str | None:
    names = [value] if isinstance(value, str) else value
    if not names:
        return "an empty list adapts nothing; use 'all-linear' or module names such as [q_proj, v_proj]"
    if not all(n.strip() for n in names):
        return "a module name is empty; use 'all-linear' or module names such as [q_proj, v_proj]"
    return None


def _check_source(value) -> str | None:
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", value)
    if not value.strip():
        return "empty; give 'builtin:<generator>', a hub id, an http(s) URL or a local file"
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return (f"the URL scheme '{scheme.group(1)}://' is not read; accepted: http(s) URLs, local paths "
                "(write file:///x/y.jsonl as /x/y.jsonl), hub ids, builtin:<generator>")
    return None


def _check_every_split(value) -> str | None:
    if value.strip().lower() == "test":
        return "the test split is the final evaluation's; score a validation split (e.g. 'validation')"
    return None if value.strip() else "empty; give a split name such as 'validation'"


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    name: str = _f("smollm2-135m-instruct", "Base model: hub id, local folder, .gguf file, or the offline "
                   "default 'smollm2-135m-instruct'.")
    revision: str | None = _f(None, "Hub revision (branch, tag or commit) when `name` is a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "Precision. auto: bf16 mixed precision (fp32 weights, bf16 autocast) where the device runs bf16 "
        "fast (CUDA with bf16, a CPU with AMX/AVX512-BF16, measured), else fp32; or fixed weight dtype.")
    trust_remote_code: bool = _f(False, "Run Python code shipped with a hub model. Off unless you trust it.")
    allow_pickle: bool = _f(False, "Allow loading pickled .bin weights; safetensors only by default.")


@dataclass
class MethodConfig:
    name: Literal["lora", "freeze", "full"] = _f("lora", "lora: PEFT adapters; freeze: train only some "
                                                 "blocks; full: every weight.")
    r: int = _f(16, "LoRA rank.", min=1, max=4096, aliases=["lora_r", "rank"])
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r).", min=1, aliases=["lora_alpha"])
    dropout: float = _f(0.0, "LoRA dropout (0 skips the dropout op: faster, less memory).", min=0.0, max=0.99, aliases=["lora_dropout"])
    target_modules: Union[str, list[str]] = _f("all-linear", "LoRA targets: 'all-linear' or module names "
                                               "such as [q_proj, v_proj].", check=_check_targets)
    use_dora: bool = _f(False, "Weight-decomposed LoRA (DoRA).")
    layers: int = _f(2, "freeze: train the last N transformer blocks (-N: the first N).", min=-100_000,
                     max=100_000)
    extra_modules: list[str] = _f([], "freeze: extra modules to train, e.g. [norm, lm_head] "
                                  "(the final norm, the output head).")


@dataclass
class DatasetSpec:
    name: str | None = _f(None, "A dataset defined in data/ (its YAML file name, or a path to such a file), or a "
                          "label for an inline one.")
    format: Literal["alpaca", "messages", "prompt_completion", "cot", "text"] | None = _f(
        None, "How rows are read; required for inline datasets.")
    source: str | None = _f(None, "'builtin:<generator>', a hub id, an http(s) URL, or a local "
                            ".jsonl/.json/.csv/.tsv/.parquet file.", check=_check_source)
    config: str | None = _f(None, "Hub dataset config (subset) name.")
    split: str = _f("train", "Split to read.")
    columns: dict[str, str] = _f({}, "Column map: format field -> the file's column name.")
    answer_format: str = _f("#### {answer}", "cot: how the final answer is written; eval extracts it the same way.")
    weight: float = _f(1.0, "Mixture weight: use each row this many times (0.5: a random half, 2: twice).", gt=0.0,
                      max=1000.0)
    limit: int | None = _f(None, "Use at most the first N rows.", min=1)
    path: str | None = _f(None, "Data-path override: read this local file (or, for a definition with `local:`, "
                          "this folder) instead of `source`.")
    header: list[str] | None = _f(None, "Column names of a CSV/TSV file that has no header row.")
    unescape: bool = _f(False, "Turn literal \\n inside text fields into newlines (FLAN TSV files).")
    explode: str | None = _f(None, "A list column whose items become one row each, e.g. Self-Instruct 'instances'.")
    split_answer: bool = _f(False, "cot: the rationale column ends with the answer line in answer_format "
                            "(GSM8K '... #### 72'); split it off.")


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = _f([], "Training datasets (a mixture when several).", required=True)
    template: str = _f("chat", "Prompt template from prompts/ (or a path); eval uses the same one.")
    max_length: int = _f(512, "Truncate examples to this many tokens.", min=8, max=1 << 20)
    val_size: int = _f(0, "Hold out this many examples as a validation split.", min=0)
    train_on_prompt: bool = _f(False, "Train on prompt tokens too (default: completion tokens only).")
    cot_loss: Literal["full", "answer_only"] = _f("full", "cot: train the rationale and answer (full) or only the "
                                                  "final answer line (answer_only); with data.think, the think "
                                                  "block is the rationale (answer_only: the block is -100).")
    think: Literal["none", "render", "keep"] = _f(
        "none", "Reasoning traces: render: a cot rationale becomes '<think>\\n...\\n</think>\\n\\n' before the answer "
        "(the chat template's thinking mode where it has one, else plain text); keep (and render, in other "
        "formats): read the think block a completion or assistant turn starts with; none: tags are plain text. "
        "An empty block is never trained (it is prompt side).")
    messages_loss: Literal["all", "last"] = _f("all", "messages: train every assistant turn (all) or only the "
                                               "final one (last); the others are -100 like the prompt.")
    packing: bool = _f(False, "Pack examples into full rows (padding-free, no cross-example attention).")
    padding_free: bool = _f(True, "Put each batch's examples in one row without padding; each example attends "
                            "only to itself (LoRA on CPU: 1.47x the speed, 0.68x the memory of padded batches).")
    skip_invalid_rows: bool = _f(False, "Skip and count bad rows instead of stopping at the first.")
    data_dir: str | None = _f(None, "Folder of local dataset copies (laid out like data/*.yaml `local:` paths); "
                              "default $FINETUNE_DATA_DIR.")
    num_proc: int | None = _f(None, "Tokenization processes (default: up to 4 from 2,000 rows, else 1).", min=1,
                                max=256)


@dataclass
class TrainConfig:
    max_steps: int = _f(-1, "Optimizer steps; -1 means use `epochs`.", min=-1)
    epochs: float = _f(1.0, "Passes over the data (when max_steps is -1).", min=0.0, max=10_000.0,
                       aliases=["num_train_epochs", "num_epochs"])
    batch_size: int = _f(4, "Examples per device per micro-batch.", min=1,
                        aliases=["per_device_train_batch_size", "micro_batch_size"])
    grad_accum: int = _f(1, "Micro-batches per optimizer step.", min=1,
                        aliases=["gradient_accumulation_steps"])
    lr: float = _f(2e-4, "Peak learning rate.", gt=0.0, max=1.0,
                   aliases=["learning_rate"])
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = _f("cosine", "LR schedule.",
                                                                                 aliases=["lr_scheduler_type", "lr_scheduler"])
    warmup_ratio: float = _f(0.05, "Fraction of steps spent warming up the learning rate.", min=0.0, max=1.0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0, max=10.0)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).", min=0.0, max=1e6)
    seed: int = _f(42, "Seed for data order, initialisation and dropout (numpy takes 0 .. 2**32 - 1).", min=0,
                   max=2**32 - 1)
    save_steps: int = _f(50, "Write a checkpoint every N steps.", min=1)
    logging_steps: int = _f(5, "Log the loss every N steps.", min=1)
    gradient_checkpointing: bool | Literal["auto"] = _f(
        "auto", "Recompute activations in backward instead of keeping them: less memory, more compute (see "
        "checkpoint_every). auto: only when the memory estimate without it passes half the free memory.")
    checkpoint_every: int = _f(3, "With gradient_checkpointing, recompute every n-th block only: 1 = all "
                               "(TRL's default, least memory, slowest); 3 = a third (benchmarks/levers.py).", min=1)
    speed_paths: bool = _f(True, "Faster equivalents of library code while training (finetune/speed/); false: "
                           "TRL's plain path, the same loss curve, slower on CPU.")
    neftune_alpha: float | None = _f(None, "NEFTune: uniform noise of scale alpha/sqrt(length x hidden) on the "
                                     "input embeddings while training (e.g. 5); null: off. Batches are padded, "
                                     "not padding-free, while it is on.", gt=0.0, max=1000.0)
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio", "comet_ml"]] = _f(
        [], "Experiment trackers, through TRL's report_to, e.g. [tensorboard] (offline; pip install "
        "'finetune[tensorboard]'), logging to logs/tensorboard/ in the run directory. [] (default): none.")


@dataclass
class EvalConfig:
    tasks: list[str] = _f([], "Eval tasks from eval/ (names or paths), run on base and finetuned models.")
    limit: int | None = _f(None, "Evaluate at most this many examples per task.", min=1)
    batch_size: int = _f(EVAL_BATCH_SIZE, "Prompts decoded together (generation slots; log-likelihood rows, "
                         "within a logits budget); lowered per task where their KV cache would pass "
                         f"{KV_CACHE_BUDGET / 2**30:g} GiB.", min=1)
    compare_base: bool = _f(True, "Also evaluate the base model and write the comparison report.")
    guard_tasks: list[str] = _f([], "Guard tasks (did finetuning hurt?), scored on both models like `tasks`, each "
                                "metric with a verdict, e.g. [arc_easy_guard, ifeval_guard]; eval.limit caps them too.")
    guard_delta: float = _f(0.02, "Guard margin δ: 'no regression beyond δ' when the 95% CI of B - A stays above "
                            "-δ (0.02 = 2 points of accuracy; relative for perplexity).", gt=0.0, max=1.0)
    every_steps: int = _f(0, "Task accuracy during training: every N optimizer steps (and at the last), greedy "
                          "generation on `every_limit` validation documents with the run's template and the final "
                          "eval's extraction, logged beside the loss; each pass prints its time. 0 (default): off.",
                          min=0)
    every_limit: int = _f(24, "every_steps: documents scored each time (the same first N of the validation source).",
                          min=1, max=100_000)
    every_task: str | None = _f(None, "every_steps' documents: null: the recipe's held-out rows (data.val_size, "
                                "cot datasets: exact match on each one's answer_format, strict and flexible); or an "
                                "eval task (name or path), read from its `every_split` split.")
    every_split: str = _f("validation", "every_task's split for every_steps; 'test' and the task's own (final eval) "
                          "split are refused.", check=_check_every_split)
    keep_best: bool = _f(False, "every_steps: the run's output is the checkpoint with the highest score (the first "
                         "on ties; a checkpoint is written at each scored step), not the last.")


@dataclass
class OutputConfig:
    dir: str = _f("runs/{name}", "Run directory; {name} is replaced by output.name.")
    name: str | None = _f(None, "Run name (default: the recipe file's stem).")
    overwrite: bool = _f(False, "Replace a finished run in the same directory.")
    card: str | None = _f(None, "After `finetune run`, write the result card (scores, CI, p, n, verdicts, times, "
                          "versions) to this file; {name} is the recipe's stem. Shipped recipes: "
                          "recipes/results/{name}.json.")


@dataclass
class StarConfig:
    rounds: int = _f(0, "STaR / rejection-sampling rounds (finetune/star/): sample k rationales per training "
                     "question, keep those reaching the target answer, train on them; 0: off (a plain run).",
                     min=0, max=100)
    k: int = _f(4, "star: rationales sampled per question per round.", min=1, max=256)
    temperature: float = _f(0.7, "star: sampling temperature (> 0).", gt=0.0, max=5.0)
    top_p: float = _f(1.0, "star: nucleus sampling mass.", gt=0.0, max=1.0)
    max_new_tokens: int = _f(160, "star: tokens per sampled rationale.", min=1, max=1 << 16)
    instruction: str = _f("", "star: text added after the question when sampling only (never trained on), e.g. "
                          "how to write the final answer; {format} is the answer line with N as the answer.")
    rationalize: bool = _f(False, "star: for questions left without a kept rationale, sample again with the "
                           "answer as a hint; keep those reaching it, trained without the hint.")
    hint: str = _f("(The correct answer is {answer}; explain how to reach it.)", "star: the rationalisation "
                   "hint added after the question; {answer} is the target.")
    restart: Literal["base", "last"] = _f("base", "star: each round trains from the base model (STaR's choice: "
                                          "no drift or overfitting across rounds) or from the last round's model.")
    max_per_question: int = _f(1, "star: at most this many distinct kept rationales per question.", min=1)
    sample_limit: int | None = _f(None, "star: sample for at most the first N training questions.", min=1)


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The base model."})
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "What to train."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training data."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation after training."})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "Where the run goes."})
    star: StarConfig = field(default_factory=StarConfig, metadata={"help": "Self-taught rationales (STaR)."})
    source_path: str = field(default="", metadata={"internal": True})
    source_lines: dict = field(default_factory=dict, metadata={"internal": True})  # dotted key -> "file:line"

    def where(self, key: str) -> str:
        """'file:line' (or the command-line override) that set `key`, else the file."""
        while key:
            if key in self.source_lines:
                return self.source_lines[key]
            key = key.rpartition(".")[0] if "." in key else ""
        return self.source_path

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source_path")
        d.pop("source_lines")
        return d

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def run_dir(self) -> Path:
        return Path(self.output.dir.replace("{name}", self.output.name or Path(self.source_path).stem or "run"))


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Parse, check and return a recipe; raises RecipeError listing every problem."""
    path = Path(path)
    text = read_text(path, error=lambda message: RecipeError([message]), what="recipe file")
    recipe = build(Recipe, text, str(path), parse_overrides(overrides))
    recipe.source_path = str(path)
    problems = cross_checks(recipe)
    if problems:
        raise RecipeError([f"{recipe.where(key)}: {p}" for key, p in problems])
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


__all__ = ["Recipe", "RecipeError", "load_recipe", "dump_recipe"]
