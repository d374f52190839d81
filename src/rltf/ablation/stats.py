"""Paired statistics for arms judged on the same problems under the same seeds."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_mean(matrix: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of a seeds × problems matrix, resampling seeds and problems alike
    (the same problems for every seed in a draw: they are one problem set scored under each seed)."""
    matrix = np.asarray(matrix, dtype=float)
    rng = np.random.default_rng(seed)
    seeds, problems = matrix.shape
    means = np.empty(draws)
    for start in range(0, draws, 1000):
        n = min(1000, draws - start)
        rows = rng.integers(seeds, size=(n, seeds))
        cols = rng.integers(problems, size=(n, problems))
        means[start:start + n] = matrix[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def sign_test(diffs: np.ndarray) -> float:
    """Two-sided exact sign test on paired differences, ties dropped. With 0/1 outcomes (greedy
    pass@1) this is McNemar's exact test on the discordant (problem, seed) pairs."""
    diffs = np.asarray(diffs).ravel()
    better, worse = int((diffs > 0).sum()), int((diffs < 0).sum())
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
