"""Tabular features for the package's simple regressions (ceilings, baselines)."""

from __future__ import annotations

import numpy as np


def tabular_features(frame, columns) -> tuple[np.ndarray, list[str]]:
    """A float feature matrix from table columns; angles (``*_deg`` columns) become sine and cosine.

    Args:
        frame: a pandas DataFrame holding `columns`.
        columns: column names, in order.

    Returns:
        ``(x, names)``: (rows, features) float64 with NaN where a value is missing or not a number,
        and the feature names (``sin(<col>)``, ``cos(<col>)`` for angles).
    """
    import pandas as pd

    out, names = [], []
    for name in columns:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
        if name.endswith("_deg"):
            out += [np.sin(np.radians(values)), np.cos(np.radians(values))]
            names += [f"sin({name})", f"cos({name})"]
        else:
            out.append(values)
            names.append(name)
    return np.stack(out, axis=1), names
