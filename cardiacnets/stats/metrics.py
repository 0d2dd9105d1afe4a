"""Metrics of predictions against the truth: classification, regression, multi-class, agreement.

The ECG-only heads of CardiacNets (arXiv 2411.13602) estimate cardiac function
indices (regression: LVEDV in ml, LVEF in %, ...) and screen for disease
(classification); this module scores them on a test set. Classification:
AUROC, AUPRC (average precision), sensitivity and specificity at a threshold
chosen on validation data by Youden's J, expected calibration error and Brier
score. Regression: Pearson r, R², MAE, RMSE and bias in the index's unit.
Multi-class: accuracy, balanced accuracy and one-vs-rest AUROC.

Used by training-time validation and calibration (the heads' validation R²
and AUROC, Youden thresholds) and by every evaluation; their uncertainty
(bootstrap CIs, paired comparisons, DeLong) is in `cardiacnets.stats.bootstrap`.

Vectorisation: every metric function here takes either one evaluation
(``y_true`` of shape ``(n,)``) or a batch of bootstrap resamples (``(B, n)``,
one resample per row) and then returns ``(B,)`` arrays. The bootstrap
(`cardiacnets.stats.bootstrap`) calls
them once per block of resamples with an index matrix instead of once per
resample (AUROC from ranks, average precision and Youden's J from one sort per
row, calibration bins from one ``bincount``): on this project's shared
2-core machine, 1,000 resamples of 200 subjects took ~0.1 s for the whole
classification set against 5.7 s for 1,000 calls of
``sklearn.metrics.roc_auc_score`` alone, which matters when every table cell
of every task, mode and label fraction gets a CI. scikit-learn's
implementations are the references in the tests.
Undefined values (AUROC of a resample without positives, Pearson r of a
constant prediction) are NaN, never an error, so the bootstrap can drop and
count them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "bland_altman",
    "calibration_bins",
    "classification_metrics",
    "multiclass_metrics",
    "regression_metrics",
    "separation_metrics",
    "supports_batches",
    "youden_threshold",
]


def supports_batches(fn: Callable) -> Callable:
    """Mark a metric function as accepting a batch of resamples (a leading ``(B, ...)`` axis).

    A marked function, called with arrays whose first axis is the resample
    axis, returns a dict of ``(B,)`` arrays (or one ``(B,)`` array);
    `bootstrap_ci` and `paired_bootstrap` then call it once per block of
    resamples instead of once per resample. The metric functions of this
    module are marked; so is a ``functools.partial`` of one of them
    (``partial(classification_metrics, threshold=0.4)``).

    Args:
        fn: the metric function.

    Returns:
        `fn`, marked.
    """
    fn.supports_batches = True
    return fn


# ---------------------------------------------------------------- validation

def _binary_labels(y_true, name: str = "y_true") -> np.ndarray:
    """Labels as a bool array; they must be 0/1 (or bool)."""
    y = np.asarray(y_true)
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must hold 0/1 labels; {int(bad.sum())} value(s) are not (first: {y[bad][0]!r})")
    return y.astype(bool)


def _finite_float(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s); drop those subjects first")
    return x


def _check_shapes(reference: np.ndarray, other: np.ndarray, names: tuple[str, str]) -> None:
    if reference.ndim not in (1, 2) or reference.shape[-1] == 0:
        raise ValueError(f"{names[0]} must be (n,) or (resamples, n) with n >= 1, got shape {reference.shape}")
    if other.shape != reference.shape:
        raise ValueError(f"{names[1]} has shape {other.shape} but {names[0]} has {reference.shape}")


def _batch(*arrays: np.ndarray) -> tuple[bool, list[np.ndarray]]:
    """``(single, arrays as (B, n))``: a 1-D call becomes a batch of one."""
    single = arrays[0].ndim == 1
    return single, [a[None] if single else a for a in arrays]


def _unbatch(result: dict, single: bool) -> dict:
    return {key: float(value[0]) for key, value in result.items()} if single else result


def _safe_divide(numerator, denominator) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# ---------------------------------------------------------------- row kernels (B, n) -> (B,)

class _SortedRows:
    """Each row sorted by decreasing score, with cumulative TP/FP counts and its tie groups.

    One sort per row serves AUROC, average precision and the Youden threshold.

    Attributes:
        score: (B, n) scores, decreasing along each row.
        positive: (B, n) labels in the same order.
        tp, fp: (B, n) positives / negatives at or above each position.
        n_pos, n_neg: (B,) class counts.
        group_end: (B, n) True at the last position of each group of equal
            scores (where a threshold ``score >= t`` sits).
        end_of_group: (B, n) index of the last position of each position's group.
        tp_before_group: (B, n) positives strictly above each position's group.
    """

    def __init__(self, positive: np.ndarray, score: np.ndarray):
        n_rows, n = score.shape
        # Order inside a tie group does not matter: every statistic is read at group ends.
        order = np.argsort(-score, axis=1)
        self.score = np.take_along_axis(score, order, axis=1)
        self.positive = np.take_along_axis(positive, order, axis=1)
        self.tp = np.cumsum(self.positive, axis=1)
        self.fp = np.arange(1, n + 1) - self.tp
        self.n_pos = self.tp[:, -1]
        self.n_neg = n - self.n_pos
        different = self.score[:, 1:] != self.score[:, :-1]
        self.group_end = np.ones((n_rows, n), dtype=bool)
        self.group_end[:, :-1] = different
        positions = np.arange(n)
        # Last position of each group: reverse running minimum of the group-end positions.
        end_index = np.where(self.group_end, positions, n)
        self.end_of_group = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
        # First position of each group: running maximum of the group-start positions.
        group_start = np.ones((n_rows, n), dtype=bool)
        group_start[:, 1:] = different
        start_of_group = np.maximum.accumulate(np.where(group_start, positions, 0), axis=1)
        tp_padded = np.concatenate([np.zeros((n_rows, 1), dtype=self.tp.dtype), self.tp], axis=1)
        self.tp_before_group = np.take_along_axis(tp_padded, start_of_group, axis=1)

    def auroc(self) -> np.ndarray:
        """Mann–Whitney AUROC: per negative, the positives above it plus half those tied with it."""
        tp_group = np.take_along_axis(self.tp, self.end_of_group, axis=1)
        above_or_half_tied = 0.5 * (self.tp_before_group + tp_group)
        u = np.where(self.positive, 0.0, above_or_half_tied).sum(axis=1)
        return _safe_divide(u, self.n_pos * self.n_neg)

    def average_precision(self) -> np.ndarray:
        """Sum over thresholds of (recall step) x precision, as ``sklearn.metrics.average_precision_score``.

        Each positive raises recall by 1/P at the threshold of its tie group, so
        AP is the mean, over positives, of the precision at the end of their group.
        """
        precision = self.tp / np.arange(1, self.tp.shape[1] + 1)
        precision_at_end = np.take_along_axis(precision, self.end_of_group, axis=1)
        return _safe_divide(np.where(self.positive, precision_at_end, 0.0).sum(axis=1), self.n_pos)

    def youden_threshold(self) -> np.ndarray:
        """The observed score t maximising sens + spec - 1 for ``score >= t``; ties go to the highest t.

        NaN where a class is missing.
        """
        # J * P * N = TP * N - FP * P in integers, so equal J compare equal (no rounding).
        youden_j_scaled = self.tp * self.n_neg[:, None] - self.fp * self.n_pos[:, None]
        youden_j_scaled = np.where(self.group_end, youden_j_scaled, np.iinfo(youden_j_scaled.dtype).min)
        best = np.argmax(youden_j_scaled, axis=1)
        threshold = self.score[np.arange(len(best)), best]
        return np.where((self.n_pos > 0) & (self.n_neg > 0), threshold, np.nan)


def _auroc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC of each row (ties count 1/2); NaN where a class is missing."""
    return _SortedRows(positive, score).auroc()


def _sensitivity_specificity_rows(positive: np.ndarray, score: np.ndarray, threshold: np.ndarray):
    called = score >= threshold[:, None]
    n_pos = positive.sum(axis=1)
    sensitivity = _safe_divide((called & positive).sum(axis=1), n_pos)
    specificity = _safe_divide((~called & ~positive).sum(axis=1), positive.shape[1] - n_pos)
    return sensitivity, specificity


def calibration_bins(probability: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability: ``[0, 1/k], (1/k, 2/k], ..., ((k-1)/k, 1]``.

    The bins of ``sklearn.calibration.calibration_curve(strategy="uniform")``
    (scikit-learn 1.9: a probability on an edge falls in the lower bin).

    Args:
        probability: probabilities in [0, 1], any shape.
        n_bins: number of bins k.

    Returns:
        Integer bin indices in ``0 .. k-1``, same shape.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], probability, side="left")


def _ece_rows(positive: np.ndarray, probability: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE per row: sum over bins of (bin size / n) * |observed rate - mean probability|."""
    n_rows, n = probability.shape
    flat = (calibration_bins(probability, n_bins) + n_bins * np.arange(n_rows)[:, None]).ravel()
    size = n_rows * n_bins
    sum_probability = np.bincount(flat, weights=probability.ravel(), minlength=size).reshape(n_rows, n_bins)
    sum_positive = np.bincount(flat, weights=positive.ravel().astype(np.float64), minlength=size).reshape(n_rows, n_bins)
    # (n_b / n) * |sum_y / n_b - sum_p / n_b| = |sum_y - sum_p| / n
    return np.abs(sum_positive - sum_probability).sum(axis=1) / n


# ---------------------------------------------------------------- public metrics

def youden_threshold(y_true, y_score) -> float:
    """The decision threshold maximising Youden's J = sensitivity + specificity - 1.

    Choose it on validation data and pass it to `classification_metrics` on
    the test data. Candidates are the observed scores, with the rule
    ``score >= threshold`` is positive; when several give the same J the
    highest wins (same choice as the arg-max over ``sklearn.metrics.roc_curve``).

    Args:
        y_true: (n,) 0/1 labels.
        y_score: (n,) scores (probabilities or any monotone score).

    Returns:
        The threshold.

    Raises:
        ValueError: labels not 0/1, non-finite scores, mismatched shapes, or
            only one class present (no threshold to choose).
    """
    positive = _binary_labels(y_true)
    score = _finite_float(y_score, "y_score")
    _check_shapes(positive, score, ("y_true", "y_score"))
    if positive.ndim != 1:
        raise ValueError(f"youden_threshold takes one evaluation, y_true of shape (n,), got {positive.shape}")
    if positive.all() or not positive.any():
        raise ValueError(f"youden_threshold needs both classes; y_true holds only {'positives' if positive.all() else 'negatives'}")
    return float(_SortedRows(positive[None], score[None]).youden_threshold()[0])


@supports_batches
def classification_metrics(y_true, y_score, threshold: float | None = None, n_bins: int = 10) -> dict:
    """Binary classification metrics of predicted probabilities.

    Args:
        y_true: (n,) 0/1 labels, or (B, n) for B bootstrap resamples.
        y_score: predicted probabilities of the positive class in [0, 1], same shape.
        threshold: decision threshold (``score >= threshold`` is positive),
            normally `youden_threshold` on validation data; None chooses it by
            Youden's J on these data (optimistic: use for description only).
        n_bins: equal-width probability bins of the calibration error.

    Returns:
        ``auroc``, ``auprc`` (average precision), ``sensitivity``,
        ``specificity``, ``threshold`` (the one used), ``ece`` (expected
        calibration error), ``brier``, ``n``, ``n_positive``, ``prevalence``:
        floats, or (B,) arrays for a batch. Values that need both classes
        (AUROC, AUPRC, Youden threshold) or one class (sensitivity needs
        positives, specificity negatives) are NaN without them.

    Raises:
        ValueError: labels not 0/1, scores not finite or outside [0, 1],
            mismatched shapes, or ``n_bins < 1``.
    """
    positive = _binary_labels(y_true)
    probability = _finite_float(y_score, "y_score")
    _check_shapes(positive, probability, ("y_true", "y_score"))
    if probability.min() < 0.0 or probability.max() > 1.0:
        raise ValueError(f"y_score must be probabilities in [0, 1] (calibration error and Brier score need them), "
                         f"got values in [{probability.min():.4g}, {probability.max():.4g}]; apply a sigmoid or softmax")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    single, (positive, probability) = _batch(positive, probability)
    n_rows, n = positive.shape
    ranked = _SortedRows(positive, probability)
    if threshold is None:
        used = ranked.youden_threshold()
    else:
        used = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n_rows,))
    sensitivity, specificity = _sensitivity_specificity_rows(positive, probability, used)
    n_positive = positive.sum(axis=1).astype(np.float64)
    result = {
        "auroc": ranked.auroc(),
        "auprc": ranked.average_precision(),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "threshold": np.asarray(used, dtype=np.float64),
        "ece": _ece_rows(positive, probability, n_bins),
        "brier": np.mean((probability - positive) ** 2, axis=1),
        "n": np.full(n_rows, float(n)),
        "n_positive": n_positive,
        "prevalence": n_positive / n,
    }
    return _unbatch(result, single)


@supports_batches
def separation_metrics(y_true, y_score) -> dict:
    """How well a continuous score (a measurement, not a probability) separates two groups.

    Args:
        y_true: (n,) 0/1 group labels (1 = the group expected to score higher), or (B, n) resamples.
        y_score: any finite real values (e.g. an LV mass in g or a voltage in mV), same shape.

    Returns:
        ``auroc`` (the Mann–Whitney probability that a random member of group 1 scores higher than one
        of group 0, ties counting 1/2) and ``mean_difference`` (mean of group 1 minus mean of group 0,
        in the score's unit): floats, or (B,) arrays for a batch; NaN where a group is empty.

    Raises:
        ValueError: labels not 0/1, scores not finite, or mismatched shapes.
    """
    positive = _binary_labels(y_true)
    score = _finite_float(y_score, "y_score")
    _check_shapes(positive, score, ("y_true", "y_score"))
    single, (positive, score) = _batch(positive, score)
    n_positive = positive.sum(axis=1)
    mean_positive = _safe_divide(np.where(positive, score, 0.0).sum(axis=1), n_positive)
    mean_negative = _safe_divide(np.where(positive, 0.0, score).sum(axis=1), positive.shape[1] - n_positive)
    result = {"auroc": _auroc_rows(positive, score), "mean_difference": mean_positive - mean_negative}
    return _unbatch(result, single)


@supports_batches
def regression_metrics(y_true, y_pred) -> dict:
    """Agreement of predicted and true values of a continuous index.

    Args:
        y_true: (n,) true values (e.g. LVEDV in ml), or (B, n) for B bootstrap resamples.
        y_pred: predictions in the same unit, same shape.

    Returns:
        ``pearson_r``; ``r2`` (coefficient of determination, 1 - SS_res /
        SS_tot, as ``sklearn.metrics.r2_score``); ``mae``, ``rmse`` and
        ``bias`` (mean of prediction - truth) in the index's unit; ``n``.
        Floats, or (B,) arrays for a batch; r is NaN when either side is
        constant, R² when the truth is.

    Raises:
        ValueError: non-finite values or mismatched shapes.
    """
    truth = _finite_float(y_true, "y_true")
    prediction = _finite_float(y_pred, "y_pred")
    _check_shapes(truth, prediction, ("y_true", "y_pred"))
    single, (truth, prediction) = _batch(truth, prediction)
    error = prediction - truth
    truth_centred = truth - truth.mean(axis=1, keepdims=True)
    prediction_centred = prediction - prediction.mean(axis=1, keepdims=True)
    ss_truth = (truth_centred ** 2).sum(axis=1)
    ss_prediction = (prediction_centred ** 2).sum(axis=1)
    pearson_r = _safe_divide((truth_centred * prediction_centred).sum(axis=1), np.sqrt(ss_truth * ss_prediction))
    result = {
        "pearson_r": np.clip(pearson_r, -1.0, 1.0),
        "r2": 1.0 - _safe_divide((error ** 2).sum(axis=1), ss_truth),
        "mae": np.abs(error).mean(axis=1),
        "rmse": np.sqrt((error ** 2).mean(axis=1)),
        "bias": error.mean(axis=1),
        "n": np.full(truth.shape[0], float(truth.shape[1])),
    }
    return _unbatch(result, single)


def _class_indices(y_true, class_names: list[str]) -> np.ndarray:
    y = np.asarray(y_true)
    n_classes = len(class_names)
    if y.dtype.kind in "USO":
        lookup = {str(name): index for index, name in enumerate(class_names)}
        unknown = sorted({str(v) for v in y.ravel()} - set(lookup))
        if unknown:
            raise ValueError(f"y_true holds label(s) {unknown[:5]} not in class_names {list(class_names)}")
        return np.vectorize(lookup.__getitem__, otypes=[np.int64])(y.astype(str))
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0))):
        raise ValueError(f"y_true must hold class indices 0..{n_classes - 1} or class names, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"y_true holds class index {int(y[bad][0])} outside 0..{n_classes - 1}")
    return y


@supports_batches
def multiclass_metrics(y_true, proba, class_names) -> dict:
    """Multi-class metrics of predicted class probabilities.

    Args:
        y_true: (n,) class indices into `class_names` or class names, or (B, n)
            for B bootstrap resamples.
        proba: (n, K) predicted probabilities (or scores) per class, or (B, n, K).
        class_names: the K class names, in `proba`'s column order.

    Returns:
        ``accuracy`` (of the arg-max class); ``balanced_accuracy`` (mean recall
        over the classes present in `y_true`, as sklearn); ``macro_auroc``
        (mean one-vs-rest AUROC, NaN when a class is absent); ``auroc_<name>``
        per class; ``n``. Floats, or (B,) arrays for a batch.

    Raises:
        ValueError: unknown labels, non-finite scores or mismatched shapes.
    """
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must hold at least 2 distinct names, got {class_names}")
    labels = _class_indices(y_true, class_names)
    scores = _finite_float(proba, "proba")
    if scores.shape != labels.shape + (len(class_names),):
        raise ValueError(f"proba must have shape {labels.shape + (len(class_names),)} (y_true's shape plus one "
                         f"column per class), got {scores.shape}")
    if labels.ndim not in (1, 2) or labels.shape[-1] == 0:
        raise ValueError(f"y_true must be (n,) or (resamples, n) with n >= 1, got shape {labels.shape}")
    single = labels.ndim == 1
    if single:
        labels, scores = labels[None], scores[None]
    n_rows, n = labels.shape
    predicted = scores.argmax(axis=2)
    result = {"accuracy": (predicted == labels).mean(axis=1)}
    recalls, aurocs = [], []
    for index in range(len(class_names)):
        is_class = labels == index
        recalls.append(_safe_divide((is_class & (predicted == index)).sum(axis=1), is_class.sum(axis=1)))
        aurocs.append(_auroc_rows(is_class, scores[:, :, index]))
    with np.errstate(invalid="ignore"):
        result["balanced_accuracy"] = np.nanmean(np.stack(recalls), axis=0)  # NaN recall = class absent
    result["macro_auroc"] = np.stack(aurocs).mean(axis=0)
    for name, auroc in zip(class_names, aurocs):
        result[f"auroc_{name}"] = auroc
    result["n"] = np.full(n_rows, float(n))
    return _unbatch(result, single)


def bland_altman(y_true, y_pred) -> dict:
    """Bland–Altman agreement: mean difference and 95% limits of agreement.

    Args:
        y_true: (n,) reference values (n >= 2).
        y_pred: (n,) predictions in the same unit.

    Returns:
        ``bias`` (mean of prediction - truth), ``sd`` (sample SD of the
        differences), ``loa_low`` / ``loa_high`` (bias ∓ 1.96 SD), ``n``.
    """
    truth = _finite_float(y_true, "y_true")
    prediction = _finite_float(y_pred, "y_pred")
    _check_shapes(truth, prediction, ("y_true", "y_pred"))
    if truth.ndim != 1 or truth.size < 2:
        raise ValueError(f"bland_altman needs (n,) arrays with n >= 2, got shape {truth.shape}")
    difference = prediction - truth
    bias, sd = float(difference.mean()), float(difference.std(ddof=1))
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": int(truth.size)}
