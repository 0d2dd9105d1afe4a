"""The command line: help, subcommands, `inspect` on every real file kind, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cardiacnets.cli import COMMANDS, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main([]) == 0  # no command: help, success


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _inspect_json(path, capsys, *extra):
    assert main(["inspect", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_ukb_xml(ukb_xml_path, capsys):
    d = _inspect_json(ukb_xml_path, capsys)
    assert d["modality"] == "ecg" and d["format"] == "ukb_xml"
    assert d["leads"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert d["sampling_rate_hz"] == 500 and d["duration_s"] == 10 and d["n_samples"] == 5000
    assert d["measurements"]["ventricular_rate_bpm"] == 75 and d["measurements"]["qrs_duration_ms"] == 76
    assert "Normal sinus rhythm" in d["interpretation"]
    assert isinstance(d["quality"], list)


def test_inspect_wfdb_ptbxl_and_ptbdb(ptbxl_dir, ptbdb_record, capsys):
    d = _inspect_json(ptbxl_dir / "records100" / "00000" / "00001_lr.hea", capsys)
    assert d["format"] == "wfdb" and d["sampling_rate_hz"] == 100 and d["n_samples"] == 1000
    d = _inspect_json(ptbxl_dir / "records500" / "00000" / "00001_hr", capsys)
    assert d["sampling_rate_hz"] == 500 and len(d["leads"]) == 12
    d = _inspect_json(ptbdb_record, capsys)
    assert d["sampling_rate_hz"] == 1000 and d["n_leads"] == 15 and d["duration_s"] == pytest.approx(38.4)
    assert {"aVR", "V6"} <= set(d["leads"])
    assert any(q["code"] == "unknown_lead" for q in d["quality"])  # the Frank leads vx, vy, vz


def test_inspect_npy(tmp_path, capsys):
    path = tmp_path / "ecg.npy"
    np.save(path, np.zeros((2, 2500), np.float32) + np.sin(np.linspace(0, 50, 2500))[None])
    d = _inspect_json(path, capsys, "--sampling-rate", "250", "--leads", "I,II")
    assert d["format"] == "npy" and d["leads"] == ["I", "II"] and d["duration_s"] == 10


def test_inspect_acdc(acdc_dir, capsys):
    d = _inspect_json(acdc_dir / "patient001_frame01.h5", capsys)
    assert d["modality"] == "cmr" and d["format"] == "acdc_h5" and d["n_frames"] == 1
    assert d["n_slices"] == d["shape"][2] and d["spacing_mm"] is None  # ACDC files do not store spacing


def test_inspect_human_output(ukb_xml_path, capsys):
    assert main(["inspect", str(ukb_xml_path)]) == 0
    out = capsys.readouterr().out
    assert "ECG (ukb_xml)" in out and "500 Hz" in out


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.xml", b"", "empty"),
        ("trunc.xml", b"<?xml version='1.0'?><CardiologyXML><StripData><WaveformData lead='I'>1,2", "XML"),
        ("notes.txt", b"hello", "not a supported"),
        ("scan.nii.gz", b"\x1f\x8b\x08\x00garbage", "scan.nii.gz"),
    ],
)
def test_inspect_bad_files_exit_2_with_one_clear_line(tmp_path, capsys, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["inspect", str(path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and problem in err
    assert "Traceback" not in err


def test_missing_file_and_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cardiacnets.cli", "inspect", str(tmp_path / "nope.xml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nope.xml: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_overrides_after_options_and_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "file.xml", "--json", "surplus"])
    assert info.value.code == 2
    assert "unrecognized arguments: surplus" in capsys.readouterr().err


def test_inspect_simulated_nifti_and_segmentation(tmp_path, capsys):
    from cardiacnets.simulate import write_cohort

    write_cohort(tmp_path / "c", 1, seed=0, workers=0, ceiling=False)
    folder = next((tmp_path / "c" / "cmr").iterdir())
    d = _inspect_json(folder / "sa.nii.gz", capsys)
    assert d["modality"] == "cmr" and d["format"] == "nifti" and d["view"] == "sa"
    assert d["n_slices"] == 10 and d["n_frames"] == 50 and d["spacing_mm"] == [1.8, 1.8, 10.0]
    assert len(d["orientation"]) == 3
    seg = _inspect_json(folder / "seg_sa.nii.gz", capsys)
    assert seg["is_segmentation"] and set(seg["labels"]) == {"0", "1", "2", "3"}
    la = _inspect_json(folder / "la_4ch.nii.gz", capsys)
    assert la["view"] == "la_4ch" and la["n_slices"] == 1
