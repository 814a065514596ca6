"""Evaluation: tasks, harness, answer extraction, base-vs-finetuned comparison."""

# prompts decoded together unless a recipe (eval.batch_size) or --batch-size says otherwise; lowered per
# task (generate.bounded_slots) where their KV cache would pass KV_CACHE_BUDGET bytes, a constant, so base
# and finetuned, scored with the same settings, decode the same rows together on every machine
# (benchmarks/README.md, "Eval decode")
BATCH_SIZE = 128
KV_CACHE_BUDGET = 4 * 2**30
