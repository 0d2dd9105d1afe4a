"""The simulated ECG device: the median beat and the measurements a recorder reports, from the strip itself.

Like a real device, it works on the recorded strip only: the median beat and
every measurement (rate, intervals, axes, Sokolow-Lyon index, the median's
fiducials) come from the delineator (`cardiacnets.simulate.delineate`), so they
carry a device's measurement error instead of copying the latents.
"""

from __future__ import annotations

import math

import numpy as np

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.simulate.delineate import delineate, net_area_axis_deg
from cardiacnets.simulate.ecg_beats import BeatLobes, render_vcg
from cardiacnets.simulate.ecg_geometry import vcg_to_leads
from cardiacnets.simulate.ecg_params import ECGParams

MEDIAN_SAMPLING_RATE_HZ = 500.0
MEDIAN_N_SAMPLES = 600
MEDIAN_QRS_ONSET_MS = 400.0


def _rounded(value: float) -> float:
    """A measurement as a device reports it: a whole number, NaN where absent."""
    return float(round(value)) if math.isfinite(value) else math.nan


def device_measurements(signal_mV: np.ndarray, sampling_rate_hz: float, params: ECGParams, qrst: BeatLobes,
                        onsets_s: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Median beat and 12SL-style measurements of the recorded strip (NaN where a wave is absent).

    Falls back to a rendered beat with the model's fiducials when the strip has
    fewer than two detectable beats (very short strips).
    """
    try:
        found = delineate(signal_mV, sampling_rate_hz)
        median = found.median_mV
        fid = found.fiducials_ms
        m = found.intervals()
        count = len(found.beat_samples)
    except ValueError:
        onset = np.array([MEDIAN_QRS_ONSET_MS / 1000.0])
        median = vcg_to_leads(render_vcg(qrst, onset, np.ones(1), np.ones(1), MEDIAN_N_SAMPLES,
                                         MEDIAN_SAMPLING_RATE_HZ))
        fq = qrst.fiducials_s
        fid = {"p_onset": math.nan, "p_offset": math.nan, "q_onset": MEDIAN_QRS_ONSET_MS,
               "q_offset": MEDIAN_QRS_ONSET_MS + fq["q_offset"] * 1000.0,
               "t_offset": MEDIAN_QRS_ONSET_MS + fq["t_offset"] * 1000.0}
        rr_ms = float(np.mean(np.diff(onsets_s))) * 1000.0 if len(onsets_s) >= 2 else 60000.0 / params.heart_rate_bpm
        qt = fid["t_offset"] - fid["q_onset"]
        m = {"ventricular_rate_bpm": 60000.0 / rr_ms, "rr_interval_ms": rr_ms, "pq_interval_ms": math.nan,
             "p_duration_ms": math.nan, "qrs_duration_ms": fid["q_offset"] - fid["q_onset"], "qt_interval_ms": qt,
             "qtc_interval_ms": qt / math.sqrt(rr_ms / 1000.0), "p_axis_deg": math.nan,
             "r_axis_deg": net_area_axis_deg(median, fid["q_onset"], fid["q_offset"]),
             "t_axis_deg": net_area_axis_deg(median, fid["q_offset"], fid["t_offset"])}
        count = len(onsets_s)
    to_index = lambda ms: int(round(ms / 1000.0 * MEDIAN_SAMPLING_RATE_HZ))  # noqa: E731
    q_on, q_off = to_index(fid["q_onset"]), to_index(fid["q_offset"])
    chest = {name: median[STANDARD_LEADS.index(name)] for name in ("V1", "V5", "V6")}
    baseline = {k: v[max(q_on - 5, 0)] for k, v in chest.items()}
    s_v1 = max(baseline["V1"] - chest["V1"][q_on:q_off + 1].min(), 0.0)
    r_v56 = max(chest["V5"][q_on:q_off + 1].max() - baseline["V5"],
                chest["V6"][q_on:q_off + 1].max() - baseline["V6"], 0.0)
    rr_ms = m["rr_interval_ms"]
    p_found = math.isfinite(fid["p_onset"])
    measurements = {
        "ventricular_rate_bpm": _rounded(m["ventricular_rate_bpm"]),
        "pq_interval_ms": _rounded(m["pq_interval_ms"]),
        "p_duration_ms": _rounded(m["p_duration_ms"]),
        "qrs_duration_ms": _rounded(m["qrs_duration_ms"]),
        "qt_interval_ms": _rounded(m["qt_interval_ms"]),
        "qtc_interval_ms": _rounded(m["qtc_interval_ms"]),  # Bazett, as 12SL reports
        "rr_interval_ms": _rounded(rr_ms),
        "pp_interval_ms": _rounded(rr_ms) if p_found and not params.atrial_fibrillation else math.nan,
        "p_axis_deg": _rounded(m["p_axis_deg"]),
        "r_axis_deg": _rounded(m["r_axis_deg"]),
        "t_axis_deg": _rounded(m["t_axis_deg"]),
        "sokolov_lvh_index_mV": round(float(s_v1 + r_v56), 2),
        "qrs_count": float(count),
        "p_onset_ms": _rounded(fid["p_onset"]),
        "p_offset_ms": _rounded(fid["p_offset"]),
        "q_onset_ms": _rounded(fid["q_onset"]),
        "q_offset_ms": _rounded(fid["q_offset"]),
        "t_offset_ms": _rounded(fid["t_offset"]),
    }
    return median, measurements
