"""`cv_auroc`: chance for one distribution split in two, 1 for disjoint sets, robust to missing values."""

from __future__ import annotations

import numpy as np
import pytest

from cardiacnets.stats.separability import cv_auroc


def test_one_distribution_is_not_separable():
    x = np.random.default_rng(0).normal(size=(200, 5))
    y = np.repeat([1, 0], 100)
    result = cv_auroc(x, y)
    assert result["auroc"] == pytest.approx(0.5, abs=0.1)
    assert (result["n_sim"], result["n_real"]) == (100, 100)


def test_shifted_sets_are_separated_and_missing_values_are_imputed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    y = np.repeat([1, 0], 60)
    x[y == 1, 0] += 6.0  # one feature tells the sets apart
    x[::7, 0] = np.nan  # some rows miss it
    x[:, 2] = np.nan  # a column nobody has is dropped, not an error
    result = cv_auroc(x, y, seed=3)
    assert result["auroc"] > 0.95
    assert result["sd"] >= 0.0
