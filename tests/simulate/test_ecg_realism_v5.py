"""The ECG simulator's version 5: version 4 kept exactly at neutral settings, then the lead gains and the recorder."""

from __future__ import annotations

import numpy as np
import pytest

from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate.cohort import simulate_ecg
from cardiacnets.simulate.ecg_params import ECG_V4, ECG_V5, ecg_variety
from support.simulate import SMALL_CMR, render_subject, sha256_of

NEUTRAL_V5 = {**{f"chest_gain_V{k}": 1.0 for k in range(1, 7)}, "limb_lead_gain": 1.0,
              "device_lowpass_hz": (150.0, 150.0), "qrs_lobe_width": 1.0, "p_amplitude_factor": 1.0,
              "terminal_lobe_share": 1.0}


@pytest.fixture
def neutral_v5(monkeypatch):
    """`ECG_V5` set to version 4's settings and neutral gains and recorder."""
    for key, value in {**ECG_V4, **NEUTRAL_V5}.items():
        monkeypatch.setitem(ECG_V5, key, value)
    return ECG_V5


def test_version_4_draws_exactly_what_the_reference_bundle_0_1_5_was_trained_on():
    # Digests at commit 2cf965f (cardiacnets-reference-0.1.5, built on version 4), before version 5 existed; the
    # median beat at 1e-6 mV (BLAS kernels differ by CPU in the last bits, see test_ecg_realism_v4).
    expected = {0: ("e3c47cafe298156791934c8db61b81923765306ba2c2638359ef73f2b50c17f9",
                    "39e924291f5b83f50b31a19bd1640bfb0597521baa92165409e48795d28d5cdb"),
                11: ("5ac9b18676cf85891c882c6b0941ebcbbc8d533aa31ed4f633c09cec4efb313f",
                     "abf0ab9a0d42bfca9e12203900e1d2722ea1298ac18482a94c679ba96d71e3cf")}
    for index, (signal, median) in expected.items():
        _, _, ecg = simulate_ecg(index, 7, SynthConfig(version=4))
        assert sha256_of(ecg.signal_mV) == signal
        assert sha256_of(np.round(ecg.median_mV.astype(np.float64), 6)) == median


def test_version_5_tables():
    assert ecg_variety(4) is ECG_V4 and ecg_variety(5) is ECG_V5
    assert set(ECG_V5) == set(ECG_V4) | set(NEUTRAL_V5)


def test_version_5_at_neutral_settings_draws_exactly_version_4(neutral_v5):
    for index in range(3):
        phys_4, params_4, ecg_4 = simulate_ecg(index, 7, SynthConfig(version=4))
        phys_5, params_5, ecg_5 = simulate_ecg(index, 7, SynthConfig(version=5))
        assert phys_4 == phys_5 and params_4 == params_5
        np.testing.assert_array_equal(ecg_4.signal_mV, ecg_5.signal_mV)


@pytest.mark.parametrize("old, new", [(3, 4), (4, 5)])
def test_a_new_version_keeps_the_physiology_and_changes_the_ecg(old, new):
    for index in range(3):
        phys_old, _, ecg_old = simulate_ecg(index, 7, SynthConfig(version=old))
        phys_new, _, ecg_new = simulate_ecg(index, 7, SynthConfig(version=new))
        assert phys_old == phys_new  # the ground truth is drawn from its own generator
        assert not np.array_equal(ecg_old.signal_mV, ecg_new.signal_mV)


def test_chest_lead_gain_scales_that_lead_only(neutral_v5, monkeypatch):
    config = SynthConfig(version=5, ecg_noise=False)
    _, _, before = simulate_ecg(2, 3, config)
    monkeypatch.setitem(ECG_V5, "chest_gain_V2", 1.5)
    monkeypatch.setitem(ECG_V5, "limb_lead_gain", 0.8)
    _, _, after = simulate_ecg(2, 3, config)
    v2 = 7  # standard order: I II III aVR aVL aVF V1 V2 ...
    np.testing.assert_allclose(after.signal_mV[v2], 1.5 * before.signal_mV[v2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.signal_mV[:6], 0.8 * before.signal_mV[:6], rtol=1e-5, atol=1e-6)
    others = [6, 8, 9, 10, 11]
    np.testing.assert_array_equal(after.signal_mV[others], before.signal_mV[others])


def test_a_lower_recorder_low_pass_removes_high_frequencies(neutral_v5, monkeypatch):
    config = SynthConfig(version=5, ecg_noise=False)
    _, _, wide = simulate_ecg(1, 3, config)
    monkeypatch.setitem(ECG_V5, "device_lowpass_hz", (40.0, 40.0))
    _, _, narrow = simulate_ecg(1, 3, config)

    def high_share(signal):
        spectrum = np.abs(np.fft.rfft(signal[1].astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(signal.shape[1], 1 / 500.0)
        return spectrum[freqs > 60.0].sum() / spectrum.sum()

    assert high_share(narrow.signal_mV) < 0.5 * high_share(wide.signal_mV)
    # A first-order filter barely touches the low frequencies: the R wave keeps most of its height.
    assert np.abs(narrow.signal_mV[1]).max() > 0.8 * np.abs(wide.signal_mV[1]).max()


def test_version_5_draws_version_4s_cines():
    v4 = render_subject(SynthConfig(version=4, **SMALL_CMR), index=2)
    v5 = render_subject(SynthConfig(version=5, **SMALL_CMR), index=2)
    for name in ("sa", "seg_sa", "la_4ch"):
        np.testing.assert_array_equal(getattr(v4, name).data, getattr(v5, name).data)
