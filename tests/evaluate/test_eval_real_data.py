"""Tests of the evaluations on real recordings: the segmenter on the Sunnybrook cine (`evaluate.sunnybrook`),
heads and voltage criteria on PTB-XL (`evaluate.ptbxl`) and ``cardiacnets evaluate real``.

Hand-computed references: contours of known area on a cine written as DICOM, segmented by a stand-in that
reads the labels back from the intensities (volumes, EF and Dice known exactly); a 12-lead strip of known
R and S amplitudes (Sokolow-Lyon, Cornell); group comparisons on small arrays. The real files are read as
they are; the end-to-end run uses tiny untrained models (mechanics and keys, not values).
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
from scipy import stats

from cardiacnets.cli import main
from cardiacnets.errors import InputError
from cardiacnets.evaluate.ptbxl import (
    LABEL_NOTE, compare_groups, evaluate_ptbxl, read_ptbxl_table, voltage_criteria,
)
from cardiacnets.evaluate.segmentation import Segmenter
from cardiacnets.evaluate.sunnybrook import contour_mask, evaluate_sunnybrook, expert_labels, read_contours
from cardiacnets.io.cmr import read_cmr
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom_write import write_dicom_series
from cardiacnets.models import create_model
from cardiacnets.models.segmenter import CineGeometry, save_geometry

from support.datasets import TINY_UNET, save_tiny_heads_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOOD, MUSCLE, BACKGROUND = 1000.0, 400.0, 100.0


# --- Sunnybrook: hand-computed ----------------------------------------------------------------------------------

def _circle(cx: float, cy: float, radius: float, n: int = 60) -> np.ndarray:
    """A contour as Sunnybrook writes it: points with two decimals."""
    angle = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.round(np.column_stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)]), 2)


def test_contour_mask_counts_pixel_centres():
    # Corners on half-pixels: columns 10-19 and rows 5-14 inside, 100 pixels.
    square = np.array([[9.5, 4.5], [19.5, 4.5], [19.5, 14.5], [9.5, 14.5]])
    mask = contour_mask(square, rows=30, columns=40)
    assert mask.shape == (30, 40) and mask.sum() == 100
    assert mask[5:15, 10:20].all() and mask[5, 10] and not mask[10, 9] and not mask[15, 15]


class _IntensityLabeller(torch.nn.Module):
    """Stands in for a segmenter: blood pool where the standardised cine is bright, myocardium where mid-grey."""

    def segment(self, cines: torch.Tensor, batch_frames: int = 256) -> torch.Tensor:
        labels = torch.zeros_like(cines, dtype=torch.uint8)
        labels[(cines > 0.1) & (cines <= 0.6)] = 2
        labels[cines > 0.6] = 1
        return labels


@pytest.fixture(scope="module")
def disc_cine(tmp_path_factory) -> dict:
    """A 4-slice, 6-phase cine of a beating disc written as DICOM, with contours as Sunnybrook writes them.

    Contours: endocardium at phases 0 (the largest disc) and 3 of slices 1 and 2, and at phase 0 of slice 3
    (so slice 3 is left out of the comparison); epicardium at phase 0 of slices 1 and 2.
    """
    root = tmp_path_factory.mktemp("sunnybrook")
    size, n_slices, radii = 48, 4, [10.0, 9.0, 7.5, 6.0, 7.0, 8.5]  # blood-pool radius per phase, pixels
    data = np.full((size, size, n_slices, len(radii)), BACKGROUND, dtype=np.float32)
    masks = {}
    for s in range(n_slices):
        for f, radius in enumerate(radii):
            endo, epi = _circle(23.7, 24.2, radius - s * 0.5), _circle(23.7, 24.2, radius - s * 0.5 + 3.0)
            blood, wall = contour_mask(endo, size, size), contour_mask(epi, size, size)
            data[..., s, f][wall.T] = MUSCLE  # (rows, columns) -> (x, y)
            data[..., s, f][blood.T] = BLOOD
            masks[s, f] = (endo, epi, blood, wall & ~blood)
    image = CMRImage(data, np.diag([2.0, 2.0, 8.0, 1.0]), view="sa", frame_interval_ms=50.0)
    write_dicom_series(image, root / "cine", series_description="cine sax", synthetic=False)
    contours = root / "contours" / "expert"
    contours.mkdir(parents=True)
    for s, f, epicardium in ((1, 0, True), (2, 0, True), (1, 3, False), (2, 3, False), (3, 0, False)):
        instance = s * len(radii) + f + 1  # the writer numbers the images slice by slice, frame by frame
        np.savetxt(contours / f"IM-0001-{instance:04d}-icontour-manual.txt", masks[s, f][0], fmt="%.2f")
        if epicardium:
            np.savetxt(contours / f"IM-0001-{instance:04d}-ocontour-manual.txt", masks[s, f][1], fmt="%.2f")
    return {"root": root, "masks": masks}


def test_volumes_ef_and_dice_of_known_contours(disc_cine, tmp_path):
    masks = disc_cine["masks"]
    segmenter = Segmenter(_IntensityLabeller(), tmp_path, CineGeometry(2.0, 40, 6))
    result = evaluate_sunnybrook(segmenter, disc_cine["root"], cine="cine", contours="contours")
    compared = result["compared"]
    assert compared["slices"] == [1, 2] and compared["slices_left_out"] == [3]
    assert compared["phases"] == [0, 3] and (compared["ed_phase"], compared["es_phase"]) == (0, 3)
    assert compared["epicardium_phases"] == [0] and compared["ed_matches_epicardium_phase"]
    voxel_ml = 2.0 * 2.0 * 8.0 / 1000.0
    edv = (masks[1, 0][2].sum() + masks[2, 0][2].sum()) * voxel_ml
    esv = (masks[1, 3][2].sum() + masks[2, 3][2].sum()) * voxel_ml
    mass = (masks[1, 0][3].sum() + masks[2, 0][3].sum()) * voxel_ml * 1.05
    expert = result["expert"]
    assert expert["lvedv_ml"] == pytest.approx(edv) and expert["lvesv_ml"] == pytest.approx(esv)
    assert expert["lvef_pct"] == pytest.approx(100.0 * (edv - esv) / edv) and expert["lvm_g"] == pytest.approx(mass)
    # The stand-in reads the labels back exactly: the same figures, errors 0 and Dice 1.
    for key in ("lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g"):
        assert result["segmenter_same_slices"][key] == pytest.approx(expert[key])
    assert result["ef_error_pct"] == pytest.approx(0.0, abs=1e-9) and result["label_coverage"] == pytest.approx(1.0)
    assert result["dice"]["ed"] == {"lv_cavity": pytest.approx(1.0), "lv_myocardium": pytest.approx(1.0)}
    assert result["dice"]["es"] == {"lv_cavity": pytest.approx(1.0), "lv_myocardium": None}
    assert result["dice"]["n_images"] == 5 and result["dice"]["n_images_myocardium"] == 2
    assert {(r["slice"], r["phase"]) for r in result["images"]} == {(1, 0), (2, 0), (1, 3), (2, 3), (3, 0)}
    # The whole stack: every slice, ED and ES at the largest and smallest disc.
    whole = result["segmenter_whole_stack"]
    assert (whole["ed_phase"], whole["es_phase"]) == (0, 3)
    all_blood = [sum(masks[s, f][2].sum() for s in range(4)) * voxel_ml for f in (0, 3)]
    assert whole["lvedv_ml"] == pytest.approx(all_blood[0]) and whole["lvesv_ml"] == pytest.approx(all_blood[1])
    curve = [sum(masks[s, f][2].sum() for s in (1, 2)) * voxel_ml for f in range(6)]
    assert result["lv_volume_curve_ml"] == pytest.approx(curve, abs=0.01)
    json.dumps(result)


def test_sunnybrook_errors(disc_cine, tmp_path):
    segmenter = Segmenter(_IntensityLabeller(), tmp_path, None)
    with pytest.raises(InputError, match="records no cine geometry"):
        evaluate_sunnybrook(segmenter, disc_cine["root"], cine="cine", contours="contours")
    segmenter.geometry = CineGeometry(2.0, 40, 6)
    with pytest.raises(InputError, match="no such Sunnybrook folder"):
        evaluate_sunnybrook(segmenter, tmp_path / "nowhere")
    with pytest.raises(InputError, match="no such contour folder"):
        read_contours(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no endocardial contour"):
        read_contours(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(disc_cine["root"] / "contours", bad)
    (bad / "expert" / "IM-0001-0099-icontour-manual.txt").write_text("12.5 x\n")
    with pytest.raises(InputError, match="IM-0001-0099-icontour-manual.txt"):
        read_contours(bad)
    (bad / "expert" / "IM-0001-0099-icontour-manual.txt").write_text("1 2\n3 4\n5 6\n")
    image = read_cmr(disc_cine["root"] / "cine", view="sa")
    with pytest.raises(InputError, match="InstanceNumber 99"):
        expert_labels(image, read_contours(bad))
    one_phase = tmp_path / "one_phase"
    shutil.copytree(disc_cine["root"] / "contours", one_phase)
    for path in one_phase.rglob("IM-0001-0010-*"):  # slice 1, phase 3
        path.unlink()
    for path in one_phase.rglob("IM-0001-0016-*"):  # slice 2, phase 3
        path.unlink()
    shutil.copytree(disc_cine["root"] / "cine", tmp_path / "cine")
    with pytest.raises(InputError, match="1 phase"):
        evaluate_sunnybrook(segmenter, tmp_path, cine="cine", contours="one_phase")


# --- Sunnybrook: the real files ---------------------------------------------------------------------------------

def test_real_sunnybrook_cine_and_contours(shared_data):
    contours = read_contours(shared_data / "sunnybrook" / "SC-HF-I-1")
    assert len(contours["endocardium"]) == 18 and len(contours["epicardium"]) == 9
    image = read_cmr(shared_data / "sunnybrook" / "SCD0000101", view="sa")
    assert image.shape == (256, 256, 12, 20) and image.spacing_mm[2] == pytest.approx(10.0, abs=1e-3)
    labels, images = expert_labels(image, contours)
    where = {e["instance"]: (e["slice"], e["phase"]) for e in images}
    assert where[59] == (2, 18) and where[48] == (2, 7)  # IM-0001-0059 = 59.dcm: slice 3 of 12, phase 19 of 20
    assert sorted({e["phase"] for e in images}) == [7, 18]
    assert {e["phase"] for e in images if e["epicardium"]} == {18}
    # The blood pool is bright and the myocardium dark on the image under the contour (x, y not swapped).
    frame, seg = image.data[:, :, 2, 18], labels[:, :, 2, 18]
    assert frame[seg == 1].mean() > 2.0 * frame[seg == 2].mean()
    # Rasterised area within 3 % of the polygon's (shoelace) area.
    x, y = contours["endocardium"][59].T
    shoelace = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert (seg == 1).sum() == pytest.approx(shoelace, rel=0.03)


# --- PTB-XL: hand-computed --------------------------------------------------------------------------------------

def test_voltage_criteria_of_known_r_and_s_amplitudes():
    fs = 500.0
    t = np.arange(int(10 * fs)) / fs
    beats = np.arange(0.5, 10.0, 0.8)

    def wave(offset_s: float) -> np.ndarray:  # narrow Gaussian lobes at every beat
        return sum(np.exp(-0.5 * ((t - b - offset_s) / 0.010) ** 2) for b in beats)

    r_wave, s_wave = wave(0.0), wave(0.040)
    amplitudes = {"I": (0.8, 0.0), "II": (0.6, 0.0), "V1": (0.2, 1.5), "V2": (0.4, 1.4), "V3": (0.5, 1.2),
                  "V4": (1.2, 0.5), "V5": (2.0, 0.2), "V6": (1.6, 0.1)}
    leads = list(amplitudes)
    strip = np.stack([r * r_wave - s * s_wave for r, s in amplitudes.values()])
    found = voltage_criteria(strip, fs, leads)
    assert found["sokolow_lyon_mV"] == pytest.approx(1.5 + 2.0, abs=0.02)  # S V1 + max(R V5, R V6)
    assert found["cornell_mV"] == pytest.approx((0.8 - 0.6 / 2) + 1.2, abs=0.02)  # R aVL (= I - II/2) + S V3
    with pytest.raises(ValueError, match="no lead V5"):
        voltage_criteria(strip[:6], fs, leads[:6])


def test_compare_groups_by_hand():
    positive = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    score = np.array([5.0, 1.0, 2.0, 3.0, 4.0, 0.5, 2.5, 2.5, 1.5, 9.0])
    fold = np.array([1, 1, 1, 2, 2, 2, 3, 3, 4, 4])
    result = compare_groups(positive, score, fold, n_boot=200, seed=0)
    assert (result["n_positive"], result["n_negative"]) == (3, 7)
    assert result["mean_positive"] == pytest.approx(3.5) and result["mean_negative"] == pytest.approx(20.5 / 7)
    assert result["mean_difference"]["value"] == pytest.approx(3.5 - 20.5 / 7)
    # Positives 5, 3, 2.5 against 1, 2, 4, 0.5, 2.5, 1.5, 9: 6 + 5 + (4 + a tie) wins of 21 pairs.
    assert result["auroc"]["value"] == pytest.approx(15.5 / 21)
    assert result["auroc"]["low"] <= result["auroc"]["value"] <= result["auroc"]["high"]
    test = stats.mannwhitneyu(score[positive == 1], score[positive == 0], alternative="two-sided")
    assert result["mann_whitney_u"] == pytest.approx(15.5) and result["p_value"] == pytest.approx(test.pvalue)
    # Fold 1: 5 beats 1, 2 -> 1; fold 2: 3 beats 0.5, not 4 -> 0.5; fold 3: 2.5 ties 2.5 -> 0.5; fold 4 no positive.
    folds = result["per_fold"]
    assert [folds[k]["auroc"] for k in ("1", "2", "3")] == pytest.approx([1.0, 0.5, 0.5])
    assert folds["4"] == {"n_positive": 0, "n_negative": 2, "auroc": None}
    assert result["n_folds_scored"] == 3 and result["fold_auroc_mean"] == pytest.approx(2.0 / 3)
    assert result["fold_auroc_sd"] == pytest.approx(np.std([1.0, 0.5, 0.5], ddof=1))
    with pytest.raises(ValueError, match="both groups"):
        compare_groups(np.zeros(3), np.arange(3.0), np.ones(3))


# --- PTB-XL: the real files -------------------------------------------------------------------------------------

def test_real_ptbxl_table_and_records(ptbxl_dir):
    from cardiacnets.bench.realism import ecg_features
    from cardiacnets.io.ecg import read_ecg

    table = read_ptbxl_table(ptbxl_dir)
    assert len(table) == 400 and set(table["strat_fold"]) == set(range(1, 11))
    assert (table["label_LVH"].sum(), table["label_HYP"].sum(), table["label_NORM"].sum()) == (28, 32, 243)
    first_lvh = table[table["label_LVH"]].iloc[0]
    record = read_ecg(first_lvh["path"])
    assert record.signal_mV.shape == (12, 5000) and record.sampling_rate_hz == 500.0
    voltages = voltage_criteria(record.signal_mV, record.sampling_rate_hz, record.lead_names)
    # The same median-beat amplitudes as the realism benchmark's features.
    features = ecg_features(record.signal_mV, record.sampling_rate_hz, record.lead_names)
    assert voltages["sokolow_lyon_mV"] == pytest.approx(features["sokolow_mV"])
    assert voltages["cornell_mV"] == pytest.approx(features["r_aVL_mV"] + features["s_V3_mV"])


@pytest.fixture(scope="module")
def ptbxl_subset(ptbxl_dir, tmp_path_factory) -> Path:
    """Eight PTB-XL records in two folds: three LVH, five NORM (records and tables copied)."""
    root = tmp_path_factory.mktemp("ptbxl")
    table = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    labels = read_ptbxl_table(ptbxl_dir)
    lvh = table[labels["label_LVH"] & labels["strat_fold"].isin([9, 10])].head(3)
    norm = table[labels["label_NORM"] & labels["strat_fold"].isin([9, 10])].head(5)
    chosen = pd.concat([lvh, norm]).sort_values("ecg_id")
    for name in chosen["filename_hr"]:
        for suffix in (".hea", ".dat"):
            target = root / (name + suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ptbxl_dir / (name + suffix), target)
    chosen.to_csv(root / "ptbxl_database.csv", index=False)
    shutil.copy(ptbxl_dir / "scp_statements.csv", root / "scp_statements.csv")
    return root


def test_ptbxl_errors_and_skipped_records(ptbxl_subset, tmp_path):
    with pytest.raises(InputError, match="no such PTB-XL folder"):
        read_ptbxl_table(tmp_path / "nowhere")
    with pytest.raises(InputError, match="has no ptbxl_database.csv"):
        read_ptbxl_table(tmp_path)
    pd.DataFrame({"ecg_id": [1]}).to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(InputError, match="missing column"):
        read_ptbxl_table(tmp_path)
    save_tiny_heads_model(tmp_path / "no_lv" / "model", regression_targets=("rvedv_ml",))
    with pytest.raises(InputError, match="predicts none of lvm_g"):
        evaluate_ptbxl([tmp_path / "no_lv"], ptbxl_subset)
    # A truncated record is skipped with its reason; the others are scored (voltage criteria alone).
    broken = tmp_path / "broken"
    shutil.copytree(ptbxl_subset, broken)
    first = sorted(broken.rglob("*.dat"))[0]
    first.write_bytes(first.read_bytes()[:100])
    result = evaluate_ptbxl([], broken, n_boot=20)
    assert result["data"]["n_records_scored"] == 7 and len(result["skipped"]) == 1
    assert result["skipped"][0]["ecg_id"] == int(first.name.split("_")[0]) and result["skipped"][0]["reason"]
    assert set(result["comparisons"]["LVH_vs_NORM"]) == {"sokolow_lyon_mV", "cornell_mV"}


# --- end to end with tiny untrained models ------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_real_cli_with_tiny_models(shared_data, ptbxl_subset, tmp_path, capsys):
    torch.manual_seed(0)
    create_model("cmr_seg_unet_demo", **TINY_UNET).save_pretrained(tmp_path / "seg" / "model")
    save_geometry(CineGeometry(2.2, 64, 25), tmp_path / "seg" / "model")
    for name in ("heads_a", "heads_b"):
        save_tiny_heads_model(tmp_path / name / "model", regression_targets=("lvedv_ml", "lvef_pct", "lvm_g"))
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "sunnybrook").symlink_to(shared_data / "sunnybrook")
    (shared / "ptbxl").symlink_to(ptbxl_subset)
    out = tmp_path / "out"
    status = main(["evaluate", "real", "--segmenter", str(tmp_path / "seg"), "--heads", str(tmp_path / "heads_a"),
                   "--heads", str(tmp_path / "heads_b"), "--shared", str(shared), "--n-boot", "50", "--out", str(out),
                   "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "real_data.json").read_text())
    sunnybrook = result["sunnybrook"]
    assert set(sunnybrook) >= {"compared", "expert", "segmenter_same_slices", "ef_error_pct", "segmenter_whole_stack",
                               "dice", "images", "label_coverage", "notes"}
    assert sunnybrook["compared"]["slices"] == list(range(2, 11)) and sunnybrook["dice"]["n_images"] == 18
    assert sunnybrook["expert"]["lvedv_ml"] > sunnybrook["expert"]["lvesv_ml"] > 0
    ptbxl = result["ptbxl"]
    assert ptbxl["label_note"] == LABEL_NOTE and ptbxl["data"]["n_records_scored"] == 8 and ptbxl["skipped"] == []
    assert set(ptbxl["models"]) == {"heads_a", "heads_b"}
    scores = {"sokolow_lyon_mV", "cornell_mV"} | {f"{m}:{e}" for m in ("heads_a", "heads_b")
                                                  for e in ("lvm_g", "lvedv_ml", "lvef_pct")}
    for comparison in ("LVH_vs_NORM", "HYP_vs_NORM"):
        block = ptbxl["comparisons"][comparison]
        assert set(block) == scores
        assert block["sokolow_lyon_mV"]["n_positive"] == 3 and block["sokolow_lyon_mV"]["n_negative"] == 5
        assert set(block["heads_a:lvm_g"]["per_fold"]) == {"9", "10"}
    records = pd.read_csv(out / "ptbxl_records.csv")
    assert len(records) == 8 and {"ecg_id", "strat_fold", "sokolow_lyon_mV", "heads_b:lvm_g"} <= set(records.columns)
    # The text report, and the refusals.
    assert main(["evaluate", "real", "--heads", str(tmp_path / "heads_a"), "--shared", str(shared),
                 "--n-boot", "20"]) == 0
    text = capsys.readouterr().out
    assert "LVH_vs_NORM" in text and "voltage criteria" in text
    assert main(["evaluate", "real", "--no-voltage", "--shared", str(shared)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["evaluate", "real", "--segmenter", str(tmp_path / "seg"), "--shared", str(tmp_path / "none"),
                 "--no-voltage"]) == 2
    assert "no such Sunnybrook folder" in capsys.readouterr().err
