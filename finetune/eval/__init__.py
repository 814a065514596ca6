"""Evaluation: tasks, harness, answer extraction, base-vs-finetuned comparison."""
