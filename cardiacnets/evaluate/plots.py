"""2-D projections of the shared ECG–CMR embedding space, coloured by a phenotype.

`pca_2d` projects embeddings onto their first two principal components (numpy
SVD; the sign of each component is fixed so the same embeddings always give the
same picture). `plot_projection` draws one column per modality, coloured by a
manifest phenotype (``lvef_pct`` by default): the top row projects every
modality onto one PCA basis fitted on the ECG and CMR embeddings together (in
an aligned model the panels overlap and look alike; a "modality gap" shows as
separated clouds), the bottom row onto each modality's own basis (does the
phenotype vary smoothly within the embedding?).

The downstream heads' plots: `roc_plot` (ROC curves of one or more models,
AUROC in the legend), `calibration_plot` (reliability diagram with the
equal-width bins of the expected calibration error, and a histogram of the
predicted probabilities), `scatter_plot` (predicted against true index with
the identity line, a least-squares line and r / R² / MAE) and
`bland_altman_plot` (difference against mean with the bias and 95% limits of
agreement). Figures are drawn with matplotlib's object-oriented API on the
Agg canvas (no display and no pyplot global state) and written as PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pca_2d(embeddings: np.ndarray, fit_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit a 2-component PCA.

    Args:
        embeddings: (n, dim) rows to project.
        fit_rows: optional (n,) boolean mask: fit the basis on these rows only
            (every row is still projected); None fits on all rows.

    Returns:
        ``(coords, mean, components, explained_ratio)``: (n, 2) projections of
        every row, the (dim,) mean, the (2, dim) unit components, and the
        fraction of the fitted rows' variance each component explains (2,).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    fit = x if fit_rows is None else x[fit_rows]
    if fit.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 rows, got {fit.shape[0]}")
    mean = fit.mean(axis=0)
    _, singular, vt = np.linalg.svd(fit - mean, full_matrices=False)
    components = vt[:2]
    if components.shape[0] < 2:  # dim == 1: pad with a zero component
        components = np.vstack([components, np.zeros_like(components)])
        singular = np.concatenate([singular, [0.0]])
    # Deterministic sign: the largest-magnitude loading of each component is positive.
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    variance = singular ** 2
    total = variance.sum()
    explained = variance[:2] / total if total > 0 else np.zeros(2)
    return (x - mean) @ components.T, mean, components, explained


def plot_projection(ecg_embeddings: np.ndarray, cmr_embeddings: dict[str, np.ndarray], values: np.ndarray,
                    phenotype: str, out_png: str | Path, title: str = "") -> Path:
    """Draw the ECG and CMR embeddings in one shared PCA plane, coloured by `values`.

    Args:
        ecg_embeddings: (n, dim) ECG embeddings.
        cmr_embeddings: view name → (n, dim) CMR embeddings, row-aligned with
            the ECG rows; rows of NaN (subject without that view) are left out.
        values: (n,) phenotype per subject; NaN is drawn grey.
        phenotype: the phenotype's name (colour bar label).
        out_png: the PNG to write (parent folders are created).
        title: figure title.

    Returns:
        The PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    ecg = np.asarray(ecg_embeddings, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    panels = [("ECG", ecg)] + [(f"CMR {view}", np.asarray(emb, dtype=np.float64)) for view, emb in cmr_embeddings.items()]
    stacked = np.concatenate([emb for _, emb in panels])
    present = np.isfinite(stacked).all(axis=1)
    coords, _, _, explained = pca_2d(np.where(present[:, None], stacked, 0.0), fit_rows=present)

    finite_values = values[np.isfinite(values)]
    if finite_values.size:
        # 2nd-98th percentile colour range: one outlier must not wash out the map.
        low, high = np.percentile(finite_values, [2, 98])
        if high <= low:
            low, high = low - 0.5, high + 0.5
    else:
        low, high = 0.0, 1.0
    norm = Normalize(vmin=low, vmax=high)

    fig = Figure(figsize=(3.6 * len(panels) + 1.0, 7.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(panels), squeeze=False)
    scatter = None
    n = len(ecg)
    for index, (name, emb) in enumerate(panels):
        rows = slice(index * n, (index + 1) * n)
        shown = present[rows]
        # Top row: the shared basis (are the modalities aligned?); bottom row:
        # each modality's own basis (how does the phenotype vary within it?).
        own_xy, _, _, own_explained = pca_2d(np.where(shown[:, None], emb, 0.0), fit_rows=shown) if shown.sum() >= 2 \
            else (np.zeros((n, 2)), None, None, np.zeros(2))
        for row, (xy, ratio, basis) in enumerate(((coords[rows], explained, "shared PCA"), (own_xy, own_explained, "own PCA"))):
            ax = axes[row, index]
            colour_known = shown & np.isfinite(values)
            colour_missing = shown & ~np.isfinite(values)
            if colour_missing.any():
                ax.scatter(xy[colour_missing, 0], xy[colour_missing, 1], s=10, c="0.7", linewidths=0,
                           label=f"{phenotype} missing")
                ax.legend(loc="best", fontsize=7, frameon=False)
            scatter = ax.scatter(xy[colour_known, 0], xy[colour_known, 1], s=10, c=values[colour_known],
                                 cmap="viridis", norm=norm, linewidths=0)
            ax.set_title(f"{name}, {basis} (n={int(shown.sum())})", fontsize=9)
            ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% var)", fontsize=8)
            ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% var)", fontsize=8)
            ax.tick_params(labelsize=7)
    # The shared-basis panels get common limits so positions compare across modalities.
    shared = coords[present]
    if shared.size:
        pad = 0.05 * (shared.max(axis=0) - shared.min(axis=0) + 1e-12)
        for ax in axes[0]:
            ax.set_xlim(shared[:, 0].min() - pad[0], shared[:, 0].max() + pad[0])
            ax.set_ylim(shared[:, 1].min() - pad[1], shared[:, 1].max() + pad[1])
    colorbar = fig.colorbar(scatter, ax=axes.ravel().tolist(), shrink=0.8)
    colorbar.set_label(phenotype)
    if title:
        fig.suptitle(title, fontsize=10)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def _figure(width_in: float, height_in: float):
    """A constrained-layout figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _with_unit(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


def roc_plot(curves: dict, path: str | Path, title: str = "") -> Path:
    """ROC curves of one or more models on the same axes.

    Args:
        curves: model name → ``(y_true, y_score)``: (n,) 0/1 labels and scores.
        path: the PNG to write (parent folders are created).
        title: figure title.

    Returns:
        The PNG path.
    """
    from sklearn.metrics import roc_curve

    from cardiacnets.stats.metrics import _auroc_rows, _binary_labels, _finite_float

    if not curves:
        raise ValueError("roc_plot needs at least one curve")
    fig = _figure(4.6, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
    for name, (y_true, y_score) in curves.items():
        positive, score = _binary_labels(y_true), _finite_float(y_score, f"{name} scores")
        if positive.shape != score.shape or positive.ndim != 1:
            raise ValueError(f"{name}: y_true {positive.shape} and y_score {score.shape} must be the same (n,) shape")
        if positive.all() or not positive.any():
            raise ValueError(f"{name}: a ROC curve needs both classes in y_true")
        fpr, tpr, _ = roc_curve(positive, score)
        auroc = float(_auroc_rows(positive[None], score[None])[0])
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{name} (AUROC {auroc:.3f}, n={positive.size})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def calibration_plot(curves: dict, path: str | Path, title: str = "", n_bins: int = 10) -> Path:
    """Reliability diagram of one or more models' predicted probabilities.

    Top: observed fraction of positives against mean predicted probability
    in each non-empty equal-width bin (the bins of the ECE, see
    `cardiacnets.stats.metrics.calibration_bins`); bottom: how many
    subjects fall in each bin.

    Args:
        curves: model name → ``(y_true, y_prob)``: (n,) 0/1 labels and probabilities in [0, 1].
        path: the PNG to write (parent folders are created).
        title: figure title.
        n_bins: equal-width probability bins.

    Returns:
        The PNG path.
    """
    from cardiacnets.stats.metrics import calibration_bins, classification_metrics

    if not curves:
        raise ValueError("calibration_plot needs at least one curve")
    fig = _figure(4.6, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for name, (y_true, y_prob) in curves.items():
        ece = classification_metrics(y_true, y_prob, threshold=0.5, n_bins=n_bins)["ece"]  # validates the inputs
        positive = np.asarray(y_true).astype(np.float64)
        probability = np.asarray(y_prob, dtype=np.float64)
        bins = calibration_bins(probability, n_bins)
        count = np.bincount(bins, minlength=n_bins)
        filled = count > 0
        mean_probability = np.bincount(bins, weights=probability, minlength=n_bins)[filled] / count[filled]
        observed = np.bincount(bins, weights=positive, minlength=n_bins)[filled] / count[filled]
        line, = top.plot(mean_probability, observed, marker="o", markersize=4, linewidth=1.4,
                         label=f"{name} (ECE {ece:.3f}, n={probability.size})")
        bottom.stairs(count, edges, color=line.get_color(), linewidth=1.2)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.01)
    top.set_ylabel("observed fraction positive")
    top.legend(loc="upper left", fontsize=7)
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("subjects")
    if title:
        top.set_title(title, fontsize=10)
    return _save(fig, path)


def scatter_plot(y_true, y_pred, path: str | Path, unit: str = "", title: str = "") -> Path:
    """Predicted against true values of an index, with the identity and a least-squares line.

    Args:
        y_true: (n,) true values (n >= 2).
        y_pred: (n,) predictions in the same unit.
        path: the PNG to write (parent folders are created).
        unit: the index's unit for the axis labels and the MAE (``"ml"``, ``"%"``).
        title: figure title (e.g. the index's name).

    Returns:
        The PNG path.
    """
    from cardiacnets.stats.metrics import regression_metrics

    scores = regression_metrics(y_true, y_pred)  # validates the inputs
    truth, prediction = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if truth.ndim != 1 or truth.size < 2:
        raise ValueError(f"scatter_plot needs (n,) arrays with n >= 2, got shape {truth.shape}")
    fig = _figure(4.6, 4.4)
    ax = fig.subplots()
    low = float(min(truth.min(), prediction.min()))
    high = float(max(truth.max(), prediction.max()))
    pad = 0.05 * (high - low) if high > low else 1.0
    limits = (low - pad, high + pad)
    ax.plot(limits, limits, color="0.6", linestyle="--", linewidth=1, label="identity")
    ax.scatter(truth, prediction, s=10, alpha=0.6, linewidths=0)
    if truth.max() > truth.min():
        slope, intercept = np.polyfit(truth, prediction, 1)
        ax.plot(limits, [intercept + slope * x for x in limits], color="C3", linewidth=1.2,
                label=f"least squares (slope {slope:.2f})")
    text = (f"r = {scores['pearson_r']:.3f}\nR² = {scores['r2']:.3f}\n"
            f"MAE = {scores['mae']:.3g}{(' ' + unit) if unit else ''}\nn = {truth.size}")
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=8)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel(_with_unit("true", unit))
    ax.set_ylabel(_with_unit("predicted", unit))
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def bland_altman_plot(y_true, y_pred, path: str | Path, unit: str = "", title: str = "") -> Path:
    """Bland–Altman plot: prediction - truth against their mean, with bias and 95% limits of agreement.

    Args:
        y_true: (n,) true values (n >= 2).
        y_pred: (n,) predictions in the same unit.
        path: the PNG to write (parent folders are created).
        unit: the index's unit for the axis labels.
        title: figure title.

    Returns:
        The PNG path.
    """
    from cardiacnets.stats.metrics import bland_altman

    agreement = bland_altman(y_true, y_pred)  # validates the inputs
    truth, prediction = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    fig = _figure(5.4, 4.0)
    ax = fig.subplots()
    ax.scatter((truth + prediction) / 2.0, prediction - truth, s=10, alpha=0.6, linewidths=0)
    suffix = f" {unit}" if unit else ""
    for value, label, style in ((agreement["bias"], "bias", "-"), (agreement["loa_high"], "+1.96 SD", "--"),
                                (agreement["loa_low"], "-1.96 SD", "--")):
        ax.axhline(value, color="C3" if label == "bias" else "0.4", linestyle=style, linewidth=1.1)
        ax.annotate(f"{label}: {value:.3g}{suffix}", xy=(1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", ha="right", fontsize=7)
    ax.axhline(0.0, color="0.8", linewidth=0.8)
    ax.set_xlabel(_with_unit("mean of predicted and true", unit))
    ax.set_ylabel(_with_unit("predicted - true", unit))
    ax.set_title(title or f"Bland–Altman (n={agreement['n']})", fontsize=10)
    return _save(fig, path)
