"""Quality findings on real records and on constructed signals with known defects."""

from __future__ import annotations

import numpy as np
import pytest

from cardiacnets.ecg import quality
from cardiacnets.ecg.quality import QualityFinding, check_quality, errors, unusable_leads
from cardiacnets.io.ecg import read_ecg
from cardiacnets.io.ecg_leads import STANDARD_LEADS, derive_limb_leads
from cardiacnets.io.ecg_record import ECGRecord

FS = 500.0


def ecg(duration_s: float = 10.0, leads=STANDARD_LEADS, noise_mV: float = 0.01, seed: int = 0) -> ECGRecord:
    """A plausible 12-lead ECG: Gaussian QRS/T beats at 75 bpm plus a little noise."""
    t = np.arange(int(round(FS * duration_s))) / FS
    beats = np.arange(0.2, duration_s, 0.8)
    qrs = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats)
    twave = sum(np.exp(-0.5 * ((t - b - 0.3) / 0.05) ** 2) for b in beats)
    lead_i, lead_ii = 0.8 * qrs + 0.2 * twave, 1.2 * qrs + 0.3 * twave
    rows = {"I": lead_i, "II": lead_ii, **derive_limb_leads(lead_i, lead_ii)}
    for k, name in enumerate(STANDARD_LEADS[6:]):
        rows[name] = (-1.0 + 0.4 * k) * qrs + 0.25 * twave
    rng = np.random.default_rng(seed)
    signal = np.stack([rows.get(name, rows["I"]) for name in leads])
    signal = signal + rng.normal(0, noise_mV, signal.shape)
    return ECGRecord(signal.astype(np.float32), list(leads), FS, source="constructed.npy")


def codes(findings: list[QualityFinding]) -> list[tuple[str, str, str | None]]:
    return [(f.code, f.severity, f.lead) for f in findings]


def test_clean_records_have_no_findings(ukb_xml_path, ptbxl_dir):
    assert check_quality(ecg()) == []
    assert check_quality(ecg(noise_mV=0.0)) == []  # noise-free isoelectric line is not "clipping"
    assert check_quality(read_ecg(ukb_xml_path)) == []
    for name in ("00001_hr", "00004_hr", "00031_hr"):  # 00004/00031 hold their last value (PTB-XL padding)
        assert check_quality(read_ecg(ptbxl_dir / "records500/00000" / name)) == []


def test_frank_leads_are_unknown_but_harmless(ptbdb_record):
    findings = check_quality(read_ecg(ptbdb_record))
    assert codes(findings) == [("unknown_lead", "warning", name) for name in ("vx", "vy", "vz")]
    assert "'vx' is not one of the 12 standard leads" in findings[0].message


def test_nan_whole_lead_is_a_warning_partial_nan_an_error():
    record = ecg()
    record.signal_mV[idx("V3")] = np.nan
    record.signal_mV[idx("V5"), 1000:1010] = np.inf
    findings = check_quality(record)
    assert ("nan", "warning", "V3") in codes(findings)
    assert ("nan", "error", "V5") in codes(findings)
    assert "10 of 5000 samples are missing" in next(f.message for f in findings if f.lead == "V5")
    assert unusable_leads(findings) == {"V3"}


def test_flat_lead():
    record = ecg()
    record.signal_mV[idx("aVL")] = 0.3 + np.random.default_rng(1).normal(0, 0.002, 5000)
    findings = check_quality(record)
    assert codes(findings) == [("flat_lead", "warning", "aVL")]
    assert unusable_leads(findings) == {"aVL"}


def test_disconnected_lead_flat_for_part_of_the_record():
    record = ecg()
    record.signal_mV[idx("V2"), 2000:3500] = 0.05  # 3 s electrode off
    record.signal_mV[idx("V4"), 2000:2400] = 0.05  # 0.8 s: a short dropout is not flagged
    assert codes(check_quality(record)) == [("disconnected_lead", "warning", "V2")]


def test_clipping_of_qrs_peaks():
    record = ecg(noise_mV=0.0)
    lead = record.signal_mV[idx("II")]
    record.signal_mV[idx("II")] = np.minimum(lead, 0.4)  # every R peak cut flat at 0.4 mV
    findings = check_quality(record)
    assert codes(findings) == [("clipping", "warning", "II")]
    assert "amplifier saturation" in findings[0].message


def test_held_edge_value_is_not_clipping():
    record = ecg()
    record.signal_mV[idx("V1"), -60:] = record.signal_mV[idx("V1")].max() + 0.5  # held tail at the extreme
    assert check_quality(record) == []


def test_too_short_is_an_error():
    findings = check_quality(ecg(duration_s=1.5))
    assert codes(findings)[0] == ("too_short", "error", None)
    assert "need at least 2 s" in findings[0].message


def test_duplicate_unknown_and_no_standard_leads():
    record = ecg(leads=("I", "II", "MLII", "vx"))
    assert codes(check_quality(record)) == [("duplicate_lead", "error", "II"), ("unknown_lead", "warning", "vx")]
    frank = ecg(leads=("vx", "vy", "vz"))
    assert ("no_standard_leads", "error", None) in codes(check_quality(frank))


def test_no_usable_leads():
    record = ECGRecord(np.zeros((12, 5000), dtype=np.float32), list(STANDARD_LEADS), FS, source="off.npy")
    findings = check_quality(record)
    assert [c for c in codes(findings) if c[1] == "error"] == [("no_usable_leads", "error", None)]
    assert len(unusable_leads(findings)) == 12


@pytest.mark.parametrize("scale,phrase", [(1000.0, "microvolts stored as millivolts"), (0.001, "volts stored as millivolts")])
def test_implausible_units(scale, phrase):
    record = ecg()
    record.signal_mV *= scale
    problems = errors(check_quality(record))
    assert problems and problems[0].code == "implausible_units" and phrase in problems[0].message


def test_finding_text_and_thresholds_are_documented():
    finding = QualityFinding("flat_lead", "warning", "V1", "no signal")
    assert str(finding) == "warning: flat_lead [V1]: no signal"
    for name in ("MIN_DURATION_S", "FLAT_PTP_MV", "DISCONNECTED_MIN_S", "CLIPPING_MIN_RUN_S",
                 "CLIPPING_MIN_FRACTION", "CLIPPING_MIN_EXCURSION", "IMPLAUSIBLE_MAX_MV", "IMPLAUSIBLE_MIN_MV"):
        assert f"`{name}`" in quality.__doc__ and getattr(quality, name) > 0


def idx(name: str) -> int:
    return STANDARD_LEADS.index(name)
