"""Acquisition noise of generated cines: what the frame autoencoder cannot represent, drawn back in.

The image stage generates frames in the latent space of the frame autoencoder
(`cardiacnets.generation.vae`), whose decoder returns the expected image of a
latent: the anatomy, contrast and smooth texture, but not the per-pixel noise
of the acquisition (thermal noise, signal-dependent reconstruction and flow
noise), which no latent of a few numbers per 4 × 4 pixels can hold. Decoded
cines are therefore smoother than real ones, and by a different amount for
every subject (measured by `cardiacnets.evaluate.generation_scoring`'s image
statistics: blood-pool noise 1.3 SD below the true cines', with a
between-subject SD a quarter of theirs).

`AcquisitionNoise` is an explicit model of what is missing, fitted on the
training set (`fit_acquisition_noise`) from training frames and the
autoencoder's reconstructions of them:

* noise is measured as MR noise usually is, through the 5-point Laplacian
  (Immerkær 1996; the same estimator as `cardiacnets.cmr.frame_statistics`),
  whose robust SD over flat regions is insensitive to anatomy and smooth
  texture; the noise the reconstructions lack has the difference of the
  frames' and the reconstructions' Laplacian variances (`residual_curves`);
* it is measured per subject in bins of the reconstructed intensity (noise in
  MR magnitude images grows with the signal), giving each subject a noise
  curve; the model is a Gaussian over subjects of the log curve (its mean and
  the two leading components of its covariance: a subject's noise level and
  its signal dependence), so each generated cine draws its own noise as the
  training subjects vary;
* its spatial correlation (interpolation during preprocessing correlates
  neighbouring pixels) is matched by smoothing white noise with a Gaussian of
  the width whose lag-1 autocorrelation equals the residual's
  (`correlation_width`), and the Laplacian's gain for noise of that
  smoothing converts the measured curves back to pixel SDs (`laplacian_gain`).

Sampling adds independent noise to every frame (as an acquisition does) with
the SD of its cine's curve at each pixel's intensity, and clips to the
training range.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from cardiacnets.cmr.frame_statistics import robust_sd

#: Fewest residual pixels a subject's intensity bin is measured on (fewer: filled with the bins' median).
MIN_BIN_PIXELS = 50
#: Largest smoothing width tried (pixels); lag-1 autocorrelations above its own are matched by it.
MAX_WIDTH_PX = 2.0
#: Intensity bins of the noise curve: 8 of equal width over the training range [0, 1].
DEFAULT_BIN_EDGES = tuple(i / 8 for i in range(9))


def _gaussian_kernel(width_px: float) -> np.ndarray:
    """Normalised 1-D Gaussian of SD `width_px` (a delta at width 0)."""
    if width_px <= 0:
        return np.ones(1)
    half = max(1, int(math.ceil(3 * width_px)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / width_px) ** 2)
    return kernel / kernel.sum()


def smoothed_lag1(width_px: float) -> float:
    """Lag-1 autocorrelation of white noise smoothed by a separable Gaussian of SD `width_px` (exact)."""
    k = _gaussian_kernel(width_px)
    return float(np.dot(k[:-1], k[1:]) / np.dot(k, k)) if k.size > 1 else 0.0


def correlation_width(lag1: float) -> float:
    """The Gaussian width (pixels) whose smoothed white noise has lag-1 autocorrelation `lag1`.

    0 for `lag1` ≤ 0 (white noise); capped at `MAX_WIDTH_PX`.
    """
    if not lag1 > 0:
        return 0.0
    grid = np.linspace(0.0, MAX_WIDTH_PX, 201)
    values = np.array([smoothed_lag1(w) for w in grid])
    return float(np.interp(min(lag1, values[-1]), values, grid))


def laplacian_gain(width_px: float) -> float:
    """SD of the 5-point Laplacian of unit-SD white noise smoothed by the Gaussian of `width_px` (exact)."""
    from scipy import ndimage

    k = _gaussian_kernel(width_px)
    kernel = np.outer(k, k) / np.sqrt(np.sum(np.outer(k, k) ** 2))  # unit-SD smoothed noise
    stencil = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return float(np.sqrt(np.sum(ndimage.convolve(np.pad(kernel, 1), stencil, mode="constant") ** 2)))


def residual_lag1(frames: np.ndarray, reconstructions: np.ndarray) -> float:
    """Lag-1 autocorrelation of the residual ``frames - reconstructions`` (both image axes, 2 px from the edges)."""
    inner = (np.asarray(frames, np.float64) - np.asarray(reconstructions, np.float64))[:, 2:-2, 2:-2]
    centred = inner - inner.mean()
    lags = [np.mean(centred[:, :, :-1] * centred[:, :, 1:]), np.mean(centred[:, :-1] * centred[:, 1:])]
    return float(np.mean(lags) / max(np.mean(centred**2), 1e-12))


def residual_curves(frames: np.ndarray, reconstructions: np.ndarray, subjects: np.ndarray,
                    bin_edges: Sequence[float], width_px: float = 0.0, max_gradient: float = 0.05) -> np.ndarray:
    """Per-subject SD of the noise the reconstructions lack, in bins of the reconstructed intensity.

    Measured in the Laplacian domain, as MR noise is (Immerkær 1996; `cardiacnets.cmr.frame_statistics`):
    the robust SD (1.4826 × MAD) of the 5-point Laplacian of the frames and of the reconstructions over the
    pixels of each bin; the noise to add has the difference of their variances (anatomy and smooth texture,
    present in both, cancel), converted to pixel SD by `laplacian_gain` of noise of the given smoothing.

    Args:
        frames: (N, H, W) training frames.
        reconstructions: (N, H, W) the autoencoder's reconstructions of them.
        subjects: (N,) subject of each frame (frames of one subject are pooled).
        bin_edges: intensity bin edges (B + 1 increasing values).
        width_px: the smoothing width of the noise (`correlation_width` of `residual_lag1`).
        max_gradient: pixels are measured where the reconstruction's gradient magnitude (per pixel, central
            differences) is below this (flat regions; at edges the frames' Laplacian holds edges that the
            reconstruction blurs, which are not noise).

    Returns:
        (S, B) SDs in the order of ``np.unique(subjects)``, NaN where a subject has under `MIN_BIN_PIXELS`
        pixels in a bin; at least a tenth of the frames' own Laplacian noise where the reconstructions
        already hold as much.
    """
    from scipy import ndimage

    frames, reconstructions = np.asarray(frames, np.float64), np.asarray(reconstructions, np.float64)
    if frames.shape != reconstructions.shape or frames.ndim != 3:
        raise ValueError(f"frames and reconstructions must be the same (N, H, W) shape, got {frames.shape} and "
                         f"{reconstructions.shape}")
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin_edges must be at least 2 increasing values, got {list(edges)}")
    lap_frames = np.stack([ndimage.laplace(f) for f in frames])[:, 1:-1, 1:-1]
    lap_recon = np.stack([ndimage.laplace(f) for f in reconstructions])[:, 1:-1, 1:-1]
    level = reconstructions[:, 1:-1, 1:-1]
    # Flat regions only: at the anatomy's edges the frames' Laplacian holds the edges the reconstruction blurs.
    rows, cols = np.gradient(reconstructions, axis=(1, 2))
    flat = np.hypot(rows, cols)[:, 1:-1, 1:-1] < max_gradient
    gain = laplacian_gain(width_px)
    curves = []
    subjects = np.asarray(subjects)
    for subject in np.unique(subjects):
        mine = np.flatnonzero(subjects == subject)
        frames_lap, recon_lap, mine_level, mine_flat = lap_frames[mine], lap_recon[mine], level[mine], flat[mine]
        row = []
        for low, high in zip(edges[:-1], edges[1:]):
            inside = mine_flat & (mine_level >= low) & (mine_level < high)
            if inside.sum() < MIN_BIN_PIXELS:
                row.append(math.nan)
                continue
            total, present = robust_sd(frames_lap[inside]), robust_sd(recon_lap[inside])
            row.append(math.sqrt(max(total**2 - present**2, (0.1 * total) ** 2)) / gain)
        curves.append(row)
    return np.asarray(curves)


class AcquisitionNoise(ModelMixin, ConfigMixin):
    """Per-cine acquisition noise drawn from a Gaussian over subjects' log noise curves (module docstring).

    Args:
        bin_edges: the intensity bins of the noise curve (B + 1 edges); the curve is interpolated between
            the bins' centres and held constant beyond them.
        correlation_width_px: SD (pixels) of the Gaussian that smooths the white noise (0: white).
        intensity_range: the cines' range; noisy cines are clipped to it.
        n_subjects: training subjects the model was fitted on (a record).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
                 correlation_width_px: float = 0.0, intensity_range: Sequence[float] = (0.0, 1.0),
                 n_subjects: int = 0):
        super().__init__()
        n_bins = len(bin_edges) - 1
        widths = np.diff(np.asarray(bin_edges, dtype=np.float64))
        if n_bins < 1 or np.any(widths <= 0) or not np.allclose(widths, widths[0]):
            raise ValueError(f"bin_edges must be at least 2 increasing values, equally spaced; got {list(bin_edges)}")
        if correlation_width_px < 0:
            raise ValueError(f"correlation_width_px must be non-negative, got {correlation_width_px}")
        self.register_buffer("log_sd_mean", torch.full((n_bins,), math.log(0.01)))
        self.register_buffer("log_sd_scale_tril", torch.zeros(n_bins, n_bins))

    @property
    def bin_centres(self) -> torch.Tensor:
        edges = torch.tensor(self.config.bin_edges, dtype=torch.float32)
        return 0.5 * (edges[1:] + edges[:-1])

    def sample_curves(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, B) noise SD curves, one per cine."""
        device = generator.device if generator is not None else self.log_sd_mean.device
        z = torch.randn(n, self.log_sd_mean.numel(), generator=generator, dtype=torch.float32, device=device)
        return torch.exp(self.log_sd_mean.float().to(device) + z @ self.log_sd_scale_tril.float().to(device).T)

    def _correlated_noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Unit-SD Gaussian noise of `shape` (..., H, W), smoothed by the fitted width."""
        device = generator.device if generator is not None else self.log_sd_mean.device
        white = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
        kernel = torch.as_tensor(_gaussian_kernel(float(self.config.correlation_width_px)), dtype=torch.float32,
                                 device=device)
        if kernel.numel() == 1:
            return white
        h, w = shape[-2:]
        flat = white.reshape(-1, 1, h, w)
        pad = kernel.numel() // 2
        flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="circular"), kernel.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="circular"), kernel.view(1, 1, -1, 1))
        return (flat / float(kernel.square().sum())).reshape(shape)  # separable: unit SD again

    def _sd_at(self, cines: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        """SD at every pixel: its cine's curve, linear between the bins' centres, at the pixel's intensity."""
        n, bins = curves.shape
        flat = cines.reshape(n, -1)
        if bins == 1:
            return curves.expand(n, flat.shape[1]).reshape(cines.shape)
        centres = self.bin_centres.to(curves.device)
        position = ((flat - centres[0]) / (centres[1] - centres[0])).clamp(0, bins - 1)
        below = position.floor().long().clamp(max=bins - 2)
        low, high = torch.gather(curves, 1, below), torch.gather(curves, 1, below + 1)
        return (low + (position - below) * (high - low)).reshape(cines.shape)

    def forward(self, cines: torch.Tensor | np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy copies of cines: each cine (first axis) draws one noise curve; every pixel of every frame new noise.

        Args:
            cines: (N, ..., H, W) decoded cines in the training range.
            generator: seeds the curves and the noise.

        Returns:
            Float32 tensor of the same shape, clipped to ``intensity_range``.
        """
        cines = torch.as_tensor(cines).float()
        device = cines.device
        if generator is not None:
            cines = cines.to(generator.device)
        if cines.ndim < 3:
            raise ValueError(f"cines must be (N, ..., H, W), got shape {tuple(cines.shape)}")
        curves = self.sample_curves(cines.shape[0], generator)
        sd = self._sd_at(cines, curves)
        low, high = self.config.intensity_range
        noisy = cines + sd * self._correlated_noise(tuple(cines.shape), generator)
        return noisy.clamp(low, high).to(device)


def _log_curves(curves: np.ndarray) -> tuple[np.ndarray, int, list[int]]:
    """Log curves with missing (subject, bin) values filled by the bin's median and bins no subject reaches by
    the nearest measured bin: ``(logs, n_filled, empty_bins)``."""
    logs = np.log(np.maximum(curves, 1e-6))
    filled = int(np.isnan(logs).sum())
    empty = [int(i) for i in np.flatnonzero(np.isnan(logs).all(axis=0))]
    if len(empty) == logs.shape[1]:
        raise ValueError(f"every intensity bin holds under {MIN_BIN_PIXELS} pixels in every subject")
    measured = np.flatnonzero(~np.isnan(logs).all(axis=0))
    for i in empty:
        logs[:, i] = logs[:, measured[np.argmin(np.abs(measured - i))]]
    return np.where(np.isnan(logs), np.nanmedian(logs, axis=0), logs), filled, empty


def fit_acquisition_noise(frames: np.ndarray, reconstructions: np.ndarray, subjects: np.ndarray,
                          bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
                          intensity_range: Sequence[float] = (0.0, 1.0), rank: int = 2,
                          halves: np.ndarray | None = None) -> tuple[AcquisitionNoise, dict]:
    """Fit `AcquisitionNoise` to training frames and their autoencoder reconstructions.

    A subject's curve is measured on a few thousand pixels, so its own scatter adds to the spread between
    subjects, and in log units it is large where the reconstructions hold nearly as much Laplacian
    variance as the frames (the difference is small and uncertain). With `halves`, the between-subject
    covariance is the symmetrised cross-covariance of the curves measured on two disjoint halves of each
    subject's frames: their measurement errors are independent, so they cancel in expectation (the
    split-half estimate); without, the plain covariance of the curves (an overestimate).

    Args:
        frames, reconstructions, subjects, bin_edges: as for `residual_curves`.
        intensity_range: the training cines' range.
        rank: leading components of the between-subject covariance kept (negative eigenvalues of the
            split-half estimate count as 0).
        halves: (N,) 0 or 1 per frame: the half of its subject's frames it belongs to (each subject needs
            frames in both).

    Returns:
        ``(model, report)``; the report holds the median curve, the between-subject SD of the log curve as
        modelled, the covariance estimate and rank and the variance share kept, the lag-1 autocorrelation
        and the smoothing width, the number of subjects, the number of (subject, bin) values filled with the
        bin's median, and the bins no subject reaches (``empty_bins``; they take the nearest measured bin's
        values).

    Raises:
        ValueError: fewer than 2 subjects, no bin with pixels in any subject, or a subject without frames in
            one of the halves.
    """
    lag1 = residual_lag1(frames, reconstructions)
    width = correlation_width(lag1)
    curves = residual_curves(frames, reconstructions, subjects, bin_edges, width)
    if curves.shape[0] < 2:
        raise ValueError(f"the noise model needs frames of at least 2 subjects, got {curves.shape[0]}")
    logs, filled, empty = _log_curves(curves)
    mean = logs.mean(axis=0)
    if halves is None:
        covariance = np.cov(logs, rowvar=False).reshape(len(mean), len(mean))
    else:
        halves = np.asarray(halves)
        parts = []
        for half in (0, 1):
            mine = halves == half
            if not np.array_equal(np.unique(np.asarray(subjects)[mine]), np.unique(subjects)):
                raise ValueError(f"every subject needs frames in both halves (half {half} lacks some)")
            part, _, _ = _log_curves(residual_curves(frames[mine], reconstructions[mine],
                                                     np.asarray(subjects)[mine], bin_edges, width))
            parts.append(part - part.mean(axis=0))
        cross = parts[0].T @ parts[1] / (len(parts[0]) - 1)
        covariance = 0.5 * (cross + cross.T)
    # Keep the covariance's `rank` leading components (a subject's noise level and its signal dependence).
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    kept = vectors[:, order[:rank]] * np.sqrt(np.maximum(values[order[:rank]], 0.0))
    explained = float(np.sum(np.maximum(values[order[:rank]], 0.0)) / max(np.sum(np.maximum(values, 0.0)), 1e-12))
    covariance = kept @ kept.T + 1e-6 * np.eye(len(mean))
    model = AcquisitionNoise(bin_edges=[float(e) for e in bin_edges], correlation_width_px=round(width, 4),
                             intensity_range=[float(v) for v in intensity_range], n_subjects=int(curves.shape[0]))
    model.log_sd_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.log_sd_scale_tril.copy_(torch.as_tensor(np.linalg.cholesky(covariance), dtype=torch.float32))
    report = {"n_subjects": int(curves.shape[0]), "filled_bins": filled, "empty_bins": empty,
              "median_sd": [round(float(v), 5) for v in np.exp(np.median(logs, axis=0))],
              "between_subject_log_sd": [round(float(v), 4) for v in np.sqrt(np.diag(covariance))],
              "curves_log_sd": [round(float(v), 4) for v in logs.std(axis=0)],
              "covariance": "full" if halves is None else "split_half", "covariance_rank": rank,
              "explained_variance": round(explained, 4), "lag1": round(lag1, 4),
              "correlation_width_px": round(width, 4)}
    return model.eval(), report
