"""Statistics for arms scored on the same problems: one module for every comparison rltf reports.

The unit of evidence is the problem. A model's seeds (and a problem's samples) are repeated looks at
the same problem, not new problems: a problem one arm solves on every seed counts once, not three
times. So every paired comparison first averages each problem's difference over seeds and samples
(:func:`per_problem`), then tests over problems: a bootstrap of the mean with a fixed, recorded
resampling seed, an exact sign test and a Wilcoxon signed-rank test. The seed-level view (one
difference per seed, a t-interval over seeds) shows how much the training runs themselves vary.
Several comparisons get Holm-adjusted p-values, and :func:`detectable_effect` says how large a
difference the design can see at 80 % power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

BOOTSTRAP_SEED = 20261206
"""The resampling seed of every bootstrap interval rltf reports (fixed, so a report is reproducible)."""
BOOTSTRAP_DRAWS = 10_000
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)
"""Student's t 0.975 quantile for 1..30 degrees of freedom (standard tables); the normal's beyond."""


def per_problem(scores: np.ndarray) -> np.ndarray:
    """A problem's mean over seeds: ``scores`` is seeds × problems (each cell a pass fraction over
    samples, 0/1 when greedy) or already one value per problem."""
    scores = np.asarray(scores, dtype=float)
    return scores.mean(axis=0) if scores.ndim == 2 else scores


def bootstrap_mean(values: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile interval of the mean, resampling problems (a seeds × problems matrix is first
    averaged over seeds: the seeds of one problem travel together)."""
    values = per_problem(values)
    rng = np.random.default_rng(seed)
    means = np.concatenate([values[rng.integers(len(values), size=(min(1000, draws - start), len(values)))]
                           .mean(axis=1) for start in range(0, draws, 1000)])
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def sign_test(diffs: np.ndarray) -> float:
    """Two-sided exact sign test on paired differences, ties dropped. Pass per-problem differences
    (:func:`per_problem`): over (problem, seed) cells it treats seeds as independent problems."""
    diffs = np.asarray(diffs).ravel()
    better, worse = int((diffs > 0).sum()), int((diffs < 0).sum())
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilcoxon(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank test (zeros dropped, mid-ranks for ties, the normal
    approximation with tie correction and continuity correction; fine from about 10 nonzero
    differences, and 1.0 with none)."""
    d = np.asarray(diffs, dtype=float).ravel()
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    magnitudes = np.abs(d)
    order = np.argsort(magnitudes, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    _, inverse, counts = np.unique(magnitudes, return_inverse=True, return_counts=True)
    ranks = np.array([ranks[inverse == g].mean() for g in range(len(counts))])[inverse]  # mid-ranks
    w_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - float((counts ** 3 - counts).sum()) / 48
    if var <= 0:
        return 1.0
    z = max(abs(w_plus - mean) - 0.5, 0.0) / math.sqrt(var)
    return min(1.0, 2 * (1 - NormalDist().cdf(z)))


def t_interval(values: np.ndarray) -> tuple[float, float] | None:
    """95 % Student-t interval of the mean of a few values (one per seed); None below two."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    df = len(values) - 1
    quantile = _T975[df - 1] if df <= len(_T975) else NormalDist().inv_cdf(0.975)
    half = quantile * float(values.std(ddof=1)) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def detectable_effect(diffs: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided test at ``alpha`` detects with ``power``, given
    the observed spread of the per-problem differences: ``(z_{1-α/2} + z_power) · sd / √problems``."""
    d = per_problem(diffs)
    if len(d) < 2:
        return math.inf
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return z * float(d.std(ddof=1)) / math.sqrt(len(d))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of several p-values (family-wise error), in the input's keys."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - i) * p))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


@dataclass(frozen=True)
class Paired:
    """Arm A against arm B on the same problems (A − B), clustered by problem."""

    diff: float
    """Mean over problems of each problem's mean difference over seeds and samples."""
    ci95: tuple[float, float]
    """Bootstrap over problems (:data:`BOOTSTRAP_SEED`)."""
    p_sign: float
    """Exact sign test over problems."""
    p_wilcoxon: float
    better: int
    """Problems where A's mean is above B's."""
    worse: int
    problems: int
    detectable: float
    """The smallest difference this design detects at 80 % power (two-sided 5 %)."""
    per_seed: tuple[float, ...]
    """A − B on each seed (mean over problems): the seed-level view."""
    seed_ci95: tuple[float, float] | None
    """t-interval over :attr:`per_seed`."""
    naive_p_sign: float
    """The sign test over (problem, seed) cells, seeds taken as independent: shown to say how much
    that overstates significance; never the verdict."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(a: np.ndarray, b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> Paired:
    """A − B for seeds × problems score matrices of the same shape (B may be one row: one model,
    such as a warm start, paired with every seed of A)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    cells = a - b  # broadcasts a one-row B over A's seeds
    d = per_problem(cells)
    per_seed = tuple(float(x) for x in cells.mean(axis=1))
    return Paired(diff=float(d.mean()), ci95=bootstrap_mean(d, seed=seed), p_sign=sign_test(d),
                  p_wilcoxon=wilcoxon(d), better=int((d > 0).sum()), worse=int((d < 0).sum()), problems=len(d),
                  detectable=detectable_effect(d), per_seed=per_seed, seed_ci95=t_interval(np.array(per_seed)),
                  naive_p_sign=sign_test(cells))
