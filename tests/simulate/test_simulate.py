"""Tests of the paired ECG-CMR simulator: physiology, CMR ground truth, cohort tree, CLI, ceiling, bench."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardiacnets.cli import main
from cardiacnets.cmr.indices import function_indices
from cardiacnets.config import from_dict
from cardiacnets.data.ukb_fields import CMR_FIELD_BY_NAME, column
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.nifti import read_nifti
from cardiacnets.simulate import DiseasePrevalence, SynthConfig, measure_ceiling, sample_physiology, write_cohort
from cardiacnets.simulate.ceiling import CEILING_TARGETS, cross_validated_r2
from cardiacnets.simulate.cmr_model import render_cmr
from cardiacnets.simulate.cohort import ECG_PREFIX, SEG_PREFIX, ecg_filename, simulate_subject, subject_rngs
from cardiacnets.simulate.ecg_model import ECG_VISIBLE_LATENTS, ecg_parameters
from cardiacnets.simulate.physiology import TERRITORY_SEGMENTS, icd10_codes

NO_DISEASE = {name: 0.0 for name in ("dcm", "hcm", "cad", "hf", "ph", "pericardial", "effusion", "myocarditis")}
# Small, fast cines for tests that are not about the default size.
SMALL = dict(image_size=64, la_image_size=48, n_frames=12)


def only(disease: str | None, **config) -> SynthConfig:
    """A config where every subject has exactly `disease` (None: healthy)."""
    prevalence = dict(NO_DISEASE)
    if disease is not None:
        prevalence[disease] = 1.0
    return SynthConfig(prevalence=DiseasePrevalence(**prevalence), **config)


# ----------------------------------------------------------------- physiology


def test_sample_physiology_is_deterministic_and_in_range():
    config = SynthConfig()
    a = sample_physiology(7, np.random.default_rng([3, 7]), config)
    b = sample_physiology(7, np.random.default_rng([3, 7]), config)
    assert a == b
    subjects = [sample_physiology(i, np.random.default_rng([0, i]), config) for i in range(150)]
    ages = np.array([p.age_years for p in subjects])
    assert ages.min() >= 45 and ages.max() <= 80
    for p in subjects:
        assert 0 < p.lvesv_ml < p.lvedv_ml and 0 < p.rvesv_ml < p.rvedv_ml
        assert 40 < p.lv_mass_g < 400 and 2 < p.lv_wall_thickness_mm <= p.lv_max_wall_thickness_mm
        assert p.la_min_ml < p.la_max_ml and p.ra_min_ml < p.ra_max_ml
    healthy = [p for p in subjects if not icd10_codes(p)]
    men = [p for p in healthy if p.is_male]
    women = [p for p in healthy if not p.is_male]
    # Reference ranges (Petersen et al. 2017): men larger, women higher EF.
    assert np.mean([p.lvedv_ml for p in men]) > np.mean([p.lvedv_ml for p in women])
    assert np.mean([p.lv_mass_g for p in men]) > np.mean([p.lv_mass_g for p in women])
    assert np.mean([p.lvef_pct for p in women]) > np.mean([p.lvef_pct for p in men])
    assert 52 < np.mean([p.lvef_pct for p in healthy]) < 66


def test_disease_effects_go_the_expected_way():
    def draw(disease, n=40):
        config = only(disease)
        return [sample_physiology(i, np.random.default_rng([11, i]), config) for i in range(n)]

    normal = draw(None)
    mean = lambda subjects, key: float(np.mean([getattr(p, key) for p in subjects]))  # noqa: E731
    dcm, hcm, cad, ph = draw("dcm"), draw("hcm"), draw("cad"), draw("ph")
    assert all(p.dcm and p.hf and p.lvef_pct < 40 for p in dcm)
    assert mean(dcm, "lvedv_ml") > 1.3 * mean(normal, "lvedv_ml")
    assert all(p.hcm and p.lv_max_wall_thickness_mm >= 15 and p.lvef_pct > 60 for p in hcm)
    assert mean(hcm, "lvedv_ml") < mean(normal, "lvedv_ml") and mean(hcm, "lv_mass_g") > mean(normal, "lv_mass_g")
    for p in cad:
        assert p.cad and p.akinetic_segments
        assert set(p.akinetic_segments) <= set(TERRITORY_SEGMENTS[p.infarct_territory])
        assert p.akinetic_volume_pct > 0
        # EF lowered by the akinetic share of the cavity.
        expected = p.remote_ef_pct * (1 - p.akinetic_volume_pct / 100)
        assert p.lvef_pct == pytest.approx(expected, abs=1e-6)
        assert p.hf == (p.lvef_pct < 40)
    assert mean(cad, "lvef_pct") < mean(normal, "lvef_pct") - 8
    assert mean(ph, "rvedv_ml") > 1.3 * mean(normal, "rvedv_ml") and all(p.rvef_pct < 45 for p in ph)
    assert all(p.effusion_mm > 0 and not p.pericardial for p in draw("effusion", 10))
    assert all(40 <= p.lvef_pct <= 52 and p.myocarditis for p in draw("myocarditis", 10))
    assert all(p.hf and p.lvef_pct < 40 for p in draw("hf", 10))
    assert icd10_codes(dcm[0]) == ["I420", "I500"]


def test_config_validation_and_overrides():
    config = from_dict(SynthConfig, {"image_size": 96, "prevalence": {"dcm": 0.2}})
    assert config.image_size == 96 and config.prevalence.dcm == 0.2 and config.prevalence.hcm == 0.06
    assert config.prevalence_enriched
    with pytest.raises(ConfigError, match="prevalence.dcm"):
        from_dict(SynthConfig, {"prevalence": {"dcm": 1.5}})
    with pytest.raises(ConfigError, match="unknown config key 'pixel_mm'"):
        from_dict(SynthConfig, {"pixel_mm": 2})
    with pytest.raises(ConfigError, match="mains_hz"):
        from_dict(SynthConfig, {"mains_hz": 55.0})


# ------------------------------------------------------------ CMR ground truth


@pytest.mark.slow
@pytest.mark.parametrize("disease", [None, "dcm", "hcm", "cad", "hf", "ph", "pericardial", "effusion", "myocarditis"])
def test_segmentation_measures_the_ground_truth(disease):
    """function_indices on the rendered seg_sa recovers the latent volumes, EF and mass (default size)."""
    config = only(disease)
    for index in range(2):
        phys_rng, _, cmr_rng = subject_rngs(5, index)
        phys = sample_physiology(1000 + index, phys_rng, config)
        cmr = render_cmr(phys, cmr_rng, config)
        m = function_indices(cmr.seg_sa)
        assert m["ed_frame"] == 0 and m["es_frame"] == cmr.model.es_frame
        assert m["lvedv_ml"] == pytest.approx(phys.lvedv_ml, rel=0.02)
        assert m["lvesv_ml"] == pytest.approx(phys.lvesv_ml, rel=0.03)
        assert m["lvef_pct"] == pytest.approx(phys.lvef_pct, abs=1.5)
        assert m["lvm_g"] == pytest.approx(phys.lv_mass_g, rel=0.03)
        assert m["rvedv_ml"] == pytest.approx(phys.rvedv_ml, rel=0.03)
        assert m["rvef_pct"] == pytest.approx(phys.rvef_pct, abs=2.0)
        # Myocardial volume is conserved through the cycle (walls thicken in systole).
        myo = (cmr.seg_sa.data == 2).sum(axis=(0, 1, 2))
        assert myo.max() / myo.min() < 1.04


def test_cine_shapes_affines_and_akinetic_wall():
    config = only("cad")
    phys_rng, _, cmr_rng = subject_rngs(2, 0)
    phys = sample_physiology(1, phys_rng, config)
    cmr = render_cmr(phys, cmr_rng, config)
    n, k, t = config.setting("image_size"), config.n_slices, config.n_frames
    assert cmr.sa.data.shape == (n, n, k, t) and cmr.sa.data.dtype == np.int16
    assert cmr.seg_sa.data.shape == (n, n, k, t) and cmr.seg_sa.data.dtype == np.uint8
    assert set(np.unique(cmr.seg_sa.data)) == {0, 1, 2, 3}
    assert cmr.la_4ch.data.shape == (config.la_image_size, config.la_image_size, 1, t)
    assert cmr.sa.spacing_mm == pytest.approx((1.8, 1.8, 10.0))
    assert cmr.la_4ch.spacing_mm == pytest.approx((1.8, 1.8, config.la_slice_thickness_mm))
    assert np.allclose(cmr.sa.affine, cmr.seg_sa.affine)
    # Oblique: no column of the short-axis affine is along a world axis.
    directions = cmr.sa.affine[:3, :3] / np.linalg.norm(cmr.sa.affine[:3, :3], axis=0)
    assert np.abs(directions).max() < 0.95
    assert cmr.sa.frame_interval_ms == pytest.approx(60000 / phys.heart_rate_bpm / t)
    # Blood bright, myocardium dark.
    sa, seg = cmr.sa.data.astype(float), cmr.seg_sa.data
    assert sa[seg == 1].mean() > 2.5 * sa[seg == 2].mean()
    # The akinetic wall's endocardial radius does not move, the remote wall does.
    model = cmr.model
    r = model.radii(model.slice_u_mm)
    akinetic = model.akinetic_table.max(axis=0) > 0.99
    mid = int(np.argmin(np.abs(model.slice_u_mm - 0.5 * phys.lv_long_axis_mm)))
    ring = 1 if any(7 <= s <= 12 for s in phys.akinetic_segments) else 2
    if model.akinetic_table[ring].max() > 0.99:
        endo = r["endo"][mid]  # (T, angles)
        change = 1 - endo[model.es_frame] / endo[0]
        still = model.akinetic_table[ring] > 0.99
        assert np.all(change[still] < 0.12 * change[~akinetic].mean() + 0.02)
        assert change[~akinetic].mean() > 0.08


# ---------------------------------------------------------------- cohort tree


def test_write_cohort_tree_csv_and_nifti(tmp_path):
    config = SynthConfig(**SMALL)
    summary = write_cohort(tmp_path / "out", 4, seed=1, config=config, workers=1, ceiling=False)
    out = tmp_path / "out"
    assert summary.n_written == 4 and not summary.failures
    assert sorted(p.name for p in out.iterdir()) == ["cmr", "ecg", "ground_truth.csv", "synth_config.yaml",
                                                    "ukb_tabular.csv"]
    eids = list(range(1000001, 1000005))
    assert sorted(p.name for p in (out / "ecg").iterdir()) == [f"{e}_20205_2_0.xml" for e in eids]
    tab = pd.read_csv(out / "ukb_tabular.csv", keep_default_na=False)
    for col in ["eid", "31-0.0", "21003-2.0", "50-2.0", "21002-2.0", "21001-2.0", "24100-2.0", "24101-2.0",
                "24102-2.0", "24103-2.0", "24104-2.0", "24105-2.0", "24106-2.0", "24109-2.0", "24140-2.0",
                "41270-0.0"]:
        assert col in tab.columns, col
    assert tab["eid"].tolist() == eids
    gt = pd.read_csv(out / "ground_truth.csv")
    assert {f"{ECG_PREFIX}{name}" for name in ECG_VISIBLE_LATENTS} <= set(gt.columns)
    assert {"lvedv_ml", "lv_mass_g", "seg_lvedv_ml", "seg_lvm_g", "icd10", "akinetic_segments"} <= set(gt.columns)
    for i, eid in enumerate(eids):
        folder = out / "cmr" / str(eid)
        sa = nib.load(folder / "sa.nii.gz")
        seg = read_nifti(folder / "seg_sa.nii.gz")
        la = nib.load(folder / "la_4ch.nii.gz")
        assert sa.shape == (64, 64, 10, 12) and sa.get_data_dtype() == np.int16
        assert seg.data.shape == (64, 64, 10, 12) and seg.is_segmentation
        assert np.asarray(seg.data).dtype == np.uint8
        assert la.shape == (48, 48, 1, 12) and la.get_data_dtype() == np.int16
        assert np.allclose(sa.affine, seg.affine)
        assert np.linalg.norm(sa.affine[:3, :3], axis=0) == pytest.approx([1.8, 1.8, 10.0])
        assert sa.header.get_xyzt_units() == ("mm", "msec")
        # The tabular phenotypes are what the written segmentation measures.
        m = function_indices(seg)
        row = tab.iloc[i]
        assert row[column(CMR_FIELD_BY_NAME["lvedv_ml"].field_id)] == pytest.approx(m["lvedv_ml"], abs=0.01)
        assert row["24105-2.0"] == pytest.approx(m["lvm_g"], abs=0.01)
        assert gt.iloc[i]["seg_lvef_pct"] == pytest.approx(m["lvef_pct"], abs=1e-6)
        codes = [c for c in (row[f"41270-0.{k}"] for k in range(8)) if c]
        assert ";".join(codes) == (gt.iloc[i]["icd10"] if isinstance(gt.iloc[i]["icd10"], str) else "")
    # The XML is a UK Biobank ECG that the package's reader reads.
    from cardiacnets.io.ukb_xml import read_ukb_xml

    record = read_ukb_xml(out / "ecg" / ecg_filename(eids[0]))
    assert record.signal_mV.shape == (12, 5000) and record.sampling_rate_hz == 500
    assert summary.disease_counts.keys() == {"dcm", "hcm", "cad", "hf", "ph", "pericardial", "effusion",
                                             "myocarditis"}
    assert set(summary.stage_ms) == {"physiology", "ecg", "cmr_render", "measure", "write"}


@pytest.mark.slow
def test_cohort_is_deterministic_across_n_and_workers(tmp_path):
    config = SynthConfig(**SMALL)
    write_cohort(tmp_path / "a", 2, seed=4, config=config, workers=1, ceiling=False)
    write_cohort(tmp_path / "b", 3, seed=4, config=config, workers=2, ceiling=False)
    for eid in (1000001, 1000002):
        for name in ("sa.nii.gz", "seg_sa.nii.gz", "la_4ch.nii.gz"):
            a = (tmp_path / "a" / "cmr" / str(eid) / name).read_bytes()
            b = (tmp_path / "b" / "cmr" / str(eid) / name).read_bytes()
            assert a == b, name
        xml = ecg_filename(eid)
        assert (tmp_path / "a" / "ecg" / xml).read_bytes() == (tmp_path / "b" / "ecg" / xml).read_bytes()
    gt_a = pd.read_csv(tmp_path / "a" / "ground_truth.csv")
    gt_b = pd.read_csv(tmp_path / "b" / "ground_truth.csv").iloc[:2]
    pd.testing.assert_frame_equal(gt_a, gt_b)
    # A different seed gives a different subject.
    phys_a = simulate_subject(0, 4, config)[0]
    phys_c = simulate_subject(0, 5, config)[0]
    assert phys_a != phys_c


def test_write_cohort_refuses_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError) as err:
        write_cohort(foreign, 1, config=SynthConfig(**SMALL), workers=1)
    assert str(foreign) in str(err.value) and "not a previous cardiacnets synth output" in str(err.value)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # A previous synth output is replaced.
    out = tmp_path / "synth"
    write_cohort(out, 2, config=SynthConfig(**SMALL), workers=1, ceiling=False)
    write_cohort(out, 1, config=SynthConfig(**SMALL), workers=1, ceiling=False)
    assert len(list((out / "cmr").iterdir())) == 1 and len(pd.read_csv(out / "ground_truth.csv")) == 1


# ------------------------------------------------------------------------ CLI


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cohort"
    status = main(["synth", "--n", "3", "--out", str(out), "--workers", "1", "--seed", "2",
                   "image_size=64", "la_image_size=48", "n_frames=12", "prevalence.dcm=0.85"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "simulated 3/3 subjects" in printed and "subjects/s" in printed
    assert "diseases (prevalences enriched): dcm " in printed
    assert str(out) in printed
    saved = (out / "synth_config.yaml").read_text()
    assert "image_size: 64" in saved and "dcm: 0.85" in saved
    assert main(["synth", "--n", "2", "--out", str(out), "bogus_key=1"]) == 2
    assert "unknown config key 'bogus_key'" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.bin").write_bytes(b"x")
    assert main(["synth", "--n", "1", "--out", str(tmp_path / "other"), "image_size=64"]) == 2
    assert "other" in capsys.readouterr().err


# -------------------------------------------------------------------- ceiling


def _latent_ground_truth(n: int) -> pd.DataFrame:
    """Ground truth without rendering: the latent targets stand in for the seg measurements."""
    rows = []
    config = SynthConfig()
    for i in range(n):
        phys_rng, ecg_rng, _ = subject_rngs(9, i)
        phys = sample_physiology(i, phys_rng, config)
        params = ecg_parameters(phys, ecg_rng)
        row = phys.as_dict()
        row.update({f"{ECG_PREFIX}{k}": v for k, v in params.as_dict().items()})
        row.update({f"{SEG_PREFIX}{k}": row[k] for k in ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "rvedv_ml",
                                                         "rvesv_ml", "rvef_pct")})
        row[f"{SEG_PREFIX}lvm_g"] = row["lv_mass_g"]
        rows.append(row)
    return pd.DataFrame(rows)


def test_measure_ceiling_keys_and_range():
    result = measure_ceiling(_latent_ground_truth(120), folds=4, seed=0)
    assert set(result) >= {"model", "folds", "n", "latents", "r2", "r2_with_demographics"}
    assert result["n"] == 120 and result["folds"] == 4
    assert set(result["r2"]) == set(CEILING_TARGETS)
    for value in list(result["r2"].values()) + list(result["r2_with_demographics"].values()):
        assert -1.0 <= value <= 1.0
    # The QRS dipole carries LV mass; the ECG says more about mass than nothing.
    assert result["r2"]["lvm_g"] > 0.2
    with pytest.raises(InputError, match="missing columns"):
        measure_ceiling(pd.DataFrame({"x": [1, 2]}))


def test_ceiling_regressor_recovers_a_known_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = np.stack([x[:, 0] * x[:, 1] + 0.5 * x[:, 2], rng.normal(size=200)], axis=1)
    r2, _ = cross_validated_r2(x, y, folds=5, seed=0)
    assert r2[0] > 0.97  # a second-order function is inside the model class
    assert -0.1 < r2[1] < 0.05  # pure noise is not predictable


# ---------------------------------------------------------------------- bench


@pytest.mark.slow
def test_bench_synth_json(capsys):
    status = main(["bench", "synth", "--json", "--n", "2", "--baseline-n", "1", "--workers", "1",
                   "image_size=48", "la_image_size=48", "n_frames=8"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "synth"
    assert {"baseline", "parallel", "speedup", "ms_per_subject", "target_subjects_per_s", "meets_target"} <= set(result)
    assert result["baseline"]["workers"] == 1 and result["baseline"]["subjects_per_s"] > 0
    assert set(result["ms_per_subject"]) == {"physiology", "ecg", "cmr_render", "measure", "write"}
    assert result["cpu_ms_per_subject"] > 0 and result["cpu_bound_subjects_per_s"] > 0
    assert result["config"]["image_size"] == 48


def test_physiology_fields_are_dataclass_fields():
    names = {f.name for f in dataclasses.fields(sample_physiology(1, np.random.default_rng(0)))}
    assert {"eid", "lvedv_ml", "lv_mass_g", "akinetic_segments", "effusion_mm", "pericardial"} <= names
