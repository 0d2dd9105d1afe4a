"""The uncertainty of metrics: bootstrap confidence intervals, paired comparisons, DeLong's test.

`bootstrap_ci` gives percentile 95% confidence intervals over subject
resamples (Efron & Tibshirani 1993), optionally stratified by class so that
every resample holds both classes; `paired_bootstrap` compares two models on
the same subjects with the same resamples; `delong_test` compares two
correlated AUROCs with DeLong, DeLong & Clarke-Pearson (Biometrics 1988),
computed with the fast midrank algorithm of Sun & Xu (IEEE SPL 2014). The
metric functions of `cardiacnets.stats.metrics` are marked `supports_batches`
and are called once per block of resamples (an index matrix) instead of once
per resample.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from scipy import stats

from cardiacnets.stats.metrics import _binary_labels, _check_shapes, _finite_float

__all__ = ["bootstrap_ci", "bootstrap_indices", "delong_test", "paired_bootstrap"]

# Elements of one resampled input block (B_block x n x features): bounds the
# bootstrap's temporary arrays to ~32 MB of float64 whatever the test set size.
_BLOCK_ELEMENTS = 1 << 22


def _accepts_batches(fn: Callable) -> bool:
    while isinstance(fn, functools.partial):
        if getattr(fn, "supports_batches", False):
            return True
        fn = fn.func
    return bool(getattr(fn, "supports_batches", False))


def bootstrap_indices(n: int, n_boot: int, seed: int = 0, stratify=None) -> np.ndarray:
    """Index matrix of `n_boot` bootstrap resamples of `n` subjects.

    Args:
        n: subjects.
        n_boot: resamples.
        seed: seed of ``numpy.random.default_rng``; the matrix depends only on
            (`n`, `n_boot`, `seed`, `stratify`).
        stratify: optional (n,) class labels: each resample then draws, with
            replacement, as many subjects from each class as it holds (the
            classes in sorted order, each a block of columns).

    Returns:
        (n_boot, n) int64 row indices.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    if stratify is None:
        return rng.integers(0, n, size=(n_boot, n))
    strata = np.asarray(stratify)
    if strata.shape != (n,):
        raise ValueError(f"stratify must hold one label per subject, shape ({n},), got {strata.shape}")
    n_strata = len(np.unique(strata))
    # A stratum of one subject is resampled to itself: strata from a continuous
    # variable would freeze the resamples and give zero-width intervals.
    if n_strata > max(2, n // 2):
        raise ValueError(f"stratify holds {n_strata} distinct values for {n} subjects; stratify by class labels, "
                         "not by a continuous variable")
    blocks = []
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        blocks.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.concatenate(blocks, axis=1)


def _as_dict(result, fn: Callable) -> dict:
    if isinstance(result, dict):
        return result
    name = getattr(fn.func if isinstance(fn, functools.partial) else fn, "__name__", "metric")
    return {name if name.isidentifier() else "metric": result}


def _resample_metrics(metric_fn: Callable, arrays: list[np.ndarray], indices: np.ndarray, batched: bool) -> dict:
    """Evaluate `metric_fn` on every resample; name → (n_boot,) float array (NaN = undefined)."""
    n_boot, n = indices.shape
    columns: dict[str, list[np.ndarray]] = {}
    if batched:
        per_resample = n * max(int(np.prod(a.shape[1:])) for a in arrays)
        block = max(1, _BLOCK_ELEMENTS // per_resample)
        for start in range(0, n_boot, block):
            rows = indices[start:start + block]
            result = _as_dict(metric_fn(*(a[rows] for a in arrays)), metric_fn)
            for name, values in result.items():
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (len(rows),):
                    raise ValueError(f"metric_fn supports batches but returned {name!r} with shape {values.shape} "
                                     f"for a batch of {len(rows)} resamples")
                columns.setdefault(name, []).append(values)
    else:
        for row in indices:
            result = _as_dict(metric_fn(*(a[row] for a in arrays)), metric_fn)
            for name, value in result.items():
                columns.setdefault(name, []).append(np.asarray([value], dtype=np.float64))
    return {name: np.concatenate(chunks) for name, chunks in columns.items()}


def _point_metrics(metric_fn: Callable, arrays: list[np.ndarray], batched: bool) -> dict:
    """The metrics on all subjects (a batch of one for batched functions)."""
    if batched:
        result = _as_dict(metric_fn(*(a[None] for a in arrays)), metric_fn)
        return {name: float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) for name, value in result.items()}
    return {name: float(value) for name, value in _as_dict(metric_fn(*arrays), metric_fn).items()}


def _prepare(arrays, stratify, n_boot: int, alpha: float, metric_fn: Callable, batched: bool | None):
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("bootstrap needs at least one array to resample")
    n = len(arrays[0]) if arrays[0].ndim else 0
    for position, a in enumerate(arrays):
        if a.ndim == 0 or len(a) != n:
            raise ValueError(f"array {position} has {len(a) if a.ndim else 'no'} rows, array 0 has {n}; "
                             "every array holds one row per subject")
    if n < 1:
        raise ValueError("bootstrap needs at least one subject")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if stratify is True:
        stratify = arrays[0]
    elif stratify is False:
        stratify = None
    return arrays, n, stratify, _accepts_batches(metric_fn) if batched is None else bool(batched)


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return float("nan"), float("nan"), int(values.size)
    low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high), int(values.size - valid.size)


def bootstrap_ci(metric_fn: Callable, *arrays, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 stratify=None, batched: bool | None = None) -> dict:
    """Percentile bootstrap confidence intervals of every metric `metric_fn` returns.

    Subjects are resampled with replacement; all `arrays` are indexed with the
    same resample indices (row i of each belongs to subject i).

    Args:
        metric_fn: ``metric_fn(*arrays) -> dict[str, float]`` or a float
            (reported under the function's name, or ``"metric"`` for a lambda).
            Functions marked with `supports_batches` (every metric of this
            module, and partials of them) are evaluated on blocks of resamples.
        *arrays: arrays with one row per subject (e.g. ``y_true, y_score``).
        n_boot: resamples.
        alpha: 1 - confidence level (0.05 gives 95% intervals).
        seed: seed of the resampling (`bootstrap_indices`).
        stratify: None; (n,) class labels to resample within each class, so
            every resample keeps the class counts (use for classification);
            or True to stratify by ``arrays[0]``.
        batched: force (True) or forbid (False) batched evaluation; None asks
            `supports_batches`.

    Returns:
        ``{name: {"value", "low", "high", "n_undefined"}}``: the metric on all
        subjects, the ``alpha/2`` and ``1 - alpha/2`` quantiles over the
        resamples where it is defined (finite), and how many resamples were
        dropped as undefined.
    """
    arrays, n, stratify, batched = _prepare(arrays, stratify, n_boot, alpha, metric_fn, batched)
    point = _point_metrics(metric_fn, arrays, batched)
    samples = _resample_metrics(metric_fn, arrays, bootstrap_indices(n, n_boot, seed, stratify), batched)
    result = {}
    for name, value in point.items():
        low, high, n_undefined = _percentile_interval(samples[name], alpha)
        result[name] = {"value": value, "low": low, "high": high, "n_undefined": n_undefined}
    return result


def paired_bootstrap(metric_fn: Callable, y_true, pred_a, pred_b, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                     stratify=None, batched: bool | None = None) -> dict:
    """Compare two models on the same subjects with a paired bootstrap.

    Each resample draws the same subjects for both models, so the spread of
    the difference reflects only how differently the models score the same
    subjects (their errors are correlated; a comparison of two separate CIs
    would be too conservative).

    Args:
        metric_fn: ``metric_fn(y_true, pred) -> dict[str, float]`` or a float
            (see `bootstrap_ci`).
        y_true: (n, ...) ground truth.
        pred_a: (n, ...) predictions of model A (the reference).
        pred_b: (n, ...) predictions of model B.
        n_boot: resamples.
        alpha: 1 - confidence level of the difference's interval.
        seed: seed of the resampling.
        stratify: None, (n,) class labels, or True to stratify by `y_true`.
        batched: see `bootstrap_ci`.

    Returns:
        ``{name: {"a", "b", "diff", "low", "high", "p_value", "n_undefined"}}``:
        each model's metric on all subjects, ``diff = b - a``, the percentile
        interval of the resampled differences, and a two-sided p-value
        ``min(1, 2 (k + 1) / (B + 1))`` where k is the number of the B defined
        resampled differences on the far side of 0 (``<= 0`` when the
        difference is positive, ``>= 0`` when negative). Identical
        predictions give p = 1; the smallest p is ``2 / (B + 1)``.
    """
    arrays, n, stratify, batched = _prepare((y_true, pred_a, pred_b), stratify, n_boot, alpha, metric_fn, batched)
    truth, a, b = arrays
    if a.shape != b.shape:
        raise ValueError(f"pred_a has shape {a.shape} but pred_b has {b.shape}")
    point_a = _point_metrics(metric_fn, [truth, a], batched)
    point_b = _point_metrics(metric_fn, [truth, b], batched)
    indices = bootstrap_indices(n, n_boot, seed, stratify)
    samples_a = _resample_metrics(metric_fn, [truth, a], indices, batched)
    samples_b = _resample_metrics(metric_fn, [truth, b], indices, batched)
    result = {}
    for name in point_a:
        difference = samples_b[name] - samples_a[name]
        low, high, n_undefined = _percentile_interval(difference, alpha)
        valid = difference[np.isfinite(difference)]
        if valid.size:
            far_side = min(int((valid <= 0).sum()), int((valid >= 0).sum()))
            p_value = min(1.0, 2.0 * (far_side + 1) / (valid.size + 1))
        else:
            p_value = float("nan")
        result[name] = {"a": point_a[name], "b": point_b[name], "diff": point_b[name] - point_a[name],
                        "low": low, "high": high, "p_value": p_value, "n_undefined": n_undefined}
    return result


# ---------------------------------------------------------------- DeLong

def delong_test(y_true, score_a, score_b, alpha: float = 0.05) -> dict:
    """DeLong test of the difference between two correlated AUROCs (same subjects).

    Fast algorithm of Sun & Xu (2014): with m positives X and n negatives Y,
    midranks within X (T_X), within Y (T_Y) and within X ∪ Y (T_Z) give the
    AUROC ``(sum T_Z[X] - m (m + 1) / 2) / (m n)`` and the structural
    components ``V10 = (T_Z[X] - T_X) / n`` (per positive: the fraction of
    negatives it outranks, ties 1/2) and ``V01 = 1 - (T_Z[Y] - T_Y) / m``
    (per negative: the fraction of positives that outrank it). The covariance
    of the two AUROCs is ``S10 / m + S01 / n`` with S10, S01 the 2 x 2
    sample covariances (ddof 1) of V10 and V01 across the two models.

    Args:
        y_true: (n,) 0/1 labels; at least 2 of each class.
        score_a: (n,) scores of model A (the reference).
        score_b: (n,) scores of model B.
        alpha: 1 - confidence level of the difference's interval.

    Returns:
        ``auroc_a``, ``auroc_b``, ``diff`` (b - a), ``se`` (of the
        difference), ``z``, ``p_value`` (two-sided, normal), ``ci_low`` /
        ``ci_high`` (diff ∓ z_{1-alpha/2} se), ``se_a`` / ``se_b`` (DeLong SE
        of each AUROC), ``n``, ``n_positive``. When both models order every
        pair alike (se = 0 and diff = 0), z = 0 and p = 1.
    """
    positive = _binary_labels(y_true)
    a = _finite_float(score_a, "score_a")
    b = _finite_float(score_b, "score_b")
    _check_shapes(positive, a, ("y_true", "score_a"))
    _check_shapes(positive, b, ("y_true", "score_b"))
    if positive.ndim != 1:
        raise ValueError(f"delong_test takes (n,) arrays, got shape {positive.shape}")
    m = int(positive.sum())
    n = int(positive.size - m)
    if m < 2 or n < 2:
        raise ValueError(f"delong_test needs at least 2 positives and 2 negatives, got {m} and {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    scores = np.stack([a, b])  # (model, subject)
    x, y = scores[:, positive], scores[:, ~positive]  # (model, m), (model, n)
    t_x = stats.rankdata(x, axis=1)
    t_y = stats.rankdata(y, axis=1)
    t_z = stats.rankdata(np.concatenate([x, y], axis=1), axis=1)
    auroc = (t_z[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1.0 - (t_z[:, m:] - t_y) / m
    covariance = np.cov(v10) / m + np.cov(v01) / n  # (2, 2)
    contrast = np.array([-1.0, 1.0])  # b - a
    variance = float(contrast @ covariance @ contrast)
    se = float(np.sqrt(max(variance, 0.0)))
    diff = float(auroc[1] - auroc[0])
    if se > 0:
        z = diff / se
    else:
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    z_crit = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return {
        "auroc_a": float(auroc[0]), "auroc_b": float(auroc[1]), "diff": diff, "se": se, "z": float(z),
        "p_value": float(2.0 * stats.norm.sf(abs(z))), "ci_low": diff - z_crit * se, "ci_high": diff + z_crit * se,
        "se_a": float(np.sqrt(max(covariance[0, 0], 0.0))), "se_b": float(np.sqrt(max(covariance[1, 1], 0.0))),
        "n": int(positive.size), "n_positive": m,
    }
