"""The simulator calibration helpers: quantile loss against hand-computed values, the coordinate search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardiacnets.bench.calibration import coordinate_search, quantile_loss


def _rows(values, name="x"):
    return [{name: float(v)} for v in values]


def test_quantile_loss_is_zero_on_the_same_sample_and_hand_computed_for_a_shift():
    real = _rows(np.arange(101))  # quantiles 10, 50, 90 = 10, 50, 90; interquartile range 50
    assert quantile_loss(real, real, ["x"]) == 0.0
    shifted = _rows(np.arange(101) + 5.0)  # every quantile 5 higher: (5 / 50)^2 = 0.01
    assert quantile_loss(shifted, real, ["x"]) == pytest.approx(0.01)
    # Two features average; a constant real feature (interquartile range 0) and a too-short one are left out.
    sim = [{"x": r["x"], "y": 2.0 * r["x"], "flag": 1.0, "rare": np.nan} for r in shifted]
    ref = [{"x": r["x"], "y": r["x"], "flag": 1.0, "rare": np.nan} for r in real]
    # y = 2 (x + 5): quantiles 30, 110, 190 vs 10, 50, 90 -> differences (20, 60, 100) / 50; mean over all six terms
    assert quantile_loss(sim, ref, ["x", "y", "flag", "rare"]) == pytest.approx((3 * 0.01 + 0.16 + 1.44 + 4.0) / 6)
    with pytest.raises(ValueError, match="no feature"):
        quantile_loss(sim, ref, ["flag", "rare"])


def test_coordinate_search_walks_scalars_and_range_ends_to_the_minimum_inside_the_bounds():
    target = {"a": 0.3, "r": (0.2, 0.9)}
    calls = []

    def evaluate(s):
        calls.append(s)
        return {"loss": (s["a"] - target["a"]) ** 2 + (s["r"][0] - 0.2) ** 2 + (s["r"][1] - 0.9) ** 2}

    search = {"a": (0.1, (0.0, 1.0)), "r": (0.1, (0.0, 0.8))}  # the upper end may not pass 0.8
    settings, best, history = coordinate_search(evaluate, {"a": 0.0, "r": [0.5, 0.5]}, search, rounds=5)
    assert settings["a"] == pytest.approx(0.3)
    assert settings["r"] == pytest.approx((0.2, 0.8))  # the bound holds the upper end
    assert best["loss"] == pytest.approx(0.01)
    assert history[0]["settings"] == {"a": 0.0, "r": (0.5, 0.5)} and len(history) == len(calls)
    assert all(0.0 <= c["a"] <= 1.0 and c["r"][0] <= c["r"][1] <= 0.8 for c in calls)


def test_mean_shift_distance_hand_computed_and_gaussian():
    from cardiacnets.bench.calibration import mean_shift_distance

    real = _rows(np.arange(5.0))
    sim = _rows(np.arange(5.0) + 2.0)
    # Pooled SD of the ten values sqrt(3); mean shift 2 / sqrt(3); within-class variance 2.5 / 3 (+ ridge 0.1).
    assert mean_shift_distance(sim, real, ["x"]) == pytest.approx((4.0 / 3.0) / (2.5 / 3.0 + 0.1))
    assert mean_shift_distance(real, real, ["x"]) == pytest.approx(0.0)
    # Two Gaussian features, one shifted by half an SD, the other a copy of it plus noise: the copy adds nothing.
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 1.0, 20000), rng.normal(0.0, 1.0, 20000)
    sim = [{"x": v, "y": v + 0.1 * e} for v, e in zip(a, rng.normal(size=a.size))]
    ref = [{"x": v, "y": v + 0.1 * e} for v, e in zip(b, rng.normal(size=b.size))]
    assert mean_shift_distance(sim, ref, ["x", "y"], ridge=0.0) == pytest.approx(0.25, rel=0.1)
    with pytest.raises(ValueError, match="3 rows"):
        mean_shift_distance(sim[:2], ref, ["x"])


def test_median_ratio_penalty_is_zero_inside_the_band_and_grows_outside():
    from cardiacnets.bench.calibration import median_ratio_penalty

    real = [{"a": v, "b": v} for v in (1.0, 2.0, 3.0)]  # medians 2
    inside = [{"a": 2.3, "b": 1.75}]  # 1.15 and 0.875 of 2: within 20 %
    assert median_ratio_penalty(inside, real, ["a", "b"], band=0.2) == 0.0
    outside = [{"a": 3.0, "b": 2.0}]  # a at 1.5: (log 1.5 - log 1.2)^2 x weight
    expected = 20.0 * (math.log(1.5) - math.log(1.2)) ** 2
    assert median_ratio_penalty(outside, real, ["a", "b"], band=0.2) == pytest.approx(expected, rel=1e-12)
    low = [{"a": 2.0 / 1.5, "b": 2.0}]  # below by the same ratio: the same penalty
    assert median_ratio_penalty(low, real, ["a", "b"], band=0.2) == pytest.approx(expected, rel=1e-12)
    assert median_ratio_penalty([{"a": -1.0, "b": 2.0}], real, ["a", "b"]) == 0.0  # non-positive: left out
