"""The direct generator's index read-out: a frozen ridge map from ECG features onto standardised CMR indices.

With ``condition_indices`` the cine denoiser (`cardiacnets.generation.denoiser.CineDenoiser`)
takes, besides the ECG tokens, a global condition of CMR index estimates (e.g.
LVEDV, LVEF): a closed-form ridge read-out of the ECG features
(`cardiacnets.generation.denoiser.index_features`), fitted on the training split
and frozen in the denoiser (``set_index_projection``). Each index is
standardised by its mean and standard deviation over the training subjects that
have it; the penalty is chosen per index by the exact leave-one-out error
(`cardiacnets.generation.readout.ridge_loo`). The same statistics standardise
the indices the denoiser is taught with (``index_teacher``) and give the
exported pipeline the indices' units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cardiacnets.errors import InputError
from cardiacnets.generation.readout import ridge_loo

#: Fewest training values an index needs to be read out.
MIN_TRAINING_VALUES = 5


def index_statistics(values: np.ndarray, columns: Sequence[str], source) -> dict[str, dict]:
    """Mean, standard deviation and count of each index over the training subjects that have it.

    Args:
        values: (N_train, k) raw index values, NaN where missing.
        columns: the k index names.
        source: file named in errors.

    Returns:
        ``{name: {"mean", "std", "n"}}`` (a zero standard deviation becomes 1).

    Raises:
        InputError: an index with fewer than `MIN_TRAINING_VALUES` training values.
    """
    stats = {}
    for j, col in enumerate(columns):
        ok = np.isfinite(values[:, j])
        if ok.sum() < MIN_TRAINING_VALUES:
            raise InputError(source, f"options.condition_indices: {col!r} has {int(ok.sum())} training "
                                     f"values; at least {MIN_TRAINING_VALUES} are needed")
        stats[col] = {"mean": float(values[ok, j].mean()), "std": float(values[ok, j].std() or 1.0),
                      "n": int(ok.sum())}
    return stats


def standardized_indices(values: np.ndarray, fit: dict[str, dict], columns: Sequence[str]) -> torch.Tensor:
    """(N, k) raw index values → float32 standardised values (NaN where missing), with `fit`'s means and SDs."""
    mean = np.array([fit[col]["mean"] for col in columns])
    std = np.array([fit[col]["std"] for col in columns])
    return torch.as_tensor((values - mean) / std, dtype=torch.float32)


def fit_index_projection(x: np.ndarray, values: np.ndarray, stats: dict[str, dict], columns: Sequence[str],
                         penalties: Sequence[float], spread: str = "ridge") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Ridge read-out of training features onto the standardised indices.

    The features are standardised over the training split for the fit (and the
    standardisation folded into the returned map). Each index is fitted on the
    training subjects that have it.

    Args:
        x: (N_train, d) features (float64).
        values: (N_train, k) raw index values, NaN where missing.
        stats: `index_statistics` of `values`.
        columns: the k index names.
        penalties: ridge penalties searched, per training subject (the penalty on the Gram matrix of
            the standardised features is this times the number of subjects).
        spread: ``ridge`` (the conditional mean, shrunk towards the training average) or ``training``
            (the estimate stretched about the training mean so that it spreads over the training
            subjects as the index does; the stretch is recorded as ``spread_scale``).

    Returns:
        ``(weight, bias, fit)``: (k, d) and (k,) float32 predicting standardised values from the
        unstandardised features, and per index its mean, SD, chosen penalty, leave-one-out R²,
        estimate SD, spread scale and count.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    weights, biases, fits = [], [], {}
    for j, col in enumerate(columns):
        y, stat = values[:, j], stats[col]
        ok = np.isfinite(y)
        w, b, penalty, loo_r2 = ridge_loo(z[ok], (y[ok] - stat["mean"]) / stat["std"],
                                          [p * int(ok.sum()) for p in penalties])
        # In-sample estimates have mean 0 (the ridge intercept): stretching w and b stretches them about it.
        estimate_sd = float(np.std(z[ok] @ w + b))
        stretch = 1.0 / estimate_sd if spread == "training" and estimate_sd > 1e-8 else 1.0
        w, b = w * stretch, b * stretch
        weights.append(w / scale)
        biases.append(b - float((mean / scale) @ w))
        fits[col] = {"mean": stat["mean"], "std": stat["std"], "penalty": penalty / int(ok.sum()),
                     "loo_r2": round(loo_r2, 4), "estimate_sd": round(estimate_sd, 4),
                     "spread_scale": round(stretch, 4), "n": stat["n"]}
    return (torch.as_tensor(np.stack(weights), dtype=torch.float32),
            torch.as_tensor(np.array(biases), dtype=torch.float32), fits)
