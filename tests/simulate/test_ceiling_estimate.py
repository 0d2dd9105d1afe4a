"""The simulator ceiling estimate: a physiology-only sample and the boosted cross-validated R²."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cardiacnets.cli import main
from cardiacnets.errors import InputError
from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate.ceiling_estimate import (
    PHYSIOLOGY_TARGETS,
    estimate_ceiling,
    physiology_sample,
    r2_with_ci,
)
from cardiacnets.simulate.cohort import simulate_ecg


@pytest.fixture(scope="module")
def sample():
    return physiology_sample(200, seed=3)


def test_sample_draws_the_same_subjects_as_synth(sample):
    config = SynthConfig()
    for i in (0, 7, 199):
        phys, params, _ = simulate_ecg(i, 3, config)
        row = sample.iloc[i]
        assert row["eid"] == phys.eid
        assert row["lvedv_ml"] == pytest.approx(phys.lvedv_ml)
        assert row["lv_mass_g"] == pytest.approx(phys.lv_mass_g)
        for name, value in params.as_dict().items():
            assert row[f"ecg_{name}"] == pytest.approx(float(value)), name


def test_measurement_sample_keeps_the_xml_numbers_and_is_scored():
    config = SynthConfig()
    frame = physiology_sample(60, seed=3, config=config, measurements=True)
    _, _, ecg = simulate_ecg(5, 3, config)
    assert frame.loc[5, "device_qrs_duration_ms"] == ecg.measurements["qrs_duration_ms"]
    assert frame.loc[5, "device_sokolov_lvh_index_mV"] == ecg.measurements["sokolov_lvh_index_mV"]
    result = estimate_ceiling(frame, n_boot=20, curve=(), ridge=False)
    block = result["from_measurements_with_demographics"]
    assert set(block) == set(PHYSIOLOGY_TARGETS) and -1.0 < block["lvm_g"]["value"] <= 1.0
    assert result["seconds"]["measurements"] >= 0
    assert estimate_ceiling(frame.drop(columns=[c for c in frame if c.startswith("device_")]), n_boot=0, curve=(),
                            ridge=False)["from_measurements_with_demographics"] is None


def test_r2_with_ci_against_hand_values():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert r2_with_ci(y, y.copy(), n_boot=0)[0]["value"] == pytest.approx(1.0)
    assert r2_with_ci(y, np.full_like(y, 2.5), n_boot=0)[0] == {"value": pytest.approx(0.0), "low": None,
                                                                "high": None}
    # Off by one everywhere: SSE 4, SST 5 -> R² 0.2.
    assert r2_with_ci(y, y + 1.0, n_boot=0)[0]["value"] == pytest.approx(0.2)
    big = np.linspace(0.0, 1.0, 400)[:, None]
    noisy = big + np.random.default_rng(0).normal(0.0, 0.1, big.shape)
    result = r2_with_ci(big, noisy, n_boot=300)[0]
    assert result["low"] < result["value"] < result["high"] and result["high"] - result["low"] < 0.1


def test_estimate_finds_a_planted_function_and_no_signal_in_noise(sample):
    frame = sample.copy()
    amplitude = frame["ecg_qrs_amplitude_mV"].to_numpy()
    # LVEDV becomes an exact function of one latent, LVEF pure noise.
    frame["lvedv_ml"] = 100.0 + 30.0 * (amplitude - amplitude.mean()) / amplitude.std()
    frame["lvef_pct"] = np.random.default_rng(0).normal(60.0, 5.0, len(frame))
    result = estimate_ceiling(frame, n_boot=100, curve=(), ridge=True)
    assert result["n"] == 200 and set(result["estimate"]) == set(PHYSIOLOGY_TARGETS)
    lvedv, lvef = result["estimate"]["lvedv_ml"], result["estimate"]["lvef_pct"]
    assert lvedv["value"] > 0.8 and lvedv["low"] <= lvedv["value"] <= lvedv["high"]
    assert lvef["value"] < 0.05
    assert result["ridge_quadratic"]["lvedv_ml"] > 0.95  # linear in one latent: the ridge finds it exactly
    assert result["ridge_quadratic"]["lvef_pct"] < 0.05


def test_estimate_errors_name_the_problem(sample):
    with pytest.raises(InputError, match="missing columns.*lvedv_ml"):
        estimate_ceiling(sample.drop(columns=["lvedv_ml"]))
    with pytest.raises(InputError, match="at least 50 subjects"):
        estimate_ceiling(sample.iloc[:40])


def test_bench_ceiling_json(capsys):
    status = main(["bench", "ceiling", "--json", "--n", "120", "--n-boot", "20", "--curve", "60", "--no-ridge",
                   "--no-measurements"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "ceiling" and result["n"] == 120 and result["ridge_quadratic"] is None
    assert result["from_measurements_with_demographics"] is None
    assert -1.0 < result["estimate"]["lvm_g"]["value"] <= 1.0
    assert set(result["curve"]) == {"60", "120"} and result["seconds"]["total"] > 0
    assert main(["bench", "ceiling", "--n", "10"]) == 2
    assert "--n must be at least 50" in capsys.readouterr().err
