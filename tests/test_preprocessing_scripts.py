"""preprocessing/ scripts, and `preprocess --source ukb` on raw DICOM bulk zips."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardiacnets.data.preprocess import preprocess
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom_write import write_dicom_series
from cardiacnets.io.nifti import read_nifti
from cardiacnets.simulate import write_cohort

REPO = Path(__file__).resolve().parents[1]


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "preprocessing" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=300)


def _to_ukb_zip(image: CMRImage, zip_path: Path, work: Path, lax: bool) -> None:
    """Write a cine as UK Biobank bulk DICOM: one series per SAX slice, or one 4Ch series."""
    folder = work / zip_path.stem
    if lax:
        write_dicom_series(image, folder, series_description="CINE_segmented_LAX_4Ch", synthetic=False, uid_seed="lax")
    else:
        for k in range(image.n_slices):
            affine = image.affine.copy()
            affine[:3, 3] += k * image.affine[:3, 2]
            slab = CMRImage(image.data[:, :, k:k + 1].copy(), affine, frame_interval_ms=image.frame_interval_ms)
            write_dicom_series(slab, folder, series_description=f"CINE_segmented_SAX_b{k + 1}", series_number=k + 1,
                               synthetic=False, uid_seed=f"sax{k}", study_instance_uid="1.2.3", frame_of_reference_uid="1.2.4")
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)


@pytest.fixture(scope="module")
def dicom_raw(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-subject simulated cohort whose cines are delivered as DICOM zips instead of NIfTI."""
    base = tmp_path_factory.mktemp("dicomraw")
    sim = base / "sim"
    write_cohort(sim, 3, seed=3, workers=0)
    raw = base / "raw"
    (raw / "ecg").mkdir(parents=True)
    (raw / "bulk").mkdir()
    for xml in (sim / "ecg").glob("*.xml"):
        (raw / "ecg" / xml.name).write_bytes(xml.read_bytes())
    (raw / "ukb_tabular.csv").write_bytes((sim / "ukb_tabular.csv").read_bytes())
    for folder in sorted((sim / "cmr").iterdir()):
        eid = folder.name
        _to_ukb_zip(read_nifti(folder / "sa.nii.gz"), raw / "bulk" / f"{eid}_20209_2_0.zip", base / "work", lax=False)
        _to_ukb_zip(read_nifti(folder / "la_4ch.nii.gz"), raw / "bulk" / f"{eid}_20208_2_0.zip", base / "work", lax=True)
    return sim, raw


@pytest.mark.slow
def test_ukb_dicom_to_nifti_script(dicom_raw, tmp_path):
    sim, raw = dicom_raw
    before = sorted(p.name for p in raw.rglob("*"))
    proc = _run_script("ukb_dicom_to_nifti", str(raw), str(tmp_path / "nifti"), "--workers", "2", "--views", "sa", "la_4ch")
    assert proc.returncode == 0, proc.stderr
    assert "6 of 6 views converted" in proc.stdout
    assert sorted(p.name for p in raw.rglob("*")) == before  # raw tree untouched
    for folder in sorted((sim / "cmr").iterdir()):
        for view in ("sa", "la_4ch"):
            ours = read_nifti(tmp_path / "nifti" / folder.name / f"{view}.nii.gz")
            truth = read_nifti(folder / f"{view}.nii.gz")
            assert ours.shape == truth.shape
            np.testing.assert_allclose(ours.data, truth.data, atol=1.0)
            # one-slice views: DICOM defines no slice direction, the reader takes row x column
            columns = [0, 1, 2, 3] if view == "sa" else [0, 1, 3]
            np.testing.assert_allclose(ours.affine[:, columns], truth.affine[:, columns], atol=1e-3)
    # a broken zip is listed, the others are kept (rerun resumes)
    broken = raw.parent / "raw_broken"
    broken.mkdir()
    (broken / "1000009_20209_2_0.zip").write_bytes(b"PK\x03\x04 not a zip")
    assert _run_script("ukb_dicom_to_nifti", str(broken), str(tmp_path / "nifti2"), "--workers", "1").returncode == 0
    failures = pd.read_csv(tmp_path / "nifti2" / "conversion_failures.csv")
    assert len(failures) == 1 and "1000009_20209_2_0.zip" in failures["reason"][0]


@pytest.mark.slow
def test_preprocess_reads_dicom_bulk_zips(dicom_raw, tmp_path):
    sim, raw = dicom_raw
    result = preprocess("ukb", raw, tmp_path / "ds", workers=0)
    assert result.n_failed_records == 0
    manifest = pd.read_csv(tmp_path / "ds" / "manifest.csv")
    assert manifest["has_ecg"].all() and manifest["has_sa"].all() and manifest["has_la_4ch"].all()
    assert not manifest["has_seg_sa"].any()  # no segmentation in a raw download: crop from the variance map
    zip_version = np.load(tmp_path / "ds" / "cmr_sa.npy")
    assert np.isfinite(zip_version.astype(np.float32)).all() and zip_version.max() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("script, n", [("calibrate_cmr_acquisition", 4), ("calibrate_ecg", 14)])
def test_calibration_scripts_report_their_start(script, n, shared_data, tmp_path):
    # No search rounds: one evaluation of the committed table, written as the JSON report.
    import json

    out = tmp_path / "report.json"
    result = _run_script(script, "--real-data", str(shared_data), "--n", str(n), "--rounds", "0",
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["n_simulated"] == n and report["loss"] == "mean-shift" and len(report["evaluations"]) == 1
    assert report["final"]["settings"] == report["start"]["settings"]
    assert report["final"]["loss"] > 0 and "held_out" in report and "calibration" in report
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report["final"]


@pytest.mark.slow
def test_calibrate_ecg_searches_only_the_settings_named(shared_data, tmp_path):
    import json

    unknown = _run_script("calibrate_ecg", "--real-data", str(shared_data), "--only", "chest_gain_V1,nonsense")
    assert unknown.returncode == 2 and "--only: nonsense not in version 5's search" in unknown.stderr
    out = tmp_path / "report.json"
    result = _run_script("calibrate_ecg", "--real-data", str(shared_data), "--n", "14", "--rounds", "0",
                         "--only", "chest_gain_V1,terminal_lobe_share", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["version"] == 5 and set(report["start"]["settings"]) == {"chest_gain_V1", "terminal_lobe_share"}
    assert "penalty" in report["final"]  # version 5's loss carries the precordial penalty
