"""Measurement baselines of the heads evaluation: fitted on the train split, scored on the model's subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from cardiacnets.errors import InputError
from cardiacnets.evaluate.heads_baseline import MeasurementBaseline
from cardiacnets.heads.inference import SplitPredictions
from support.datasets import write_heads_set


@pytest.fixture(scope="module")
def device_set(tmp_path_factory):
    """The tiny heads set plus device measurements: LV mass linear in Sokolow, heart failure = long QRS."""
    root = write_heads_set(tmp_path_factory.mktemp("baseline") / "dataset")
    manifest = pd.read_csv(root / "manifest.csv", dtype={"subject_id": str})
    rng = np.random.default_rng(1)
    n = len(manifest)
    manifest["ecg_sokolov_lvh_index_mV"] = rng.normal(2.5, 0.6, n)
    manifest["lvm_g"] = 40.0 + 30.0 * manifest["ecg_sokolov_lvh_index_mV"]
    manifest["ecg_qrs_duration_ms"] = rng.normal(95.0, 12.0, n)
    manifest["label_heart_failure"] = manifest["ecg_qrs_duration_ms"] > 100.0
    manifest["ecg_r_axis_deg"] = rng.uniform(-30.0, 90.0, n)
    manifest.loc[3, "ecg_qrs_duration_ms"] = np.nan  # a missing measurement is filled with the training mean
    manifest.to_csv(root / "manifest.csv", index=False)
    return root, manifest


def _reference(manifest, split="test") -> SplitPredictions:
    rows = manifest[manifest["split"] == split]
    nan = np.full(len(rows), np.nan)
    return SplitPredictions(list(rows["subject_id"]),
                            regression={"lvm_g": (rows["lvm_g"].to_numpy(float), nan),
                                        "lvedv_ml": (rows["lvedv_ml"].to_numpy(float), nan)},
                            binary={"label_heart_failure": (rows["label_heart_failure"].to_numpy(float), nan)})


def test_measurement_baseline_recovers_planted_relations(device_set):
    root, manifest = device_set
    baseline = MeasurementBaseline(root, "measurements", ["lvm_g", "lvedv_ml"], ["label_heart_failure"])
    # Only the columns the manifest has; the axis enters as sine and cosine.
    assert baseline.columns == ["ecg_qrs_duration_ms", "ecg_r_axis_deg", "ecg_sokolov_lvh_index_mV", "sex_male",
                                "age_years"]
    assert baseline.mean.shape == (6,) and baseline.n_train == int((manifest["split"] == "train").sum())
    train = manifest[manifest["split"] == "train"]
    assert baseline.fill[0] == pytest.approx(train["ecg_qrs_duration_ms"].mean())
    predicted = baseline.predict(_reference(manifest))
    truth, lvm = predicted.regression["lvm_g"]
    np.testing.assert_allclose(lvm, truth, atol=1.5)  # exact linear relation, a little ridge shrinkage
    label, probability = predicted.binary["label_heart_failure"]
    qrs = manifest.set_index("subject_id").loc[predicted.subject_ids, "ecg_qrs_duration_ms"].to_numpy()
    assert spearmanr(probability, qrs)[0] > 0.8  # the logistic leans on the QRS duration that defines the label
    assert roc_auc_score(label, probability) > 0.8


def test_sokolow_baseline_uses_the_voltage_alone(device_set):
    root, manifest = device_set
    baseline = MeasurementBaseline(root, "sokolow", ["lvm_g"], [])
    assert baseline.columns == ["ecg_sokolov_lvh_index_mV"] and baseline.info()["fitted"] == ["lvm_g"]
    weight, bias = baseline.regression["lvm_g"]
    # Standardised input: weight ~ 30 g/mV x the training SD, bias ~ the training mean of LV mass.
    train = manifest[manifest["split"] == "train"]
    assert weight[0] == pytest.approx(30.0 * train["ecg_sokolov_lvh_index_mV"].std(ddof=0), rel=0.02)
    assert bias == pytest.approx(train["lvm_g"].mean(), rel=1e-3)


def test_baseline_errors_name_the_problem(device_set, tmp_path):
    root, manifest = device_set
    bare = write_heads_set(tmp_path / "bare")
    with pytest.raises(InputError, match="none of the columns the sokolow baseline uses"):
        MeasurementBaseline(bare, "sokolow", ["lvm_g"], [])
    with pytest.raises(InputError, match="no subjects in split 'holdout'"):
        MeasurementBaseline(root, "measurements", ["lvm_g"], [], split="holdout")
    baseline = MeasurementBaseline(root, "measurements", ["lvm_g", "lvef_pct"], ["label_myocarditis"])
    # The tiny set has no myocarditis case: that label is listed as not fitted, with the reason.
    assert baseline.info()["not_fitted"] == {"label_myocarditis": "0 cases and 24 controls in training"}
    stranger = SplitPredictions(["nobody"], regression={"lvm_g": (np.array([1.0]), np.array([np.nan]))})
    with pytest.raises(InputError, match="not in the manifest: nobody"):
        baseline.predict(stranger)


def test_boosted_baseline_finds_what_a_line_misses(tmp_path):
    """A U-shaped relation of LVEF to the voltage: the ridge sees nothing, the boosted trees recover it."""
    root = write_heads_set(tmp_path / "dataset", n=400)
    manifest = pd.read_csv(root / "manifest.csv", dtype={"subject_id": str})
    rng = np.random.default_rng(2)
    voltage = rng.normal(2.5, 0.6, len(manifest))
    manifest["ecg_sokolov_lvh_index_mV"] = voltage
    manifest["lvef_pct"] = 60.0 - 25.0 * (voltage - 2.5) ** 2 + rng.normal(0.0, 1.0, len(manifest))
    manifest.to_csv(root / "manifest.csv", index=False)
    rows = manifest[manifest["split"] == "test"]
    reference = SplitPredictions(list(rows["subject_id"]), regression={
        "lvef_pct": (rows["lvef_pct"].to_numpy(float), np.full(len(rows), np.nan))})
    r = {}
    for name in ("measurements", "measurements_boosted"):
        baseline = MeasurementBaseline(root, name, ["lvef_pct"], ["label_heart_failure"])
        truth, estimate = baseline.predict(reference).regression["lvef_pct"]
        r[name] = np.corrcoef(truth, estimate)[0, 1]
    assert abs(r["measurements"]) < 0.35 and r["measurements_boosted"] > 0.85
    assert baseline.info()["model"] == "boosted trees" and baseline.info()["n_train"] == 240
    label, probability = baseline.predict(_reference(manifest)).binary["label_heart_failure"]
    assert probability.min() >= 0.0 and probability.max() <= 1.0 and len(probability) == len(label) == 80
