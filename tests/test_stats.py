"""The statistics every comparison rltf reports rests on, checked on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rltf.ablation.stats import detectable_effect, holm, paired, sign_test, t_interval, wilcoxon


def test_wilcoxon_by_hand() -> None:
    # ranks 1..5, W+ = 1 + 2 + 3 + 5 = 11; mean 7.5, variance 5 * 6 * 11 / 24 = 13.75; continuity 0.5
    z = (11 - 7.5 - 0.5) / math.sqrt(13.75)
    assert wilcoxon(np.array([1, 2, 3, -4, 5, 0])) == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert wilcoxon(np.zeros(4)) == 1.0
    # ties share their mid-rank and shrink the variance: |d| = 1, 1, 1, 2 -> ranks 2, 2, 2, 4
    var = 4 * 5 * 9 / 24 - (3 ** 3 - 3) / 48
    z = (8 - 5 - 0.5) / math.sqrt(var)
    assert wilcoxon(np.array([1, 1, -1, 2])) == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_t_interval_holm_and_power_by_hand() -> None:
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))  # mean 2, sd 1, t(2) = 4.303
    assert (low, high) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert t_interval(np.array([1.0])) is None
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    d = np.array([0.0, 1.0] * 50)  # sd 0.5025, 100 problems
    assert detectable_effect(d) == pytest.approx((1.959964 + 0.841621) * d.std(ddof=1) / 10, rel=1e-5)
    # more seeds of the same problems average their noise away: the detectable effect shrinks
    noisy = np.random.default_rng(0).normal(0, 1, size=(1, 200))
    assert detectable_effect(np.vstack([noisy, -noisy])) < detectable_effect(noisy)


def test_seeds_taken_as_independent_problems_overstate_significance() -> None:
    # 20 problems, 8 better and 2 worse, repeated identically on 3 seeds: three looks at the same problems
    one_seed = np.array([1.0] * 8 + [-1.0] * 2 + [0.0] * 10)
    a, b = np.vstack([one_seed.clip(0)] * 3), np.vstack([(-one_seed).clip(0)] * 3)
    result = paired(a, b)
    assert (result.better, result.worse, result.problems) == (8, 2, 20)
    assert result.p_sign == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 0.109: not significant
    assert result.naive_p_sign == sign_test(a - b) < 0.01  # 24 vs 6 "problems": wrongly significant
    assert result.diff == pytest.approx(0.3) and result.per_seed == pytest.approx((0.3, 0.3, 0.3))


def test_a_single_model_pairs_with_every_seed() -> None:
    warm = np.array([[0.0, 1.0, 0.0, 0.5]])  # one model (a warm start) scored once
    arm = np.array([[1.0, 1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 0.5]])
    result = paired(arm, warm)
    assert result.diff == pytest.approx((0.5 + 0 + 0.5 + 0) / 4) and result.per_seed == pytest.approx((0.25, 0.25))
    assert (result.better, result.worse) == (2, 0) and result.seed_ci95 == pytest.approx((0.25, 0.25))
