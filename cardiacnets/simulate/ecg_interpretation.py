"""The simulated ECG device's interpretation: 12SL-style statements from the median beat and its measurements.

`lead_features` measures Q, R, S, ST and T in every lead of the median beat;
`interpret` reads rhythm, ectopy, AV and bundle branch blocks, axis deviation,
atrial enlargement, hypertrophy, low voltage, infarct Q waves, ST-T changes
and a long QT from them, with simplified GE 12SL / Minnesota-code criteria.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.simulate.ecg_device import MEDIAN_SAMPLING_RATE_HZ

_LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}
_LEAD_GROUPS = {
    "inferior": ("II", "III", "aVF"),
    "anterior": ("V1", "V2", "V3", "V4"),
    "lateral": ("I", "aVL", "V5", "V6"),
}


@dataclass
class LeadFeatures:
    """Per-lead features of a median beat (mV and ms, relative to the PR baseline).

    Attributes:
        r_mV, s_mV: largest positive / negative QRS deflection (both >= 0).
        q_mV, q_ms: depth and width of an initial negative deflection (0 if none).
        st_mV: level 60 ms after the J point.
        t_mV: level at the T peak time (signed).
        qrs_pp_mV: QRS peak-to-peak amplitude.
    """

    r_mV: np.ndarray
    s_mV: np.ndarray
    q_mV: np.ndarray
    q_ms: np.ndarray
    st_mV: np.ndarray
    t_mV: np.ndarray
    qrs_pp_mV: np.ndarray

    def of(self, name: str) -> dict[str, float]:
        """The features of one lead by standard name."""
        i = STANDARD_LEADS.index(name)
        return {f.name: float(getattr(self, f.name)[i]) for f in fields(self)}


def lead_features(median_mV: np.ndarray, measurements: dict[str, float]) -> LeadFeatures:
    """Measure Q, R, S, ST and T in every lead of a 500 Hz median beat.

    Args:
        median_mV: (12, 600) median beat in `STANDARD_LEADS` order.
        measurements: needs ``q_onset_ms``, ``q_offset_ms``, ``t_offset_ms`` (median frame).

    Returns:
        The `LeadFeatures` of the 12 leads.
    """
    fs = MEDIAN_SAMPLING_RATE_HZ
    to_index = lambda ms: int(round(ms / 1000.0 * fs))  # noqa: E731
    q_on, q_off = to_index(measurements["q_onset_ms"]), to_index(measurements["q_offset_ms"])
    t_off = min(to_index(measurements["t_offset_ms"]), median_mV.shape[1] - 1)
    baseline = median_mV[:, q_on - 5:q_on - 2].mean(axis=1, keepdims=True)  # PR segment level
    x = median_mV - baseline
    qrs = x[:, q_on:q_off + 1]
    r_mV = np.maximum(qrs.max(axis=1), 0.0)
    s_mV = np.maximum(-qrs.min(axis=1), 0.0)

    # Initial deflection: first excursion beyond 20 uV decides its sign; a negative
    # one is a Q wave lasting until the lead crosses back above the baseline.
    q_mV = np.zeros(len(x))
    q_ms = np.zeros(len(x))
    for lead, trace in enumerate(qrs):
        moved = np.flatnonzero(np.abs(trace) > 0.02)
        if moved.size == 0 or trace[moved[0]] > 0:
            continue
        back = np.flatnonzero(trace[moved[0]:] >= 0.0)
        end = moved[0] + (back[0] if back.size else len(trace) - moved[0])
        q_mV[lead] = -trace[:end].min()
        q_ms[lead] = end / fs * 1000.0
    j60 = min(q_off + to_index(60.0), t_off)
    st_mV = x[:, j60]
    # T peak: where the spatial T magnitude is largest between J+60 ms and T end.
    t_window = x[:, j60:t_off + 1]
    t_peak = int(np.argmax(np.sqrt((t_window ** 2).sum(axis=0))))
    return LeadFeatures(r_mV=r_mV, s_mV=s_mV, q_mV=q_mV, q_ms=q_ms, st_mV=st_mV,
                        t_mV=t_window[:, t_peak], qrs_pp_mV=r_mV + s_mV)


def interpret(median_mV: np.ndarray, measurements: dict[str, float], rhythm: dict | None = None) -> list[str]:
    """12SL-style interpretation statements from a median beat and its measurements.

    Criteria (simplified GE 12SL / Minnesota-code style):

    - rhythm: atrial fibrillation (with rapid ventricular response above 100 /min),
      AV dual-paced rhythm or electronic ventricular pacemaker (in atrial
      fibrillation), otherwise sinus by rate (< 60 bradycardia, > 100 tachycardia);
      premature ventricular / atrial complexes when the strip holds any;
      PR > 210 ms 1st degree block;
    - P >= 120 ms left, P in II >= 0.25 mV right atrial enlargement;
    - axis -45 to -90 with a QRS under 120 ms or with RBBB: left anterior fascicular
      block; otherwise < -30 left, > 90 right, < -90 right superior deviation;
    - QRS >= 120 ms: LBBB (V1 negative, I and V6 positive), RBBB (terminal R' in V1
      with a terminal S in I) or nonspecific block; 110-119 ms: incomplete RBBB or
      conduction delay;
    - Sokolov-Lyon >= 3.5 mV or R aVL > 1.1 mV: LVH; R V1 >= 0.7 mV and > S V1 with
      right axis: RVH; every limb lead < 0.5 mV peak-to-peak: low voltage;
    - Q >= 0.1 mV and (>= 30 ms or >= R/4) in two leads of a territory: infarct
      (not read when the QRS is wide, nor are ST-T changes);
    - ST >= 0.1 mV (J + 60 ms) in five leads other than aVR: ST elevation;
      T <= -0.1 mV in two leads of a group: T abnormality, with ST <= -0.1 mV in two:
      ST & T abnormality; every T in I, II, V3-V6 under 0.1 mV: nonspecific T change;
    - QTc (Bazett) >= 470 ms: prolonged QT.
    A paced rhythm is not read further (QRS and ST-T are the pacemaker's).

    Args:
        median_mV: (12, 600) median beat at 500 Hz.
        measurements: as returned in `SimulatedECG.measurements` (NaN where absent).
        rhythm: what the device's rhythm analysis found: ``atrial_fibrillation`` and
            ``paced`` (bool), ``pvc`` and ``pac`` (beats in the strip); None = sinus.

    Returns:
        Statements, rhythm first and "Normal ECG" / "Borderline ECG" / "Abnormal ECG" last.
    """

    rhythm = rhythm or {}
    f = lead_features(median_mV, measurements)
    af, paced = bool(rhythm.get("atrial_fibrillation")), bool(rhythm.get("paced"))
    statements, borderline, abnormal = _rhythm_statements(rhythm, measurements["ventricular_rate_bpm"])
    if paced:  # the QRS and ST-T are the pacemaker's: not read further
        statements += [s for s in borderline + abnormal if s != statements[0]]
        statements.append("Abnormal ECG")
        return statements
    borderline += _atrial_findings(median_mV, measurements, af)
    wide, axis = _conduction_findings(median_mV, measurements, f, borderline, abnormal)
    _ventricular_findings(f, measurements, wide, axis, borderline, abnormal)
    statements += [s for s in borderline + abnormal if s != statements[0]]
    statements.append("Abnormal ECG" if abnormal else "Borderline ECG" if len(statements) > 1 else "Normal ECG")
    return statements


def _rhythm_statements(rhythm: dict, rate: float) -> tuple[list[str], list[str], list[str]]:
    """The rhythm statement and ectopy: ``(statements, borderline, abnormal)``, the rhythm first in ``statements``."""
    statements: list[str] = []
    borderline: list[str] = []
    abnormal: list[str] = []
    af, paced = bool(rhythm.get("atrial_fibrillation")), bool(rhythm.get("paced"))
    if paced:
        statements.append("Electronic ventricular pacemaker" if af else "AV dual-paced rhythm")
        if af:
            abnormal.append("Atrial fibrillation")
        abnormal.append(statements[0])
    elif af:
        statements.append("Atrial fibrillation with rapid ventricular response" if rate > 100
                          else "Atrial fibrillation")
        abnormal.append(statements[0])
    else:
        statements.append("Sinus bradycardia" if rate < 60 else "Sinus tachycardia" if rate > 100
                          else "Normal sinus rhythm")
        if rate < 60 or rate > 100:
            borderline.append(statements[0])
    if rhythm.get("pvc", 0):
        borderline.append("with premature ventricular complexes")
    if rhythm.get("pac", 0):
        borderline.append("with premature atrial complexes")
    return statements, borderline, abnormal


def _atrial_findings(median_mV: np.ndarray, measurements: dict[str, float], af: bool) -> list[str]:
    """1st degree AV block, left and right atrial enlargement (borderline statements)."""
    borderline = []
    if measurements["pq_interval_ms"] > 210 and not af:
        borderline.append("with 1st degree A-V block")
    if measurements["p_duration_ms"] >= 120:
        borderline.append("Left atrial enlargement")
    fs = MEDIAN_SAMPLING_RATE_HZ
    if math.isfinite(measurements["p_onset_ms"]) and math.isfinite(measurements["p_offset_ms"]):
        p_on = int(round(measurements["p_onset_ms"] / 1000.0 * fs))
        p_off = int(round(measurements["p_offset_ms"] / 1000.0 * fs))
        p_ii = median_mV[_LEAD["II"], p_on:p_off + 1] - median_mV[_LEAD["II"], max(p_on - 5, 0)]
        if p_ii.size and p_ii.max() >= 0.25:
            borderline.append("Right atrial enlargement")
    return borderline


def _conduction_findings(median_mV: np.ndarray, measurements: dict[str, float], f: LeadFeatures,
                         borderline: list[str], abnormal: list[str]) -> tuple[bool, float]:
    """Axis deviation, fascicular and bundle branch blocks (appended to the lists).

    Returns:
        ``(wide, axis)``: whether the QRS lasts 120 ms or more, and the QRS axis (degrees).
    """
    idx = _LEAD
    qrs_ms = measurements["qrs_duration_ms"]
    wide = qrs_ms >= 120
    fs_ms = 1000.0 / MEDIAN_SAMPLING_RATE_HZ
    q_on = int(round(measurements["q_onset_ms"] / fs_ms))
    q_off = int(round(measurements["q_offset_ms"] / fs_ms))
    late = slice(q_on + int(0.6 * (q_off - q_on)), q_off + 1)
    base = median_mV[:, max(q_on - 5, 0):max(q_on - 2, 1)].mean(axis=1)
    rbbb_shape = bool((median_mV[idx["V1"], late] - base[idx["V1"]]).max(initial=0.0) >= 0.15
                      and (median_mV[idx["I"], late] - base[idx["I"]]).min(initial=0.0) <= -0.05)
    lbbb_shape = (f.s_mV[idx["V1"]] > f.r_mV[idx["V1"]] and f.r_mV[idx["I"]] > f.s_mV[idx["I"]]
                  and f.r_mV[idx["V6"]] > f.s_mV[idx["V6"]] and not rbbb_shape)
    axis = measurements["r_axis_deg"]
    lafb = -90.0 <= axis <= -45.0 and (not wide or rbbb_shape)
    if lafb:
        abnormal.append("Left anterior fascicular block")
    elif -90.0 <= axis < -30.0:
        borderline.append("Left axis deviation")
    elif axis > 90.0:
        borderline.append("Right axis deviation")
    elif axis < -90.0:
        abnormal.append("Right superior axis deviation")

    if wide:
        abnormal.append("Left bundle branch block" if lbbb_shape else "Right bundle branch block" if rbbb_shape
                        else "Nonspecific intraventricular block")
        if rbbb_shape and lafb:
            abnormal.append("Bifascicular block")
    elif qrs_ms >= 110:
        borderline.append("Incomplete right bundle branch block" if rbbb_shape
                          else "Nonspecific intraventricular conduction delay")
    return wide, axis


def _ventricular_findings(f: LeadFeatures, measurements: dict[str, float], wide: bool, axis: float,
                          borderline: list[str], abnormal: list[str]) -> None:
    """Low voltage, hypertrophy, infarct Q waves, ST-T changes and a long QT (appended to the lists).

    Q waves and ST-T changes are not read through a wide QRS (they are secondary to it).
    """
    idx = _LEAD
    limb = [idx[n] for n in STANDARD_LEADS[:6]]
    if np.all(f.qrs_pp_mV[limb] < 0.5):
        abnormal.append("Low voltage QRS")
    sokolov = measurements["sokolov_lvh_index_mV"]
    lvh = not wide and (sokolov >= 3.5 or f.r_mV[idx["aVL"]] > 1.1)
    rvh = (not wide and axis > 90.0 and f.r_mV[idx["V1"]] >= 0.7
           and f.r_mV[idx["V1"]] > f.s_mV[idx["V1"]])

    st_elevated = int(np.sum(np.delete(f.st_mV, idx["aVR"]) >= 0.1))
    repol_groups = []
    for group, leads in _LEAD_GROUPS.items():
        rows = [idx[n] for n in leads if n != "V1"]
        depressed = int(np.sum(f.st_mV[rows] <= -0.1))
        inverted = int(np.sum(f.t_mV[rows] <= -0.1))
        if inverted >= 2:
            repol_groups.append((group, depressed >= 2))
    t_flat = bool(np.all(np.abs(f.t_mV[[idx[n] for n in ("I", "II", "V3", "V4", "V5", "V6")]]) < 0.1))

    if lvh:
        abnormal.append("Left ventricular hypertrophy with repolarization abnormality"
                        if any(g == "lateral" for g, _ in repol_groups) else "Left ventricular hypertrophy")
    if rvh:
        abnormal.append("Right ventricular hypertrophy with repolarization abnormality"
                        if any(g == "anterior" for g, _ in repol_groups) else "Right ventricular hypertrophy")

    for group, leads in _LEAD_GROUPS.items():
        if wide:  # Q waves are not read through a bundle branch block
            break
        rows = [idx[n] for n in leads]
        pathological = (f.q_mV[rows] >= 0.1) & ((f.q_ms[rows] >= 30.0) | (f.q_mV[rows] >= 0.25 * f.r_mV[rows]))
        if int(pathological.sum()) >= 2:
            abnormal.append(f"{group.capitalize()} infarct, age undetermined")

    if not wide:
        if st_elevated >= 5:
            abnormal.append("ST elevation consider early repolarization, pericarditis, or injury")
        for group, with_st in repol_groups:
            if (group == "lateral" and lvh) or (group == "anterior" and rvh):
                continue
            abnormal.append(f"{'ST & T wave' if with_st else 'T wave'} abnormality, consider {group} ischemia")
        if t_flat and not repol_groups:
            borderline.append("Nonspecific T wave abnormality")
    if measurements["qtc_interval_ms"] >= 470:
        abnormal.append("Prolonged QT")
