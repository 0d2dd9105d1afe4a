"""An estimate of the simulator's ceiling from a large physiology-only sample.

`measure_ceiling` (in every cohort's ``ceiling.json``) fits a second-order ridge
on the cohort itself, so it grows with the cohort: a 200-subject cohort's
"ceiling" understates what the ECG latents carry, and fractions of it overstate
how close a model is. This module estimates the same quantity — how well the
*true* ECG-visible latents (plus, separately, the demographics the ECG file
carries) predict each CMR index — from many subjects drawn exactly as the
simulator draws them (`sample_physiology`, `ecg_parameters`; no waveform, no
image, about 2 ms a subject), with a flexible learner (scikit-learn's
histogram gradient boosting) and 5-fold cross-validation. The targets are the
physiology's own indices, which the rendered segmentations reproduce within
0.5-2 % (tested in the simulator's ground-truth agreement tests).

It is an *estimate* of the best achievable R², not a bound: another learner or
more subjects may do better, which is why the output reports the learning
curve (R² at several sample sizes) and the quadratic ridge of
`measure_ceiling` on the same subjects beside it, each with a bootstrap CI
over subjects of the out-of-fold predictions.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from cardiacnets.errors import InputError
from cardiacnets.io.ukb_xml import SUMMARY_MEASUREMENTS
from cardiacnets.simulate.ceiling import DEMOGRAPHIC_COLUMNS, ECG_PREFIX, cross_validated_r2, fold_assignment
from cardiacnets.stats.bootstrap import bootstrap_ci
from cardiacnets.stats.features import tabular_features
from cardiacnets.stats.metrics import regression_metrics

# Index name (as in `CEILING_TARGETS`) -> `Physiology.as_dict()` key.
PHYSIOLOGY_TARGETS: dict[str, str] = {
    "lvedv_ml": "lvedv_ml",
    "lvesv_ml": "lvesv_ml",
    "lvsv_ml": "lvsv_ml",
    "lvef_pct": "lvef_pct",
    "lvm_g": "lv_mass_g",
    "rvedv_ml": "rvedv_ml",
    "rvesv_ml": "rvesv_ml",
    "rvef_pct": "rvef_pct",
    "lv_wall_thickness_mm": "lv_wall_thickness_mm",
}
DEVICE_PREFIX = "device_"
LEARNER_DESCRIPTION = ("scikit-learn HistGradientBoostingRegressor (learning rate 0.1, up to 400 trees, "
                       "early stopping on 10 % of each training fold), one model per index, 5-fold CV")


def physiology_sample(n: int, seed: int, config=None, measurements: bool = False):
    """Physiology and ECG latents of ``n`` subjects, drawn as `cardiacnets synth` draws them.

    Args:
        n: number of subjects (indices 0..n-1 of cohort ``seed``: the same subjects a
            ``synth --n N --seed SEED`` cohort holds).
        seed: cohort seed.
        config: `SynthConfig` (default settings when None).
        measurements: also synthesise each ECG strip and keep the device measurements its XML
            would carry (``device_<name>`` columns; about 13 ms a subject instead of 2).

    Returns:
        DataFrame with ``ecg_<latent>`` columns, the demographics and the physiology's indices
        (and ``device_<measurement>`` columns).
    """
    import pandas as pd

    from cardiacnets.simulate.cohort import EID_START, sample_physiology, simulate_ecg, subject_rngs
    from cardiacnets.simulate.physiology import SynthConfig
    from cardiacnets.simulate.ecg_model import ecg_parameters

    config = config or SynthConfig()
    rows = []
    for i in range(n):
        if measurements:
            phys, params, ecg = simulate_ecg(i, seed, config)
        else:
            physiology_rng, ecg_rng, _ = subject_rngs(seed, i)
            phys = sample_physiology(EID_START + i, physiology_rng, config)
            params = ecg_parameters(phys, ecg_rng, config.rhythm, version=config.version)
        row = {k: v for k, v in phys.as_dict().items() if k != "akinetic_segments"}
        row.update({f"{ECG_PREFIX}{k}": v for k, v in params.as_dict().items()})
        if measurements:
            row.update({f"{DEVICE_PREFIX}{k}": ecg.measurements.get(k, np.nan) for k in SUMMARY_MEASUREMENTS})
        rows.append(row)
    return pd.DataFrame(rows)


def _boosted_oof(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions of one boosted model per target column."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    fold_of = fold_assignment(len(y), folds, seed)
    predictions = np.empty_like(y)
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        for j in range(y.shape[1]):
            model = HistGradientBoostingRegressor(learning_rate=0.1, max_iter=400, early_stopping=True,
                                                  validation_fraction=0.1, n_iter_no_change=20,
                                                  random_state=seed)
            model.fit(x[train], y[train, j])
            predictions[test, j] = model.predict(x[test])
    return predictions


def r2_with_ci(y: np.ndarray, prediction: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """R² per column with a percentile bootstrap 95 % CI over subjects.

    Args:
        y, prediction: (n, targets) truth and out-of-fold predictions.
        n_boot: bootstrap resamples (0: no CI, ``low`` and ``high`` are None).
        seed: seed of the resampling.

    Returns:
        One ``{"value", "low", "high"}`` per column.
    """
    if n_boot < 1:
        r2 = regression_metrics(y.T, prediction.T)["r2"]
        return [{"value": float(v), "low": None, "high": None} for v in np.atleast_1d(r2)]
    out = []
    for j in range(y.shape[1]):
        ci = bootstrap_ci(regression_metrics, y[:, j], prediction[:, j], n_boot=n_boot, seed=seed)["r2"]
        out.append({"value": float(ci["value"]), "low": float(ci["low"]), "high": float(ci["high"])})
    return out


def estimate_ceiling(frame, *, folds: int = 5, seed: int = 0, n_boot: int = 1000,
                     curve: tuple[int, ...] = (2000,), ridge: bool = True) -> dict:
    """Boosted (and quadratic-ridge) cross-validated R² of the true ECG latents per index.

    Args:
        frame: `physiology_sample` output (or a ground-truth table with the same columns).
        folds: cross-validation folds.
        seed: seed of folds, learners and bootstrap.
        n_boot: bootstrap resamples for the CIs.
        curve: smaller sample sizes (the first N rows) also scored with the boosted learner,
            so the learning curve shows whether the estimate has levelled off.
        ridge: also score `measure_ceiling`'s quadratic ridge on the same rows.

    Returns:
        ``{"n", "learner", "latents", "estimate", "estimate_with_demographics",
        "from_measurements_with_demographics", "curve", "ridge_quadratic"}``; ``estimate`` maps each index
        to ``{"value", "low", "high"}``; ``from_measurements_with_demographics`` (None without
        ``device_`` columns) is what the ECG device's measurements and the demographics say, the
        shortcut a linear model of the XML can take.

    Raises:
        InputError: when columns are missing or there are fewer than 10 rows per fold.
    """
    from cardiacnets.simulate.ecg_model import ECG_VISIBLE_LATENTS

    latents = [f"{ECG_PREFIX}{name}" for name in ECG_VISIBLE_LATENTS]
    targets = list(PHYSIOLOGY_TARGETS.values())
    missing = [c for c in latents + targets + list(DEMOGRAPHIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise InputError("<physiology sample>", f"missing columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if len(frame) < 10 * folds:
        raise InputError("<physiology sample>", f"need at least {10 * folds} subjects for {folds}-fold CV, "
                         f"got {len(frame)}")
    y = frame[targets].to_numpy(dtype=np.float64)
    x_ecg, _ = tabular_features(frame, latents)
    x_demo, _ = tabular_features(frame, list(DEMOGRAPHIC_COLUMNS))
    x_both = np.concatenate([x_ecg, x_demo], axis=1)
    names = list(PHYSIOLOGY_TARGETS)
    seconds = {}
    t0 = time.perf_counter()
    # One OpenMP thread per fit: on a busy 2-core machine the learner's threads spin against other jobs.
    with threadpool_limits(limits=1):
        estimate = dict(zip(names, r2_with_ci(y, _boosted_oof(x_ecg, y, folds, seed), n_boot, seed)))
        with_demo = dict(zip(names, r2_with_ci(y, _boosted_oof(x_both, y, folds, seed), n_boot, seed)))
        seconds["boosted"] = round(time.perf_counter() - t0, 1)
        points = {}
        for size in sorted(s for s in curve if 10 * folds <= s < len(frame)):
            oof = _boosted_oof(x_ecg[:size], y[:size], folds, seed)
            points[str(size)] = {k: round(v["value"], 4)
                                 for k, v in zip(names, r2_with_ci(y[:size], oof, 0, seed))}
    points[str(len(frame))] = {k: round(v["value"], 4) for k, v in estimate.items()}
    device = [c for c in frame.columns if c.startswith(DEVICE_PREFIX)]
    from_measurements = None
    if device:
        t0 = time.perf_counter()
        # The gradient-boosted learner handles missing measurements (no P wave in AF) natively.
        x_device = np.concatenate([tabular_features(frame, device)[0], x_demo], axis=1)
        with threadpool_limits(limits=1):
            oof = _boosted_oof(x_device, y, folds, seed)
        from_measurements = dict(zip(names, r2_with_ci(y, oof, n_boot, seed)))
        seconds["measurements"] = round(time.perf_counter() - t0, 1)
    ridge_r2 = None
    if ridge:
        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            r2, _ = cross_validated_r2(x_ecg, y, folds, seed)
        ridge_r2 = {k: round(float(v), 4) for k, v in zip(names, r2)}
        seconds["ridge_quadratic"] = round(time.perf_counter() - t0, 1)
    return {
        "n": int(len(frame)),
        "folds": folds,
        "seed": seed,
        "learner": LEARNER_DESCRIPTION,
        "targets": "the physiology's indices (the rendered segmentation reproduces them within 0.5-2 %)",
        "latents": list(ECG_VISIBLE_LATENTS),
        "estimate": estimate,
        "estimate_with_demographics": with_demo,
        "from_measurements_with_demographics": from_measurements,
        "curve": points,
        "ridge_quadratic": ridge_r2,
        "seconds": seconds,
    }
