"""Realism of the simulated ECG: the delineator on real records, device measurements
from the signal, rhythm rates, precordial amplitudes against PTB-XL NORM, the benchmark."""

from __future__ import annotations

import ast
import json

import numpy as np
import pandas as pd
import pytest

from cardiacnets.cli import main
from cardiacnets.io.ecg import read_ecg
from cardiacnets.io.ukb_xml import read_ukb_xml
from cardiacnets.simulate import DiseasePrevalence, SynthConfig
from cardiacnets.simulate.cohort import simulate_ecg, subject_rngs
from cardiacnets.simulate.delineate import delineate
from cardiacnets.simulate.ecg_model import ecg_parameters
from cardiacnets.simulate.physiology import DISEASES, RHYTHMS, RhythmPrevalence, sample_physiology
from cardiacnets.simulate.ukb_xml_writer import write_ukb_xml


def ptbxl_records(ptbxl_dir, code: str, n: int, min_likelihood: float = 50.0) -> list:
    """Up to ``n`` PTB-XL records whose statements include ``code`` at ``min_likelihood`` or more
    (rhythm statements carry likelihood 0 in PTB-XL: pass 0)."""
    database = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    paths = []
    for _, row in database.iterrows():
        if ast.literal_eval(row["scp_codes"]).get(code, -1.0) >= min_likelihood:
            paths.append(ptbxl_dir / row["filename_hr"])
        if len(paths) == n:
            break
    return paths


def healthy_config(**rhythm) -> SynthConfig:
    rates = {name: 0.0 for name in RHYTHMS}
    rates.update(rhythm)
    return SynthConfig(prevalence=DiseasePrevalence(**{d: 0.0 for d in DISEASES if d != "effusion"}, effusion=0.0),
                       rhythm=RhythmPrevalence(**rates))


# --------------------------------------------------------------------------- delineator on real records


def test_delineator_on_real_ptbxl_records(ptbxl_dir):
    normal = [delineate(r.signal_mV, r.sampling_rate_hz, r.lead_names).intervals()
              for r in map(read_ecg, ptbxl_records(ptbxl_dir, "NORM", 25))]
    qrs = np.array([m["qrs_duration_ms"] for m in normal])
    assert np.all((qrs >= 66) & (qrs <= 116))  # narrow complexes
    assert 80 <= np.median(qrs) <= 100
    pr = np.array([m["pq_interval_ms"] for m in normal])
    assert np.isfinite(pr).mean() >= 0.85  # a P wave in sinus rhythm
    assert 120 <= np.nanmedian(pr) <= 200
    qtc = np.median([m["qtc_interval_ms"] for m in normal])
    assert 380 <= qtc <= 440
    blocks = [delineate(r.signal_mV, r.sampling_rate_hz, r.lead_names).intervals()["qrs_duration_ms"]
              for r in map(read_ecg, ptbxl_records(ptbxl_dir, "CLBBB", 5))]
    assert len(blocks) == 5 and min(blocks) >= 120  # complete LBBB is wide
    af = [delineate(r.signal_mV, r.sampling_rate_hz, r.lead_names)
          for r in map(read_ecg, ptbxl_records(ptbxl_dir, "AFIB", 6, min_likelihood=0.0))]
    assert sum(not np.isfinite(d.fiducials_ms["p_onset"]) for d in af) >= 4  # mostly no P wave


def test_delineator_agrees_with_the_uk_biobank_device(ukb_xml_path):
    record = read_ukb_xml(ukb_xml_path)
    m = delineate(record.signal_mV, record.sampling_rate_hz, record.lead_names).intervals()
    assert m["qrs_duration_ms"] == pytest.approx(record.measurements["qrs_duration_ms"], abs=8)
    assert m["qt_interval_ms"] == pytest.approx(record.measurements["qt_interval_ms"], abs=20)
    assert m["ventricular_rate_bpm"] == pytest.approx(record.measurements["ventricular_rate_bpm"], abs=2)


# --------------------------------------------------------------------------- device measurements


def test_xml_measurements_come_from_the_signal(tmp_path):
    config = SynthConfig()
    for index in range(4):
        phys, params, ecg = simulate_ecg(index, 3, config)
        path = tmp_path / f"{index}.xml"
        write_ukb_xml(path, ecg.signal_mV, 500.0, median_mV=ecg.median_mV, measurements=ecg.measurements,
                      interpretation=ecg.interpretation)
        record = read_ukb_xml(path)
        again = delineate(record.signal_mV, record.sampling_rate_hz, record.lead_names).intervals()
        xml = record.measurements
        assert xml["qrs_duration_ms"] == pytest.approx(again["qrs_duration_ms"], abs=4)
        assert xml["qt_interval_ms"] == pytest.approx(again["qt_interval_ms"], abs=10)
        assert xml["ventricular_rate_bpm"] == pytest.approx(again["ventricular_rate_bpm"], abs=2)
        assert (xml["pq_interval_ms"] is None) == (not np.isfinite(again["pq_interval_ms"]))
        # Measured, not copied: the device differs from the latents by a measurement error.
        assert xml["qrs_duration_ms"] != params.qrs_duration_ms


@pytest.mark.parametrize("version", [3, 4])
def test_device_error_against_the_latents_is_12sl_like(version):
    config = healthy_config()
    config.version = version
    qrs, qt = [], []
    for index in range(20):
        _, params, ecg = simulate_ecg(index, 11, config)
        qrs.append(ecg.measurements["qrs_duration_ms"] - params.qrs_duration_ms)
        qt.append(ecg.measurements["qt_interval_ms"] - params.qt_interval_ms)
    qrs = np.asarray(qrs)
    assert abs(np.median(qrs)) <= 6 and 0.5 <= 1.4826 * np.median(np.abs(qrs - np.median(qrs))) <= 8
    # Version 3: every QRS within 10 ms SD of its latent width. Version 4 varies each lobe's size, so a small
    # terminal lobe ends some complexes visibly early and the delineator (the device) measures the waveform,
    # not the latent: 3 of these 20 subjects 22-27 ms short.
    assert (np.std(qrs) <= 10) if version == 3 else (np.sum(np.abs(qrs) > 20) <= 4)
    assert abs(np.median(qt)) <= 10 and np.std(qt) <= 15


# --------------------------------------------------------------------------- rhythms


def test_rhythm_rates_match_the_config():
    config = SynthConfig()
    counts = dict.fromkeys(RHYTHMS, 0)
    n = 1500
    for index in range(n):
        phys_rng, ecg_rng, _ = subject_rngs(5, index)
        phys = sample_physiology(index, phys_rng, config)
        p = ecg_parameters(phys, ecg_rng, config.rhythm)
        counts["atrial_fibrillation"] += p.atrial_fibrillation
        counts["pvc"] += p.pvc_per_min > 0
        counts["pac"] += p.pac_per_min > 0
        counts["rbbb"] += p.rbbb
        counts["lafb"] += p.lafb
        counts["paced"] += p.paced
        counts["lbbb"] += p.lbbb and not (phys.dcm or phys.hf)
    for name in RHYTHMS:
        expected = getattr(config.rhythm, name) * n
        assert abs(counts[name] - expected) <= 3.5 * np.sqrt(expected) + 3, (name, counts[name], expected)


@pytest.mark.slow
def test_rhythms_reach_the_signal_and_the_statements():
    config = healthy_config(atrial_fibrillation=0.25, pvc=0.25, rbbb=0.2, lafb=0.2, paced=0.1)
    found = {"af": [0, 0], "pvc": [0, 0], "rbbb": [0, 0], "lafb": [0, 0], "paced": [0, 0]}
    af_with_pr = 0
    for index in range(120):
        _, p, ecg = simulate_ecg(index, 2, config)
        text = " ".join(ecg.interpretation)
        for key, truth, statement in (
            ("af", p.atrial_fibrillation, "Atrial fibrillation"),
            ("pvc", p.pvc_per_min > 0, "premature ventricular"),
            ("rbbb", p.rbbb and not p.paced, "Right bundle branch block"),
            ("lafb", p.lafb and not p.paced, "Left anterior fascicular block"),
            ("paced", p.paced, "pace"),
        ):
            if truth:
                found[key][0] += 1
                found[key][1] += statement in text
        if p.pvc_per_min > 0:
            assert "pvc" in ecg.beat_kinds
        if p.atrial_fibrillation and not p.paced:
            rr = np.diff(ecg.beat_times_ms)
            assert np.std(rr) / np.mean(rr) > 0.06  # irregularly irregular
            af_with_pr += bool(np.isfinite(ecg.measurements["pq_interval_ms"]))
    # The delineator finds no P wave in AF, but like a real device it can be fooled by fibrillatory waves
    # now and then (1 record in 34 of cohort 2's first 120, in versions 3 and 4 alike).
    assert af_with_pr <= max(1, 0.1 * found["af"][0]), (af_with_pr, found["af"][0])
    for key, (cases, read) in found.items():
        assert cases >= 3, key
        # Read most of the time, as a device reads them: LAFB's statement needs the measured axis beyond -45 deg,
        # which 79 % (version 3) and 75 % (version 4) of simulated LAFB subjects reach (151 cases, cohort 5).
        assert read >= 0.6 * cases, (key, read, cases)


# --------------------------------------------------------------------------- amplitudes against PTB-XL


@pytest.mark.slow
def test_precordial_r_and_s_medians_match_ptbxl_norm(ptbxl_dir):
    # Version 4 (the committed bundle's) misses this at some samples (S in V1 at 1.29 of NORM's here; the README's
    # realism section): version 5 refitted the lead gains and the QRS lobes for it.
    import dataclasses

    from cardiacnets.bench.realism import ecg_features

    # The simulator issue's comparison: 200 simulated subjects against the shared NORM records (the medians of the
    # small S waves of V5-V6, about 0.1 mV, move by 25 % between samples of 100 subjects).
    real = [ecg_features(r.signal_mV, r.sampling_rate_hz, r.lead_names)
            for r in map(read_ecg, ptbxl_records(ptbxl_dir, "NORM", 400))]
    config = dataclasses.replace(healthy_config(), version=5)
    simulated = []
    for index in range(200):
        _, _, ecg = simulate_ecg(index, 0, config)
        simulated.append(ecg_features(ecg.signal_mV, ecg.sampling_rate_hz))
    for lead in ("V1", "V2", "V3", "V4", "V5", "V6"):
        for wave in ("r", "s"):
            key = f"{wave}_{lead}_mV"
            ours = np.median([f[key] for f in simulated])
            theirs = np.median([f[key] for f in real])
            assert ours == pytest.approx(theirs, rel=0.25), (key, ours, theirs)
    # Noise at the real level (robust SD of 40-150 Hz outside the QRS, microvolts).
    assert np.median([f["hf_noise_uV"] for f in simulated]) == pytest.approx(
        np.median([f["hf_noise_uV"] for f in real]), rel=0.4)


# --------------------------------------------------------------------------- determinism and benchmark


def test_simulated_ecg_is_deterministic():
    config = SynthConfig()
    a = simulate_ecg(7, 1, config)
    b = simulate_ecg(7, 1, config)
    np.testing.assert_array_equal(a[2].signal_mV, b[2].signal_mV)
    np.testing.assert_array_equal(a[2].median_mV, b[2].median_mV)
    assert a[1] == b[1] and a[2].measurements == pytest.approx(b[2].measurements, nan_ok=True)
    assert a[2].interpretation == b[2].interpretation
    assert not np.array_equal(simulate_ecg(7, 2, config)[2].signal_mV, a[2].signal_mV)


@pytest.mark.slow
def test_bench_realism_json(capsys, tmp_path):
    out = tmp_path / "realism.json"
    status = main(["bench", "realism", "--json", "--n", "12", "--max-real", "30", "--modality", "ecg",
                   "--output", str(out), "--examples", str(tmp_path / "examples")])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    assert result["benchmark"] == "realism" and result["n_simulated"] == 12
    assert {"real_sets", "auroc", "precordial_medians_mV", "features", "qrs_duration_agreement", "cv"} <= set(result)
    assert {"ptbxl", "ukb_xml"} <= set(result["real_sets"])
    assert result["real_sets"]["ptbxl"]["records"] == 30
    assert {"all_features", "clinical_features", "healthy_vs_ptbxl_norm"} <= set(result["auroc"])
    assert 0.0 <= result["auroc"]["all_features"]["auroc"] <= 1.0
    # The comparison held out of version 4's calibration: the records of PTB-XL's strat_fold 9-10.
    import pandas as pd

    from cardiacnets.config import shared_data_dir

    folds = pd.read_csv(shared_data_dir() / "ptbxl" / "ptbxl_database.csv")["strat_fold"].iloc[:30]
    assert result["auroc"]["all_features_vs_ptbxl_folds_9_10"]["n_real"] == int(folds.isin([9, 10]).sum())
    assert "qrs_duration_ms" in result["features"]["all_vs_real"]
    # Leads II, V1, V4 of three healthy simulated subjects beside three PTB-XL NORM records.
    from PIL import Image

    assert result["examples"] == {"ecg": str(tmp_path / "examples" / "ecg_examples.png")}
    with Image.open(result["examples"]["ecg"]) as figure:
        assert figure.size == (1536, 384)


def test_healthy_only_features_are_the_healthy_rows_of_the_full_run(tmp_path):
    from cardiacnets.bench.realism import simulated_features

    config = SynthConfig(version=5)
    everyone, _ = simulated_features(12, 4, config, tmp_path)
    healthy, _ = simulated_features(12, 4, config, tmp_path, healthy_only=True)
    assert 0 < len(healthy) < len(everyone) and all(row["healthy"] for row in healthy)
    assert healthy == [row for row in everyone if row["healthy"]]  # the same subjects, bit for bit
