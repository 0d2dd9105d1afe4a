"""Tests of the cine segmenter: the model, its ``segment`` training task, Dice and cavity measurements, the
ACDC check and ``cardiacnets evaluate segmentation``.

Training runs on a tiny synthetic training set written directly in the store layout (`write_disc_set`:
discs for the LV cavity, a ring for the myocardium and a disc for the RV whose sizes change over the
cycle, with matching labels), so every expected measurement is known exactly.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cardiacnets.cli import main
from cardiacnets.config import from_dict
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.segmentation import (
    Segmenter, acdc_pairs, cavity_measurements, dice_scores, evaluate_acdc, load_segmenter, segment_cines,
    standardize_acdc,
)
from cardiacnets.models import create_model
from cardiacnets.models.segmenter import CineGeometry, CineSegmenter, SegmenterConfig, save_geometry
from cardiacnets.train.segment_task import (
    RandLabelIntensityd, SegmentAugmentConfig, build_segmentation_augmentation, dice_per_class,
)

from support.datasets import LABEL_INTENSITY, TINY_UNET, write_disc_set


@pytest.fixture(scope="module")
def disc_set(tmp_path_factory) -> Path:
    return write_disc_set(tmp_path_factory.mktemp("discs") / "set", n=16)


@pytest.fixture(scope="module")
def acdc_subset(acdc_dir, tmp_path_factory) -> Path:
    """Two ACDC patients (ED + ES each), copied so the ACDC check stays quick."""
    folder = tmp_path_factory.mktemp("acdc")
    for patient, ed, es in acdc_pairs(acdc_dir)[:2]:
        shutil.copy(ed, folder / ed.name)
        shutil.copy(es, folder / es.name)
    return folder


# --- the model -----------------------------------------------------------------------------------------------------

def test_segmenter_shapes_round_trip_and_bad_input(tmp_path):
    torch.manual_seed(0)
    model = create_model("cmr_seg_unet_demo", **TINY_UNET).eval()
    assert isinstance(model, CineSegmenter) and model.config.n_classes == 4
    frames = torch.rand(3, 1, 16, 16)
    logits = model(frames)
    assert logits.shape == (3, 4, 16, 16)
    labels = model.segment(torch.rand(2, 3, 5, 16, 16), batch_frames=4)
    assert labels.shape == (2, 3, 5, 16, 16) and labels.dtype == torch.uint8 and int(labels.max()) <= 3
    # segment labels frame by frame: each frame's labels equal the argmax of that frame alone.
    cines = torch.rand(1, 1, 3, 16, 16)
    alone = model(cines[0, 0, 1:2, None]).argmax(1)[0].to(torch.uint8)
    torch.testing.assert_close(model.segment(cines)[0, 0, 1], alone)
    model.save_pretrained(tmp_path / "seg")
    save_geometry(CineGeometry(2.2, 16, 5), tmp_path / "seg")
    loaded = load_segmenter(tmp_path / "seg")
    torch.testing.assert_close(loaded.model(frames), logits, rtol=0, atol=0)
    assert loaded.geometry == CineGeometry(2.2, 16, 5, (1.0, 99.0), "mid")
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.rand(1, 1, 15, 16))
    with pytest.raises(ValueError, match="slices, frames"):
        model.segment(torch.rand(2, 16, 16))
    with pytest.raises(ConfigError, match="one stride fewer"):
        create_model("cmr_seg_unet_demo", channels=[4, 8], strides=[2, 2])


def test_load_segmenter_refuses_other_models(tmp_path):
    create_model("cmr_encoder_demo", frames=2, img_size=16, embed_dim=8).save_pretrained(tmp_path / "enc")
    with pytest.raises(InputError, match="not a CineSegmenter"):
        load_segmenter(tmp_path / "enc")


# --- Dice and measurements -----------------------------------------------------------------------------------------

def test_dice_hand_computed():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1  # 4 LV pixels
    truth[3, :] = 3  # 4 RV pixels
    pred = np.zeros_like(truth)
    pred[:2, :1] = 1  # 2 LV pixels, both right
    pred[3, :2] = 3  # 2 RV pixels, both right
    pred[2, 0] = 3  # 1 wrong RV pixel
    scores = dice_scores(pred, truth)
    assert scores["lv_cavity"] == pytest.approx(2 * 2 / (2 + 4))
    assert scores["rv_cavity"] == pytest.approx(2 * 2 / (3 + 4))
    assert math.isnan(scores["lv_myocardium"])  # in neither: nothing to compare
    # The task's per-image version counts "absent in both" as 1 and averages over images.
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(np.stack([pred, truth])).long(), 4)
    logits = one_hot.permute(0, 3, 1, 2).float()
    per_class = dice_per_class(logits, torch.from_numpy(np.stack([truth, truth])))
    assert float(per_class["dice_lv_cavity"]) == pytest.approx((2 / 3 + 1) / 2)
    assert float(per_class["dice_lv_myocardium"]) == pytest.approx(1.0)
    assert float(per_class["dice_mean"]) == pytest.approx(((2 / 3 + 1) / 2 + 1 + (4 / 7 + 1) / 2) / 3)


def test_cavity_measurements_hand_computed():
    labels = np.zeros((2, 1, 3, 8, 8), np.uint8)
    lv_areas = [10, 4, 6]
    for f, area in enumerate(lv_areas):
        labels[0, 0, f].reshape(-1)[:area] = 1
        labels[0, 0, f].reshape(-1)[-3:] = 3  # RV 3 px at every frame
        labels[0, 0, f].reshape(-1)[20:25] = 2  # 5 px myocardium
    table = cavity_measurements(labels, spacing_mm=2.0, slice_spacing_mm=10.0)
    voxel_ml = 2.0 * 2.0 * 10.0 / 1000.0
    row = table.iloc[0]
    assert row["lvedv_ml"] == pytest.approx(10 * voxel_ml) and row["lvesv_ml"] == pytest.approx(4 * voxel_ml)
    assert row["lvef_pct"] == pytest.approx(60.0)
    assert row["ed_frame"] == 0 and row["es_frame"] == 1
    assert row["rvef_pct"] == pytest.approx(0.0) and row["lvm_g"] == pytest.approx(5 * voxel_ml * 1.05)
    assert row["failure"] == ""
    assert "no LV cavity" in table.iloc[1]["failure"] and math.isnan(table.iloc[1]["lvedv_ml"])  # empty cine


# --- augmentation and the task -------------------------------------------------------------------------------------

def test_augmentation_moves_labels_with_the_image_and_is_seeded(disc_set):
    cines = np.load(disc_set / "cmr_sa.npy")[:4, 0, :3].astype(np.float32)
    labels = np.load(disc_set / "seg_sa.npy")[:4, 0, :3]
    geometric = build_segmentation_augmentation(SegmentAugmentConfig(
        prob=1.0, rotate_deg=0, zoom=0, shift_px=0, elastic_px=0, blur_sigma_px=0, bias_field=0, label_contrast=0,
        texture=0, gamma=0, intensity_scale=0, histogram_shift=False, noise_std=0), image_size=(32, 32))
    geometric.set_random_state(seed=3)
    moved = 0
    for image, label in zip(cines, labels):
        out = geometric({"image": torch.from_numpy(image), "label": torch.from_numpy(label).float()})
        new_labels = np.asarray(out["label"]).round().astype(np.uint8)
        # The intensities still identify the labels exactly: image and labels moved together.
        nearest_level = np.abs(np.asarray(out["image"])[..., None] - LABEL_INTENSITY).argmin(-1)
        np.testing.assert_array_equal(nearest_level, new_labels)
        moved += int(not np.array_equal(new_labels, label))
    assert moved >= 1
    full = build_segmentation_augmentation(SegmentAugmentConfig(prob=1.0), image_size=(32, 32))
    results = []
    for _ in range(2):
        full.set_random_state(seed=11)
        out = full({"image": torch.from_numpy(cines[0]), "label": torch.from_numpy(labels[0]).float()})
        results.append(np.asarray(out["image"]))
        assert 0.0 <= results[-1].min() and results[-1].max() <= 1.0
        assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(results[0], results[1])


def test_label_intensity_scales_each_region_by_its_own_factor():
    transform = RandLabelIntensityd("image", "label", (0.5, 1.25), prob=1.0)
    transform.set_random_state(seed=4)
    labels = torch.zeros(2, 24, 24)
    labels[:, 5:19, 5:19] = 1
    labels[:, 13:17, 13:17] = 3
    out = transform({"image": torch.full((2, 24, 24), 0.8), "label": labels})
    factors = transform.factors
    assert len(set(np.round(factors, 6))) == 4 and ((0.5 <= factors) & (factors <= 1.25)).all()
    image = np.asarray(out["image"])
    assert image[0, 0, 0] == pytest.approx(0.8 * factors[0], abs=1e-4)  # far from any border
    assert image[1, 8, 8] == pytest.approx(0.8 * factors[1], abs=2e-3)
    assert image[1, 14, 15] == pytest.approx(0.8 * factors[3], abs=0.05)  # a small region: blurred a little
    np.testing.assert_array_equal(np.asarray(out["label"]), labels.numpy())  # labels untouched


def _segment_config(disc_set: Path, tmp_path: Path, **extra) -> Path:
    data = {"task": "segment", "data": {"path": str(disc_set), "batch_size": 4, "demographics": []},
            "model": {"name": "cmr_seg_unet_demo", "overrides": TINY_UNET},
            "options": {"frames_per_subject": 2, "val_frame_stride": 2},
            "optimizer": {"lr": 0.01, "weight_decay": 0.0}, "schedule": {"max_steps": 4, "warmup_steps": 1},
            "logging": {"every_steps": 1, "progress": False, "tensorboard": "off"}, "mixed_precision": "bf16",
            "precise_bn_batches": 2, **extra}
    path = tmp_path / "segment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_segment_task_trains_through_the_cli_and_exports_geometry(disc_set, tmp_path, capsys):
    assert main(["train", str(_segment_config(disc_set, tmp_path)), "--out", str(tmp_path / "run")]) == 0
    val = pd.read_csv(tmp_path / "run" / "val_log.csv").iloc[-1]
    for key in ("loss_dice_ce", "dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity", "dice_mean"):
        assert key in val and np.isfinite(val[key])
    assert 0.0 <= val["dice_mean"] <= 1.0
    segmenter = load_segmenter(tmp_path / "run")
    assert segmenter.geometry == CineGeometry(2.2, 32, 8, (1.0, 99.0), "mid")
    # Frame choice and augmentation are drawn from the loop's seeded generators: a rerun repeats the losses.
    assert main(["train", str(_segment_config(disc_set, tmp_path)), "--out", str(tmp_path / "run2")]) == 0
    first, second = (pd.read_csv(tmp_path / r / "train_log.csv")["loss"].to_numpy() for r in ("run", "run2"))
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_segment_task_config_errors(disc_set, tmp_path, capsys):
    def error(**extra) -> str:
        assert main(["train", str(_segment_config(disc_set, tmp_path, **extra)), "--out", str(tmp_path / "x")]) == 2
        return capsys.readouterr().err

    assert "labels" in error(data={"path": str(disc_set), "batch_size": 4, "augment": {"cmr_rotate_deg": 10.0}})
    assert "CineSegmenter" in error(model={"name": "cmr_encoder_demo"})
    assert "frames_per_subject" in error(options={"frames_per_subject": 0})
    assert "unknown config key 'options.augment.flipp'" in error(options={"augment": {"flipp": True}})


@pytest.mark.slow
def test_segmenter_learns_the_disc_labels(disc_set, tmp_path):
    # A short run on clean synthetic discs (no augmentation) must beat chance (about 0.1-0.25) clearly.
    config = _segment_config(disc_set, tmp_path, schedule={"max_steps": 50, "warmup_steps": 2}, val_every_steps=50,
                             options={"frames_per_subject": 4, "augment": {"prob": 0.0, "flip": False}})
    config_data = yaml.safe_load(config.read_text())
    config_data["model"]["overrides"] = {"channels": [8, 16], "strides": [2], "num_res_units": 1}
    config.write_text(yaml.safe_dump(config_data))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    val = pd.read_csv(tmp_path / "run" / "val_log.csv")
    assert len(val) == 1 and val.iloc[-1]["dice_mean"] > 0.5 and val.iloc[-1]["dice_lv_cavity"] > 0.6


# --- ACDC --------------------------------------------------------------------------------------------------------

def test_standardize_acdc_two_frame_cine(acdc_subset):
    patient, ed, es = acdc_pairs(acdc_subset)[0]
    case = standardize_acdc(ed, es, CineGeometry(2.2, 64, 25))
    cine, labels = case["cine"], case["labels"]
    assert cine.shape == labels.shape and cine.shape[1:] == (2, 64, 64) and cine.dtype == np.float32
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert 0.0 <= cine.min() and cine.max() <= 1.0
    assert case["center_method"] == "temporal_variance"  # not from the expert labels
    assert 0.8 < case["coverage"] <= 1.05
    # End-systole has the smaller LV cavity.
    assert (labels[:, 1] == 1).sum() < (labels[:, 0] == 1).sum()


@pytest.mark.slow
def test_evaluate_acdc_and_errors(acdc_subset, tmp_path):
    torch.manual_seed(0)
    segmenter = Segmenter(create_model("cmr_seg_unet_demo", **TINY_UNET).eval(), tmp_path, None)
    with pytest.raises(InputError, match="geometry"):
        evaluate_acdc(segmenter, acdc_subset)
    result = evaluate_acdc(segmenter, acdc_subset, CineGeometry(2.2, 64, 25))
    assert result["n_patients"] == 2 and result["n_volumes"] == 4 and result["failures"] == []
    for block in (result["dice_volume"], result["dice_mid_slice"], *result["dice_by_phase"].values()):
        assert set(block) == {"lv_cavity", "lv_myocardium", "rv_cavity", "mean"}
        assert all(0.0 <= v <= 1.0 for v in block.values())
    with pytest.raises(InputError, match="no such ACDC folder"):
        acdc_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no ACDC pair"):
        acdc_pairs(tmp_path / "empty")
    # A truncated file is skipped and listed; the other patient is still scored.
    broken = tmp_path / "broken"
    shutil.copytree(acdc_subset, broken)
    first = sorted(broken.glob("*frame01.h5"))[0]
    first.write_bytes(first.read_bytes()[:100])
    partial = evaluate_acdc(segmenter, broken, CineGeometry(2.2, 64, 25))
    assert partial["n_patients"] == 1 and len(partial["failures"]) == 1
    assert first.name in partial["failures"][0]["reason"]


@pytest.mark.slow
def test_evaluate_segmentation_cli(disc_set, acdc_subset, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("cmr_seg_unet_demo", **TINY_UNET)
    model.save_pretrained(tmp_path / "seg" / "model")
    # Without a recorded geometry, --data supplies it; the disc set's own split is scored too.
    status = main(["evaluate", "segmentation", "--model", str(tmp_path / "seg"), "--acdc", str(acdc_subset),
                   "--data", str(disc_set), "--split", "test", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    result = json.loads(out)
    assert result["acdc"]["n_patients"] == 2 and result["acdc"]["geometry"]["crop_size"] == 32
    assert result["split"]["n"] == 4
    assert set(result["split"]["dice"]) == {"lv_cavity", "lv_myocardium", "rv_cavity", "mean"}
    assert set(result["split"]["measurements"]) >= {"lvedv_ml", "lvef_pct"}
    assert main(["evaluate", "segmentation", "--model", str(tmp_path / "seg")]) == 2
    assert "give --acdc" in capsys.readouterr().err
    assert main(["evaluate", "segmentation", "--model", str(tmp_path / "seg"), "--acdc", str(acdc_subset)]) == 2
    assert "records no cine geometry" in capsys.readouterr().err


def test_segment_cines_matches_the_model():
    torch.manual_seed(1)
    model = create_model("cmr_seg_unet_demo", **TINY_UNET).eval()
    cines = np.random.default_rng(0).random((2, 1, 3, 16, 16)).astype(np.float32)
    labels = segment_cines(model, cines, batch_frames=2)
    expected = model.segment(torch.from_numpy(cines)).numpy()
    np.testing.assert_array_equal(labels, expected)
    assert from_dict(SegmenterConfig, {"channels": [4, 8], "strides": [2]}).total_stride == 2
