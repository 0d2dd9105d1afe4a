"""Hostile ECG files (issue 17): WFDB headers that point outside their folder or
declare impossible values, and UK Biobank XML with impossible rates, read by
`cardiacnets.io` and by ``cardiacnets inspect``. Every copy is built in
``tmp_path`` from the real samples in ``../shared/data``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiacnets.cli import main
from cardiacnets.errors import InputError
from cardiacnets.io import wfdb_io
from cardiacnets.io.ecg import read_ecg
from cardiacnets.io.wfdb_io import read_wfdb, record_file_names

RECORD = "00001_hr"
ENGINES = ("auto", "wfdb")
HOSTILE_NAMES = ["/etc/passwd", "../../etc/passwd", "..\\x.dat", "~/.ssh/id_rsa", "C:x.dat", "..", "x\0.dat"]


@pytest.fixture()
def source(ptbxl_dir) -> Path:
    return ptbxl_dir / "records500" / "00000" / RECORD


@pytest.fixture()
def no_wfdb(monkeypatch):
    """Fail the test if a hostile record reaches ``wfdb.rdrecord``: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("wfdb.rdrecord was called on a record that should have been refused")

    monkeypatch.setattr(wfdb, "rdrecord", refuse)


def _copy_record(source: Path, folder: Path, edit=None, with_data: bool = True) -> Path:
    """A copy of the PTB-XL record in `folder`, its header text passed through `edit`; returns the .hea."""
    folder.mkdir(parents=True, exist_ok=True)
    text = source.with_suffix(".hea").read_text()
    header = folder / f"{RECORD}.hea"
    header.write_text(edit(text) if edit else text)
    if with_data:
        shutil.copy(source.with_suffix(".dat"), folder)
    return header


def _first_signal_file(name: str):
    """Edit: the first signal line names `name` as its file."""
    return lambda text: text.replace(f"{RECORD}.dat", name, 1)


def _all_signal_files(name: str):
    return lambda text: text.replace(f"{RECORD}.dat", name)


def _record_line(line: str):
    return lambda text: text.replace(f"{RECORD} 12 500 5000", line, 1)


def _error(path: Path, engine: str = "auto") -> InputError:
    with pytest.raises(InputError) as info:
        read_wfdb(path, engine=engine)
    return info.value


def _assert_clean(err: InputError, header: Path, *phrases: str) -> str:
    message = str(err)
    assert header.name in message, message  # names the header file
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message
    return message


# --------------------------------------------------------------------------- signal file names


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_signal_file_name_must_be_plain(tmp_path, source, no_wfdb, engine, name):
    header = _copy_record(source, tmp_path / "rec", _all_signal_files(name))
    err = _error(header, engine)
    _assert_clean(err, header, "signal 1 file name", "not a plain file name")
    assert "root:" not in err.problem and str(os.path.getsize("/etc/passwd")) not in err.problem


@pytest.mark.parametrize("engine", ENGINES)
def test_outside_file_existing_or_not_gives_the_same_message(tmp_path, source, no_wfdb, engine):
    problems = []
    for case, exists in (("present", True), ("absent", False)):
        root = tmp_path / case
        header = _copy_record(source, root / "rec", _all_signal_files("../secret.dat"))
        if exists:
            shutil.copy(source.with_suffix(".dat"), root / "secret.dat")  # readable, right size
        err = _error(header, engine)
        _assert_clean(err, header, "'../secret.dat'", "not a plain file name")
        assert "120000" not in err.problem and os.fspath(root / "secret.dat") not in str(err)
        problems.append(err.problem)
    assert problems[0] == problems[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_symlink_leading_out_of_the_folder_reads_as_missing(tmp_path, source, no_wfdb, engine):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.dat"
    shutil.copy(source.with_suffix(".dat"), secret)  # a perfectly readable signal file, but not in the folder
    problems = {}
    for case, target in (("exists", secret), ("dangling", outside / "nothing.dat"), ("folder", outside),
                         ("missing", None)):
        header = _copy_record(source, tmp_path / case, with_data=False)
        if target is not None:
            (tmp_path / case / f"{RECORD}.dat").symlink_to(target)
        err = _error(header, engine)
        message = _assert_clean(err, header, f"signal file {RECORD}.dat named in the header is missing")
        assert os.fspath(outside) not in message and "120000" not in err.problem and "secret" not in message
        problems[case] = err.problem
    assert len(set(problems.values())) == 1, problems  # no existence oracle


def test_symlink_inside_the_folder_is_followed(tmp_path, source):
    header = _copy_record(source, tmp_path / "rec", with_data=False)
    shutil.copy(source.with_suffix(".dat"), tmp_path / "rec" / "store.dat")
    (tmp_path / "rec" / f"{RECORD}.dat").symlink_to("store.dat")
    for engine in ENGINES:
        np.testing.assert_array_equal(read_wfdb(header, engine=engine).signal_mV, read_wfdb(source).signal_mV)


def test_signal_file_that_is_a_folder_reads_as_missing(tmp_path, source, no_wfdb):
    header = _copy_record(source, tmp_path / "rec", with_data=False)
    (tmp_path / "rec" / f"{RECORD}.dat").mkdir()
    for engine in ENGINES:
        _assert_clean(_error(header, engine), header, "is missing")


def test_mat_record_checks_its_file_name_too(tmp_path, no_wfdb):
    folder = tmp_path / "mat"
    folder.mkdir()
    (folder / "A0001.hea").write_text("A0001 1 500 10\n/etc/passwd.mat 16+24 1000/mV 16 0 0 0 0 I\n")
    _assert_clean(_error(folder / "A0001.hea"), folder / "A0001.hea", "not a plain file name")


def test_record_file_names_lists_the_checked_names(tmp_path, source):
    assert record_file_names(source.with_suffix(".hea")) == [f"{RECORD}.dat"]
    header = _copy_record(source, tmp_path / "rec", _first_signal_file("/etc/passwd"))
    with pytest.raises(InputError, match="not a plain file name"):
        record_file_names(header)


# --------------------------------------------------------------------------- multi-segment records


def _multi_segment(tmp_path: Path, ptbxl_dir: Path, second_segment_edit=None) -> Path:
    """A two-segment record built from PTB-XL 00001_hr and 00002_hr."""
    folder = tmp_path / "multi"
    folder.mkdir(parents=True)
    for index, name in enumerate(("00001_hr", "00002_hr")):
        base = ptbxl_dir / "records500" / "00000" / name
        text = base.with_suffix(".hea").read_text().replace(name, f"seg{index + 1}")
        if index == 1 and second_segment_edit:
            text = second_segment_edit(text)
        (folder / f"seg{index + 1}.hea").write_text(text)
        shutil.copy(base.with_suffix(".dat"), folder / f"seg{index + 1}.dat")
    (folder / "multi.hea").write_text("multi/2 12 500 10000\nseg1 5000\nseg2 5000\n")
    return folder / "multi.hea"


def test_multi_segment_record_still_reads(tmp_path, ptbxl_dir):
    header = _multi_segment(tmp_path, ptbxl_dir)
    record = read_wfdb(header)
    assert record.signal_mV.shape == (12, 10000)
    first = read_wfdb(ptbxl_dir / "records500" / "00000" / "00001_hr")
    np.testing.assert_array_equal(record.signal_mV[:, :5000], first.signal_mV)
    assert record_file_names(header) == ["seg1.hea", "seg2.hea"]


def test_multi_segment_names_are_checked_before_wfdb(tmp_path, ptbxl_dir, no_wfdb):
    header = _multi_segment(tmp_path, ptbxl_dir)
    header.write_text("multi/2 12 500 10000\nseg1 5000\n../../etc/passwd 5000\n")
    _assert_clean(_error(header), header, "segment 2 record name '../../etc/passwd'", "not a plain file name")

    header = _multi_segment(tmp_path / "b", ptbxl_dir, lambda text: text.replace("seg2.dat", "/etc/passwd", 1))
    with pytest.raises(InputError) as info:
        read_wfdb(header)
    assert "seg2.hea" in str(info.value) and "not a plain file name" in str(info.value)


# --------------------------------------------------------------------------- implausible values


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rate", ["nan", "NaN", "inf", "-inf", "0", "-500", "0.5", "1e9"])
def test_sampling_rate_must_be_plausible(tmp_path, source, no_wfdb, engine, rate):
    header = _copy_record(source, tmp_path / "rec", _record_line(f"{RECORD} 12 {rate} 5000"))
    _assert_clean(_error(header, engine), header, f"sampling frequency {rate!r}", "not a plausible rate")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gain,phrase", [
    ("-1000.0(0)/mV", "ADC gain '-1000.0(0)/mV' is negative"),
    ("1e999(0)/mV", "ADC gain '1e999(0)/mV' is not a finite number"),
    ("nan(0)/mV", "cannot parse ADC gain 'nan(0)/mV'"),
    ("inf(0)/mV", "cannot parse ADC gain 'inf(0)/mV'"),
])
def test_bad_adc_gain_is_refused(tmp_path, source, no_wfdb, engine, gain, phrase):
    header = _copy_record(source, tmp_path / "rec", lambda text: text.replace("1000.0(0)/mV", gain, 1))
    _assert_clean(_error(header, engine), header, "line 2", phrase)


def test_zero_adc_gain_is_wfdb_default_not_a_division_by_zero(tmp_path, source):
    # WFDB header(5): a gain of 0 means the default 200; wfdb.rdheader does the same.
    header = _copy_record(source, tmp_path / "rec", lambda text: text.replace("1000.0(0)/mV", "0(0)/mV", 1))
    record = read_wfdb(header)
    assert np.isfinite(record.signal_mV).all()
    np.testing.assert_allclose(record.signal_mV[0], read_wfdb(source).signal_mV[0] * 1000 / 200, rtol=1e-6)
    reference = wfdb.rdrecord(os.fspath(header.with_suffix("")))
    assert reference.adc_gain[0] == 200.0
    np.testing.assert_array_equal(record.signal_mV, reference.p_signal.T.astype(np.float32))


@pytest.mark.parametrize("engine", ENGINES)
def test_declared_samples_beyond_the_file_are_refused(tmp_path, source, no_wfdb, engine):
    header = _copy_record(source, tmp_path / "rec", _record_line(f"{RECORD} 12 500 6000"))
    message = _assert_clean(_error(header, engine), header, "truncated signal file", "120000 bytes", "needs 144000")
    assert os.fspath(tmp_path) in message  # the file in the record's own folder may be named


@pytest.mark.parametrize("engine", ENGINES)
def test_sample_and_signal_ceilings(tmp_path, source, no_wfdb, engine, monkeypatch):
    header = _copy_record(source, tmp_path / "a", _record_line(f"{RECORD} 12 500 10000001"))
    _assert_clean(_error(header, engine), header, "number of samples 10000001", "0 to 10000000")
    header = _copy_record(source, tmp_path / "b", _record_line(f"{RECORD} 12 500 -1"))
    _assert_clean(_error(header, engine), header, "number of samples -1")
    header = _copy_record(source, tmp_path / "c", _record_line(f"{RECORD} 65 500 5000"))
    _assert_clean(_error(header, engine), header, "number of signals 65", "0 to 64")
    header = _copy_record(source, tmp_path / "d", lambda text: text.replace(" 16 1000.0", " 16x1000 1000.0", 1))
    _assert_clean(_error(header, engine), header, "samples per frame 1000")
    # The ceiling is a module constant.
    monkeypatch.setattr(wfdb_io, "MAX_SAMPLES_PER_SIGNAL", 4000)
    _assert_clean(_error(source.with_suffix(".hea"), engine), source.with_suffix(".hea"), "number of samples 5000")


def test_samples_inferred_from_a_huge_file_hit_the_ceiling(tmp_path, source, monkeypatch):
    header = _copy_record(source, tmp_path / "rec", _record_line(f"{RECORD} 12 500"))
    monkeypatch.setattr(wfdb_io, "MAX_SAMPLES_PER_SIGNAL", 4000)
    with pytest.raises(InputError, match="holds 5000 samples per signal; the limit is 4000"):
        read_wfdb(header)


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("edit,phrase", [
    (_all_signal_files("/etc/passwd"), "not a plain file name"),
    (_all_signal_files("../../etc/passwd"), "not a plain file name"),
    (_record_line(f"{RECORD} 12 nan 5000"), "not a plausible rate"),
    (lambda text: text.replace("1000.0(0)/mV", "-1000.0(0)/mV", 1), "is negative"),
    (_record_line(f"{RECORD} 12 500 6000"), "truncated signal file"),
    (_record_line(f"{RECORD} 99 500 5000"), "number of signals 99"),
])
def test_inspect_hostile_header_exit_2_one_line(tmp_path, source, capsys, edit, phrase):
    header = _copy_record(source, tmp_path / "rec", edit)
    assert main(["inspect", str(header), "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and header.name in err and phrase in err, err
    assert "Traceback" not in err and "root:" not in captured.out + err


def test_inspect_symlink_out_of_folder_exit_2(tmp_path, source, capsys):
    header = _copy_record(source, tmp_path / "rec", with_data=False)
    (tmp_path / "rec" / f"{RECORD}.dat").symlink_to("/etc/passwd")
    assert main(["inspect", str(header)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is missing" in err and "/etc/passwd" not in err
    problem = err.split(header.name, 1)[1]
    assert str(os.path.getsize("/etc/passwd")) not in problem and "Traceback" not in err


# --------------------------------------------------------------------------- UK Biobank XML


def _xml_with(tmp_path: Path, ukb_xml_path: Path, old: str, new: str, name: str = "hostile.xml") -> Path:
    text = ukb_xml_path.read_bytes().decode("latin-1")
    strip = text.index("<StripData>")
    position = text.index(old, strip)
    path = tmp_path / name
    path.write_bytes((text[:position] + new + text[position + len(old):]).encode("latin-1"))
    return path


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-INF", "0", "-500", "1e12"])
def test_ukb_xml_sampling_rate_must_be_plausible(tmp_path, ukb_xml_path, value, capsys):
    path = _xml_with(tmp_path, ukb_xml_path, '<SampleRate units="Hz">500</SampleRate>',
                     f'<SampleRate units="Hz">{value}</SampleRate>')
    with pytest.raises(InputError) as info:
        read_ecg(path)
    assert "hostile.xml" in str(info.value) and "StripData/SampleRate" in str(info.value)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "StripData/SampleRate" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["NaN", "inf", "0", "-5"])
def test_ukb_xml_resolution_must_be_finite_positive(tmp_path, ukb_xml_path, value):
    path = _xml_with(tmp_path, ukb_xml_path, '<Resolution units="uVperLsb">5</Resolution>',
                     f'<Resolution units="uVperLsb">{value}</Resolution>')
    with pytest.raises(InputError, match=r"hostile\.xml: StripData/Resolution must be a finite positive"):
        read_ecg(path)


@pytest.mark.parametrize("tag,value", [("NumberOfLeads", "NaN"), ("NumberOfLeads", "inf"), ("NumberOfLeads", "-12"),
                                       ("ChannelSampleCountTotal", "NaN"), ("ChannelSampleCountTotal", "4999.5")])
def test_ukb_xml_counts_must_be_whole(tmp_path, ukb_xml_path, tag, value):
    original = {"NumberOfLeads": "12", "ChannelSampleCountTotal": "5000"}[tag]
    path = _xml_with(tmp_path, ukb_xml_path, f"<{tag}>{original}</{tag}>", f"<{tag}>{value}</{tag}>")
    with pytest.raises(InputError, match=rf"hostile\.xml: StripData/{tag} must be a whole non-negative number"):
        read_ecg(path)
