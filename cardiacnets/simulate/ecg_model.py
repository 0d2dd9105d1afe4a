"""The simulator's ECG: latent physiology -> cardiac dipole -> 12-lead ECG.

A subject's `Physiology` is first mapped to `ECGParams`, the ECG-visible
latents (rate, intervals, axes, the QRS/T/ST/Q vectors, voltage), by
`ecg_parameters`; `synthesize_ecg` then builds a time-varying heart vector (a
vectorcardiogram in the Frank X/Y/Z frame, in mV) as a sum of smooth lobes
(P as right- and left-atrial lobes, atrial repolarisation, septal, main and
terminal QRS lobes, an infarct Q lobe, an ST plateau and an asymmetric T wave),
repeats it at the beat times with respiratory and beat-to-beat variability,
projects it onto I, II and V1-V6 with the Dower transform (Dower, Machado &
Osborne, Clin Cardiol 1980; the table whose pseudo-inverse Edenbrandt & Pahlm,
J Electrocardiol 1988, named the "inverse Dower" matrix) and derives III, aVR, aVL and
aVF by Einthoven/Goldberger so the leads are exactly consistent. It also returns
a clean 1.2 s median beat, the interval/axis measurements a GE 12SL device would
report and 12SL-style interpretation statements computed from that median beat.

Partial observability (what the ECG can tell about the CMR, and how well):

==========================  ===================================================  ==========
CMR index                   ECG carrier in this model                            strength
==========================  ===================================================  ==========
heart rate                  RR intervals (same rate during ECG and cine)          exact
LV mass, wall thickness     QRS dipole = mass x thorax factor (log-sd 0.2) x      moderate
                            habitus (BMI, sex) x effusion; HCM/LVH strain T/ST
LVEDV, LVESV                QRS duration (+0.3 ms per ml/m2 above 80), LBBB in    weak-moderate
                            DCM (35 %) / HF (25 %); P widening with LA volume
                            (+0.6 ms per ml/m2 above 35)
LVEF                        indirect only: LBBB, Q waves, tachycardia of HF       weak
RVEDV, RVEF                 late RV vector (0.012 mV per ml/m2 above 90, PH       moderate when
                            +0.5 mV) -> right axis, tall R in V1; T inversion     dilated, weak
                            V1-V3 in PH (RV strain)                               in normal range
infarct territory/segments  Q waves in the matching leads (seen in 85 % of        strong when
                            anterior, 75 % inferior, 50 % lateral infarcts);      visible
                            depth grows with the number of akinetic segments
pericardial effusion        low voltage of every wave, alternans > 15 mm;          moderate
                            confounded by BMI and the thorax factor
pericarditis, myocarditis   diffuse ST elevation + PR depression; nonspecific     moderate
                            ST-T change (no CMR volume signal)
==========================  ===================================================  ==========

The hidden factors (``thorax_factor``, ``attenuation_factor``,
``source_dipole_mV``) are kept in `ECGParams` for analysis but are not in
`ECG_VISIBLE_LATENTS`: only their product reaches the signal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
from scipy import signal as sp_signal

from cardiacnets.ecg.leads import STANDARD_LEADS, derive_limb_leads
from cardiacnets.ecg.record import ECGRecord
from cardiacnets.simulate.physiology import Physiology

# Dower transform (Dower, Machado & Osborne 1980; Edenbrandt & Pahlm 1988):
# lead = X*a + Y*b + Z*c, Frank axes X to the left, Y to the feet, Z to the back.
DOWER_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
DOWER_MATRIX = np.array(
    [
        [0.632, -0.235, 0.059],   # I
        [0.235, 1.066, -0.132],   # II
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],   # V2
        [0.882, 0.098, -1.277],   # V3
        [1.213, 0.127, -0.601],   # V4
        [1.125, 0.127, -0.086],   # V5
        [0.831, 0.076, 0.230],    # V6
    ]
)
DOWER_MATRIX.flags.writeable = False

# Wave directions are given as (frontal axis, elevation) in the ECG's own frame:
# unit vector (cos e cos a, cos e sin a, sin e) whose first component is what lead I
# sees, second what aVF * 2/sqrt(3) sees (the hexaxial convention devices use for
# the axis) and third the Frank Z (posterior) component. In this frame the axis a
# device measures from leads I and aVF equals the latent axis exactly.
_DISPLAY_FROM_FRANK = np.stack([
    DOWER_MATRIX[0],
    (2.0 / math.sqrt(3.0)) * (DOWER_MATRIX[1] - DOWER_MATRIX[0] / 2.0),
    np.array([0.0, 0.0, 1.0]),
])
FRANK_FROM_DISPLAY = np.linalg.inv(_DISPLAY_FROM_FRANK)
FRANK_FROM_DISPLAY.flags.writeable = False

MEDIAN_SAMPLING_RATE_HZ = 500.0
MEDIAN_N_SAMPLES = 600
MEDIAN_QRS_ONSET_MS = 400.0

# Noise bounds (per independent lead I, II, V1-V6; the derived limb leads are
# combinations of I and II, so at most twice these, in III = II - I).
BASELINE_WANDER_MAX_MV = 0.3   # peak, sum of sinusoids below 0.5 Hz
MAINS_MAX_MV = 0.02            # peak amplitude of the mains sinusoid
EMG_RMS_MAX_MV = 0.02          # RMS of band-limited (20-100 Hz) muscle noise

_INFARCT_Q_DIRECTIONS = {  # (axis_deg, elevation_deg) pointing away from the territory
    "inferior": (-80.0, 0.0),    # superior (Frank -Y): Q in II, III, aVF
    "anterior": (0.0, 90.0),     # posterior: Q in V1-V4
    "lateral": (170.0, -45.0),   # rightward, anterior: Q in I, aVL, V4-V6
}
_INFARCT_Q_VISIBLE_PROB = {"anterior": 0.85, "inferior": 0.75, "lateral": 0.5}


@dataclass
class ECGParams:
    """Everything the simulated ECG is generated from (units in the names).

    Directions are (frontal axis in degrees, hexaxial convention: 0 = lead I,
    +90 = aVF; elevation in degrees, + = posterior / away from V1-V2).

    Attributes:
        heart_rate_bpm: mean sinus rate.
        rr_variability_frac: beat-to-beat RR standard deviation as a fraction of RR.
        pr_interval_ms, p_duration_ms: P onset to QRS onset; P wave width.
        p_axis_deg, p_amplitude_mV: P vector direction and size.
        la_fraction: share of the P wave from the left atrium (P mitrale when high).
        pr_depression_mV: atrial repolarisation (Ta) amplitude, opposite the P vector.
        qrs_duration_ms: QRS width.
        qrs_axis_deg, qrs_elevation_deg, qrs_amplitude_mV: main QRS vector.
        septal_amplitude_mV: initial septal (left-to-right) vector size.
        rv_amplitude_mV: late right-ventricular (rightward, anterior) QRS vector; grows
            with RV dilation and pulmonary hypertension (right axis, tall R in V1).
        lbbb: left bundle branch block conduction (no septal q, broad notched R).
        qt_interval_ms: QRS onset to T end at the actual rate.
        t_axis_deg, t_elevation_deg, t_amplitude_mV: T vector (inversion = pointing away).
        st_axis_deg, st_elevation_deg, st_amplitude_mV: ST-segment injury vector (0 = none).
        q_axis_deg, q_elevation_deg, q_amplitude_mV, q_duration_ms: pathological Q
            (infarct) vector; amplitude 0 = none.
        qrs_alternans_frac: beat-to-beat alternation of QRS amplitude (large effusion).
        source_dipole_mV: QRS dipole before attenuation, proportional to LV mass (hidden;
            0 when the parameters were not derived from a `Physiology`).
        thorax_factor: random per-subject volume-conductor gain (hidden).
        attenuation_factor: body habitus x effusion attenuation, 1 = none (hidden).
    """

    heart_rate_bpm: float
    rr_variability_frac: float
    pr_interval_ms: float
    p_duration_ms: float
    p_axis_deg: float
    p_amplitude_mV: float
    la_fraction: float
    pr_depression_mV: float
    qrs_duration_ms: float
    qrs_axis_deg: float
    qrs_elevation_deg: float
    qrs_amplitude_mV: float
    septal_amplitude_mV: float
    rv_amplitude_mV: float
    lbbb: bool
    qt_interval_ms: float
    t_axis_deg: float
    t_elevation_deg: float
    t_amplitude_mV: float
    st_axis_deg: float = 0.0
    st_elevation_deg: float = 0.0
    st_amplitude_mV: float = 0.0
    q_axis_deg: float = 0.0
    q_elevation_deg: float = 0.0
    q_amplitude_mV: float = 0.0
    q_duration_ms: float = 0.0
    qrs_alternans_frac: float = 0.0
    source_dipole_mV: float = 0.0
    thorax_factor: float = 1.0
    attenuation_factor: float = 1.0

    def as_dict(self) -> dict:
        """All fields as a plain dict (floats and bools)."""
        return asdict(self)


_HIDDEN_FIELDS = ("source_dipole_mV", "thorax_factor", "attenuation_factor")
# The numeric latents (bools as 0/1) a model could recover from the ECG itself.
# Angles are circular: regress on their sine and cosine.
ECG_VISIBLE_LATENTS: tuple[str, ...] = tuple(
    f.name for f in fields(ECGParams) if f.name not in _HIDDEN_FIELDS
)


@dataclass
class SimulatedECG:
    """One simulated resting ECG.

    Attributes:
        signal_mV: (12, T) float32 strip in `STANDARD_LEADS` order.
        sampling_rate_hz: rate of ``signal_mV``.
        median_mV: (12, 600) float32 clean median beat at 500 Hz (1.2 s), QRS onset
            at 400 ms.
        measurements: device-style measurements (integers in the units of the keys;
            ``sokolov_lvh_index_mV`` in mV) and median-beat fiducials
            (``p_onset_ms`` ... ``t_offset_ms``, ms from the median's first sample).
        interpretation: 12SL-style statements, rhythm first, summary last.
        beat_times_ms: QRS onset of every beat inside the strip, ms from its start.
        lead_names: `STANDARD_LEADS`.
    """

    signal_mV: np.ndarray
    sampling_rate_hz: float
    median_mV: np.ndarray
    measurements: dict[str, float]
    interpretation: list[str]
    beat_times_ms: np.ndarray
    lead_names: tuple[str, ...] = STANDARD_LEADS

    def as_record(self, source: str = "") -> ECGRecord:
        """The same ECG as an `ECGRecord` (what a reader of the written file returns)."""
        return ECGRecord(
            signal_mV=self.signal_mV, lead_names=list(self.lead_names),
            sampling_rate_hz=self.sampling_rate_hz, source=source, format="simulated", units="mV",
            measurements=dict(self.measurements), interpretation=list(self.interpretation),
            median_mV=self.median_mV, median_lead_names=list(self.lead_names),
            metadata={"beat_times_ms": self.beat_times_ms.tolist()},
        )


# --------------------------------------------------------------------------- geometry

def vcg_to_leads(vcg_mV: np.ndarray) -> np.ndarray:
    """Project a Frank vectorcardiogram onto the 12 standard leads.

    I, II and V1-V6 come from the Dower transform; III, aVR, aVL and aVF from
    I and II by Einthoven/Goldberger, so the limb-lead identities hold exactly.

    Args:
        vcg_mV: (3, T) X, Y, Z heart vector in mV (X left, Y feet, Z back).

    Returns:
        (12, T) leads in `STANDARD_LEADS` order, same dtype as the input.
    """
    if vcg_mV.ndim != 2 or vcg_mV.shape[0] != 3:
        raise ValueError(f"vcg_mV must have shape (3, T), got {vcg_mV.shape}")
    independent = np.einsum("lk,kt->lt", DOWER_MATRIX.astype(vcg_mV.dtype), vcg_mV)  # (8, T)
    return _assemble_12(independent)


def _assemble_12(independent: np.ndarray) -> np.ndarray:
    """(8, T) I, II, V1-V6 -> (12, T) standard order with derived limb leads."""
    limb = derive_limb_leads(independent[0], independent[1])
    return np.stack([independent[0], independent[1], limb["III"], limb["aVR"], limb["aVL"],
                     limb["aVF"], *independent[2:]])


def direction_vector(axis_deg, elevation_deg) -> np.ndarray:
    """Frank-frame vector(s) for (frontal axis, elevation) directions of unit size.

    Args:
        axis_deg: frontal axis, hexaxial convention (0 = lead I, +90 = aVF); scalar or (L,).
        elevation_deg: + posterior, - anterior; same shape as ``axis_deg``.

    Returns:
        (3,) or (L, 3) Frank X, Y, Z components; projected by `vcg_to_leads`, a unit
        vector gives lead I = cos(e)cos(a) and aVF = cos(e)sin(a)*sqrt(3)/2.
    """
    a = np.deg2rad(np.asarray(axis_deg, dtype=float))
    e = np.deg2rad(np.asarray(elevation_deg, dtype=float))
    display = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)
    return display @ FRANK_FROM_DISPLAY.T


def _angles_of(vector_display: np.ndarray) -> tuple[float, float, float]:
    """(axis_deg, elevation_deg, magnitude) of a display-frame vector."""
    x, y, z = (float(v) for v in vector_display)
    magnitude = math.sqrt(x * x + y * y + z * z)
    if magnitude == 0.0:
        return 0.0, 0.0, 0.0
    return math.degrees(math.atan2(y, x)), math.degrees(math.asin(z / magnitude)), magnitude


def _display(axis_deg: float, elevation_deg: float) -> np.ndarray:
    a, e = math.radians(axis_deg), math.radians(elevation_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _wrap_deg(angle_deg: float) -> float:
    """Angle in (-180, 180]."""
    wrapped = (angle_deg + 180.0) % 360.0 - 180.0
    return 180.0 if wrapped == -180.0 else wrapped


# --------------------------------------------------------------------------- physiology -> params

def ecg_parameters(phys: Physiology, rng: np.random.Generator) -> ECGParams:
    """Map a subject's physiology to the ECG parameters, with subject-level noise.

    Partial observability lives here: QRS voltage is proportional to LV mass but
    multiplied by a random thorax factor and attenuated by BMI, sex and effusion;
    QRS width grows with LV size only loosely; right-heart load rotates the axis;
    infarcts (any ``infarct_territory``, whatever ``cad`` says) show Q waves only
    with a territory-dependent probability.

    Args:
        phys: the subject's latent state.
        rng: random generator (all of this subject's variability is drawn from it).

    Returns:
        The subject's `ECGParams`.

    Raises:
        ValueError: ``phys.infarct_territory`` is not one of anterior/inferior/lateral/None.
    """
    if phys.infarct_territory not in (None, *_INFARCT_Q_DIRECTIONS):
        raise ValueError(f"unknown infarct_territory {phys.infarct_territory!r}; "
                         f"expected one of {', '.join(_INFARCT_Q_DIRECTIONS)} or None")
    normal = rng.normal
    male = 1.0 if phys.is_male else 0.0
    age = phys.age_years
    bmi = phys.bmi
    bsa_m2 = phys.bsa_m2
    lvedv_index = phys.lvedv_ml / bsa_m2
    rvedv_index = phys.rvedv_ml / bsa_m2
    rv_excess = max(rvedv_index - 90.0, 0.0)
    heart_rate_bpm = float(phys.heart_rate_bpm)
    rr_s = 60.0 / heart_rate_bpm

    # Voltage: source proportional to LV mass, seen through a random volume conductor
    # and attenuated by fat, breast tissue and pericardial fluid.
    source_dipole_mV = 1.15 * phys.lv_mass_g / 110.0 * max(1.0 - 0.004 * (age - 55.0), 0.7)
    thorax_factor = float(np.exp(normal(0.0, 0.2)))
    habitus = math.exp(-0.025 * (bmi - 26.0)) * (1.0 if phys.is_male else 0.9)
    effusion = math.exp(-phys.effusion_mm / 12.0)
    attenuation_factor = float(np.clip(habitus * effusion, 0.05, 1.5))
    gain = thorax_factor * attenuation_factor

    # Conduction.
    lbbb_prob = max(0.35 if phys.dcm else 0.0, 0.25 if phys.hf else 0.0, 0.02 if age > 65 else 0.0)
    lbbb = bool(rng.random() < lbbb_prob)
    qrs_ms = (88.0 + 6.0 * male + 0.3 * max(lvedv_index - 80.0, 0.0)
              + 0.04 * (phys.lv_mass_g - 110.0) + 8.0 * phys.hcm + normal(0.0, 7.0))
    if lbbb:
        qrs_ms = max(qrs_ms + 30.0, rng.uniform(125.0, 165.0))
    qrs_ms = float(np.clip(qrs_ms, 70.0, 200.0))

    # Frontal axis of the LV forces; right-heart load turns the measured axis through
    # the RV lobe below, and infarcts through their Q vector.
    qrs_axis = (normal(42.0, 22.0) - 0.4 * (age - 55.0) - 1.2 * (bmi - 26.0)
                + 0.15 * rv_excess - 25.0 * lbbb - 10.0 * phys.hcm)
    qrs_axis = _wrap_deg(qrs_axis)
    qrs_elevation = float(np.clip(normal(20.0, 8.0) + 0.06 * (phys.lv_mass_g - 110.0)
                                  - 0.2 * rv_excess + 15.0 * lbbb, -60.0, 70.0))
    qrs_amplitude_mV = source_dipole_mV * gain
    septal_amplitude_mV = 0.0 if lbbb else 0.2 * qrs_amplitude_mV * float(np.clip(normal(1.0, 0.25), 0.3, 1.8))
    # Right ventricle: its late rightward-anterior forces grow with dilation and, more,
    # with the hypertrophy of pressure overload; they turn the mean axis rightward.
    rv_amplitude_mV = ((0.08 + 0.012 * rv_excess + 0.5 * phys.ph) * gain
                       * float(np.exp(normal(0.0, 0.2)))) if not lbbb else 0.0

    # Atria.
    pr_ms = float(np.clip(normal(155.0 + 0.4 * (age - 55.0) + 6.0 * male - 0.3 * (heart_rate_bpm - 70.0), 18.0),
                          110.0, 280.0))
    # Left atrial enlargement widens the P wave and weights its late (LA) part; right
    # atrial enlargement makes it tall (P pulmonale). Indexed maximal atrial volumes,
    # normal about 35 (LA) and 45 (RA) ml/m2.
    la_excess = max(phys.la_max_ml / bsa_m2 - 35.0, 0.0)
    ra_excess = max(phys.ra_max_ml / bsa_m2 - 45.0, 0.0)
    p_duration_ms = float(np.clip(normal(98.0 + 0.2 * (age - 55.0) + 0.6 * la_excess, 8.0), 70.0, 160.0))
    p_axis = float(np.clip(normal(50.0 + 0.3 * ra_excess, 15.0), -30.0, 100.0))
    p_amplitude_mV = float(np.clip(normal(0.12 + 0.004 * ra_excess, 0.03), 0.04, 0.4)) * gain / thorax_factor ** 0.5
    la_fraction = float(np.clip(normal(0.45 + 0.006 * la_excess - 0.003 * ra_excess, 0.05), 0.2, 0.8))
    pr_depression_mV = abs(normal(0.02, 0.008))

    # Repolarisation.
    qtc_fridericia_ms = (normal(408.0 + 10.0 * (1 - male), 14.0) + 0.5 * max(qrs_ms - 95.0, 0.0)
                         + 15.0 * phys.hcm + 10.0 * phys.myocarditis + 10.0 * phys.hf)
    qt_ms = float(qtc_fridericia_ms * rr_s ** (1.0 / 3.0))
    t_axis = _wrap_deg(0.6 * qrs_axis + 20.0 + normal(0.0, 15.0))
    t_elevation = float(normal(-25.0, 10.0))
    t_amplitude_mV = (float(np.clip(normal(0.42, 0.1), 0.1, 1.0)) * gain
                      * (0.8 + 0.2 * phys.lv_mass_g / 110.0) * (0.8 if phys.hf else 1.0))
    st = np.zeros(3)  # display-frame ST vector, mV

    if phys.ph or (rvedv_index > 130.0 and rng.random() < 0.5):  # right ventricular strain
        t_elevation = float(normal(55.0, 8.0))
        t_axis = _wrap_deg(t_axis + 30.0)
    strain_prob = 0.7 if phys.hcm else (0.4 if phys.lv_mass_g > 180.0 else 0.0)
    if lbbb:  # secondary, discordant repolarisation
        t_axis = _wrap_deg(qrs_axis + 180.0 + normal(0.0, 15.0))
        t_elevation = -(qrs_elevation + 10.0)
        t_amplitude_mV = 0.3 * qrs_amplitude_mV
        st += rng.uniform(0.08, 0.15) * gain * _display(t_axis, t_elevation)
    elif rng.random() < strain_prob:  # LVH strain: lateral T inversion and ST depression
        t_axis = _wrap_deg(qrs_axis + 180.0 + normal(0.0, 20.0))
        t_elevation = -qrs_elevation
        t_amplitude_mV *= rng.uniform(0.8, 1.5)
        st += rng.uniform(0.08, 0.15) * gain * _display(t_axis, t_elevation)

    q_axis = q_elevation = q_amplitude_mV = q_duration_ms = 0.0
    territory = phys.infarct_territory
    if territory is not None and rng.random() < _INFARCT_Q_VISIBLE_PROB[territory]:
        q_axis, q_elevation = _INFARCT_Q_DIRECTIONS[territory]
        n_segments = max(len(phys.akinetic_segments), 1)
        q_amplitude_mV = float((0.3 + 0.08 * n_segments) * np.clip(normal(1.0, 0.2), 0.5, 1.5) * gain)
        q_duration_ms = float(rng.uniform(40.0, 55.0))
        if rng.random() < 0.5:  # T inverted over the scar: tilt the T vector away from it
            t_vec = _display(t_axis, t_elevation) + 1.2 * _display(q_axis, q_elevation)
            t_axis, t_elevation, norm = _angles_of(t_vec)
            t_amplitude_mV *= max(norm, 0.5) / 1.2
    elif phys.cad and rng.random() < 0.3:  # ischaemic T flattening without a scar
        t_amplitude_mV *= 0.5

    if phys.myocarditis:  # nonspecific ST-T changes
        t_amplitude_mV *= rng.uniform(0.3, 0.7)
        t_axis = _wrap_deg(t_axis + normal(0.0, 35.0))
        st += rng.uniform(0.03, 0.07) * gain * _display(rng.uniform(-180, 180), rng.uniform(-40, 40))
    if phys.pericardial:  # diffuse injury current toward the apex, PR depression
        st += rng.uniform(0.12, 0.25) * attenuation_factor * _display(normal(50.0, 10.0), normal(-15.0, 8.0))
        pr_depression_mV = float(rng.uniform(0.05, 0.1) * attenuation_factor)
    st_axis, st_elevation, st_amplitude_mV = _angles_of(st)

    qrs_alternans_frac = 0.0
    if phys.effusion_mm > 15.0 and rng.random() < 0.5:
        qrs_alternans_frac = float(rng.uniform(0.1, 0.25))

    rr_variability_frac = float(np.clip(normal(0.035, 0.01) * 70.0 / heart_rate_bpm
                                        * (0.5 if phys.hf else 1.0), 0.003, 0.08))
    return ECGParams(
        heart_rate_bpm=heart_rate_bpm, rr_variability_frac=rr_variability_frac,
        pr_interval_ms=pr_ms, p_duration_ms=p_duration_ms, p_axis_deg=p_axis,
        p_amplitude_mV=p_amplitude_mV, la_fraction=la_fraction, pr_depression_mV=float(pr_depression_mV),
        qrs_duration_ms=qrs_ms, qrs_axis_deg=float(qrs_axis), qrs_elevation_deg=qrs_elevation,
        qrs_amplitude_mV=float(qrs_amplitude_mV), septal_amplitude_mV=float(septal_amplitude_mV),
        rv_amplitude_mV=float(rv_amplitude_mV), lbbb=lbbb,
        qt_interval_ms=qt_ms, t_axis_deg=float(t_axis), t_elevation_deg=float(t_elevation),
        t_amplitude_mV=float(t_amplitude_mV),
        st_axis_deg=st_axis, st_elevation_deg=st_elevation, st_amplitude_mV=st_amplitude_mV,
        q_axis_deg=q_axis, q_elevation_deg=q_elevation, q_amplitude_mV=q_amplitude_mV,
        q_duration_ms=q_duration_ms, qrs_alternans_frac=qrs_alternans_frac,
        source_dipole_mV=float(source_dipole_mV), thorax_factor=thorax_factor,
        attenuation_factor=attenuation_factor,
    )


# --------------------------------------------------------------------------- beat model

@dataclass
class _BeatLobes:
    """One beat's waves, times in s relative to QRS onset, vectors in Frank mV.

    Gaussian lobes: exp(-(t-c)^2 / 2 s^2) with s = sigma_left before c, sigma_right after.
    Plateau lobes: sigmoid((t-start)/tau_start) * sigmoid((end-t)/tau_end).
    """

    center_s: np.ndarray          # (G,)
    sigma_left_s: np.ndarray      # (G,)
    sigma_right_s: np.ndarray     # (G,)
    gauss_vectors: np.ndarray     # (G, 3)
    is_qrs: np.ndarray            # (G,) bool: scaled by QRS alternans
    start_s: np.ndarray           # (P,)
    end_s: np.ndarray             # (P,)
    tau_start_s: np.ndarray       # (P,)
    tau_end_s: np.ndarray         # (P,)
    plateau_vectors: np.ndarray   # (P, 3)
    extent_s: tuple[float, float]  # support of the beat
    fiducials_s: dict[str, float]  # p_onset, p_offset, q_onset, q_offset, t_offset


def _beat_lobes(params: ECGParams) -> _BeatLobes:
    """Lay out the P, QRS, ST and T lobes of one beat from the parameters."""
    pd = params.p_duration_ms / 1000.0
    p_onset = -params.pr_interval_ms / 1000.0
    d = params.qrs_duration_ms / 1000.0
    qt = params.qt_interval_ms / 1000.0
    rows: list[tuple[float, float, float, float, float, float, bool]] = []  # c, sl, sr, axis, elev, amp, qrs

    # P: right atrium first (anterior, inferior), then left atrium (posterior, leftward).
    la = params.la_fraction
    rows.append((p_onset + 0.4 * pd, 0.16 * pd, 0.16 * pd, params.p_axis_deg + 15.0, -30.0,
                 1.2 * (1.0 - la) * params.p_amplitude_mV, False))
    rows.append((p_onset + 0.6 * pd, 0.16 * pd, 0.16 * pd, params.p_axis_deg - 20.0, 40.0,
                 1.2 * la * params.p_amplitude_mV, False))

    amp = params.qrs_amplitude_mV
    if params.lbbb:
        # Septum activated right-to-left, then slow, notched left ventricular activation.
        rows.append((0.2 * d, 0.1 * d, 0.1 * d, 0.0, 20.0, 0.25 * amp, True))
        rows.append((0.42 * d, 0.12 * d, 0.12 * d, params.qrs_axis_deg, params.qrs_elevation_deg, 0.8 * amp, True))
        rows.append((0.68 * d, 0.12 * d, 0.12 * d, params.qrs_axis_deg - 10.0, params.qrs_elevation_deg + 10.0,
                     0.8 * amp, True))
    else:
        rows.append((0.2 * d, 0.08 * d, 0.08 * d, 130.0, -60.0, params.septal_amplitude_mV, True))
        rows.append((0.45 * d, 0.13 * d, 0.11 * d, params.qrs_axis_deg, params.qrs_elevation_deg, amp, True))
        rows.append((0.6 * d, 0.12 * d, 0.12 * d, 165.0, -35.0, params.rv_amplitude_mV, True))
        rows.append((0.76 * d, 0.095 * d, 0.095 * d, params.qrs_axis_deg + 170.0, 50.0, 0.3 * amp, True))
    if params.q_amplitude_mV > 0.0:
        qd = params.q_duration_ms / 1000.0
        rows.append((0.5 * qd, 0.22 * qd, 0.22 * qd, params.q_axis_deg, params.q_elevation_deg,
                     params.q_amplitude_mV, True))

    # T: asymmetric, ends at QT; slow upstroke, fast downstroke.
    t_sigma_down = 0.065 * qt
    t_peak = qt - 2.5 * t_sigma_down
    rows.append((t_peak, 1.8 * t_sigma_down, t_sigma_down, params.t_axis_deg, params.t_elevation_deg,
                 params.t_amplitude_mV, False))

    c, sl, sr, ax, el, am, qrs = (np.array(col) for col in zip(*rows))
    gauss_vectors = direction_vector(ax, el) * am[:, None]

    # Plateaus: atrial repolarisation over the PR segment, ST injury from J to T.
    p_offset = p_onset + pd
    plateaus = [
        (p_offset, -0.012, 0.008, 0.004, params.p_axis_deg + 180.0, 0.0, params.pr_depression_mV),
        (d, t_peak + t_sigma_down, 0.005, 0.4 * t_sigma_down, params.st_axis_deg, params.st_elevation_deg,
         params.st_amplitude_mV),
    ]
    ps, pe, pts, pte, pax, pel, pam = (np.array(col) for col in zip(*plateaus))
    plateau_vectors = direction_vector(pax, pel) * pam[:, None]
    return _BeatLobes(
        center_s=c, sigma_left_s=sl, sigma_right_s=sr, gauss_vectors=gauss_vectors, is_qrs=qrs.astype(bool),
        start_s=ps, end_s=pe, tau_start_s=pts, tau_end_s=pte, plateau_vectors=plateau_vectors,
        extent_s=(p_onset - 0.04, qt + 0.04),
        fiducials_s={"p_onset": p_onset, "p_offset": p_offset, "q_onset": 0.0, "q_offset": d, "t_offset": qt},
    )


def _render_vcg(lobes: _BeatLobes, onsets_s: np.ndarray, beat_scale: np.ndarray, qrs_scale: np.ndarray,
                n_samples: int, sampling_rate_hz: float) -> np.ndarray:
    """Sum the beats' lobes into a (3, n_samples) Frank VCG.

    Each beat is evaluated only on its own support window (B beats x W samples),
    then scattered into the record with `np.bincount`.
    """
    start_rel, end_rel = lobes.extent_s
    first = np.floor((onsets_s + start_rel) * sampling_rate_hz).astype(np.int64)  # (B,)
    width = int(math.ceil((end_rel - start_rel) * sampling_rate_hz)) + 2
    index = first[:, None] + np.arange(width)[None, :]                              # (B, W)
    t_rel = index / sampling_rate_hz - onsets_s[:, None]                           # (B, W) s from QRS onset

    dt = t_rel[:, None, :] - lobes.center_s[None, :, None]                          # (B, G, W)
    sigma = np.where(dt < 0.0, lobes.sigma_left_s[None, :, None], lobes.sigma_right_s[None, :, None])
    gauss = np.exp(-0.5 * (dt / sigma) ** 2)
    weight = beat_scale[:, None] * np.where(lobes.is_qrs[None, :], qrs_scale[:, None], 1.0)  # (B, G)
    vcg_local = np.einsum("bgw,bg,gk->kbw", gauss, weight, lobes.gauss_vectors)    # (3, B, W)

    rise = 1.0 / (1.0 + np.exp(-(t_rel[:, None, :] - lobes.start_s[None, :, None]) / lobes.tau_start_s[None, :, None]))
    fall = 1.0 / (1.0 + np.exp(-(lobes.end_s[None, :, None] - t_rel[:, None, :]) / lobes.tau_end_s[None, :, None]))
    vcg_local += np.einsum("bpw,b,pk->kbw", rise * fall, beat_scale, lobes.plateau_vectors)

    inside = (index >= 0) & (index < n_samples)
    flat_index = index[inside]
    return np.stack([np.bincount(flat_index, weights=vcg_local[k][inside], minlength=n_samples)
                     for k in range(3)])


def _beat_schedule(params: ECGParams, rng: np.random.Generator, duration_s: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """QRS onset times (s), per-beat amplitude scale and QRS scale for one strip.

    RR intervals carry respiratory sinus arrhythmia (0.2-0.33 Hz) and random
    beat-to-beat variation; amplitudes breathe by a few percent; QRS alternates
    when ``qrs_alternans_frac`` > 0. Beats start before 0 and run past the end so
    the strip begins and ends mid-cycle.
    """
    rr_s = 60.0 / params.heart_rate_bpm
    resp_hz = rng.uniform(0.2, 0.33)
    resp_phase = rng.uniform(0.0, 2.0 * math.pi)
    n_beats = int(math.ceil((duration_s + 2.0) / rr_s)) + 2
    jitter = rng.normal(0.0, params.rr_variability_frac * 0.6, n_beats)
    first_onset = -rng.uniform(0.0, rr_s) - 1.0
    nominal = first_onset + rr_s * np.arange(n_beats)
    rsa = params.rr_variability_frac * 0.8 * np.sin(2.0 * math.pi * resp_hz * nominal + resp_phase)
    rr = rr_s * np.clip(1.0 + rsa + jitter, 0.7, 1.3)
    onsets_s = first_onset + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    beat_scale = 1.0 + 0.04 * np.sin(2.0 * math.pi * resp_hz * onsets_s + resp_phase + 1.0) \
        + rng.normal(0.0, 0.01, n_beats)
    alternate = np.where(np.arange(n_beats) % 2 == 0, 1.0, -1.0)
    qrs_scale = 1.0 + params.qrs_alternans_frac * alternate
    keep = (onsets_s > -1.0) & (onsets_s < duration_s + 1.0)
    return onsets_s[keep], beat_scale[keep], qrs_scale[keep]


# --------------------------------------------------------------------------- noise

@lru_cache(maxsize=8)
def _emg_sos(sampling_rate_hz: float) -> np.ndarray:
    high_hz = min(100.0, 0.45 * sampling_rate_hz)
    return sp_signal.butter(2, [20.0, high_hz], btype="bandpass", fs=sampling_rate_hz, output="sos")


def _independent_noise(rng: np.random.Generator, n_samples: int, sampling_rate_hz: float,
                       mains_hz: float) -> np.ndarray:
    """(8, T) recording noise on I, II, V1-V6: baseline wander, mains hum, muscle noise.

    Bounds: baseline wander peak <= `BASELINE_WANDER_MAX_MV` (three sinusoids
    between 0.05 and 0.45 Hz), mains peak <= `MAINS_MAX_MV`, EMG RMS <=
    `EMG_RMS_MAX_MV` (white noise band-passed to 20-100 Hz).
    """
    t_s = np.arange(n_samples) / sampling_rate_hz
    n_leads = len(DOWER_LEADS)
    # Baseline wander: per-lead amplitude split over three slow sinusoids (respiration, drift).
    freq_hz = rng.uniform(0.05, 0.45, (n_leads, 3))
    phase = rng.uniform(0.0, 2.0 * math.pi, (n_leads, 3))
    share = rng.dirichlet(np.ones(3), n_leads)                                     # (8, 3), rows sum to 1
    peak = rng.uniform(0.01, BASELINE_WANDER_MAX_MV, (n_leads, 1))
    wander = np.einsum("lc,lct->lt", peak * share,
                       np.sin(2.0 * math.pi * freq_hz[:, :, None] * t_s + phase[:, :, None]))
    # Mains hum: one amplitude per record (shared interference), lead-specific phase.
    mains = rng.uniform(0.0, MAINS_MAX_MV) * rng.uniform(0.5, 1.0, (n_leads, 1)) * np.sin(
        2.0 * math.pi * mains_hz * t_s + rng.uniform(0.0, 2.0 * math.pi, (n_leads, 1)))
    # Muscle noise: band-limited Gaussian, RMS drawn per record; filtered with scipy's
    # causal SOS filter and rescaled to the drawn RMS.
    white = rng.standard_normal((n_leads, n_samples))
    emg = sp_signal.sosfilt(_emg_sos(sampling_rate_hz), white, axis=-1)
    emg_rms = rng.uniform(0.002, EMG_RMS_MAX_MV)
    emg *= emg_rms / np.maximum(np.sqrt(np.mean(emg ** 2, axis=-1, keepdims=True)), 1e-12)
    return wander + mains + emg


# --------------------------------------------------------------------------- synthesis

def synthesize_ecg(params: ECGParams, rng: np.random.Generator, *, sampling_rate_hz: float = 500.0,
                   duration_s: float = 10.0, mains_hz: float = 50.0, noise: bool = True) -> SimulatedECG:
    """Generate a resting 12-lead ECG strip, its median beat, measurements and statements.

    The random draws happen in a fixed order (beat schedule, device measurement
    error, then noise), so the same seed with ``noise=False`` gives exactly the
    noise-free version of the same strip.

    Args:
        params: the subject's ECG parameters (`ecg_parameters`).
        rng: random generator.
        sampling_rate_hz: strip sampling rate.
        duration_s: strip length.
        mains_hz: mains frequency of the hum (50 in the UK, 60 in North America).
        noise: add baseline wander, mains hum and muscle noise.

    Returns:
        A `SimulatedECG`; the median beat is always 600 samples at 500 Hz.
    """
    if sampling_rate_hz <= 0 or duration_s <= 0:
        raise ValueError(f"sampling_rate_hz and duration_s must be positive, got {sampling_rate_hz}, {duration_s}")
    n_samples = int(round(duration_s * sampling_rate_hz))
    lobes = _beat_lobes(params)

    # 1. Strip: beats at the sinus schedule, projected to 12 leads.
    onsets_s, beat_scale, qrs_scale = _beat_schedule(params, rng, duration_s)
    vcg = _render_vcg(lobes, onsets_s, beat_scale, qrs_scale, n_samples, sampling_rate_hz)
    independent = np.einsum("lk,kt->lt", DOWER_MATRIX, vcg)  # (8, T) I, II, V1-V6

    # 2. Median beat: one clean beat at 500 Hz, QRS onset at 400 ms.
    median_onset_s = np.array([MEDIAN_QRS_ONSET_MS / 1000.0])
    median_vcg = _render_vcg(lobes, median_onset_s, np.ones(1), np.ones(1), MEDIAN_N_SAMPLES,
                             MEDIAN_SAMPLING_RATE_HZ)
    median_mV = vcg_to_leads(median_vcg)

    # 3. Device measurements and statements.
    in_strip = (onsets_s >= 0.0) & (onsets_s < duration_s)
    measurements = _measure(params, lobes, median_mV, onsets_s, in_strip, rng)
    interpretation = interpret(median_mV, measurements)

    # 4. Recording noise, on the electrodes' independent leads so limb identities hold.
    if noise:
        independent = independent + _independent_noise(rng, n_samples, sampling_rate_hz, mains_hz)
    signal_mV = _assemble_12(independent).astype(np.float32)
    return SimulatedECG(
        signal_mV=signal_mV, sampling_rate_hz=float(sampling_rate_hz),
        median_mV=median_mV.astype(np.float32), measurements=measurements,
        interpretation=interpretation, beat_times_ms=np.round(onsets_s[in_strip] * 1000.0),
    )


def _net_area_axis_deg(median_mV: np.ndarray, start_s: float, end_s: float) -> float:
    """Frontal axis from the net areas of leads I and aVF over a window of the median."""
    fs = MEDIAN_SAMPLING_RATE_HZ
    origin = MEDIAN_QRS_ONSET_MS / 1000.0
    i0 = max(int(round((origin + start_s) * fs)), 0)
    i1 = min(int(round((origin + end_s) * fs)) + 1, median_mV.shape[1])
    lead_i = median_mV[STANDARD_LEADS.index("I"), i0:i1].sum()
    lead_avf = median_mV[STANDARD_LEADS.index("aVF"), i0:i1].sum()
    return math.degrees(math.atan2(lead_avf * 2.0 / math.sqrt(3.0), lead_i))


def _measure(params: ECGParams, lobes: _BeatLobes, median_mV: np.ndarray, onsets_s: np.ndarray,
             in_strip: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Device-style measurements: intervals from the fiducials (with a few ms of
    measurement error), rate from the strip's beats, axes from median net areas."""
    rr_ms = float(np.mean(np.diff(onsets_s[in_strip]))) * 1000.0 if in_strip.sum() >= 2 \
        else float(np.mean(np.diff(onsets_s))) * 1000.0
    error_ms = rng.normal(0.0, [4.0, 3.0, 3.0, 6.0])  # PR, P width, QRS, QT
    pq_ms = params.pr_interval_ms + error_ms[0]
    p_ms = params.p_duration_ms + error_ms[1]
    qrs_ms = params.qrs_duration_ms + error_ms[2]
    qt_ms = params.qt_interval_ms + error_ms[3]
    fid = lobes.fiducials_s
    origin_ms = MEDIAN_QRS_ONSET_MS
    chest = {name: median_mV[STANDARD_LEADS.index(name)] for name in ("V1", "V5", "V6")}
    q_on = int(round(origin_ms / 1000.0 * MEDIAN_SAMPLING_RATE_HZ))
    q_off = int(round((origin_ms + params.qrs_duration_ms) / 1000.0 * MEDIAN_SAMPLING_RATE_HZ)) + 1
    baseline = {k: v[q_on - 5] for k, v in chest.items()}
    s_v1 = max(baseline["V1"] - chest["V1"][q_on:q_off].min(), 0.0)
    r_v56 = max(chest["V5"][q_on:q_off].max() - baseline["V5"], chest["V6"][q_on:q_off].max() - baseline["V6"], 0.0)
    return {
        "ventricular_rate_bpm": float(round(60000.0 / rr_ms)),
        "pq_interval_ms": float(round(pq_ms)),
        "p_duration_ms": float(round(p_ms)),
        "qrs_duration_ms": float(round(qrs_ms)),
        "qt_interval_ms": float(round(qt_ms)),
        "qtc_interval_ms": float(round(qt_ms / math.sqrt(rr_ms / 1000.0))),  # Bazett, as 12SL reports
        "rr_interval_ms": float(round(rr_ms)),
        "pp_interval_ms": float(round(rr_ms)),  # sinus rhythm: every P conducts
        "p_axis_deg": float(round(_net_area_axis_deg(median_mV, fid["p_onset"], fid["p_offset"]))),
        "r_axis_deg": float(round(_net_area_axis_deg(median_mV, 0.0, fid["q_offset"]))),
        "t_axis_deg": float(round(_net_area_axis_deg(median_mV, fid["q_offset"], fid["t_offset"]))),
        "sokolov_lvh_index_mV": round(float(s_v1 + r_v56), 2),
        "qrs_count": float(int(in_strip.sum())),
        "p_onset_ms": float(round(origin_ms + fid["p_onset"] * 1000.0)),
        "p_offset_ms": float(round(origin_ms + fid["p_offset"] * 1000.0)),
        "q_onset_ms": float(round(origin_ms)),
        "q_offset_ms": float(round(origin_ms + fid["q_offset"] * 1000.0)),
        "t_offset_ms": float(round(origin_ms + fid["t_offset"] * 1000.0)),
    }


# --------------------------------------------------------------------------- interpretation

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


def interpret(median_mV: np.ndarray, measurements: dict[str, float]) -> list[str]:
    """12SL-style interpretation statements from a median beat and its measurements.

    Criteria (simplified GE 12SL / Minnesota-code style):

    - rhythm by rate (< 60 bradycardia, > 100 tachycardia); PR > 210 ms 1st degree block;
    - P >= 120 ms left, P in II >= 0.25 mV right atrial enlargement;
    - axis < -30 left, > 90 right, < -90 right superior deviation;
    - QRS >= 120 ms: LBBB (V1 negative, I and V6 positive) or nonspecific block;
      110-119 ms: conduction delay;
    - Sokolov-Lyon >= 3.5 mV or R aVL > 1.1 mV: LVH; R V1 >= 0.7 mV and > S V1 with
      right axis: RVH; every limb lead < 0.5 mV peak-to-peak: low voltage;
    - Q >= 0.1 mV and (>= 30 ms or >= R/4) in two leads of a territory: infarct
      (not read when the QRS is wide, nor are ST-T changes);
    - ST >= 0.1 mV (J + 60 ms) in five leads other than aVR: ST elevation;
      T <= -0.1 mV in two leads of a group: T abnormality, with ST <= -0.1 mV in two:
      ST & T abnormality; every T in I, II, V3-V6 under 0.1 mV: nonspecific T change;
    - QTc (Bazett) >= 470 ms: prolonged QT.

    Args:
        median_mV: (12, 600) median beat at 500 Hz.
        measurements: as returned in `SimulatedECG.measurements`.

    Returns:
        Statements, rhythm first and "Normal ECG" / "Borderline ECG" / "Abnormal ECG" last.
    """
    f = lead_features(median_mV, measurements)
    idx = {name: i for i, name in enumerate(STANDARD_LEADS)}
    rate = measurements["ventricular_rate_bpm"]
    statements: list[str] = []
    borderline: list[str] = []
    abnormal: list[str] = []

    statements.append("Sinus bradycardia" if rate < 60 else "Sinus tachycardia" if rate > 100
                      else "Normal sinus rhythm")
    if rate < 60 or rate > 100:
        borderline.append(statements[0])
    if measurements["pq_interval_ms"] > 210:
        borderline.append("with 1st degree A-V block")
    if measurements["p_duration_ms"] >= 120:
        borderline.append("Left atrial enlargement")
    fs = MEDIAN_SAMPLING_RATE_HZ
    p_on = int(round(measurements["p_onset_ms"] / 1000.0 * fs))
    p_off = int(round(measurements["p_offset_ms"] / 1000.0 * fs))
    p_ii = median_mV[idx["II"], p_on:p_off + 1] - median_mV[idx["II"], max(p_on - 5, 0)]
    if p_ii.max() >= 0.25:
        borderline.append("Right atrial enlargement")

    axis = measurements["r_axis_deg"]
    if -90.0 <= axis < -30.0:
        borderline.append("Left axis deviation")
    elif axis > 90.0:
        borderline.append("Right axis deviation")
    elif axis < -90.0:
        abnormal.append("Right superior axis deviation")

    qrs_ms = measurements["qrs_duration_ms"]
    wide = qrs_ms >= 120
    if wide:
        lbbb_shape = (f.s_mV[idx["V1"]] > f.r_mV[idx["V1"]] and f.r_mV[idx["I"]] > f.s_mV[idx["I"]]
                      and f.r_mV[idx["V6"]] > f.s_mV[idx["V6"]])
        abnormal.append("Left bundle branch block" if lbbb_shape else "Nonspecific intraventricular block")
    elif qrs_ms >= 110:
        borderline.append("Nonspecific intraventricular conduction delay")

    limb = [idx[n] for n in STANDARD_LEADS[:6]]
    if np.all(f.qrs_pp_mV[limb] < 0.5):
        abnormal.append("Low voltage QRS")
    sokolov = measurements["sokolov_lvh_index_mV"]
    lvh = not wide and (sokolov >= 3.5 or f.r_mV[idx["aVL"]] > 1.1)
    rvh = (not wide and axis > 90.0 and f.r_mV[idx["V1"]] >= 0.7
           and f.r_mV[idx["V1"]] > f.s_mV[idx["V1"]])

    # Repolarisation (secondary to a wide QRS is not reported separately).
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

    statements += [s for s in borderline if s != statements[0]] + abnormal
    statements.append("Abnormal ECG" if abnormal else "Borderline ECG" if len(statements) > 1 else "Normal ECG")
    return statements
