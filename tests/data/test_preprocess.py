"""`cardiacnets synth --n 200` then `cardiacnets preprocess --source ukb`: the training set,
its manifest, arrays and failure report; resume and idempotence; WFDB trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cardiacnets.cli import main
from cardiacnets.config import load_config
from cardiacnets.data.preprocess import PreprocessConfig, preprocess
from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import InputError
from cardiacnets.io.ecg_leads import STANDARD_LEADS

from support import DEMO_PREPROCESS_CONFIG
from support.datasets import synth_cohort

N_SUBJECTS = 200


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("ukb") / "raw", N_SUBJECTS, seed=7)


@pytest.fixture(scope="module")
def broken_cohort(cohort, tmp_path_factory) -> Path:
    """A copy of the cohort with some files corrupted, as a user's tree might be."""
    raw = tmp_path_factory.mktemp("broken") / "raw"
    shutil.copytree(cohort, raw)
    xmls = sorted((raw / "ecg").glob("*.xml"))
    xmls[0].write_bytes(xmls[0].read_bytes()[:5000])  # truncated XML
    xmls[1].write_text("")  # empty file
    text = xmls[2].read_text(encoding="iso-8859-1")
    xmls[2].write_text(text.replace('lead="V1"', 'lead="V9"'), encoding="iso-8859-1")  # unknown lead
    sa = sorted((raw / "cmr").glob("*/sa.nii.gz"))
    sa[3].write_bytes(sa[3].read_bytes()[:2000])  # truncated gzip
    return raw


@pytest.fixture(scope="module")
def dataset(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert main(["preprocess", "--source", "ukb", str(cohort), "--out", str(out), "--config", str(DEMO_PREPROCESS_CONFIG),
                 "--workers", "2", "--no-progress"]) == 0
    return out


pytestmark = pytest.mark.slow


def test_manifest_and_arrays(dataset, cohort):
    config = load_config(PreprocessConfig, DEMO_PREPROCESS_CONFIG)
    manifest = pd.read_csv(dataset / "manifest.csv", dtype={"subject_id": str})
    assert len(manifest) == N_SUBJECTS
    assert manifest["has_ecg"].all() and manifest["has_sa"].all() and manifest["has_la_4ch"].all()
    assert manifest["has_seg_sa"].all()
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    tab = pd.read_csv(cohort / "ukb_tabular.csv")
    assert sorted(manifest["subject_id"].astype(int)) == sorted(tab["eid"])
    for col in ("lvedv_ml", "lvef_pct", "lvm_g", "rvedv_ml", "age_years", "sex_male", "label_cardiomyopathy",
                "label_heart_failure", "ecg_ventricular_rate_bpm", "seg_lvedv_ml"):
        assert col in manifest.columns, col
    # tabular targets are what the CSV says
    merged = manifest.merge(tab, left_on=manifest["subject_id"].astype(int), right_on="eid")
    np.testing.assert_allclose(merged["lvedv_ml"], merged["24100-2.0"])
    # the tabular LVEDV is measured from the same segmentation the preprocessing measures
    np.testing.assert_allclose(manifest["seg_lvedv_ml"], manifest["lvedv_ml"], rtol=0.02)

    info = yaml.safe_load((dataset / "dataset.yaml").read_text())
    assert info["lead_order"] == list(STANDARD_LEADS)
    ecg = np.load(dataset / "ecg.npy", mmap_mode="r")
    assert isinstance(ecg, np.memmap)
    assert ecg.shape == (N_SUBJECTS, 12, config.ecg.n_samples) and ecg.dtype == np.float16
    sa = np.load(dataset / "cmr_sa.npy", mmap_mode="r")
    assert sa.shape == (N_SUBJECTS, 1, config.cmr.n_frames, config.cmr.crop_size, config.cmr.crop_size)
    assert np.isfinite(sa[:5].astype(np.float32)).all() and 0 <= sa[:5].min() and sa[:5].max() <= 1
    seg = np.load(dataset / "seg_sa.npy", mmap_mode="r")
    assert set(np.unique(seg[:5])) <= {0, 1, 2, 3} and (seg[:5] == 1).any()
    amp = np.abs(ecg[:20].astype(np.float32)).max(axis=(1, 2))
    assert (amp > 0.2).all() and (amp < 10).all()  # millivolts
    failures = pd.read_csv(dataset / "failures.csv")
    assert len(failures) == 0
    report = json.loads((dataset / "report.json").read_text())
    assert report["n_subjects"] == N_SUBJECTS and report["n_failed_records"] == 0
    assert (dataset / "config.yaml").is_file()


def test_training_set_samples(dataset):
    ds = TrainingSet(dataset, split="train", require=("ecg", "sa"), targets=("lvedv_ml", "lvef_pct"))
    assert 0 < len(ds) < N_SUBJECTS
    sample = ds[0]
    assert sample["ecg"].shape[0] == 12 and sample["ecg"].dtype == np.float32
    assert sample["ecg_sample_mask"].all() and sample["ecg_lead_mask"].all()
    assert sample["cmr_sa"].ndim == 4 and sample["cmr_la_4ch"].shape[0] == 1
    assert sample["targets"]["lvedv_ml"] > 0 and sample["split"] == "train"
    with pytest.raises(InputError, match="no target column"):
        TrainingSet(dataset, targets=("nonsense",))
    with pytest.raises(InputError, match="not a cardiacnets training set"):
        TrainingSet(dataset.parent)


def test_rerun_is_idempotent_and_resumes(dataset, cohort):
    before = np.array(np.load(dataset / "ecg.npy"))
    config = load_config(PreprocessConfig, DEMO_PREPROCESS_CONFIG)
    again = preprocess("ukb", cohort, dataset, config, workers=0)
    assert again.n_processed == 0 and again.n_skipped_done == N_SUBJECTS
    # simulate an interrupted run: rows 5..9 never finished
    status = np.load(dataset / "status.npy", mmap_mode="r+")
    status[5:10] = 0
    status.flush()
    ecg = np.load(dataset / "ecg.npy", mmap_mode="r+")
    ecg[5:10] = 0
    ecg.flush()
    resumed = preprocess("ukb", cohort, dataset, config, workers=0)
    assert resumed.n_processed == 5
    np.testing.assert_array_equal(np.load(dataset / "ecg.npy"), before)
    # a different config cannot be mixed into the same folder
    other = load_config(PreprocessConfig, DEMO_PREPROCESS_CONFIG, ["cmr.n_frames=10"])
    with pytest.raises(InputError, match="different config"):
        preprocess("ukb", cohort, dataset, other, workers=0)


def test_bad_records_are_skipped_and_listed(broken_cohort, tmp_path, capsys):
    out = tmp_path / "ds"
    status = main(["preprocess", "--source", "ukb", str(broken_cohort), "--out", str(out), "--config", str(DEMO_PREPROCESS_CONFIG),
                   "--workers", "2", "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "failed records" in printed
    failures = pd.read_csv(out / "failures.csv", dtype={"subject_id": str})
    assert len(failures) == 4
    assert sorted(failures["modality"]) == ["ecg", "ecg", "ecg", "sa"]
    assert failures["reason"].str.len().min() > 5
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject_id": str})
    assert len(manifest) == N_SUBJECTS  # every subject keeps its other modalities
    assert (~manifest["has_ecg"]).sum() == 3 and (~manifest["has_sa"]).sum() == 1
    # the raw tree is never written to
    with pytest.raises(InputError, match="inside the raw tree"):
        preprocess("ukb", broken_cohort, broken_cohort / "ds", workers=0)


def test_preprocess_wfdb_ptbxl(ptbxl_dir, tmp_path):
    out = tmp_path / "ptbxl"
    assert main(["preprocess", "--source", "wfdb", str(ptbxl_dir), "--out", str(out), "--workers", "2",
                 "--no-progress", "ecg.sampling_rate_hz=100", "ecg.bandpass_hz=[0.5, 40]", "ecg.notch_hz=null"]) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    assert len(manifest) == len(db)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (manifest.loc[manifest["strat_fold"] == 10, "split"] == "test").all()
    assert manifest["label_MI"].sum() > 0 and "label_LVH" in manifest.columns
    ecg = np.load(out / "ecg.npy", mmap_mode="r")
    assert ecg.shape == (len(db), 12, 1000)


def test_preprocess_errors(tmp_path, capsys):
    assert main(["preprocess", "--source", "ukb", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope: raw folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["preprocess", "--source", "wfdb", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no wfdb records found" in capsys.readouterr().err


def _mimic_tree(root: Path, ptbxl_dir: Path) -> Path:
    """A MIMIC-IV-ECG-style tree made from three PTB-XL records (wfdb.wrsamp)."""
    import wfdb

    rows = []
    for i, ecg_id in enumerate((1, 2, 3)):
        rec = wfdb.rdrecord(str(ptbxl_dir / "records500" / "00000" / f"{ecg_id:05d}_hr"))
        subject, study = 10000032 + (i // 2), 40689238 + i
        folder = root / "files" / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        wfdb.wrsamp(str(study), fs=rec.fs, units=rec.units, sig_name=[n.lower() for n in rec.sig_name],
                    p_signal=rec.p_signal, fmt=["16"] * rec.n_sig, write_dir=str(folder))
        rows.append({"subject_id": subject, "study_id": study, "file_name": study,
                     "path": f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"})
    pd.DataFrame(rows).to_csv(root / "record_list.csv", index=False)
    return root


def test_preprocess_wfdb_mimic_layout(ptbxl_dir, tmp_path):
    raw = _mimic_tree(tmp_path / "mimic", ptbxl_dir)
    result = preprocess("wfdb", raw, tmp_path / "out", workers=0)
    assert result.n_subjects == 3 and result.n_failed_records == 0
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"subject_id": str, "patient_id": str})
    assert manifest["subject_id"].tolist() == ["40689238", "40689239", "40689240"]
    assert manifest["patient_id"].tolist() == ["10000032", "10000032", "10000033"]
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1  # patient-level
    ecg = np.load(tmp_path / "out" / "ecg.npy")
    assert ecg.shape == (3, 12, 5000) and np.abs(ecg).max() > 0.1
