"""Measurement baselines for the heads: what the ECG device's own numbers already say.

A resting ECG's XML (UK Biobank field 20205, GE 12SL) carries the device's
measurements — rate, PR, QRS, QT/QTc, the P/R/T axes and the Sokolow-Lyon
voltage — and the patient's sex and age; UK Biobank adds height and weight. A
deep model of the waveform earns its place only where it beats a linear model
of these numbers, so `evaluate_heads` scores three baselines on the same
subjects, with the same metrics and bootstrap, and a paired comparison:

* ``measurements``: ridge regression (penalty by leave-one-out, per index) and
  L2 logistic regression (per label) on the standardised device measurements
  (axes as sine and cosine) and the demographics;
* ``measurements_boosted``: gradient-boosted trees (scikit-learn's histogram
  boosting, early-stopped on a held-out part of the training split) on the same
  numbers — the measurements' nonlinear relations to the heart (on the
  simulator, LV mass and volumes grow with the voltages and QRS width in ways
  a line misses), so a deep model is compared with the best a tabular model
  of the device's numbers does, not only with a linear one;
* ``sokolow``: a straight line (or logistic curve) of the Sokolow-Lyon voltage
  alone — the classic ECG criterion of LV hypertrophy, for LV mass.

Both are fitted on the training split of the same training set (subjects with
the target's label), missing values filled with the training mean. The
multi-class target is not modelled.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cardiacnets.errors import InputError
from cardiacnets.heads.inference import SplitPredictions
from cardiacnets.io.ukb_xml import SUMMARY_MEASUREMENTS
from cardiacnets.stats.features import tabular_features

DEMOGRAPHIC_FEATURES = ("sex_male", "age_years", "height_cm", "weight_kg")
#: Device measurements (``ecg_<name>`` manifest columns) and demographics the ``measurements`` baselines use.
MEASUREMENT_FEATURES = tuple(f"ecg_{m}" for m in SUMMARY_MEASUREMENTS) + DEMOGRAPHIC_FEATURES
BASELINES: dict[str, tuple[str, ...]] = {
    "measurements": MEASUREMENT_FEATURES,
    "measurements_boosted": MEASUREMENT_FEATURES,
    "sokolow": ("ecg_sokolov_lvh_index_mV",),
}
#: Baselines fitted with gradient-boosted trees instead of ridge / logistic regression.
BOOSTED = frozenset({"measurements_boosted"})
RIDGE_PENALTIES = np.logspace(-3, 4, 15)
#: Fewest labelled training subjects a regression baseline is fitted on.
MIN_TRAIN = 5


def _labels(train: pd.DataFrame, column: str) -> np.ndarray:
    """A target column as floats (NaN where missing); empty when the manifest has no such column."""
    return pd.to_numeric(train[column], errors="coerce").to_numpy(np.float64) if column in train else np.array([])


class MeasurementBaseline:
    """One baseline (`BASELINES`) fitted on the training split of a training set.

    Args:
        data: training set folder (its ``manifest.csv``).
        name: a key of `BASELINES`.
        regression, binary: the target columns to model.
        split: the split it is fitted on.
        subjects: fit on these subject ids of the split only (e.g. a heads run's label fraction).

    Raises:
        InputError: the manifest lacks every feature column, or the split has no subjects.
    """

    def __init__(self, data: str | os.PathLike, name: str, regression: list[str], binary: list[str],
                 split: str = "train", subjects: set[str] | None = None):
        from sklearn.linear_model import LogisticRegression

        from cardiacnets.data.store import TrainingSet
        from cardiacnets.generation.readout import ridge_loo

        manifest = TrainingSet(data).manifest
        self.columns = [c for c in BASELINES[name] if c in manifest.columns
                        and pd.to_numeric(manifest[c], errors="coerce").notna().any()]
        if not self.columns:
            raise InputError(data, f"has none of the columns the {name} baseline uses ({', '.join(BASELINES[name])})")
        self.name = name
        self.manifest = manifest.set_index(manifest["subject_id"].astype(str))
        train = manifest[manifest["split"] == split]
        if subjects is not None:
            train = train[train["subject_id"].astype(str).isin(subjects)]
        if train.empty:
            raise InputError(data, f"has no subjects in split {split!r} to fit the {name} baseline on")
        x, _ = tabular_features(train, self.columns)
        self.fill = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
        x = np.where(np.isfinite(x), x, self.fill)
        self.mean, self.std = x.mean(axis=0), np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
        xs = (x - self.mean) / self.std
        self.regression, self.binary, self.not_fitted = {}, {}, {}
        for column in regression:
            y = _labels(train, column)
            rows = np.isfinite(y)
            if rows.sum() < MIN_TRAIN:
                self.not_fitted[column] = f"{int(rows.sum())} labelled training subjects (< {MIN_TRAIN})"
                continue
            if name in BOOSTED:
                self.regression[column] = _boosted(xs[rows], y[rows], classify=False)
            else:
                weight, bias, _, _ = ridge_loo(xs[rows], y[rows], RIDGE_PENALTIES)
                self.regression[column] = (weight, bias)
        for column in binary:
            y = _labels(train, column)
            rows = np.isfinite(y)
            positives = int(y[rows].sum())
            if min(positives, int(rows.sum()) - positives) < 2:
                self.not_fitted[column] = f"{positives} cases and {int(rows.sum()) - positives} controls in training"
                continue
            if name in BOOSTED:
                self.binary[column] = _boosted(xs[rows], y[rows].astype(int), classify=True)
            else:
                self.binary[column] = LogisticRegression(C=1.0, max_iter=2000).fit(xs[rows], y[rows].astype(int))
        self.n_train = len(train)

    def predict(self, reference: SplitPredictions) -> SplitPredictions:
        """The baseline's predictions for the subjects (and with the truth) of a model's `SplitPredictions`.

        Raises:
            InputError: a subject is not in the training set's manifest.
        """
        missing = [s for s in reference.subject_ids if s not in self.manifest.index]
        if missing:
            raise InputError("<baseline>", f"subjects not in the manifest: {', '.join(missing[:3])}")
        x, _ = tabular_features(self.manifest.loc[reference.subject_ids], self.columns)
        xs = (np.where(np.isfinite(x), x, self.fill) - self.mean) / self.std
        out = SplitPredictions(list(reference.subject_ids))
        for column, (truth, _) in reference.regression.items():
            if column in self.regression:
                fitted = self.regression[column]
                estimate = fitted.predict(xs) if hasattr(fitted, "predict") else xs @ fitted[0] + fitted[1]
                out.regression[column] = (truth, estimate)
        for column, (truth, _) in reference.binary.items():
            if column in self.binary:
                out.binary[column] = (truth, self.binary[column].predict_proba(xs)[:, 1])
        return out

    def info(self) -> dict:
        return {"features": self.columns, "n_train": self.n_train,
                "model": "boosted trees" if self.name in BOOSTED else "ridge / logistic regression",
                "fitted": sorted([*self.regression, *self.binary]),
                "not_fitted": dict(self.not_fitted)}


def _boosted(x: np.ndarray, y: np.ndarray, classify: bool):
    """Histogram gradient boosting, shallow and early-stopped, sized to the number of training rows.

    Early stopping holds out 15 % of the rows (stratified for labels) once there are at least 100 of them;
    below that a fixed 100 rounds at a low learning rate. Leaves hold at least 5 % of the rows (5 to 20).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    n = len(y)
    stop = n >= 100
    options = dict(learning_rate=0.05, max_iter=500 if stop else 100, max_leaf_nodes=15,
                   min_samples_leaf=int(np.clip(n // 20, 5, 20)), l2_regularization=1.0,
                   early_stopping=stop, validation_fraction=0.15 if stop else None, n_iter_no_change=20,
                   random_state=0)
    model = HistGradientBoostingClassifier(**options) if classify else HistGradientBoostingRegressor(**options)
    return model.fit(x, y)
