"""Tests of the downstream-head statistics: metrics against hand-computed values
and scikit-learn, the batched (bootstrap) path against per-resample calls,
bootstrap CI coverage and width, the paired bootstrap, and DeLong's test
against a hand-worked example, an O(n²) implementation and the bootstrap."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from cardiacnets.stats.bootstrap import bootstrap_ci, bootstrap_indices, delong_test, paired_bootstrap
from cardiacnets.stats.metrics import (
    bland_altman,
    calibration_bins,
    classification_metrics,
    multiclass_metrics,
    regression_metrics,
    separation_metrics,
    supports_batches,
    youden_threshold,
)


def _random_binary(rng, n, decimals=None):
    """Labels with both classes and scores (rounded to force ties when `decimals` is given)."""
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, size=rng.integers(1, n), replace=False)] = 1
    score = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, (np.round(score, decimals) if decimals is not None else score)


# ---------------------------------------------------------------- hand-computed metrics

def test_auroc_and_auprc_of_five_subjects_by_hand():
    y = np.array([1, 0, 1, 0, 0])
    score = np.array([0.8, 0.4, 0.4, 0.6, 0.1])
    # Pairs (positive, negative): 0.8 beats 0.4, 0.6, 0.1 -> 3; 0.4 ties 0.4 (1/2), loses to 0.6,
    # beats 0.1 -> 1.5. AUROC = 4.5 / 6.
    # Thresholds: 0.8 -> P 1/1, R 1/2; 0.6 -> P 1/2, R 1/2; 0.4 -> P 2/4, R 1. AP = 1/2 * 1 + 1/2 * 1/2.
    result = classification_metrics(y, score)
    assert result["auroc"] == pytest.approx(0.75)
    assert result["auprc"] == pytest.approx(0.75)
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert result["auprc"] == pytest.approx(skm.average_precision_score(y, score))
    assert (result["n"], result["n_positive"], result["prevalence"]) == (5, 2, pytest.approx(0.4))


def test_youden_threshold_by_hand():
    y = np.array([0, 0, 1, 0, 1, 1, 1])
    score = np.array([0.1, 0.3, 0.35, 0.4, 0.7, 0.8, 0.9])
    # J(t) for score >= t: 0.9 -> 1/4; 0.8 -> 2/4; 0.7 -> 3/4; 0.4 -> 3/4 + 2/3 - 1; 0.35 -> 2/3; 0.3 -> 1/3; 0.1 -> 0.
    assert youden_threshold(y, score) == 0.7
    result = classification_metrics(y, score)
    assert result["threshold"] == 0.7
    assert (result["sensitivity"], result["specificity"]) == (0.75, 1.0)
    # A threshold given from validation data is applied as is.
    fixed = classification_metrics(y, score, threshold=0.35)
    assert (fixed["threshold"], fixed["sensitivity"], fixed["specificity"]) == (0.35, 1.0, pytest.approx(2 / 3))


def test_youden_threshold_ties_go_to_the_highest_and_match_roc_curve():
    # J = 2/3 at both 0.8 and 0.35: the higher threshold wins.
    assert youden_threshold([0, 0, 1, 0, 1, 1], [0.1, 0.3, 0.35, 0.4, 0.8, 0.9]) == 0.8
    rng = np.random.default_rng(3)
    for _ in range(50):
        y, score = _random_binary(rng, int(rng.integers(2, 30)), decimals=1)
        fpr, tpr, thresholds = skm.roc_curve(y, score)
        best = 1 + np.argmax((tpr - fpr)[1:])  # [0] is sklearn's +inf threshold (nothing called positive)
        assert youden_threshold(y, score) == thresholds[best]


def test_ece_and_brier_by_hand():
    y = np.array([0, 1, 0, 1, 1])
    probability = np.array([0.05, 0.15, 0.18, 0.62, 0.95])
    # Two bins: [0, 0.5) holds 0.05, 0.15, 0.18 (sum 0.38) with 1 positive; [0.5, 1] holds 0.62, 0.95
    # (sum 1.57) with 2. ECE = (|1 - 0.38| + |2 - 1.57|) / 5.
    result = classification_metrics(y, probability, n_bins=2)
    assert result["ece"] == pytest.approx((0.62 + 0.43) / 5)
    assert result["brier"] == pytest.approx((0.05 ** 2 + 0.85 ** 2 + 0.18 ** 2 + 0.38 ** 2 + 0.05 ** 2) / 5)
    assert result["brier"] == pytest.approx(skm.brier_score_loss(y, probability))


def test_ece_uses_the_bins_of_sklearn_calibration_curve():
    rng = np.random.default_rng(4)
    y, probability = _random_binary(rng, 300)
    observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="uniform")
    counts = np.bincount(np.floor(probability * 10).astype(int), minlength=10)  # no value on an edge
    expected = np.sum(counts[counts > 0] / len(y) * np.abs(observed - predicted))
    assert classification_metrics(y, probability)["ece"] == pytest.approx(expected)


def test_calibration_bins_put_edges_in_the_lower_bin():
    np.testing.assert_array_equal(calibration_bins(np.array([0.0, 0.1, 0.1001, 0.5, 0.95, 1.0]), 10), [0, 0, 1, 4, 9, 9])
    # With two bins, 0.5 belongs to [0, 0.5]: |0 - 0.5| + |1 - 1| over 2 subjects.
    assert classification_metrics([0, 1], [0.5, 1.0], n_bins=2)["ece"] == pytest.approx(0.25)


def test_regression_metrics_of_four_points_by_hand():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    prediction = np.array([2.0, 2.0, 4.0, 5.0])
    # errors 1, 0, 1, 1; SS_res 3, SS_tot 5; centred truth (-1.5, -.5, .5, 1.5), prediction (-1.25, -1.25, .75, 1.75):
    # r = 5.5 / sqrt(5 * 6.75).
    result = regression_metrics(truth, prediction)
    assert result == pytest.approx({"pearson_r": 5.5 / np.sqrt(33.75), "r2": 0.4, "mae": 0.75,
                                    "rmse": np.sqrt(0.75), "bias": 0.75, "n": 4})
    assert result["pearson_r"] == pytest.approx(stats.pearsonr(truth, prediction)[0])
    assert result["r2"] == pytest.approx(skm.r2_score(truth, prediction))


def test_undefined_metrics_are_nan_not_errors():
    only_negatives = classification_metrics([0, 0, 0], [0.1, 0.5, 0.2], threshold=0.3)
    assert np.isnan(only_negatives["auroc"]) and np.isnan(only_negatives["auprc"]) and np.isnan(only_negatives["sensitivity"])
    assert only_negatives["specificity"] == pytest.approx(2 / 3)
    assert np.isnan(classification_metrics([1, 1], [0.2, 0.4])["threshold"])
    constant = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert np.isnan(constant["pearson_r"]) and constant["mae"] == pytest.approx(2 / 3)
    assert np.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"])


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    names = ["normal", "dcm", "hcm"]
    y = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3)) + 1.2 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = multiclass_metrics(y, proba, names)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, proba.argmax(1)))
    assert result["macro_auroc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    for index, name in enumerate(names):
        assert result[f"auroc_{name}"] == pytest.approx(skm.roc_auc_score(y == index, proba[:, index]))
    # Class names work as labels too.
    by_name = multiclass_metrics(np.array(names)[y], proba, names)
    assert by_name == pytest.approx(result)


def test_bland_altman_limits():
    truth = np.array([10.0, 20.0, 30.0, 40.0])
    prediction = truth + np.array([1.0, -1.0, 3.0, 1.0])  # differences: mean 1, sample SD sqrt(8/3)
    result = bland_altman(truth, prediction)
    assert result["bias"] == pytest.approx(1.0) and result["sd"] == pytest.approx(np.sqrt(8 / 3))
    assert result["loa_high"] == pytest.approx(1 + 1.96 * np.sqrt(8 / 3))
    assert result["loa_low"] == pytest.approx(1 - 1.96 * np.sqrt(8 / 3))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: classification_metrics([0, 2, 1], [0.1, 0.2, 0.3]), "0/1 labels"),
    (lambda: classification_metrics([0, 1, 1], [0.1, 0.2]), "shape"),
    (lambda: classification_metrics([0, 1], [0.1, np.nan]), "NaN or infinite"),
    (lambda: classification_metrics([0, 1], [-0.5, 2.0]), "probabilities in \\[0, 1\\]"),
    (lambda: youden_threshold([1, 1, 1], [0.1, 0.2, 0.3]), "both classes"),
    (lambda: regression_metrics([1.0, 2.0], [1.0, np.inf]), "NaN or infinite"),
    (lambda: multiclass_metrics(["a", "z"], np.ones((2, 2)), ["a", "b"]), "not in class_names"),
    (lambda: multiclass_metrics([0, 1], np.ones((2, 3)), ["a", "b"]), "proba must have shape"),
    (lambda: delong_test([1, 0, 0], [0.5, 0.1, 0.2], [0.4, 0.3, 0.2]), "at least 2 positives"),
    (lambda: bootstrap_ci(regression_metrics, [1.0, 2.0, 3.0], [1.0, 2.0]), "rows"),
    (lambda: bootstrap_ci(regression_metrics, np.arange(10.0), np.arange(10.0), stratify=True), "continuous"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- batched path

def test_batched_metrics_equal_per_row_calls_and_sklearn():
    rng = np.random.default_rng(6)
    y, score = _random_binary(rng, 60, decimals=1)  # heavy ties
    indices = bootstrap_indices(60, 25, seed=1)
    batched = classification_metrics(y[indices], score[indices], n_bins=5)
    for row, index in enumerate(indices):
        single = classification_metrics(y[index], score[index], n_bins=5)
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][row], value, err_msg=name)
        if 0 < y[index].sum() < len(index):
            assert single["auroc"] == pytest.approx(skm.roc_auc_score(y[index], score[index]))
            assert single["auprc"] == pytest.approx(skm.average_precision_score(y[index], score[index]))
    truth = rng.normal(60, 12, 60)
    prediction = truth + rng.normal(0, 5, 60)
    batched = regression_metrics(truth[indices], prediction[indices])
    for row, index in enumerate(indices):
        assert {k: batched[k][row] for k in batched} == pytest.approx(regression_metrics(truth[index], prediction[index]))


def test_batched_multiclass_equals_per_row_calls():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 40)
    proba = rng.dirichlet(np.ones(3), size=40)
    indices = bootstrap_indices(40, 10, seed=2)
    batched = multiclass_metrics(y[indices], proba[indices], ["a", "b", "c"])
    for row, index in enumerate(indices):
        single = multiclass_metrics(y[index], proba[index], ["a", "b", "c"])
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][row], value, err_msg=name)


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_indices_are_seeded_and_stratified():
    labels = np.array([0] * 45 + [1] * 5)
    first = bootstrap_indices(50, 200, seed=3, stratify=labels)
    np.testing.assert_array_equal(first, bootstrap_indices(50, 200, seed=3, stratify=labels))
    assert not np.array_equal(first, bootstrap_indices(50, 200, seed=4, stratify=labels))
    assert first.shape == (200, 50)
    np.testing.assert_array_equal(labels[first].sum(axis=1), 5)  # every resample keeps 5 positives


def test_stratified_bootstrap_never_drops_and_unstratified_counts_undefined_resamples():
    rng = np.random.default_rng(8)
    y = np.array([1, 1] + [0] * 28)
    score = np.clip(0.3 * y + 0.7 * rng.random(30), 0, 1)
    plain = bootstrap_ci(classification_metrics, y, score, n_boot=500, seed=0)
    # P(no positive among 30 draws) = (28/30)^30 ~ 12.6%.
    assert 30 < plain["auroc"]["n_undefined"] < 100
    assert plain["ece"]["n_undefined"] == 0
    stratified = bootstrap_ci(classification_metrics, y, score, n_boot=500, seed=0, stratify=y)
    assert stratified["auroc"]["n_undefined"] == 0
    assert stratified["n_positive"] == {"value": 2, "low": 2, "high": 2, "n_undefined": 0}


def test_bootstrap_ci_point_value_and_percentiles():
    rng = np.random.default_rng(9)
    truth = rng.normal(size=80)
    prediction = truth + rng.normal(scale=0.5, size=80)
    ci = bootstrap_ci(regression_metrics, truth, prediction, n_boot=400, seed=2)
    assert ci["mae"]["value"] == pytest.approx(regression_metrics(truth, prediction)["mae"])
    indices = bootstrap_indices(80, 400, seed=2)
    resampled = np.abs(prediction - truth)[indices].mean(axis=1)
    assert (ci["mae"]["low"], ci["mae"]["high"]) == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])))


def test_unbatched_metric_function_gives_the_same_interval():
    rng = np.random.default_rng(10)
    y, score = _random_binary(rng, 50)
    batched = bootstrap_ci(classification_metrics, y, score, n_boot=200, seed=5, stratify=True)
    looped = bootstrap_ci(skm.roc_auc_score, y, score, n_boot=200, seed=5, stratify=True)
    assert set(looped) == {"roc_auc_score"}
    assert looped["roc_auc_score"]["low"] == pytest.approx(batched["auroc"]["low"])
    assert looped["roc_auc_score"]["high"] == pytest.approx(batched["auroc"]["high"])
    # A partial of a batched metric stays batched; a lambda can be declared batched.
    at_half = functools.partial(classification_metrics, threshold=0.5)
    partial_ci = bootstrap_ci(at_half, y, score, n_boot=200, seed=5, stratify=True)
    lambda_ci = bootstrap_ci(lambda t, s: classification_metrics(t, s, threshold=0.5), y, score,
                             n_boot=200, seed=5, stratify=True, batched=True)
    assert partial_ci == lambda_ci
    assert partial_ci["threshold"]["low"] == partial_ci["threshold"]["high"] == 0.5


def test_batched_function_returning_wrong_shape_is_reported():
    @supports_batches
    def broken(y_true, y_pred):
        return {"mean": float(np.mean(y_pred))}

    with pytest.raises(ValueError, match="supports batches but returned 'mean'"):
        bootstrap_ci(broken, np.ones(10), np.ones(10), n_boot=20)


def _binormal(rng, n, separation):
    """Labels (half positive) and scores with a known AUROC Phi(separation / sqrt 2)."""
    y = np.repeat([0, 1], n // 2)
    score = stats.norm.cdf(rng.normal(size=n) + separation * y)  # probabilities, same order as the normal score
    return y, score


@pytest.mark.slow
def test_bootstrap_ci_covers_the_true_auroc_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    true_auroc = stats.norm.cdf(1.0 / np.sqrt(2))
    covered = 0
    repeats = 200
    for repeat in range(repeats):
        y, score = _binormal(rng, 100, 1.0)
        ci = bootstrap_ci(classification_metrics, y, score, n_boot=400, seed=repeat, stratify=y)["auroc"]
        covered += ci["low"] <= true_auroc <= ci["high"]
    # Binomial SD of the coverage over 200 repeats is ~1.5%; percentile intervals run slightly narrow.
    assert 0.88 <= covered / repeats <= 0.99


def test_ci_width_shrinks_with_n():
    rng = np.random.default_rng(12)
    widths = {}
    for n in (50, 800):
        y, score = _binormal(rng, n, 1.0)
        ci = bootstrap_ci(classification_metrics, y, score, n_boot=500, stratify=y)["auroc"]
        widths[n] = ci["high"] - ci["low"]
    # Width scales as 1 / sqrt(n): a 16-fold n gives ~1/4 the width.
    assert 0.15 < widths[800] / widths[50] < 0.4


def test_bootstrap_is_fast_for_six_tasks():
    rng = np.random.default_rng(13)
    y, score = _binormal(rng, 200, 1.0)
    truth = rng.normal(60, 10, 200)
    prediction = truth + rng.normal(0, 5, 200)
    started = time.perf_counter()
    for _ in range(3):
        bootstrap_ci(classification_metrics, y, score, n_boot=1000, stratify=y)
        bootstrap_ci(regression_metrics, truth, prediction, n_boot=1000)
    seconds = time.perf_counter() - started
    assert seconds < 5.0  # ~0.3 s on 2 idle cores; generous for a shared machine


# ---------------------------------------------------------------- paired comparisons

def test_paired_bootstrap_identical_models_p_is_one():
    rng = np.random.default_rng(14)
    y, score = _binormal(rng, 100, 1.0)
    result = paired_bootstrap(classification_metrics, y, score, score.copy(), n_boot=300, stratify=True)
    for name, comparison in result.items():
        assert comparison["diff"] == 0 and comparison["p_value"] == 1.0, name
        assert comparison["low"] == comparison["high"] == 0


def test_paired_bootstrap_detects_a_clearly_better_model():
    rng = np.random.default_rng(15)
    truth = rng.normal(60, 10, 150)
    good = truth + rng.normal(0, 3, 150)
    poor = truth + rng.normal(0, 9, 150)
    result = paired_bootstrap(regression_metrics, truth, poor, good, n_boot=500)
    assert result["mae"]["diff"] < 0 and result["mae"]["high"] < 0
    assert result["mae"]["p_value"] < 0.05 and result["mae"]["p_value"] == pytest.approx(2 / 501)
    assert result["pearson_r"]["diff"] > 0 and result["pearson_r"]["p_value"] < 0.05
    assert result["mae"]["a"] == pytest.approx(np.mean(np.abs(poor - truth)))
    y, score = _binormal(rng, 200, 1.5)
    noisy = np.clip(score + rng.normal(0, 0.4, 200), 0, 1)
    auroc = paired_bootstrap(classification_metrics, y, noisy, score, n_boot=500, stratify=y)["auroc"]
    assert auroc["diff"] > 0 and auroc["p_value"] < 0.05


def test_paired_bootstrap_of_two_equally_good_models_is_not_significant():
    rng = np.random.default_rng(16)
    truth = rng.normal(60, 10, 150)
    first = truth + rng.normal(0, 5, 150)
    second = truth + rng.normal(0, 5, 150)
    result = paired_bootstrap(regression_metrics, truth, first, second, n_boot=500)
    assert result["mae"]["p_value"] > 0.05 and result["mae"]["low"] < 0 < result["mae"]["high"]


# ---------------------------------------------------------------- DeLong

def _delong_slow(y, score_a, score_b):
    """DeLong (1988) with the O(m n) kernel psi(x, y) = 1 if x > y, 1/2 if tied, else 0."""
    def components(score):
        x, z = score[y == 1], score[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])  # (positives, negatives)
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    auc_a, v10_a, v01_a = components(score_a)
    auc_b, v10_b, v01_b = components(score_b)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov(np.stack([v10_a, v10_b])), np.cov(np.stack([v01_a, v01_b]))
    s = s10 / m + s01 / n
    return auc_a, auc_b, np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1]), np.sqrt(s[0, 0]), np.sqrt(s[1, 1])


def test_delong_of_a_tiny_example_worked_by_hand():
    y = np.array([1, 1, 1, 0, 0])
    score_a = np.array([0.9, 0.6, 0.4, 0.5, 0.3])
    score_b = np.array([0.8, 0.2, 0.7, 0.5, 0.6])
    # A: V10 = (1, 1, 1/2), V01 = (2/3, 1); AUROC 5/6; S10 = 1/12, S01 = 1/18; var = S10/3 + S01/2 = 1/18.
    # B: V10 = (1, 0, 1), V01 = (2/3, 2/3); AUROC 2/3; S10 = 1/3, S01 = 0; var = 1/9.
    # cov(V10_A, V10_B) = -1/12, cov(V01) = 0: cov(AUROC) = -1/36. var(B - A) = 1/18 + 1/9 + 2/36 = 2/9.
    result = delong_test(y, score_a, score_b)
    assert result["auroc_a"] == pytest.approx(5 / 6) and result["auroc_b"] == pytest.approx(2 / 3)
    assert result["se_a"] == pytest.approx(np.sqrt(1 / 18)) and result["se_b"] == pytest.approx(np.sqrt(1 / 9))
    assert result["diff"] == pytest.approx(-1 / 6)
    assert result["se"] == pytest.approx(np.sqrt(2 / 9))
    assert result["z"] == pytest.approx(-1 / 6 / np.sqrt(2 / 9))
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(abs(result["z"])))
    assert result["ci_low"] == pytest.approx(-1 / 6 - 1.959964 * np.sqrt(2 / 9), abs=1e-6)


def test_delong_matches_the_slow_quadratic_implementation_with_ties():
    rng = np.random.default_rng(17)
    for _ in range(20):
        y, score_a = _random_binary(rng, int(rng.integers(8, 60)), decimals=1)
        if min(y.sum(), len(y) - y.sum()) < 2:
            continue
        score_b = np.round(np.clip(score_a + rng.normal(0, 0.2, len(y)), 0, 1), 1)
        auc_a, auc_b, se, se_a, se_b = _delong_slow(y, score_a, score_b)
        result = delong_test(y, score_a, score_b)
        assert (result["auroc_a"], result["auroc_b"]) == pytest.approx((auc_a, auc_b))
        assert (result["se"], result["se_a"], result["se_b"]) == pytest.approx((se, se_a, se_b))
        assert result["auroc_a"] == pytest.approx(skm.roc_auc_score(y, score_a))


def test_delong_se_agrees_with_the_paired_bootstrap():
    rng = np.random.default_rng(18)
    y, score = _binormal(rng, 300, 1.2)
    other = stats.norm.cdf(stats.norm.ppf(score) + rng.normal(0, 0.8, 300))
    result = delong_test(y, score, other)
    indices = bootstrap_indices(300, 2000, seed=1, stratify=y)
    batch = functools.partial(classification_metrics, threshold=0.5)
    diffs = batch(y[indices], other[indices])["auroc"] - batch(y[indices], score[indices])["auroc"]
    assert result["se"] == pytest.approx(diffs.std(ddof=1), rel=0.15)
    assert result["se_a"] == pytest.approx(batch(y[indices], score[indices])["auroc"].std(ddof=1), rel=0.15)


def test_delong_identical_models():
    rng = np.random.default_rng(19)
    y, score = _binormal(rng, 50, 1.0)
    result = delong_test(y, score, score)
    assert (result["diff"], result["se"], result["z"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)


# ---------------------------------------------------------------- separation of two groups by a measurement

def test_separation_metrics_by_hand_and_against_scipy_and_the_batched_path():
    # Group 1 {3, 5}, group 0 {1, 3, 4}: pairs (3>1, 3=3, 3<4, 5>1, 5>3, 5>4) -> (1 + 0.5 + 0 + 3) / 6 = 0.75.
    y = np.array([1, 0, 1, 0, 0])
    score = np.array([3.0, 1.0, 5.0, 3.0, 4.0])  # any unit, not probabilities
    result = separation_metrics(y, score)
    assert result["auroc"] == pytest.approx(0.75)
    assert result["mean_difference"] == pytest.approx(4.0 - 8.0 / 3.0)
    u = stats.mannwhitneyu(score[y == 1], score[y == 0]).statistic
    assert result["auroc"] == pytest.approx(u / (2 * 3))
    rng = np.random.default_rng(3)
    y, score = _random_binary(rng, 40, decimals=1)
    score = score * 200.0 - 50.0  # outside [0, 1]
    assert separation_metrics(y, score)["auroc"] == pytest.approx(skm.roc_auc_score(y, score))
    rows = bootstrap_indices(40, 5, seed=1)
    batched = separation_metrics(y[rows], score[rows])
    for b, row in enumerate(rows):
        single = separation_metrics(y[row], score[row])
        for key in ("auroc", "mean_difference"):
            assert batched[key][b] == pytest.approx(single[key], nan_ok=True)
    assert np.isnan(separation_metrics(np.ones(3), np.arange(3.0))["auroc"])
    with pytest.raises(ValueError, match="NaN"):
        separation_metrics(y, np.full(40, np.nan))
