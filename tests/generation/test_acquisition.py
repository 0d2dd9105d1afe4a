"""Tests of the acquisition-noise model (`cardiacnets.generation.acquisition`): the noise curves measured on
residuals of known noise, the spatial correlation, the fit across subjects, sampling, save and load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cardiacnets.generation.acquisition import (
    AcquisitionNoise, correlation_width, fit_acquisition_noise, laplacian_gain, residual_curves, residual_lag1,
    smoothed_lag1)

EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


def ramp_frames(n: int, size: int = 48) -> np.ndarray:
    """(n, size, size) noise-free frames whose intensities cover [0, 1) evenly (a ramp along the rows)."""
    ramp = np.repeat(np.linspace(0.0, 0.999, size)[:, None], size, axis=1)
    return np.repeat(ramp[None], n, axis=0)


def noisy_subjects(levels, frames_per_subject: int = 3, seed: int = 0):
    """Frames of subjects whose noise SD is ``a + b * intensity`` for each (a, b) of `levels`."""
    rng = np.random.default_rng(seed)
    clean, noisy, subjects = [], [], []
    for subject, (a, b) in enumerate(levels):
        frames = ramp_frames(frames_per_subject)
        clean.append(frames)
        noisy.append(frames + rng.normal(size=frames.shape) * (a + b * frames))
        subjects.append(np.full(frames_per_subject, subject))
    return np.concatenate(noisy), np.concatenate(clean), np.concatenate(subjects)


def test_smoothed_lag1_and_its_inverse():
    assert smoothed_lag1(0.0) == 0.0
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)
    kernel /= kernel.sum()
    assert smoothed_lag1(1.0) == pytest.approx(np.dot(kernel[:-1], kernel[1:]) / np.dot(kernel, kernel))
    for width in (0.4, 0.8, 1.5):
        assert correlation_width(smoothed_lag1(width)) == pytest.approx(width, abs=0.02)
    assert correlation_width(-0.1) == 0.0 and correlation_width(0.0) == 0.0
    assert correlation_width(0.999) == pytest.approx(2.0)  # capped


def test_residual_curves_recover_known_signal_dependent_noise():
    noisy, clean, subjects = noisy_subjects([(0.01, 0.04), (0.02, 0.0)])
    curves = residual_curves(noisy, clean, subjects, EDGES)
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(curves[0], 0.01 + 0.04 * centres, rtol=0.12)
    np.testing.assert_allclose(curves[1], 0.02, rtol=0.12)
    assert residual_lag1(noisy, clean) == pytest.approx(0.0, abs=0.05)  # white noise
    # Half of the noise already in the reconstructions: the curve is the other half (variances subtract).
    rng = np.random.default_rng(3)
    partial = clean + rng.normal(size=clean.shape) * 0.02
    full = partial + rng.normal(size=clean.shape) * 0.02 * math.sqrt(3)  # total SD 0.04
    np.testing.assert_allclose(residual_curves(full, partial, subjects, EDGES), 0.02 * math.sqrt(3), rtol=0.12)
    # Smoothed noise: measured through the Laplacian, converted back to its pixel SD by the smoothing's gain.
    from scipy import ndimage

    smooth = np.stack([ndimage.gaussian_filter(f, 0.8, mode="wrap") for f in rng.normal(size=clean.shape)])
    smooth *= 0.03 / smooth.std()
    width = correlation_width(residual_lag1(clean + smooth, clean))
    assert width == pytest.approx(0.8, abs=0.1)
    np.testing.assert_allclose(residual_curves(clean + smooth, clean, subjects, EDGES, width), 0.03, rtol=0.15)
    # Edges (steep gradients in the reconstruction) are not measured: a step blurred differently is not noise.
    step = np.zeros((2, 48, 48))
    step[:, :, 24:] = 0.9
    blurred = np.stack([ndimage.gaussian_filter(f, 1.5) for f in step])
    assert np.isnan(residual_curves(step, blurred, np.array([0, 0]), (0.3, 0.6))).all()
    with pytest.raises(ValueError, match="same"):
        residual_curves(noisy, clean[:1], subjects, EDGES)
    with pytest.raises(ValueError, match="increasing"):
        residual_curves(noisy, clean, subjects, (0.5, 0.2))


def test_laplacian_gain_of_white_and_smoothed_noise():
    assert laplacian_gain(0.0) == pytest.approx(math.sqrt(20.0))
    from scipy import ndimage

    rng = np.random.default_rng(0)
    field = np.stack([ndimage.convolve(f, np.outer(k := np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2), k),
                                       mode="wrap") for f in rng.normal(size=(4, 128, 128))])
    field /= field.std()
    measured = np.std(np.stack([ndimage.laplace(f, mode="wrap") for f in field]))
    assert laplacian_gain(1.0) == pytest.approx(measured, rel=0.03)


def test_fit_varies_between_subjects_as_the_training_subjects_do():
    rng = np.random.default_rng(1)
    thermal = np.exp(rng.normal(math.log(0.02), 0.4, size=30))  # log-normal per-subject noise level
    noisy, clean, subjects = noisy_subjects([(a, 0.0) for a in thermal], frames_per_subject=1)
    model, report = fit_acquisition_noise(noisy, clean, subjects, EDGES)
    assert report["n_subjects"] == 30 and report["filled_bins"] == 0
    np.testing.assert_allclose(model.log_sd_mean.numpy(), np.log(thermal).mean(), atol=0.05)
    np.testing.assert_allclose(report["between_subject_log_sd"], np.log(thermal).std(), atol=0.05)
    curves = model.sample_curves(4000, torch.Generator().manual_seed(0)).log().numpy()
    assert curves.std(axis=0) == pytest.approx(np.full(4, np.log(thermal).std()), rel=0.15)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        fit_acquisition_noise(noisy[:1], clean[:1], subjects[:1], EDGES)


def test_split_half_covariance_removes_each_curves_own_scatter():
    """Small frames make each subject's curve uncertain: the plain covariance adds that scatter to the spread
    between subjects; the cross-covariance of alternate frames' curves does not."""
    rng = np.random.default_rng(2)
    thermal = np.exp(rng.normal(math.log(0.02), 0.04, size=400))
    noisy, clean, subjects = [], [], []
    for subject, a in enumerate(thermal):
        frames = ramp_frames(4, size=24)[:, :, :8]  # 6 rows of 8 pixels per bin and frame (36 measured)
        clean.append(frames)
        noisy.append(frames + rng.normal(size=frames.shape) * a)
        subjects.append(np.full(4, subject))
    noisy, clean, subjects = np.concatenate(noisy), np.concatenate(clean), np.concatenate(subjects)
    halves = np.tile([0, 1], len(thermal) * 2)
    _, plain = fit_acquisition_noise(noisy, clean, subjects, EDGES, rank=1)
    model, split = fit_acquisition_noise(noisy, clean, subjects, EDGES, rank=1, halves=halves)
    assert split["covariance"] == "split_half" and plain["covariance"] == "full"
    plain_sd, split_sd = np.mean(plain["between_subject_log_sd"]), np.mean(split["between_subject_log_sd"])
    assert split_sd == pytest.approx(0.04, abs=0.015)  # the true spread of the subjects' log noise level
    assert plain_sd > split_sd + 0.02  # inflated by each curve's own scatter
    with pytest.raises(ValueError, match="both halves"):
        fit_acquisition_noise(noisy, clean, subjects, EDGES, halves=np.zeros(len(noisy), int))


def test_fit_fills_bins_no_subject_reaches_from_the_nearest_and_says_so():
    noisy, clean, subjects = noisy_subjects([(0.01, 0.0), (0.01, 0.0)])
    half = np.minimum(clean, 0.49)  # nothing above 0.5
    model, report = fit_acquisition_noise(half + (noisy - clean), half, subjects, EDGES)
    assert report["empty_bins"] == [2, 3]
    means = model.log_sd_mean.numpy()
    assert means[2] == means[3] == means[1]
    with pytest.raises(ValueError, match="every intensity bin"):
        fit_acquisition_noise(noisy, clean, subjects, (2.0, 3.0))


def fixed_model(sd_curve, width: float = 0.0) -> AcquisitionNoise:
    """A model whose every cine draws exactly `sd_curve` (no between-subject variation)."""
    model = AcquisitionNoise(bin_edges=EDGES, correlation_width_px=width)
    model.log_sd_mean.copy_(torch.log(torch.tensor(sd_curve, dtype=torch.float32)))
    return model


def test_noise_has_the_curves_sd_at_each_intensity_and_the_fitted_correlation():
    model = fixed_model([0.01, 0.02, 0.04, 0.08])
    cines = torch.full((2, 3, 64, 64), 0.5)  # 0.5 lies halfway between the centres 0.375 and 0.625
    noisy = model(cines, torch.Generator().manual_seed(0))
    assert noisy.shape == cines.shape and noisy.dtype == torch.float32
    assert float((noisy - cines).std()) == pytest.approx(0.03, rel=0.05)  # (0.02 + 0.04) / 2
    low = model(torch.full((1, 2, 64, 64), 0.05), torch.Generator().manual_seed(0))
    assert float((low - 0.05).std()) == pytest.approx(0.01, rel=0.08)  # held constant below the first centre
    frames = (noisy - cines)[:, :, None]
    assert not torch.allclose(frames[0, 0], frames[0, 1])  # new noise in every frame

    smooth = fixed_model([0.03] * 4, width=0.8)
    residual = (smooth(cines, torch.Generator().manual_seed(0)) - cines).numpy()
    assert residual.std() == pytest.approx(0.03, rel=0.05)  # smoothing keeps the SD
    lag = np.mean(residual[..., :-1] * residual[..., 1:]) / np.mean(residual**2)
    assert lag == pytest.approx(smoothed_lag1(0.8), abs=0.03)


def test_noise_is_clipped_reproducible_and_saved(tmp_path):
    model = fixed_model([0.2] * 4)
    cines = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    a = model(cines, torch.Generator().manual_seed(5))
    b = model(cines.numpy(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0  # SD 0.2 pushes pixels past both ends: clipped
    model.save_pretrained(tmp_path / "acquisition", safe_serialization=True)
    back = AcquisitionNoise.from_pretrained(tmp_path / "acquisition")
    torch.testing.assert_close(back(cines, torch.Generator().manual_seed(5)), a)
    with pytest.raises(ValueError, match="equally spaced"):
        AcquisitionNoise(bin_edges=(0.0, 0.1, 1.0))
    with pytest.raises(ValueError, match=r"\(N, \.\.\., H, W\)"):
        model(torch.zeros(4, 4))
