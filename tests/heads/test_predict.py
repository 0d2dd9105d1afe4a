"""Tests of ``cardiacnets predict`` / `predict_record` on the real ECG samples (UK Biobank XML, PTB-XL WFDB).

The model is a tiny `HeadsModel` saved with the calibration and provenance the heads task writes (demo
ECG preprocessing: 250 Hz, 10 s), so no training is needed; its outputs are checked against a direct
forward pass of the standardised record.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiacnets.cli import main
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.heads.model import HeadsModel
from cardiacnets.heads.predict import format_prediction, predict_record

from support.datasets import DEMO_ECG
from support.datasets import save_tiny_heads_model as save_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    save_model(run / "model")
    return run


def direct_prediction(model_dir, ecg_path, leads=None):
    from cardiacnets.config import from_dict
    from cardiacnets.ecg.config import ECGConfig
    from cardiacnets.ecg.standardize import standardize_ecg
    from cardiacnets.io.ecg import read_ecg

    model = HeadsModel.from_pretrained(model_dir / "model").eval()
    std = standardize_ecg(read_ecg(ecg_path), from_dict(ECGConfig, DEMO_ECG))
    batch = {"ecg": torch.from_numpy(std.signal)[None], "ecg_lead_mask": torch.from_numpy(std.lead_mask)[None]}
    return {k: v[0].numpy() for k, v in model.predict(batch, leads).items()}


def test_predict_ukb_xml(model_dir, ukb_xml_path):
    result = predict_record(model_dir, ukb_xml_path)
    expected = direct_prediction(model_dir, ukb_xml_path)
    assert result["ecg"]["format"] == "ukb_xml" and result["ecg"]["sampling_rate_hz"] == 500.0
    assert len(result["ecg"]["leads_used"]) == 12 and result["quality"]["usable"]
    assert result["ecg"]["device_measurements"]  # the XML carries the device's measurements
    lvedv = result["indices"]["lvedv_ml"]
    assert lvedv["unit"] == "ml" and lvedv["description"] == "LV end-diastolic volume"
    assert lvedv["value"] == pytest.approx(float(expected["regression"][0]), rel=1e-5)
    assert lvedv["interval"]["low"] == pytest.approx(lvedv["value"] - 40.0)
    assert lvedv["interval"]["high"] == pytest.approx(lvedv["value"] + 40.0) and lvedv["interval"]["coverage"] == 0.95
    assert result["indices"]["lvef_pct"]["interval"] is None  # too few validation subjects for an interval
    hf = result["screening"]["heart_failure"]
    assert hf["probability"] == pytest.approx(float(expected["binary"][0]), rel=1e-5)
    assert hf["threshold"] == 0.2 and hf["positive"] == (hf["probability"] >= 0.2)
    assert result["screening"]["cardiomyopathy"]["positive"] is None  # no threshold stored
    subtype = result["cardiomyopathy_subtype"]
    assert sum(subtype["probabilities"].values()) == pytest.approx(1.0)
    assert subtype["most_likely"] == max(subtype["probabilities"], key=subtype["probabilities"].get)
    assert result["model"]["mode"] == "finetune" and result["model"]["calibration"]["split"] == "val"
    json.dumps(result)  # serialisable
    text = format_prediction(result)
    assert "lvedv_ml" in text and "heart_failure" in text and "quality: no findings" in text


def test_predict_ptbxl_record_with_lead_subset(model_dir, ptbxl_dir):
    record = ptbxl_dir / "records500" / "00000" / "00001_hr.hea"
    result = predict_record(model_dir, record, leads="I")
    expected = direct_prediction(model_dir, record, leads="I")
    assert result["ecg"]["format"] == "wfdb" and result["ecg"]["leads_used"] == ["I"]
    assert result["indices"]["lvef_pct"]["value"] == pytest.approx(float(expected["regression"][1]), rel=1e-5)
    assert any("calibrated on the model's own input" in note for note in result["notes"])
    full = predict_record(model_dir, record)
    assert full["indices"]["lvef_pct"]["value"] != result["indices"]["lvef_pct"]["value"]


def test_lead_model_and_film_model(tmp_path, ukb_xml_path):
    lead_ii = save_model(tmp_path / "lead_ii", leads="II")
    result = predict_record(lead_ii, ukb_xml_path)
    assert result["ecg"]["leads_used"] == ["II"] and result["model"]["leads"] == "II"
    with pytest.raises(InputError, match="none of the leads the model is shown"):
        predict_record(lead_ii, ukb_xml_path, leads="I")
    film = save_model(tmp_path / "film", film=True)
    result = predict_record(film, ukb_xml_path)
    assert any("training mean was used" in note for note in result["notes"])


def test_bad_inputs(model_dir, tmp_path, ukb_xml_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<CardiologyXML><StripData>")
    with pytest.raises(InputError, match="broken.xml"):
        predict_record(model_dir, broken)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((12, 5000), np.float32))
    with pytest.raises(InputError):
        predict_record(model_dir, flat)  # a .npy needs its rate and leads
    with pytest.raises(ConfigError, match="unknown lead 'V7'"):
        predict_record(model_dir, ukb_xml_path, leads="I,V7")
    no_provenance = save_model(tmp_path / "bare", provenance={})
    with pytest.raises(InputError, match="records no ECG preprocessing"):
        predict_record(no_provenance, ukb_xml_path)
    with pytest.raises(InputError, match="no such training run"):
        predict_record(tmp_path / "nowhere", ukb_xml_path)


def test_predict_cli(model_dir, ukb_xml_path, tmp_path, capsys):
    assert main(["predict", "--ecg", str(ukb_xml_path), "--model", str(model_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"ecg", "quality", "indices", "screening", "cardiomyopathy_subtype", "model", "notes"}
    assert main(["predict", "--ecg", str(ukb_xml_path), "--model", str(model_dir), "--leads", "limb"]) == 0
    out = capsys.readouterr().out
    assert "leads used I,II,III,aVR,aVL,aVF" in out and "95% prediction interval" in out
    missing = tmp_path / "missing.xml"
    assert main(["predict", "--ecg", str(missing), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.xml" in err[0]
