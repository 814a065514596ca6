"""Datasets: sources, formats, built-in generators, tokenization with loss masks."""
