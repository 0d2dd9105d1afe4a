"""``cardiacnets bench realism --modality cmr``: frame features, real readers, the report and its errors."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from cardiacnets.bench import realism, realism_cmr
from cardiacnets.bench.realism_cmr import acdc_frames, encoder_input, frechet_report, sunnybrook_frames
from cardiacnets.cmr.frame_statistics import LV, MYO, cmr_features
from support.frames import disc_phantom
from cardiacnets.cli import main
from cardiacnets.errors import InputError


def test_encoder_input_scales_the_cavity_to_the_target_radius():
    image, labels = disc_phantom(size=200, radius=30.0, outside=0.0, myocardium=0.0)
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
    image, labels = disc_phantom()
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
