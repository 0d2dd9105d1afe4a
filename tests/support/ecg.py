"""ECG parameters set by hand, shared by the simulator's tests."""

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
