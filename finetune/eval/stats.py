"""Paired statistics for base-vs-finetuned: exact McNemar test and paired bootstrap.

Every score is finalize(sum numerators / sum denominators) over samples (see scoring.py),
so one bootstrap serves accuracies and perplexities: resample document indices with
replacement, recompute both scores on the same resample, take the difference.
"""

import math

import numpy as np

BOOT_CHUNK = 250  # resamples drawn at once (memory: chunk x n indices)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = pass->fail, c = fail->pass; a binomial(b + c, 1/2) test on the flips."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)  # exact integer arithmetic, one rounding at the end


def _finalize(metric: str, ratio: np.ndarray) -> np.ndarray:
    return np.exp(ratio) if metric == "perplexity" else ratio


def paired_bootstrap(terms_a: np.ndarray, terms_b: np.ndarray, metric: str, *, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Percentile 95% CIs of a, b and b - a, and a two-sided paired bootstrap p-value for b - a.

    terms_*: arrays of shape (n, 2) of per-sample (numerator, denominator), paired by row.
    The p-value is the share of resampled differences at least as far from the observed
    difference as the observed difference is from zero (the bootstrap distribution shifted
    to the null), with the usual +1 correction; identical inputs give exactly 1.
    """
    n = len(terms_a)
    rng = np.random.default_rng(seed)

    def score(terms, idx):
        return _finalize(metric, terms[idx, 0].sum(-1) / terms[idx, 1].sum(-1))

    full = np.arange(n)
    a, b = float(score(terms_a, full)), float(score(terms_b, full))
    diff = b - a
    boot_a, boot_b = [], []
    for start in range(0, n_boot, BOOT_CHUNK):
        idx = rng.integers(0, n, size=(min(BOOT_CHUNK, n_boot - start), n))
        boot_a.append(score(terms_a, idx))
        boot_b.append(score(terms_b, idx))
    boot_a, boot_b = np.concatenate(boot_a), np.concatenate(boot_b)
    boot_d = boot_b - boot_a
    extreme = np.abs(boot_d - diff) >= abs(diff) - 1e-12
    return {
        "a": a, "b": b, "diff": diff,
        "ci_a": _ci(boot_a), "ci_b": _ci(boot_b), "ci": _ci(boot_d),
        "p_bootstrap": float((extreme.sum() + 1) / (n_boot + 1)),
    }


def _ci(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]
