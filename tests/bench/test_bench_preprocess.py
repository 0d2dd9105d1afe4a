"""``cardiacnets bench preprocess``: runs end to end on real files and reports the agreed keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cardiacnets.bench.preprocess import baseline_preprocess
from cardiacnets.cli import main
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.io.ecg import read_ecg

PIPELINE_KEYS = {"records_per_s", "ms_per_record", "processing_ms_per_record", "read_ms_per_record"}


def _check_summary(summary: dict, n_records: int) -> None:
    assert summary["records"] == n_records
    assert set(summary["ours"]) == PIPELINE_KEYS and set(summary["baseline"]) == PIPELINE_KEYS
    assert summary["reader"]["ms_per_record"] > 0
    for pipeline in ("ours", "baseline"):
        assert summary[pipeline]["records_per_s"] > 0
        p = summary[pipeline]
        assert p["ms_per_record"] > p["processing_ms_per_record"] > 0 and p["read_ms_per_record"] > 0
        assert p["ms_per_record"] == pytest.approx(p["read_ms_per_record"] + p["processing_ms_per_record"], abs=2e-3)
    proc_ratio = summary["baseline"]["processing_ms_per_record"] / summary["ours"]["processing_ms_per_record"]
    assert summary["processing_speedup"] == pytest.approx(proc_ratio, rel=0.05, abs=0.05)
    ratio = summary["baseline"]["ms_per_record"] / summary["ours"]["ms_per_record"]
    assert abs(summary["speedup"] - ratio) <= 0.02 * ratio + 0.01  # speedup = ours/baseline records per second


@pytest.mark.slow
def test_bench_preprocess_on_real_files(capsys, tmp_path, ukb_xml_path, ptbxl_dir):
    broken = tmp_path / "broken.xml"
    broken.write_bytes(ukb_xml_path.read_bytes()[:20000])
    inputs = [str(ukb_xml_path), str(ptbxl_dir / "records500/00000/00001_hr.hea"), str(broken)]
    output = tmp_path / "bench.json"
    status = main(["bench", "preprocess", "--json", "--output", str(output), "--inputs", *inputs, "--repeat", "1"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(output.read_text())
    assert result["benchmark"] == "preprocess" and "machine" in result
    assert result["repeat"] == 1 and result["inputs"]["source"] == "files"
    _check_summary(result, 2)
    assert set(result["per_format"]) == {"ukb_xml", "wfdb"}
    for summary in result["per_format"].values():
        _check_summary(summary, 1)
    assert result["config"]["sampling_rate_hz"] == 500.0
    # A bad record is skipped and listed with its reason, not fatal.
    assert [s["path"] for s in result["skipped"]] == [str(broken)]
    assert "malformed XML" in result["skipped"][0]["reason"]


@pytest.mark.slow
def test_bench_preprocess_on_simulated_files(capsys):
    status = main(["bench", "preprocess", "--json", "--n-synthetic", "2", "--repeat", "1"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"] == {"source": "simulated", "subjects": 2, "formats": ["ukb_xml", "wfdb"]}
    _check_summary(result, 4)
    assert set(result["per_format"]) == {"ukb_xml", "wfdb"} and result["skipped"] == []


def test_bench_preprocess_bad_inputs_exit_2(capsys, tmp_path):
    status = main(["bench", "preprocess", "--json", "--inputs", str(tmp_path / "nowhere")])
    assert status == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_baseline_matches_the_authors_recipe(ukb_xml_path):
    record = read_ecg(ukb_xml_path)
    out = baseline_preprocess(record, ECGConfig())
    assert out.shape == (12, 5000) and out.dtype == np.float32
    np.testing.assert_allclose(out.min(axis=1), -1.0, atol=1e-6)  # channel-wise min-max to [-1, 1]
    np.testing.assert_allclose(out.max(axis=1), 1.0, atol=1e-6)
    # The seasonal trend is gone: the scaled signal has no drift between its halves.
    halves = out.reshape(12, 2, 2500).mean(axis=2)
    assert np.abs(halves[:, 0] - halves[:, 1]).max() < 0.1
