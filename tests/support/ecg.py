"""ECG parameters set by hand and spectral helpers, shared by the simulator's tests."""

import numpy as np
import pytest

from cardiacnets.simulate.ecg_model import ECGParams
from cardiacnets.simulate.physiology import Physiology

#: A normal adult's ECG (no beat-to-beat variability: RR exactly 1 s).
NORMAL = ECGParams(
    heart_rate_bpm=60.0, rr_variability_frac=0.0, pr_interval_ms=160.0, p_duration_ms=100.0,
    p_axis_deg=50.0, p_amplitude_mV=0.12, la_fraction=0.45, pr_depression_mV=0.02,
    qrs_duration_ms=90.0, qrs_axis_deg=50.0, qrs_elevation_deg=20.0, qrs_amplitude_mV=1.2,
    septal_amplitude_mV=0.24, rv_amplitude_mV=0.1, lbbb=False, qt_interval_ms=400.0,
    t_axis_deg=40.0, t_elevation_deg=-25.0, t_amplitude_mV=0.4,
)


def make_phys(**changes) -> Physiology:
    """A healthy middle-aged man's physiology, with ``changes``."""
    base = dict(eid=1000001, age_years=55.0, is_male=True, height_cm=176.0, weight_kg=80.0,
                heart_rate_bpm=65.0, lvedv_ml=150.0, lvesv_ml=60.0, lv_mass_g=115.0,
                lv_wall_thickness_mm=9.0, rvedv_ml=160.0, rvesv_ml=70.0)
    base.update(changes)
    return Physiology(**base)


def band_share(signal_mV: np.ndarray, lo_hz: float, hi_hz: float, fs: float = 500.0) -> float:
    """Median over the independent leads of the share of power in [lo, hi) Hz (as the benchmark)."""
    independent = signal_mV[[0, 1, 6, 7, 8, 9, 10, 11]].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(independent - independent.mean(axis=1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(signal_mV.shape[1], 1.0 / fs)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    return float(np.median(spectrum[:, band].sum(axis=1) / spectrum.sum(axis=1)))


def assert_strip_matches(signal_mV: np.ndarray, reference: tuple) -> None:
    """A strip equals a recorded one: (sum of |x|, sum of x², x of leads II, V1, V5 at samples 250, 1234, 4321)."""
    abs_sum, square_sum, samples = reference
    assert np.abs(signal_mV).sum() == pytest.approx(abs_sum, rel=1e-9)
    assert (signal_mV ** 2).sum() == pytest.approx(square_sum, rel=1e-9)
    np.testing.assert_allclose(signal_mV[[1, 6, 10], [250, 1234, 4321]], samples, rtol=0, atol=1e-7)
