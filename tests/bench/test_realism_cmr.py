"""``cardiacnets bench realism --modality cmr``: frame features, real readers, the report and its errors."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from cardiacnets.bench import realism, realism_cmr
from cardiacnets.bench.realism_cmr import (LV, MYO, acdc_frames, cmr_features, encoder_input, frechet_report,
                                           mid_ventricular_slice, sunnybrook_frames)
from cardiacnets.cli import main
from cardiacnets.errors import InputError


def _disc_phantom(size=64, radius=8.0, wall=4.0, blood=1.0, myocardium=0.5, outside=0.5):
    """A disc of blood in a ring of myocardium: (image, labels)."""
    rows, cols = np.indices((size, size))
    dist = np.hypot(rows - size / 2, cols - size / 2)
    labels = np.where(dist <= radius, LV, np.where(dist <= radius + wall, MYO, 0)).astype(np.uint8)
    image = np.select([labels == LV, labels == MYO], [blood, myocardium], outside).astype(np.float64)
    return image, labels


def test_constant_disc_in_half_bright_ring():
    image, labels = _disc_phantom()
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
    image, labels = _disc_phantom(size=80, radius=12.0, outside=0.1)
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
    image, labels = _disc_phantom(size=96, radius=20.0)
    noisy = image + np.random.default_rng(1).normal(0.0, sigma, image.shape)
    f = cmr_features(noisy, labels)
    assert f["blood_cv"] == pytest.approx(sigma, rel=0.1)
    assert f["blood_noise_sd"] == pytest.approx(sigma, rel=0.15)
    assert f["ring_noise_sd"] == pytest.approx(sigma, rel=0.15)  # the ring is flat plus the same noise
    assert cmr_features(image, labels)["blood_cv"] == 0.0


def test_dark_half_of_the_surroundings():
    image, labels = _disc_phantom(size=96, radius=8.0, outside=0.25)
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
    image, labels = _disc_phantom(radius=1.5)
    with pytest.raises(ValueError, match="LV cavity"):
        cmr_features(image, labels)
    stack = np.zeros((8, 8, 9), np.uint8)
    stack[3:5, 3:5, 2:7] = LV
    assert mid_ventricular_slice(stack) == 4
    assert mid_ventricular_slice(np.zeros((8, 8, 3), np.uint8)) is None
    assert mid_ventricular_slice(np.moveaxis(stack, -1, 0), slice_axis=0) == 4  # (slices, H, W) as ACDC's


def test_encoder_input_scales_the_cavity_to_the_target_radius():
    image, labels = _disc_phantom(size=200, radius=30.0, outside=0.0, myocardium=0.0)
    crop = encoder_input(image, labels, target_radius_px=10.0)
    assert crop.shape == (64, 64) and crop.min() == 0.0 and crop.max() == 1.0
    assert math.sqrt((crop > 0.5).sum() / math.pi) == pytest.approx(10.0, rel=0.05)


def test_real_readers(shared_data, acdc_dir):
    frames, skipped = acdc_frames(acdc_dir)
    assert not skipped and len(frames) == 60 and len({f["id"] for f in frames}) == 30
    assert all((f["labels"] == LV).sum() >= 12 and f["image"].ndim == 2 for f in frames)
    assert {f["phase"] for f in frames} == {"ED", "ES"}
    sunny, info = sunnybrook_frames(shared_data / "sunnybrook")
    assert len(sunny) == 18 and info["images"] == 18 and len(info["slices"]) == 9
    assert info["pixel_mm"] == pytest.approx(1.367, abs=0.01)
    with_myocardium = [f for f in sunny if (f["labels"] == MYO).any()]
    assert len(with_myocardium) == 9 and all(f["phase"] == "ED" for f in with_myocardium)
    # The known real blood-pool CV (about 0.27 on ACDC) is far above the simulator's (about 0.05).
    cv = np.median([cmr_features(f["image"], f["labels"])["blood_cv"] for f in frames])
    assert 0.15 < cv < 0.45


def test_frechet_reports_why_without_an_encoder(tmp_path):
    image, labels = _disc_phantom()
    frames = [{"image": image, "labels": labels, "pixel_mm": 1.8}] * 4
    out = frechet_report(frames, frames, tmp_path / "no-bundle")
    assert out["value"] is None and str(tmp_path / "no-bundle") in out["reason"]


def test_missing_real_data_folder(tmp_path):
    parser = argparse.ArgumentParser()
    realism.add_arguments(parser)
    args = parser.parse_args(["--modality", "cmr", "--n", "2", "--real-data", str(tmp_path)])
    with pytest.raises(InputError, match="acdc_h5"):
        realism.run(args)


@pytest.mark.slow
def test_bench_realism_cmr_json(tmp_path):
    # The CLI's own JSON handling (stdout equals --output) is checked by the ECG realism test.
    out = tmp_path / "realism_cmr.json"
    assert main(["bench", "realism", "--modality", "cmr", "--json", "--n", "6", "--output", str(out),
                 "--examples", str(tmp_path / "examples")]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "realism" and result["modality"] == "cmr"
    assert "n_simulated" not in result  # no ECG side
    cmr = result["cmr"]
    assert cmr["n_simulated_frames"] == 12 and cmr["n_real_frames"] == 78
    assert cmr["real_sets"]["acdc"]["patients"] == 30 and cmr["real_sets"]["sunnybrook"]["frames"] == 18
    for key in ("all_features_vs_all_real", "all_features_vs_acdc", "without_blood_pool_vs_all_real",
                "all_features_vs_acdc_odd_patients", "all_features_vs_acdc_even_patients"):
        assert 0.0 <= cmr["auroc"][key]["auroc"] <= 1.0
    # The calibration half of version 4 (odd-numbered patients) and the held-out half split ACDC's 60 frames.
    halves = [cmr["auroc"][f"all_features_vs_acdc_{h}_patients"]["n_real"] for h in ("odd", "even")]
    assert sum(halves) == 60 and min(halves) > 20
    assert cmr["blood_pool_cv"]["simulated"]["n"] == 12 and cmr["blood_pool_cv"]["real"]["n"] == 78
    assert set(cmr["features"]["vs_all_real"]) == set(cmr["feature_names"])
    assert len(cmr["most_separating"]) == 6
    frechet = cmr["frechet"]
    assert frechet["value"] > 0 and frechet["n_simulated"] == 12 and frechet["feature_dim"] == 64
    assert frechet["references"]["frames_per_half"] == 6
    # The side-by-side figure: three rows (simulated, ACDC, Sunnybrook) of five crops.
    from PIL import Image

    with Image.open(cmr["examples"]) as figure:
        assert cmr["examples"] == str(tmp_path / "examples" / "cmr_examples.png") and figure.size == (800, 516)


def test_acdc_halves_split_by_patient_number():
    rows = [{"set": "acdc", "id": "patient001"}, {"set": "acdc", "id": "patient002"},
            {"set": "acdc", "id": "patient013"}, {"set": "sunnybrook", "id": "SC-HF-I-1-0001"}]
    odd, even = realism_cmr.acdc_halves(rows)
    assert [r["id"] for r in odd] == ["patient001", "patient013"] and [r["id"] for r in even] == ["patient002"]


def test_lv_crop_centres_the_cavity_and_windows_it():
    from cardiacnets.bench.realism_examples import lv_crop

    labels = np.zeros((60, 60), np.uint8)
    rows, cols = np.indices(labels.shape)
    labels[(rows - 20) ** 2 + (cols - 35) ** 2 <= 25] = 1  # cavity of radius ~5 px centred at (20, 35)
    image = np.where(labels == 1, 400.0, 100.0)
    crop = lv_crop(image, labels, size=41)
    assert crop.shape == (41, 41) and crop.max() == pytest.approx(1.0) and crop.min() >= 0.0
    assert crop[20, 20] == pytest.approx(1.0)  # the cavity in the middle, the brightest
    assert crop[20, 0] < 0.5 and crop[0, 20] < 0.5  # 4 radii out: background (or outside the image)
