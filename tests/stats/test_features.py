"""Tabular features of the simple regressions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardiacnets.stats.features import tabular_features


def test_tabular_features_against_hand_values():
    frame = pd.DataFrame({"r_axis_deg": [0.0, 90.0, np.nan], "qrs_ms": [100, "", "88"], "male": [True, False, True]})
    x, names = tabular_features(frame, ["qrs_ms", "r_axis_deg", "male"])
    assert names == ["qrs_ms", "sin(r_axis_deg)", "cos(r_axis_deg)", "male"]
    expected = np.array([[100.0, 0.0, 1.0, 1.0], [np.nan, 1.0, 0.0, 0.0], [88.0, np.nan, np.nan, 1.0]])
    np.testing.assert_allclose(x, expected, atol=1e-12)
    with pytest.raises(KeyError):
        tabular_features(frame, ["missing"])
