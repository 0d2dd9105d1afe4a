"""`cmr_features` and `cine_statistics`: hand-computed values on phantoms, scale invariance, missing phases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardiacnets.cmr.frame_statistics import (BOOKKEEPING, FEATURES, LV, MIN_LV_PIXELS, cine_statistics, cmr_features,
                                              mid_ventricular_slice)
from support.frames import disc_phantom


def test_constant_disc_in_half_bright_ring():
    image, labels = disc_phantom()
    f = cmr_features(image, labels)
    assert f["blood_cv"] == 0.0 and f["blood_noise_sd"] == 0.0 and f["blood_laplacian_sd"] == 0.0
    assert f["myo_blood_ratio"] == 0.5 and f["myo_cv"] == 0.0
    assert f["endo_contrast"] == 0.5
    # Everything outside the cavity is 0.5: the ring 1-3 radii out is flat and neither dark nor bright.
    assert f["ring_mean"] == pytest.approx(0.5) and f["ring_cv"] == pytest.approx(0.0, abs=1e-12)
    assert f["ring_dark_fraction"] == 0.0 and f["ring_bright_fraction"] == 0.0 and f["ring_noise_sd"] == 0.0
    assert math.isnan(f["dark_noise_sd"])  # no dark pixel at all
    assert f["lv_radius_px"] == pytest.approx(math.sqrt((labels == LV).sum() / math.pi))
    # The field within 4 radii is the disc (1) and the rest (0.5): about (4 r)^2 - r^2 of 0.5 for r^2 of 1.
    assert f["field_p05"] == 0.5 and f["field_p95"] == 1.0 and f["field_bright_fraction"] == 0.0


def test_features_do_not_depend_on_intensity_scale():
    rng = np.random.default_rng(0)
    image, labels = disc_phantom(size=80, radius=12.0, outside=0.1)
    image = image + rng.normal(0.0, 0.03, image.shape)
    a, b = cmr_features(image, labels), cmr_features(7.5 * image, labels)
    for name, value in a.items():
        assert b[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name


def test_edge_width_of_a_perfect_step_is_two_pixels():
    # A square cavity of 1 on 0.5: central differences give 0.25 per px on both sides of the step.
    image = np.full((60, 60), 0.5)
    labels = np.zeros((60, 60), np.uint8)
    labels[20:40, 20:40] = LV
    image[labels == LV] = 1.0
    f = cmr_features(image, labels)
    assert f["endo_contrast"] == 0.5
    assert f["edge_width_px"] == pytest.approx(2.0)
    assert f["edge_width_lv_radii"] == pytest.approx(2.0 / math.sqrt(400 / math.pi))
    # A blurred step is wider.
    from scipy import ndimage

    blurred = cmr_features(ndimage.gaussian_filter(image, 1.5), labels)
    assert blurred["edge_width_px"] > 3.0


def test_blood_pool_noise_is_recovered():
    sigma = 0.05
    image, labels = disc_phantom(size=96, radius=20.0)
    noisy = image + np.random.default_rng(1).normal(0.0, sigma, image.shape)
    f = cmr_features(noisy, labels)
    assert f["blood_cv"] == pytest.approx(sigma, rel=0.1)
    assert f["blood_noise_sd"] == pytest.approx(sigma, rel=0.15)
    assert f["ring_noise_sd"] == pytest.approx(sigma, rel=0.15)  # the ring is flat plus the same noise
    assert cmr_features(image, labels)["blood_cv"] == 0.0


def test_dark_half_of_the_surroundings():
    image, labels = disc_phantom(size=96, radius=8.0, outside=0.25)
    outside_heart = np.indices(image.shape)[1] < 48
    image[outside_heart & (labels == 0)] = 0.05
    f = cmr_features(image, labels)
    assert f["ring_dark_fraction"] == pytest.approx(0.5, abs=0.04)
    assert f["ring_mean"] == pytest.approx((0.25 + 0.05) / 2, abs=0.01)
    assert f["dark_noise_sd"] == 0.0
    # Exact zeros are masked background, not signal: a zeroed half leaves no dark pixel to measure.
    image[outside_heart & (labels == 0)] = 0.0
    assert math.isnan(cmr_features(image, labels)["dark_noise_sd"])


def test_too_small_cavity_and_mid_slice():
    image, labels = disc_phantom(radius=1.5)
    with pytest.raises(ValueError, match="LV cavity"):
        cmr_features(image, labels)
    stack = np.zeros((8, 8, 9), np.uint8)
    stack[3:5, 3:5, 2:7] = LV
    assert mid_ventricular_slice(stack) == 4
    assert mid_ventricular_slice(np.zeros((8, 8, 3), np.uint8)) is None
    assert mid_ventricular_slice(np.moveaxis(stack, -1, 0), slice_axis=0) == 4  # (slices, H, W) as ACDC's


def test_features_are_named_in_order():
    image, labels = disc_phantom()
    assert tuple(k for k in cmr_features(image, labels) if k not in BOOKKEEPING) == FEATURES


def test_cine_statistics_measure_the_mid_slice_at_ed_and_the_smallest_cavity():
    big, big_labels = disc_phantom(radius=12.0)
    small, small_labels = disc_phantom(radius=8.0, myocardium=0.25)
    empty = np.zeros_like(big_labels)
    # One cine of 3 slices x 3 frames; the LV is on slices 0-1 only, so the mid slice is 0 ((0 + 1) // 2).
    cines = np.zeros((1, 3, 3, 64, 64))
    labels = np.zeros((1, 3, 3, 64, 64), np.uint8)
    for s in (0, 1):
        cines[0, s] = [big, small, big]
        labels[0, s] = [big_labels, small_labels, big_labels]
    values, names = cine_statistics(cines, labels)
    assert values.shape == (1, 2 * len(FEATURES)) and names[0] == "ed_blood_cv" and names[-1].startswith("es_")
    ed, es = dict(zip(FEATURES, values[0, :len(FEATURES)])), dict(zip(FEATURES, values[0, len(FEATURES):]))
    assert ed["myo_blood_ratio"] == 0.5 and es["myo_blood_ratio"] == 0.25  # ES is frame 1, the smaller cavity
    # A cine whose cavity is gone on every frame but the first: ES falls back to the only measurable frame;
    # a cine without any LV is all NaN, not an error.
    labels[0, :, 1:] = empty
    values, _ = cine_statistics(np.concatenate([cines, cines]), np.concatenate([labels, np.zeros_like(labels)]))
    assert np.array_equal(values[0, :len(FEATURES)], values[0, len(FEATURES):], equal_nan=True)
    assert np.isnan(values[1]).all()
    with pytest.raises(ValueError, match="one shape"):
        cine_statistics(cines, labels[:, :2])


def test_a_cavity_under_the_minimum_is_not_measured():
    image, labels = disc_phantom(radius=12.0)
    tiny = np.zeros_like(labels)
    tiny[30:32, 30:32] = LV  # 4 pixels
    assert (tiny == LV).sum() < MIN_LV_PIXELS
    cines = np.stack([image, image])[None, None]
    values, _ = cine_statistics(cines, np.stack([labels, tiny])[None, None])
    assert np.isfinite(values[0, 0]) and np.isfinite(values[0, len(FEATURES)])  # ES falls back to frame 0
