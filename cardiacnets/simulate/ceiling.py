"""The simulator's ceiling: how well the true ECG latents predict each CMR index.

The ECG is generated from `ECGParams` (the ECG-visible latents), which carry
only part of what determines the heart's volumes and mass (a random thorax
factor, body habitus and effusion attenuate the QRS dipole, and many CMR
differences have no ECG correlate). `measure_ceiling` fits a flexible regressor
from the *true* latents to each segmentation-measured index with K-fold
cross-validation; the out-of-fold R² bounds what any ECG model can reach on the
simulated cohort, so trained heads are reported as a fraction of it.

Regressor (numpy only): ridge regression on standardised latents (angles as
sine and cosine, booleans as 0/1, winsorised at 4 SD) expanded with all
pairwise products and squares (a second-order polynomial) scaled by a weight;
the weight (0 = plain linear ridge) and the penalty are chosen per target and
training fold by exact leave-one-out cross-validation computed from one SVD per
weight.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from cardiacnets.errors import InputError
from cardiacnets.stats.features import tabular_features

ECG_PREFIX = "ecg_"
SEG_PREFIX = "seg_"
# CMR indices measured on the rendered segmentation (``seg_`` columns) plus the model's wall thickness.
CEILING_TARGETS: dict[str, str] = {
    "lvedv_ml": "seg_lvedv_ml",
    "lvesv_ml": "seg_lvesv_ml",
    "lvsv_ml": "seg_lvsv_ml",
    "lvef_pct": "seg_lvef_pct",
    "lvm_g": "seg_lvm_g",
    "rvedv_ml": "seg_rvedv_ml",
    "rvesv_ml": "seg_rvesv_ml",
    "rvef_pct": "seg_rvef_pct",
    "lv_wall_thickness_mm": "lv_wall_thickness_mm",
}
# What the ECG file itself also carries (PatientInfo in the UK Biobank XML).
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("age_years", "is_male", "height_cm", "weight_kg", "bmi")
RIDGE_ALPHAS = np.logspace(-2, 5, 22)
QUADRATIC_WEIGHTS = (0.0, 0.1, 0.3, 1.0)
WINSOR_Z = 4.0
MODEL_DESCRIPTION = (
    "ridge regression on standardised latents (angles as sine/cosine, booleans 0/1, winsorised at 4 SD) "
    "plus all pairwise products and squares scaled by a weight in {0, 0.1, 0.3, 1}; weight and penalty "
    "chosen per target and training fold by exact leave-one-out CV (weight 0 = linear ridge)"
)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature becomes a zero column
    return (train - mean) / std, (test - mean) / std


def _quadratic(x: np.ndarray) -> np.ndarray:
    """x with all pairwise products and squares appended: (n, p + p(p+1)/2)."""
    rows, cols = np.triu_indices(x.shape[1])
    return np.concatenate([x, x[:, rows] * x[:, cols]], axis=1)


def _ridge_loo_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge predictions for every target column, penalty picked by leave-one-out CV.

    Args:
        x_train: (n, p) features; y_train: (n, targets); x_test: (m, p).

    Returns:
        (m, targets) predictions, the leave-one-out mean squared error and the
        chosen penalty, per target.
    """
    x_mean, y_mean = x_train.mean(axis=0), y_train.mean(axis=0)
    xc, yc = x_train - x_mean, y_train - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc  # (r, targets)
    best_err = np.full(y_train.shape[1], np.inf)
    best_alpha = np.zeros(y_train.shape[1])
    for alpha in RIDGE_ALPHAS:
        shrink = s**2 / (s**2 + alpha)  # (r,)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u**2) @ shrink + 1.0 / len(xc)  # hat diagonal incl. the intercept
        loo = (yc - fitted) / (1.0 - leverage)[:, None]
        err = (loo**2).mean(axis=0)
        better = err < best_err
        best_err[better], best_alpha[better] = err[better], alpha
    coef = np.stack([vt.T @ ((s / (s**2 + a)) * uty[:, j]) for j, a in enumerate(best_alpha)], axis=1)
    return (x_test - x_mean) @ coef + y_mean, best_err, best_alpha


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second-order ridge: linear terms plus pairwise products weighted by a factor
    chosen with the penalty by leave-one-out CV (factor 0 = linear ridge, so the
    expansion never does worse than a linear model in LOO terms)."""
    xs_train, xs_test = _standardise(x_train, x_test)
    # Winsorise before multiplying: rare large latents (Q waves, alternans) would explode in products.
    xs_train, xs_test = np.clip(xs_train, -WINSOR_Z, WINSOR_Z), np.clip(xs_test, -WINSOR_Z, WINSOR_Z)
    quad_train, quad_test = _quadratic(xs_train)[:, xs_train.shape[1]:], _quadratic(xs_test)[:, xs_test.shape[1]:]
    best_err = np.full(y_train.shape[1], np.inf)
    prediction = np.zeros((len(x_test), y_train.shape[1]))
    chosen = np.zeros((2, y_train.shape[1]))
    for weight in QUADRATIC_WEIGHTS:
        if weight == 0.0:
            train, test = xs_train, xs_test
        else:
            train = np.concatenate([xs_train, weight * quad_train], axis=1)
            test = np.concatenate([xs_test, weight * quad_test], axis=1)
        pred, err, alpha = _ridge_loo_fit_predict(train, y_train, test)
        better = err < best_err
        best_err[better], prediction[:, better] = err[better], pred[:, better]
        chosen[:, better] = np.stack([np.full(better.sum(), weight), alpha[better]])
    return prediction, chosen


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold index of each row: a seeded permutation dealt round-robin, so fold sizes differ by at most 1."""
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % folds
    return fold_of


def cross_validated_r2(x_base: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold R² per target column, and the mean chosen (quadratic weight, penalty)."""
    fold_of = fold_assignment(len(y), folds, seed)
    predictions = np.empty_like(y)
    chosen = []
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        predictions[test], fold_choice = _fit_predict(x_base[train], y[train], x_base[test])
        chosen.append(fold_choice)
    sse = ((y - predictions) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - sse / sst, np.mean(chosen, axis=0)


def measure_ceiling(ground_truth, *, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated R² of the true ECG-visible latents for each CMR index.

    Args:
        ground_truth: the cohort's ground-truth table (pandas DataFrame as in
            ``ground_truth.csv``: ``ecg_<latent>`` columns for every name in
            `ECG_VISIBLE_LATENTS`, ``seg_<index>`` measured columns, demographics).
        folds: number of cross-validation folds.
        seed: seed of the fold assignment.

    Returns:
        ``{"model", "folds", "seed", "n", "latents", "n_features", "r2",
        "r2_with_demographics", "quadratic_weight_mean"}``; ``r2`` maps each index of
        `CEILING_TARGETS` to its out-of-fold R² (``r2_with_demographics`` adds the
        age, sex, height and weight the ECG file also carries).

    Raises:
        InputError: when columns are missing or there are fewer rows than 2 per fold.
    """
    from cardiacnets.simulate.ecg_model import ECG_VISIBLE_LATENTS

    latents = [f"{ECG_PREFIX}{name}" for name in ECG_VISIBLE_LATENTS]
    needed = latents + list(CEILING_TARGETS.values()) + list(DEMOGRAPHIC_COLUMNS)
    missing = [c for c in needed if c not in ground_truth.columns]
    if missing:
        raise InputError("<ground_truth>", f"missing columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if folds < 2 or len(ground_truth) < 2 * folds:
        raise InputError("<ground_truth>",
                         f"need at least {2 * folds} subjects for {folds}-fold CV, got {len(ground_truth)}")
    y = ground_truth[list(CEILING_TARGETS.values())].to_numpy(dtype=np.float64)
    x_ecg, names = tabular_features(ground_truth, latents)
    x_demo, _ = tabular_features(ground_truth, list(DEMOGRAPHIC_COLUMNS))
    # One BLAS thread: these matrices are small, and a multi-threaded BLAS on a busy
    # 2-core machine took 25 s instead of 3 s for 200 subjects.
    with threadpool_limits(limits=1, user_api="blas"):
        r2, chosen = cross_validated_r2(x_ecg, y, folds, seed)
        r2_demo, _ = cross_validated_r2(np.concatenate([x_ecg, x_demo], axis=1), y, folds, seed)
    n_base = x_ecg.shape[1]
    return {
        "model": MODEL_DESCRIPTION,
        "folds": folds,
        "seed": seed,
        "n": int(len(ground_truth)),
        "latents": list(ECG_VISIBLE_LATENTS),
        "n_features": int(n_base + n_base * (n_base + 1) // 2),
        "r2": {name: float(v) for name, v in zip(CEILING_TARGETS, r2)},
        "r2_with_demographics": {name: float(v) for name, v in zip(CEILING_TARGETS, r2_demo)},
        "quadratic_weight_mean": {name: float(v) for name, v in zip(CEILING_TARGETS, chosen[0])},
    }
