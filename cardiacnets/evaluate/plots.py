"""2-D projections of the shared ECG–CMR embedding space, coloured by a phenotype.

`pca_2d` projects embeddings onto their first two principal components (numpy
SVD; the sign of each component is fixed so the same embeddings always give the
same picture). `plot_projection` draws one column per modality, coloured by a
manifest phenotype (``lvef_pct`` by default): the top row projects every
modality onto one PCA basis fitted on the ECG and CMR embeddings together (in
an aligned model the panels overlap and look alike; a "modality gap" shows as
separated clouds), the bottom row onto each modality's own basis (does the
phenotype vary smoothly within the embedding?). Figures are
drawn with matplotlib's object-oriented API on the Agg canvas (no display and
no pyplot global state).
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
