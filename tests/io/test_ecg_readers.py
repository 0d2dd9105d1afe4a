"""ECG readers: UK Biobank XML, WFDB (PTB-XL, PTB-DB, MIMIC-IV-ECG layout, CinC .mat), .npy, dispatch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from cardiacnets.errors import InputError
from cardiacnets.io.ecg import find_ecg_records, is_ecg_path, read_ecg
from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.io.npy_io import read_npy
from cardiacnets.io.ukb_xml import read_ukb_xml
from cardiacnets.io.wfdb_io import _parse_header, read_wfdb

# --------------------------------------------------------------------------- helpers


def _expect_error(path: Path, *phrases: str, **kwargs) -> InputError:
    """read_ecg(path) raises an InputError naming the file and every phrase."""
    with pytest.raises(InputError) as info:
        read_ecg(path, **kwargs)
    message = str(info.value)
    assert path.name in message or path.with_suffix("").name in message, message
    for phrase in phrases:
        assert phrase in message, message
    return info.value


@pytest.fixture(scope="module")
def ukb_text(ukb_xml_path) -> str:
    return ukb_xml_path.read_bytes().decode("latin-1")


def _copy_with(tmp_path: Path, text: str, name: str = "broken.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return path


def _strip_section(text: str) -> tuple[int, int]:
    start = text.index("<StripData>")
    return start, text.index("</StripData>", start)


# --------------------------------------------------------------------------- UK Biobank XML


def test_ukb_xml_strip_shape_and_metadata(ukb_xml_path):
    record = read_ecg(ukb_xml_path)
    assert record.signal_mV.shape == (12, 5000)
    assert record.signal_mV.dtype == np.float32
    assert record.sampling_rate_hz == 500.0
    assert record.lead_names == list(STANDARD_LEADS)
    assert (record.format, record.units) == ("ukb_xml", "uV")
    assert record.duration_s == pytest.approx(10.0)
    assert record.metadata["sex"] == "female" and record.metadata["sex_male"] is False
    assert record.metadata["age_years"] == 1.0
    assert record.metadata["device"]["description"] == "CardioSoft"
    assert record.metadata["device"]["analysis_version"] == "12SL V21"
    assert record.metadata["filters"] == {
        "lowpass_hz": 100.0, "highpass_hz": 0.01, "notch_50hz": True, "notch_60hz": False, "cubic_spline": False,
    }
    assert record.metadata["beat_times_ms"][:3] == [610.0, 1410.0, 2220.0]


def test_ukb_xml_samples_equal_file_integers_times_5_uV(ukb_xml_path):
    # Values read by hand from the file text (StripData, Resolution 5 uV per LSB).
    record = read_ukb_xml(ukb_xml_path)
    lead_i, lead_ii, lead_v6 = record.lead("I"), record.lead("II"), record.lead("V6")
    np.testing.assert_allclose(lead_i[:7], np.array([21, 21, 20, 21, 21, 18, 13]) * 5 / 1000, atol=1e-7)
    np.testing.assert_allclose(lead_i[-2:], np.array([-85, -87]) * 5 / 1000, atol=1e-7)
    np.testing.assert_allclose(lead_ii[:4], np.array([68, 68, 68, 67]) * 5 / 1000, atol=1e-7)
    np.testing.assert_allclose(lead_ii[-1], 39 * 5 / 1000, atol=1e-7)
    np.testing.assert_allclose(lead_v6[:4], np.array([67, 69, 69, 70]) * 5 / 1000, atol=1e-7)
    np.testing.assert_allclose(lead_v6[-1], 141 * 5 / 1000, atol=1e-7)
    # The device stores III = II - I to within one LSB of rounding.
    assert np.abs(record.lead("III") - (lead_ii - lead_i)).max() <= 0.005 + 1e-6


def test_ukb_xml_measurements_interpretation_median(ukb_xml_path):
    record = read_ukb_xml(ukb_xml_path)
    m = record.measurements
    assert m["ventricular_rate_bpm"] == 75
    assert m["qrs_duration_ms"] == 76
    assert (m["qt_interval_ms"], m["qtc_interval_ms"], m["rr_interval_ms"], m["pp_interval_ms"]) == (378, 422, 804, 800)
    assert m["pq_interval_ms"] is None and m["p_duration_ms"] is None  # empty in the file
    assert (m["p_axis_deg"], m["r_axis_deg"], m["t_axis_deg"]) == (1, 1, 1)
    assert record.interpretation[:4] == [
        "Normal sinus rhythm", "Right axis deviation", "Nonspecific ST and T wave abnormality", "Abnormal ECG",
    ]
    assert record.median_mV.shape == (12, 600)
    assert record.median_lead_names == list(STANDARD_LEADS)
    np.testing.assert_allclose(record.median_mV[0, :3], [-0.015, -0.015, -0.010], atol=1e-7)
    assert record.metadata["median_last_valid"] == 593


def test_ukb_xml_reads_simulator_output_round_trip(tmp_path):
    from cardiacnets.simulate.ukb_xml_writer import write_ukb_xml

    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500.0
    signal_mV = (np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.2, 2.0, (12, 1))).astype(np.float32)
    median_mV = rng.normal(0, 0.3, (12, 600)).astype(np.float32)
    path = tmp_path / "1000001_20205_2_0.xml"
    write_ukb_xml(
        path, signal_mV, 500.0, median_mV=median_mV,
        measurements={"ventricular_rate_bpm": 72, "qrs_duration_ms": 98, "pq_interval_ms": None},
        interpretation=["Sinus rhythm", "Normal ECG"], age_years=61, is_male=True,
    )
    record = read_ecg(path)
    assert record.signal_mV.shape == (12, 5000)
    assert np.abs(record.signal_mV - signal_mV).max() <= 0.0025 + 1e-6  # half an LSB of 5 uV
    assert np.abs(record.median_mV - median_mV).max() <= 0.0025 + 1e-6
    assert record.measurements["ventricular_rate_bpm"] == 72
    assert record.measurements["qrs_duration_ms"] == 98
    assert record.measurements["pq_interval_ms"] is None
    assert record.interpretation == ["Sinus rhythm", "Normal ECG"]
    assert record.metadata["sex"] == "male" and record.metadata["age_years"] == 61


def test_ukb_xml_without_full_disclosure_reads_the_same(tmp_path, ukb_xml_path, ukb_text):
    start = ukb_text.index("<FullDisclosure>")
    end = ukb_text.index("</FullDisclosure>") + len("</FullDisclosure>")
    path = _copy_with(tmp_path, ukb_text[:start] + ukb_text[end:], "no_full_disclosure.xml")
    np.testing.assert_array_equal(read_ecg(path).signal_mV, read_ecg(ukb_xml_path).signal_mV)


def test_ukb_xml_corrupted_copies_raise_input_errors(tmp_path, ukb_text):
    raw = ukb_text.encode("latin-1")
    cases = {}

    (tmp_path / "empty.xml").write_bytes(b"")
    cases["empty.xml"] = ("empty file",)
    (tmp_path / "truncated_strip.xml").write_bytes(raw[: len(raw) // 5])
    cases["truncated_strip.xml"] = ("malformed XML",)
    (tmp_path / "truncated_end.xml").write_bytes(raw[: len(raw) // 2])
    cases["truncated_end.xml"] = ("never closed", "truncated")
    (tmp_path / "garbage.xml").write_bytes(bytes(range(256)) * 10)
    cases["garbage.xml"] = ("malformed XML",)
    _copy_with(tmp_path, '<?xml version="1.0"?><ECG><StripData/></ECG>', "other_root.xml")
    cases["other_root.xml"] = ("not a GE CardioSoft ECG", "<ECG>")

    s0, s1 = _strip_section(ukb_text)
    _copy_with(tmp_path, ukb_text[:s0] + ukb_text[s1 + len("</StripData>"):], "no_strip.xml")
    cases["no_strip.xml"] = ("no <StripData>",)

    strip = ukb_text[s0:s1]
    v6 = strip.index('<WaveformData lead="V6">')
    v6_end = strip.index("</WaveformData>", v6) + len("</WaveformData>")
    _copy_with(tmp_path, ukb_text[:s0] + strip[:v6] + strip[v6_end:] + ukb_text[s1:], "eleven_leads.xml")
    cases["eleven_leads.xml"] = ("wrong lead count", "NumberOfLeads says 12, found 11")

    _copy_with(tmp_path, ukb_text[:s0] + strip.replace('lead="V1"', 'lead="V9"') + ukb_text[s1:], "wrong_lead.xml")
    cases["wrong_lead.xml"] = ("unknown lead 'V9' in StripData",)
    _copy_with(tmp_path, ukb_text[:s0] + strip.replace('lead="V2"', 'lead="V1"') + ukb_text[s1:], "twice.xml")
    cases["twice.xml"] = ("lead V1 appears twice in StripData",)

    bad = strip.replace("\t\t21,21,20,21,", "\t\t21,x1,20,21,", 1)
    assert bad != strip
    _copy_with(tmp_path, ukb_text[:s0] + bad + ukb_text[s1:], "non_numeric.xml")
    cases["non_numeric.xml"] = ("non-numeric sample 'x1'", "StripData lead I")

    nan = strip.replace("\t\t68,68,68,67,", "\t\tNaN,68,68,67,", 1)
    _copy_with(tmp_path, ukb_text[:s0] + nan + ukb_text[s1:], "nan_sample.xml")
    cases["nan_sample.xml"] = ("non-numeric sample 'NaN'", "lead II")

    short = strip.replace("\t\t68,68,68,67,", "\t\t", 1)  # lead II loses 4 samples
    _copy_with(tmp_path, ukb_text[:s0] + short + ukb_text[s1:], "unequal.xml")
    cases["unequal.xml"] = ("unequal lead lengths in StripData", "II=4996")

    no_res = strip.replace('<Resolution units="uVperLsb">5</Resolution>', "", 1)
    _copy_with(tmp_path, ukb_text[:s0] + no_res + ukb_text[s1:], "no_resolution.xml")
    cases["no_resolution.xml"] = ("StripData has no <Resolution>",)

    for name, phrases in cases.items():
        _expect_error(tmp_path / name, *phrases)


# --------------------------------------------------------------------------- WFDB


@pytest.mark.parametrize("folder,name,rate,n_samples", [
    ("records500", "00001_hr", 500.0, 5000),
    ("records100", "00001_lr", 100.0, 1000),
])
def test_ptbxl_matches_wfdb(ptbxl_dir, folder, name, rate, n_samples):
    base = ptbxl_dir / folder / "00000" / name
    record = read_ecg(base)
    reference = wfdb.rdrecord(str(base))
    assert record.signal_mV.shape == (12, n_samples)
    assert record.sampling_rate_hz == rate
    assert record.lead_names == list(STANDARD_LEADS)  # AVR/AVL/AVF mapped to aVR/aVL/aVF
    assert record.metadata["file_lead_labels"][3] == "AVR"
    assert (record.format, record.units) == ("wfdb", "mV")
    np.testing.assert_array_equal(record.signal_mV, reference.p_signal.T.astype(np.float32))
    # Every way of naming the record reads the same samples.
    for variant in (base.with_suffix(".hea"), base.with_suffix(".dat")):
        np.testing.assert_array_equal(read_ecg(variant).signal_mV, record.signal_mV)


def test_ptbdb_fifteen_leads_at_1khz(ptbdb_record):
    record = read_ecg(ptbdb_record)
    assert record.signal_mV.shape == (15, 38400)
    assert record.sampling_rate_hz == 1000.0
    assert record.lead_names[:12] == list(STANDARD_LEADS)
    assert record.lead_names[12:] == ["vx", "vy", "vz"]
    np.testing.assert_array_equal(record.signal_mV, wfdb.rdrecord(str(ptbdb_record)).p_signal.T.astype(np.float32))
    assert record.metadata["age_years"] == 81.0 and record.metadata["sex"] == "female"
    assert record.metadata["fields"]["reason for admission"] == "Myocardial infarction"


def test_fast_path_equals_wfdb_engine(ptbxl_dir, ptbdb_record):
    for base in (ptbxl_dir / "records500/00000/00002_hr", ptbdb_record):
        fast = read_wfdb(base)
        slow = read_wfdb(base, engine="wfdb")
        np.testing.assert_array_equal(fast.signal_mV, slow.signal_mV)
        assert fast.lead_names == slow.lead_names and fast.units == slow.units


def test_header_parser_agrees_with_wfdb(ptbxl_dir, ptbdb_record):
    headers = sorted((ptbxl_dir / "records500/00000").glob("*.hea"))[:15]
    headers += sorted((ptbxl_dir / "records100/00000").glob("*.hea"))[:15] + [ptbdb_record.with_suffix(".hea")]
    for path in headers:
        ours = _parse_header(path, path.read_text())
        theirs = wfdb.rdheader(str(path.with_suffix("")))
        assert ours.sampling_rate_hz == theirs.fs and ours.n_samples == theirs.sig_len
        assert [s.label for s in ours.signals] == theirs.sig_name
        assert [s.adc_gain for s in ours.signals] == theirs.adc_gain
        assert [s.baseline for s in ours.signals] == theirs.baseline
        assert [s.file_name for s in ours.signals] == theirs.file_name


def _write_wfdb(folder: Path, name: str, signal: np.ndarray, fs: float, units: str, names, fmt="16", gain=1000.0):
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name, fs=fs, units=[units] * len(names), sig_name=list(names), p_signal=signal.T.astype(np.float64),
        fmt=[fmt] * len(names), adc_gain=[gain] * len(names), baseline=[0] * len(names), write_dir=str(folder),
    )
    return folder / name


def test_mimic_iv_ecg_layout(tmp_path):
    names = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]  # MIMIC order
    rng = np.random.default_rng(1)
    signal = np.round(rng.normal(0, 0.5, (12, 5000)), 3)
    base = _write_wfdb(tmp_path / "files/p1000/p10000032/s40689238", "40689238", signal, 500, "mV", names)
    found = find_ecg_records([tmp_path / "files"])
    assert found == [base.with_suffix(".hea")]
    record = read_ecg(found[0])
    assert record.lead_names == names
    np.testing.assert_allclose(record.signal_mV, signal, atol=1e-6)


@pytest.mark.parametrize("units,factor", [("uV", 1e-3), ("mV", 1.0), ("V", 1e3)])
def test_wfdb_units_are_converted_to_mV(tmp_path, units, factor):
    signal_mV = np.round(np.sin(np.linspace(0, 20, 2000))[None].repeat(2, 0) * [[1.0], [0.5]], 3)
    stored = signal_mV / factor
    gain = 1.0 if units == "uV" else (1000.0 if units == "mV" else 1e6)
    base = _write_wfdb(tmp_path, "units", stored, 250, units, ["I", "II"], gain=gain)
    record = read_ecg(base)
    assert record.units == units
    np.testing.assert_allclose(record.signal_mV, signal_mV, atol=1.1e-3)


def test_wfdb_non_voltage_units_rejected(tmp_path):
    base = _write_wfdb(tmp_path, "pressure", np.ones((1, 1000)), 250, "mmHg", ["ABP"], gain=10.0)
    _expect_error(base, "units 'mmHg'", "expected a voltage")


def test_wfdb_format_212_read_through_wfdb(tmp_path):
    signal = np.round(np.random.default_rng(2).normal(0, 0.4, (3, 3000)), 2)
    base = _write_wfdb(tmp_path, "f212", signal, 360, "mV", ["MLII", "V1", "V5"], fmt="212", gain=200.0)
    record = read_ecg(base)
    assert record.lead_names == ["II", "V1", "V5"]  # MLII is lead II
    np.testing.assert_allclose(record.signal_mV, signal, atol=2.6e-3)
    np.testing.assert_array_equal(record.signal_mV, wfdb.rdrecord(str(base)).p_signal.T.astype(np.float32))


def _write_cinc_mat(folder: Path, name: str = "A0001") -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    val = rng.integers(-2000, 2000, (12, 5000)).astype(np.int16)
    scipy.io.savemat(folder / f"{name}.mat", {"val": val}, format="4")
    lines = [f"{name} 12 500 5000 05-Feb-2020 11:39:16"]
    lines += [f"{name}.mat 16+24 1000/mV 16 0 {val[i, 0]} 0 0 {lead}" for i, lead in enumerate(STANDARD_LEADS)]
    lines += ["#Age: 74", "#Sex: Male", "#Dx: 59118001,164884008", "#Rx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / name, val


def test_cinc_mat_record(tmp_path):
    base, val = _write_cinc_mat(tmp_path)
    for path in (base, base.with_suffix(".mat"), base.with_suffix(".hea")):
        record = read_ecg(path)
        assert record.format == "wfdb_mat" and record.signal_mV.shape == (12, 5000)
        np.testing.assert_allclose(record.signal_mV, val / 1000.0, atol=1e-7)
    assert record.metadata["age_years"] == 74.0 and record.metadata["sex"] == "male"
    assert record.metadata["fields"]["dx"] == "59118001,164884008"
    # wfdb reads the same file through the 24-byte offset in the header.
    np.testing.assert_array_equal(read_wfdb(base, engine="wfdb").signal_mV, record.signal_mV)


def test_wfdb_corrupted_copies_raise_input_errors(tmp_path, ptbxl_dir):
    source = ptbxl_dir / "records500/00000/00001_hr"
    header = source.with_suffix(".hea").read_text()
    data = source.with_suffix(".dat").read_bytes()

    missing = tmp_path / "missing"
    missing.mkdir()
    shutil.copy(source.with_suffix(".hea"), missing)
    _expect_error(missing / "00001_hr", "signal file 00001_hr.dat named in the header is missing")

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    shutil.copy(source.with_suffix(".hea"), truncated)
    (truncated / "00001_hr.dat").write_bytes(data[: len(data) // 2])
    _expect_error(truncated / "00001_hr", "truncated signal file", "60000 bytes", "needs 120000")

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(source.with_suffix(".hea"), empty)
    (empty / "00001_hr.dat").write_bytes(b"")
    _expect_error(empty / "00001_hr", "truncated signal file")

    bad_header = tmp_path / "bad_header"
    bad_header.mkdir()
    (bad_header / "00001_hr.hea").write_text("00001_hr twelve 500 5000\n")
    _expect_error(bad_header / "00001_hr", "bad header", "cannot parse record line")

    few_lines = tmp_path / "few_lines"
    few_lines.mkdir()
    (few_lines / "00001_hr.hea").write_text("\n".join(header.splitlines()[:-1]) + "\n")
    shutil.copy(source.with_suffix(".dat"), few_lines)
    _expect_error(few_lines / "00001_hr", "bad header", "announces 12 signals, found 11")

    bad_gain = tmp_path / "bad_gain"
    bad_gain.mkdir()
    (bad_gain / "00001_hr.hea").write_text(header.replace("1000.0(0)/mV", "lots/mV", 1))
    shutil.copy(source.with_suffix(".dat"), bad_gain)
    _expect_error(bad_gain / "00001_hr", "bad header", "ADC gain 'lots/mV'")

    orphan = tmp_path / "orphan"
    orphan.mkdir()
    shutil.copy(source.with_suffix(".dat"), orphan)
    _expect_error(orphan / "00001_hr.dat", "without its WFDB header 00001_hr.hea")

    mat_base, _ = _write_cinc_mat(tmp_path, "A0002")
    mat = mat_base.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:5000])
    with pytest.raises(InputError) as info:
        read_ecg(mat_base)
    assert "A0002.mat" in str(info.value)


# --------------------------------------------------------------------------- .npy


def test_npy_either_orientation(tmp_path):
    signal = np.random.default_rng(4).normal(0, 1, (12, 5000)).astype(np.float32)
    np.save(tmp_path / "leads_time.npy", signal)
    np.save(tmp_path / "time_leads.npy", signal.T)
    names = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
    for name in ("leads_time.npy", "time_leads.npy"):
        record = read_ecg(tmp_path / name, sampling_rate_hz=500, lead_names=names)
        assert record.signal_mV.shape == (12, 5000) and record.lead_names == list(STANDARD_LEADS)
        np.testing.assert_array_equal(record.signal_mV, signal)
        assert (record.format, record.sampling_rate_hz) == ("npy", 500.0)
    in_uV = read_npy(tmp_path / "leads_time.npy", sampling_rate_hz=500, lead_names=names, units="uV")
    np.testing.assert_allclose(in_uV.signal_mV, signal / 1000.0, rtol=1e-6)


def test_npy_errors(tmp_path):
    names = ["I", "II"]
    np.save(tmp_path / "three_d.npy", np.zeros((2, 3, 100)))
    _expect_error(tmp_path / "three_d.npy", "expected a 2-D", "3-D", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "one_d.npy", np.zeros(100))
    _expect_error(tmp_path / "one_d.npy", "1-D", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "mismatch.npy", np.zeros((3, 100)))
    _expect_error(tmp_path / "mismatch.npy", "lead count mismatch", "(3, 100)", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"], ["e", "f"]]))
    _expect_error(tmp_path / "text.npy", "non-numeric", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "objects.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    _expect_error(tmp_path / "objects.npy", "not a readable .npy", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "square.npy", np.zeros((2, 2)))
    _expect_error(tmp_path / "square.npy", "ambiguous", sampling_rate_hz=100, lead_names=names)
    np.save(tmp_path / "fine.npy", np.zeros((2, 100)))
    _expect_error(tmp_path / "fine.npy", "sampling_rate_hz", lead_names=names)
    _expect_error(tmp_path / "fine.npy", "lead_names", sampling_rate_hz=100)
    _expect_error(tmp_path / "fine.npy", "units 'mmHg'", sampling_rate_hz=100, lead_names=names, units="mmHg")
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "fine.npy").read_bytes()[:150])
    _expect_error(tmp_path / "truncated.npy", "not a readable .npy", sampling_rate_hz=100, lead_names=names)


# --------------------------------------------------------------------------- dispatch


def test_dispatch_and_is_ecg_path(tmp_path, ukb_xml_path, ptbxl_dir):
    base = ptbxl_dir / "records500/00000/00001_hr"
    for path in (ukb_xml_path, base, base.with_suffix(".hea"), base.with_suffix(".dat")):
        assert is_ecg_path(path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "lonely.dat").write_bytes(b"\0\0")
    assert not is_ecg_path(tmp_path / "notes.txt")
    assert not is_ecg_path(tmp_path / "lonely.dat")
    assert not is_ecg_path(tmp_path / "absent.xml")
    _expect_error(tmp_path / "notes.txt", "unsupported ECG format", "UK Biobank", "WFDB", ".npy")
    _expect_error(tmp_path / "absent.xml", "no such file")
    _expect_error(tmp_path / "lonely.dat", "without its WFDB header")


def test_find_ecg_records_lists_each_record_once(tmp_path, ptbxl_dir, ukb_xml_path):
    folder = ptbxl_dir / "records100/00000"
    found = find_ecg_records([folder, folder / "00001_lr.dat", folder / "00002_lr", ukb_xml_path])
    assert len(found) == 401  # 400 headers + the XML; .dat and bare names collapse onto their .hea
    assert folder / "00001_lr.hea" in found and ukb_xml_path in found
    with pytest.raises(InputError, match="no such file or folder"):
        find_ecg_records([tmp_path / "nowhere"])
