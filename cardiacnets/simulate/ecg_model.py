"""The simulator's ECG: latent physiology -> cardiac dipole -> 12-lead ECG.

A subject's `Physiology` is first mapped to `ECGParams`, the ECG-visible
latents (rate, intervals, axes, the QRS/T/ST/Q vectors, voltage, rhythm and
conduction: atrial fibrillation, premature ventricular and atrial complexes,
RBBB, LBBB, LAFB, ventricular pacing, at the rates of `RhythmPrevalence`), by
`ecg_parameters`; `synthesize_ecg` then builds a time-varying heart vector (a
vectorcardiogram in the Frank X/Y/Z frame, in mV) as a sum of lobes: smooth P
(right and left atrial) and T lobes, atrial repolarisation and ST plateaus, and
triangular QRS lobes (septal, anterior, free wall, postero-basal, terminal; RV
and RBBB late forces; LBBB, paced and ectopic ventricular sequences) whose sizes
and directions were fitted to PTB-XL's normal ECGs (R/S amplitudes of every
lead, QRS slopes, spectrum). Each subject's activation sequence and lead field
(electrode position, torso) vary a little from the table; beats repeat with
respiratory and slower RR variation (or the irregular RR of atrial
fibrillation with f waves), breathing changes of amplitude and axis and small
beat-to-beat changes of each lobe; ectopic beats come early with the right
pauses; pacemaker stimuli precede paced beats. The vector is projected onto I,
II and V1-V6 with the Dower transform (Dower, Machado & Osborne, Clin Cardiol
1980; the table whose pseudo-inverse Edenbrandt & Pahlm, J Electrocardiol 1988,
named the "inverse Dower" matrix) and III, aVR, aVL and aVF are derived by
Einthoven/Goldberger so the leads are exactly consistent. Recording noise
(baseline wander, mains hum, muscle noise) is at PTB-XL's levels and the device
low-pass is applied. The "device" part then works on the recorded strip only:
the median beat and every measurement in the XML come from the delineator
(`cardiacnets.simulate.delineate`), so they carry a device's measurement error
rather than copying the latents, and 12SL-style statements (rhythm, ectopy,
blocks, hypertrophy, infarct, ST-T) are read from them.

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

from cardiacnets.io.ecg_leads import STANDARD_LEADS, derive_limb_leads
from cardiacnets.io.ecg_record import ECGRecord
from cardiacnets.simulate.delineate import delineate, net_area_axis_deg
from cardiacnets.simulate.physiology import Physiology, RhythmPrevalence

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
BASELINE_WANDER_MAX_MV = 0.4   # peak, sum of sinusoids below 0.5 Hz
MAINS_MAX_MV = 0.02            # peak amplitude of the mains sinusoid
EMG_RMS_MAX_MV = 0.02          # RMS of band-limited (20-150 Hz) muscle noise
DEVICE_LOWPASS_HZ = 150.0      # the recorder's low-pass (first order, applied forwards and backwards)
EMG_RMS_MEDIAN_MV = 0.0019     # its typical level (PTB-XL's high-frequency noise)

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
        rbbb: right bundle branch block (late, slow rightward-anterior forces: rSR' in V1,
            broad S in I and V6, secondary T inversion in V1-V2).
        lafb: left anterior fascicular block (left axis beyond -45, qR in aVL, rS inferiorly).
        atrial_fibrillation: no P waves, fibrillatory (f) waves, irregularly irregular RR.
        paced: ventricular pacing from the RV apex (pacing spike, wide LBBB-like QRS with a
            left superior axis); the atria are paced too unless in atrial fibrillation.
        pvc_per_min, pac_per_min: rate of premature ventricular / atrial complexes (0 = none;
            a subject with a rate shows at least one in the strip).
        resp_axis_swing_deg: frontal rotation of the heart vector with breathing (peak).
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
    rbbb: bool = False
    lafb: bool = False
    atrial_fibrillation: bool = False
    paced: bool = False
    pvc_per_min: float = 0.0
    pac_per_min: float = 0.0
    resp_axis_swing_deg: float = 0.0
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
        median_mV: (12, 600) float32 median of the strip's dominant beats at 500 Hz
            (1.2 s), QRS onset near 400 ms (as the device's median beat).
        measurements: device-style measurements from the delineator (integers in the
            units of the keys; ``sokolov_lvh_index_mV`` in mV; NaN where a wave was not
            found, e.g. no P wave in atrial fibrillation) and median-beat fiducials
            (``p_onset_ms`` ... ``t_offset_ms``, ms from the median's first sample).
        interpretation: 12SL-style statements, rhythm first, summary last.
        beat_times_ms: QRS onset of every beat inside the strip, ms from its start.
        beat_kinds: ``"normal"`` (sinus, conducted or paced), ``"pac"`` or ``"pvc"`` per beat.
        lead_names: `STANDARD_LEADS`.
    """

    signal_mV: np.ndarray
    sampling_rate_hz: float
    median_mV: np.ndarray
    measurements: dict[str, float]
    interpretation: list[str]
    beat_times_ms: np.ndarray
    beat_kinds: tuple[str, ...] = ()
    lead_names: tuple[str, ...] = STANDARD_LEADS

    def as_record(self, source: str = "") -> ECGRecord:
        """The same ECG as an `ECGRecord` (what a reader of the written file returns)."""
        return ECGRecord(
            signal_mV=self.signal_mV, lead_names=list(self.lead_names),
            sampling_rate_hz=self.sampling_rate_hz, source=source, format="simulated", units="mV",
            measurements=dict(self.measurements), interpretation=list(self.interpretation),
            median_mV=self.median_mV, median_lead_names=list(self.lead_names),
            metadata={"beat_times_ms": self.beat_times_ms.tolist(), "beat_kinds": list(self.beat_kinds)},
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

def ecg_parameters(phys: Physiology, rng: np.random.Generator,
                   rhythm: RhythmPrevalence | None = None) -> ECGParams:
    """Map a subject's physiology to the ECG parameters, with subject-level noise.

    Partial observability lives here: QRS voltage is proportional to LV mass but
    multiplied by a random thorax factor and attenuated by BMI, sex and effusion;
    QRS width grows with LV size only loosely; right-heart load rotates the axis;
    infarcts (any ``infarct_territory``, whatever ``cad`` says) show Q waves only
    with a territory-dependent probability. Rhythm and conduction patterns
    (atrial fibrillation, ectopic beats, bundle branch and fascicular blocks,
    pacing) are drawn at the rates of ``rhythm``; atrial fibrillation grows with
    age, DCM and heart failure add their own LBBB.

    Args:
        phys: the subject's latent state.
        rng: random generator (all of this subject's variability is drawn from it).
        rhythm: rates of the rhythm and conduction patterns (defaults if None).

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
    source_dipole_mV = 1.88 * phys.lv_mass_g / 110.0 * max(1.0 - 0.004 * (age - 55.0), 0.7)
    thorax_factor = float(np.exp(normal(0.0, 0.2)))
    habitus = math.exp(-0.025 * (bmi - 26.0)) * (1.0 if phys.is_male else 0.9)
    effusion = math.exp(-phys.effusion_mm / 10.0)
    attenuation_factor = float(np.clip(habitus * effusion, 0.05, 1.5))
    gain = thorax_factor * attenuation_factor

    # Rhythm and conduction. Atrial fibrillation rises with age (weight 1 at the
    # imaging visit's mean age, so the configured rate holds on average).
    rhythm = rhythm or RhythmPrevalence()
    u = rng.random(7)
    age_weight = float(np.clip((age - 45.0) / 19.5, 0.2, 2.0))
    atrial_fibrillation = bool(u[0] < rhythm.atrial_fibrillation * age_weight)
    paced = bool(u[1] < rhythm.paced)
    lbbb_prob = max(0.35 if phys.dcm else 0.0, 0.25 if phys.hf else 0.0, rhythm.lbbb)
    lbbb = bool(u[2] < lbbb_prob) and not paced
    rbbb = bool(u[3] < rhythm.rbbb / max(1.0 - rhythm.lbbb, 1e-9)) and not (lbbb or paced)
    lafb = bool(u[4] < rhythm.lafb) and not (lbbb or paced)
    pvc_per_min = float(np.exp(rng.uniform(math.log(3.0), math.log(15.0)))) if u[5] < rhythm.pvc else 0.0
    pac_per_min = (float(np.exp(rng.uniform(math.log(3.0), math.log(15.0))))
                   if u[6] < rhythm.pac and not atrial_fibrillation else 0.0)

    qrs_ms = (82.0 + 6.0 * male + 0.3 * max(lvedv_index - 80.0, 0.0)
              + 0.04 * (phys.lv_mass_g - 110.0) + 8.0 * phys.hcm + normal(0.0, 7.0))
    if lbbb:
        qrs_ms = max(qrs_ms + 30.0, rng.uniform(125.0, 165.0))
    if rbbb:
        qrs_ms = max(qrs_ms + 25.0, rng.uniform(122.0, 150.0))
    if lafb:
        qrs_ms += rng.uniform(4.0, 14.0)
    if paced:
        qrs_ms = max(qrs_ms + 45.0, rng.uniform(140.0, 185.0))
    qrs_ms = float(np.clip(qrs_ms, 70.0, 200.0))

    # Frontal axis of the LV forces; right-heart load turns the measured axis through
    # the RV lobe below, and infarcts through their Q vector.
    qrs_axis = (normal(42.0, 22.0) - 0.4 * (age - 55.0) - 1.2 * (bmi - 26.0)
                + 0.15 * rv_excess - 25.0 * lbbb - 10.0 * phys.hcm)
    if lafb:  # the left anterior fascicle's territory activates late: left superior axis
        qrs_axis = rng.uniform(-80.0, -50.0)
    if paced:  # RV apical pacing spreads from the apex upwards
        qrs_axis = rng.uniform(-100.0, -50.0)
    qrs_axis = _wrap_deg(qrs_axis)
    qrs_elevation = float(np.clip(normal(20.0, 8.0) + 0.06 * (phys.lv_mass_g - 110.0)
                                  - 0.2 * rv_excess + 15.0 * (lbbb or paced), -60.0, 70.0))
    qrs_amplitude_mV = source_dipole_mV * gain
    septal_amplitude_mV = (0.0 if (lbbb or paced)
                           else 0.2 * qrs_amplitude_mV * float(np.clip(normal(1.0, 0.25), 0.3, 1.8)))
    # Right ventricle: its late rightward-anterior forces grow with dilation and, more,
    # with the hypertrophy of pressure overload; they turn the mean axis rightward.
    rv_amplitude_mV = ((0.10 + 0.02 * rv_excess + 0.8 * phys.ph) * gain
                       * float(np.exp(normal(0.0, 0.2)))) if not (lbbb or paced) else 0.0

    # Atria.
    pr_ms = float(np.clip(normal(155.0 + 0.4 * (age - 55.0) + 6.0 * male - 0.3 * (heart_rate_bpm - 70.0), 18.0),
                          110.0, 280.0))
    # Left atrial enlargement widens the P wave and weights its late (LA) part; right
    # atrial enlargement makes it tall (P pulmonale). Indexed maximal atrial volumes,
    # normal about 35 (LA) and 45 (RA) ml/m2.
    la_excess = max(phys.la_max_ml / bsa_m2 - 35.0, 0.0)
    ra_excess = max(phys.ra_max_ml / bsa_m2 - 45.0, 0.0)
    p_duration_ms = float(np.clip(normal(98.0 + 0.2 * (age - 55.0) + 0.6 * la_excess, 8.0), 70.0, 160.0))
    p_axis = float(np.clip(normal(45.0 + 0.3 * ra_excess, 20.0), -30.0, 100.0))
    p_amplitude_mV = float(np.clip(normal(0.12 + 0.004 * ra_excess, 0.03), 0.04, 0.4)) * gain / thorax_factor ** 0.5
    la_fraction = float(np.clip(normal(0.45 + 0.006 * la_excess - 0.003 * ra_excess, 0.05), 0.2, 0.8))
    pr_depression_mV = abs(normal(0.02, 0.008))

    # Repolarisation.
    qtc_fridericia_ms = (normal(408.0 + 10.0 * (1 - male), 14.0) + 0.5 * max(qrs_ms - 95.0, 0.0)
                         + 15.0 * phys.hcm + 10.0 * phys.myocarditis + 10.0 * phys.hf)
    qt_ms = float(qtc_fridericia_ms * rr_s ** (1.0 / 3.0))
    t_axis = _wrap_deg(0.6 * qrs_axis + 30.0 + normal(0.0, 15.0))
    t_elevation = float(normal(-45.0, 12.0))
    t_amplitude_mV = (float(np.clip(normal(0.44, 0.1), 0.1, 1.0)) * gain
                      * (0.8 + 0.2 * phys.lv_mass_g / 110.0) * (0.8 if phys.hf else 1.0))
    st = np.zeros(3)  # display-frame ST vector, mV

    if phys.ph or (rvedv_index > 130.0 and rng.random() < 0.5):  # right ventricular strain
        t_elevation = float(normal(55.0, 8.0))
        t_axis = _wrap_deg(t_axis + 30.0)
    strain_prob = 0.7 if phys.hcm else (0.4 if phys.lv_mass_g > 180.0 else 0.0)
    if lbbb or paced:  # secondary, discordant repolarisation
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

    if rbbb:  # secondary T inversion in the right precordial leads
        t_vec = _display(t_axis, t_elevation) + 0.9 * _display(160.0, 70.0)
        t_axis, t_elevation, _ = _angles_of(t_vec)

    rr_variability_frac = float(np.clip(normal(0.035, 0.01) * 70.0 / heart_rate_bpm
                                        * (0.5 if phys.hf else 1.0), 0.003, 0.08))
    if atrial_fibrillation:  # irregularly irregular: SD of RR as a share of the mean
        rr_variability_frac = float(rng.uniform(0.12, 0.25))
    resp_axis_swing_deg = float(rng.uniform(1.0, 6.0))
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
        rbbb=rbbb, lafb=lafb, atrial_fibrillation=atrial_fibrillation, paced=paced,
        pvc_per_min=pvc_per_min, pac_per_min=pac_per_min, resp_axis_swing_deg=resp_axis_swing_deg,
        source_dipole_mV=float(source_dipole_mV), thorax_factor=thorax_factor,
        attenuation_factor=attenuation_factor,
    )


# --------------------------------------------------------------------------- beat model

# QRS lobes of normal conduction, in activation order: (centre, half-width) as
# fractions of the QRS duration, direction as (axis offset from the QRS axis,
# elevation offset from the QRS elevation) and size relative to the QRS amplitude.
# The lobes are triangles: their corners give the QRS the steep upstrokes and the
# spectrum of real complexes (power falling about as 1/f^4 from 10 to 150 Hz, where
# Gaussian lobes of the same slopes put a bump at 40-60 Hz and nothing above 80 Hz).
# A large late posterior (basal) lobe gives the deep S of V1-V2 and the R/S
# transition near V3-V4. Fitted (Powell, 60 healthy subjects' median beats) to the
# medians of PTB-XL NORM's R and S amplitudes in the 12 leads, QRS slopes and
# median-beat spectrum, as measured by `cardiacnets bench realism`; the terminal
# lobe ends at the QRS duration, so the delineator measures about the latent width.
NORMAL_QRS_LOBES: tuple[tuple[float, float, float, float, float], ...] = (
    (0.266, 0.173, -46.8, -62.5, 0.39),   # apical and anterior free wall (R in V2-V3)
    (0.406, 0.158, 9.7, 12.4, 0.96),      # main left ventricular free wall
    (0.537, 0.124, 33.6, 50.0, 0.83),     # postero-basal left ventricle (S in V1-V3)
    (0.668, 0.156, -52.9, -31.6, 0.17),   # late lateral and basal
    (0.767, 0.233, -173.6, 43.4, 0.20),   # terminal: basal septum, RV outflow (S in II, III, aVF)
)
QRS_EDGE_S = 0.006
SEPTAL_LOBE = (0.143, 0.143, 120.4, -21.4)  # centre, half-width, absolute axis, elevation
RV_LOBE = (0.54, 0.17, 165.0, -35.0)
# Left bundle branch block: slow, notched activation from the right side, no septal q.
LBBB_QRS_LOBES = (
    (0.22, 0.22, -10.0, -15.0, 0.35),
    (0.43, 0.25, 0.0, 0.0, 0.85),
    (0.70, 0.25, -15.0, 15.0, 0.85),
)
# Right ventricular apical pacing: LBBB-like, broader, from the apex upwards.
PACED_QRS_LOBES = (
    (0.27, 0.27, 0.0, -10.0, 0.70),
    (0.55, 0.30, 0.0, 10.0, 1.00),
    (0.80, 0.20, 25.0, 25.0, 0.40),
)
RBBB_LATE_LOBE = (0.80, 0.20, 170.0, -55.0, 0.55)  # slow rightward-anterior RV activation
RBBB_LV_FRACTION = 0.62  # the LV activates normally in the first part of the widened QRS


@dataclass
class _BeatLobes:
    """One beat's waves, times in s relative to QRS onset, vectors in Frank mV.

    Gaussian lobes: exp(-(t-c)^2 / 2 s^2) with s = sigma_left before c, sigma_right after;
    triangular lobes (``is_triangle``): max(0, 1 - |t-c| / s), s the half-width on each side.
    Plateau lobes: sigmoid((t-start)/tau_start) * sigmoid((end-t)/tau_end).
    """

    center_s: np.ndarray          # (G,)
    sigma_left_s: np.ndarray      # (G,)
    sigma_right_s: np.ndarray     # (G,)
    gauss_vectors: np.ndarray     # (G, 3)
    is_qrs: np.ndarray            # (G,) bool: scaled by QRS alternans
    is_triangle: np.ndarray       # (G,) bool: triangular rather than Gaussian
    start_s: np.ndarray           # (P,)
    end_s: np.ndarray             # (P,)
    tau_start_s: np.ndarray       # (P,)
    tau_end_s: np.ndarray         # (P,)
    plateau_vectors: np.ndarray   # (P, 3)
    extent_s: tuple[float, float]  # support of the beat
    fiducials_s: dict[str, float]  # p_onset, p_offset, q_onset, q_offset, t_offset


# centre, sigma (half-width) left, right, axis, elevation, amplitude, QRS?, triangular?
_Row = tuple[float, float, float, float, float, float, bool, bool]
_Plateau = tuple[float, float, float, float, float, float, float]  # start, end, tau_s, tau_e, axis, elev, amp


def _lobes(rows: list[_Row], plateaus: list[_Plateau], extent_s: tuple[float, float],
           fiducials_s: dict[str, float]) -> _BeatLobes:
    """Pack lobe rows (directions as axis/elevation) into a `_BeatLobes`."""
    if rows:
        c, sl, sr, ax, el, am, qrs, tri = (np.array(col) for col in zip(*rows))
        gauss_vectors = direction_vector(ax, np.clip(el, -89.0, 89.0)) * am[:, None]
    else:
        c = sl = sr = np.zeros(0)
        qrs = tri = np.zeros(0, dtype=bool)
        gauss_vectors = np.zeros((0, 3))
    if plateaus:
        ps, pe, pts, pte, pax, pel, pam = (np.array(col) for col in zip(*plateaus))
        plateau_vectors = direction_vector(pax, pel) * pam[:, None]
    else:
        ps = pe = pts = pte = np.zeros(0)
        plateau_vectors = np.zeros((0, 3))
    return _BeatLobes(center_s=c, sigma_left_s=sl, sigma_right_s=sr, gauss_vectors=gauss_vectors,
                      is_qrs=qrs.astype(bool), is_triangle=tri.astype(bool), start_s=ps, end_s=pe,
                      tau_start_s=pts, tau_end_s=pte, plateau_vectors=plateau_vectors, extent_s=extent_s, fiducials_s=fiducials_s)


def _p_lobes(params: ECGParams, axis_deg: float, amplitude_mV: float) -> _BeatLobes:
    """The P wave (right then left atrium) and atrial repolarisation, relative to QRS onset."""
    pd = params.p_duration_ms / 1000.0
    p_onset = -params.pr_interval_ms / 1000.0
    la = params.la_fraction
    rows: list[_Row] = [
        (p_onset + 0.34 * pd, 0.18 * pd, 0.18 * pd, axis_deg + 15.0, -30.0, 1.2 * (1.0 - la) * amplitude_mV,
         False, False),
        (p_onset + 0.66 * pd, 0.18 * pd, 0.18 * pd, axis_deg - 20.0, 40.0, 1.2 * la * amplitude_mV, False, False),
    ]
    p_offset = p_onset + pd
    plateaus: list[_Plateau] = [(p_offset, -0.012, 0.008, 0.004, axis_deg + 180.0, 0.0, params.pr_depression_mV)]
    return _lobes(rows, plateaus, (p_onset - 0.04, 0.03), {"p_onset": p_onset, "p_offset": p_offset})


def _qrst_lobes(params: ECGParams, rng: np.random.Generator | None = None) -> _BeatLobes:
    """QRS, ST and T of a conducted (or paced) beat, relative to QRS onset.

    With ``rng``, each QRS lobe's direction, size and timing vary a little from the
    table (the individual heart's activation sequence), which the latents do not record.
    """
    d = params.qrs_duration_ms / 1000.0
    qt = params.qt_interval_ms / 1000.0
    amp = params.qrs_amplitude_mV
    axis, elev = params.qrs_axis_deg, params.qrs_elevation_deg
    rows: list[_Row] = []
    if params.paced:
        table, span = PACED_QRS_LOBES, d
        amp = 1.3 * amp
    elif params.lbbb:
        table, span = LBBB_QRS_LOBES, d
    else:
        # The delineator's QRS ends where the (40 Hz low-passed) velocity has faded,
        # about 6 ms past the lobes' support: lay them over d - 6 ms so it measures d.
        table, span = NORMAL_QRS_LOBES, (RBBB_LV_FRACTION * d if params.rbbb else d - QRS_EDGE_S)
        c, s, septal_axis, septal_elev = SEPTAL_LOBE
        septal = params.septal_amplitude_mV
        if params.lafb:  # initial forces inferior and rightward: q in I and aVL, r in II, III, aVF
            septal_axis, septal_elev, septal = 110.0, -30.0, 1.5 * septal
        rows.append((c * span, s * span, s * span, septal_axis, septal_elev, septal, True, True))
        c, s, rv_axis, rv_elev = RV_LOBE
        rows.append((c * span, s * span, s * span, rv_axis, rv_elev, params.rv_amplitude_mV, True, True))
    for c, s, d_axis, d_elev, share in table:
        if rng is not None:
            c, d_axis, d_elev = c + rng.normal(0.0, 0.015), d_axis + rng.normal(0.0, 8.0), d_elev + rng.normal(0.0, 8.0)
            share *= math.exp(rng.normal(0.0, 0.12))
        rows.append((c * span, s * span, s * span, axis + d_axis, elev + d_elev, share * amp, True, True))
    if params.rbbb and not (params.lbbb or params.paced):
        c, s, rb_axis, rb_elev, share = RBBB_LATE_LOBE
        rows.append((c * d, s * d, s * d, rb_axis, rb_elev, share * amp + 0.15 * params.attenuation_factor, True, True))
    if params.q_amplitude_mV > 0.0:
        qd = params.q_duration_ms / 1000.0
        rows.append((0.5 * qd, 0.22 * qd, 0.22 * qd, params.q_axis_deg, params.q_elevation_deg,
                     params.q_amplitude_mV, True, False))
    # T: asymmetric, ends at QT; slow upstroke, fast downstroke.
    t_sigma_down = 0.065 * qt
    t_peak = qt - 2.5 * t_sigma_down
    rows.append((t_peak, 1.8 * t_sigma_down, t_sigma_down, params.t_axis_deg, params.t_elevation_deg,
                 params.t_amplitude_mV, False, False))
    plateaus: list[_Plateau] = [(d, t_peak + t_sigma_down, 0.005, 0.4 * t_sigma_down, params.st_axis_deg,
                                 params.st_elevation_deg, params.st_amplitude_mV)]
    return _lobes(rows, plateaus, (-0.03, qt + 0.04), {"q_onset": 0.0, "q_offset": d, "t_offset": qt})


def _pvc_lobes(params: ECGParams, rng: np.random.Generator) -> _BeatLobes:
    """A unifocal premature ventricular complex: wide, large, no P, discordant T."""
    d = rng.uniform(130.0, 170.0) / 1000.0
    axis, elev = rng.uniform(-100.0, 120.0), rng.uniform(-60.0, 60.0)
    amp = params.qrs_amplitude_mV * rng.uniform(1.3, 2.0)
    qt = d + rng.uniform(0.26, 0.32)
    rows: list[_Row] = [
        (0.30 * d, 0.30 * d, 0.30 * d, axis, elev, 0.8 * amp, True, True),
        (0.62 * d, 0.34 * d, 0.34 * d, axis + 15.0, elev + 10.0, amp, True, True),
    ]
    t_sigma_down = 0.065 * qt
    t_peak = qt - 2.5 * t_sigma_down
    rows.append((t_peak, 1.8 * t_sigma_down, t_sigma_down, axis + 180.0, -elev, 0.35 * amp, False, False))
    return _lobes(rows, [], (-0.03, qt + 0.04), {"q_onset": 0.0, "q_offset": d, "t_offset": qt})


def _render_vcg(lobes: _BeatLobes, onsets_s: np.ndarray, beat_scale: np.ndarray, qrs_scale: np.ndarray,
                n_samples: int, sampling_rate_hz: float, rotation_rad: np.ndarray | None = None,
                lobe_scale: np.ndarray | None = None) -> np.ndarray:
    """Sum the beats' lobes into a (3, n_samples) Frank VCG.

    Each beat is evaluated only on its own support window (B beats x W samples),
    then scattered into the record with `np.bincount`. ``rotation_rad`` (B,)
    turns each beat's vectors in the frontal plane (breathing); ``lobe_scale``
    (B, G) scales each lobe of each beat (beat-to-beat morphology).
    """
    if len(onsets_s) == 0:
        return np.zeros((3, n_samples))
    start_rel, end_rel = lobes.extent_s
    first = np.floor((onsets_s + start_rel) * sampling_rate_hz).astype(np.int64)  # (B,)
    width = int(math.ceil((end_rel - start_rel) * sampling_rate_hz)) + 2
    index = first[:, None] + np.arange(width)[None, :]                              # (B, W)
    t_rel = index / sampling_rate_hz - onsets_s[:, None]                           # (B, W) s from QRS onset

    dt = t_rel[:, None, :] - lobes.center_s[None, :, None]                          # (B, G, W)
    sigma = np.where(dt < 0.0, lobes.sigma_left_s[None, :, None], lobes.sigma_right_s[None, :, None])
    gauss = np.exp(-0.5 * (dt / sigma) ** 2)
    if lobes.is_triangle.any():
        triangle = np.maximum(1.0 - np.abs(dt) / sigma, 0.0)
        gauss = np.where(lobes.is_triangle[None, :, None], triangle, gauss)
    weight = beat_scale[:, None] * np.where(lobes.is_qrs[None, :], qrs_scale[:, None], 1.0)  # (B, G)
    if lobe_scale is not None:
        weight = weight * lobe_scale
    if rotation_rad is None:
        vectors = np.broadcast_to(lobes.gauss_vectors, (len(onsets_s), *lobes.gauss_vectors.shape))
    else:
        vectors = _rotate_frontal(lobes.gauss_vectors, rotation_rad)                # (B, G, 3)
    vcg_local = np.einsum("bgw,bg,bgk->kbw", gauss, weight, vectors)               # (3, B, W)

    if len(lobes.start_s):
        rise = 1.0 / (1.0 + np.exp(-(t_rel[:, None, :] - lobes.start_s[None, :, None])
                                   / lobes.tau_start_s[None, :, None]))
        fall = 1.0 / (1.0 + np.exp(-(lobes.end_s[None, :, None] - t_rel[:, None, :]) / lobes.tau_end_s[None, :, None]))
        vcg_local += np.einsum("bpw,b,pk->kbw", rise * fall, beat_scale, lobes.plateau_vectors)

    inside = (index >= 0) & (index < n_samples)
    flat_index = index[inside]
    return np.stack([np.bincount(flat_index, weights=vcg_local[k][inside], minlength=n_samples)
                     for k in range(3)])


def _rotate_frontal(vectors: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """(G, 3) Frank vectors turned by (B,) angles about the sagittal (Z) axis -> (B, G, 3)."""
    c, s = np.cos(angle_rad)[:, None], np.sin(angle_rad)[:, None]
    x, y, z = vectors[None, :, 0], vectors[None, :, 1], vectors[None, :, 2]
    return np.stack([c * x - s * y, s * x + c * y, np.broadcast_to(z, c.shape[:1] + z.shape[1:])], axis=-1)


SINUS, PAC, PVC = 0, 1, 2
BEAT_LOBE_JITTER = 0.03  # beat-to-beat SD of each lobe's size
# Electrode placement and torso differences between subjects: SD of each independent
# lead's gain (log) and of the share of the other Frank components it picks up.
LIMB_LEAD_GAIN_SD, CHEST_LEAD_GAIN_SD, LEAD_MIXING_SD = 0.05, 0.12, 0.12


def _subject_lead_field(rng: np.random.Generator) -> np.ndarray:
    """The subject's (8, 3) transfer from the heart vector to I, II, V1-V6: Dower's
    table with per-lead gain and direction changes (electrode position, torso)."""
    gain_sd = np.array([LIMB_LEAD_GAIN_SD] * 2 + [CHEST_LEAD_GAIN_SD] * 6)
    gain = np.exp(rng.normal(0.0, gain_sd))[:, None]
    norm = np.linalg.norm(DOWER_MATRIX, axis=1, keepdims=True)
    mixing = rng.normal(0.0, 1.0, DOWER_MATRIX.shape) * norm * np.where(gain_sd[:, None] > 0.1, LEAD_MIXING_SD,
                                                                        0.3 * LEAD_MIXING_SD)
    return DOWER_MATRIX * gain + mixing



@dataclass
class _Schedule:
    """Every beat of one strip (B beats), times in s from the strip's start."""

    onsets_s: np.ndarray      # (B,) QRS onset
    kind: np.ndarray          # (B,) SINUS (conducted or paced), PAC or PVC
    has_p: np.ndarray         # (B,) a P wave precedes the QRS
    p_shift_s: np.ndarray     # (B,) beat-to-beat PR variation
    beat_scale: np.ndarray    # (B,) breathing and random amplitude change
    qrs_scale: np.ndarray     # (B,) electrical alternans
    rotation_rad: np.ndarray  # (B,) breathing rotation of the heart vector


def _beat_schedule(params: ECGParams, rng: np.random.Generator, duration_s: float) -> _Schedule:
    """Beat times and per-beat variation for one strip.

    Sinus rhythm carries respiratory sinus arrhythmia (0.2-0.33 Hz) and random
    beat-to-beat variation; atrial fibrillation has independent, irregular RR
    intervals. Amplitudes breathe by a few percent and the heart vector turns by
    up to ``resp_axis_swing_deg``; QRS alternates when ``qrs_alternans_frac`` > 0.
    Premature ventricular complexes replace a sinus beat early (compensatory
    pause); premature atrial complexes come early and reset the sinus node. A
    subject with an ectopic rate shows at least one ectopic beat in the strip.
    Beats start before 0 and run past the end so the strip begins and ends mid-cycle.
    """
    rr_s = 60.0 / params.heart_rate_bpm
    resp_hz = rng.uniform(0.2, 0.33)
    resp_phase = rng.uniform(0.0, 2.0 * math.pi)
    n_beats = int(math.ceil((duration_s + 3.0) / (0.6 * rr_s))) + 2
    first_onset = -rng.uniform(0.0, rr_s) - 1.0
    if params.atrial_fibrillation:
        sigma = math.sqrt(math.log(1.0 + params.rr_variability_frac ** 2))
        rr = rr_s * np.exp(rng.normal(-0.5 * sigma ** 2, sigma, n_beats))
        rr = np.clip(rr, 0.3, 2.5)
    else:
        # Respiratory sinus arrhythmia, slower (0.04-0.15 Hz) autonomic oscillation and
        # a little beat-to-beat jitter, in the proportions of resting recordings.
        jitter = rng.normal(0.0, params.rr_variability_frac * 0.2, n_beats)
        nominal = first_onset + rr_s * np.arange(n_beats)
        rsa = params.rr_variability_frac * 0.7 * np.sin(2.0 * math.pi * resp_hz * nominal + resp_phase)
        slow = params.rr_variability_frac * 1.1 * np.sin(2.0 * math.pi * rng.uniform(0.04, 0.15) * nominal
                                                         + rng.uniform(0.0, 2.0 * math.pi))
        rr = rr_s * np.clip(1.0 + rsa + slow + jitter, 0.7, 1.3)
    onsets_s = first_onset + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    kind = np.full(n_beats, SINUS)

    # Ectopic beats: at least one inside the strip, more at the subject's rate.
    visible = np.flatnonzero((onsets_s > 0.6) & (onsets_s < duration_s - 0.8))
    for ectopic, per_min in ((PVC, params.pvc_per_min), (PAC, params.pac_per_min)):
        if per_min <= 0.0 or visible.size == 0:
            continue
        chosen = rng.random(n_beats) < per_min * rr_s / 60.0
        chosen[int(rng.choice(visible))] = True
        coupling = rng.uniform(0.55, 0.7) if ectopic == PVC else rng.uniform(0.65, 0.8)
        for k in np.flatnonzero(chosen):
            if k == 0 or kind[k] != SINUS or kind[k - 1] != SINUS or (k + 1 < n_beats and kind[k + 1] != SINUS):
                continue
            early = onsets_s[k - 1] + coupling * (onsets_s[k] - onsets_s[k - 1])
            if ectopic == PAC:  # the sinus node is reset: later beats move earlier with it
                onsets_s[k + 1:] -= onsets_s[k] - early
            onsets_s[k] = early
            kind[k] = ectopic

    has_p = (kind != PVC) & (not params.atrial_fibrillation)
    p_shift_s = rng.normal(0.0, 0.003, n_beats)
    beat_scale = 1.0 + 0.025 * np.sin(2.0 * math.pi * resp_hz * onsets_s + resp_phase + 1.0) \
        + rng.normal(0.0, 0.008, n_beats)
    rotation_rad = math.radians(params.resp_axis_swing_deg) * np.sin(2.0 * math.pi * resp_hz * onsets_s
                                                                      + resp_phase + 0.5) \
        + np.radians(rng.normal(0.0, 1.0, n_beats))
    alternate = np.where(np.arange(n_beats) % 2 == 0, 1.0, -1.0)
    qrs_scale = 1.0 + params.qrs_alternans_frac * alternate
    keep = (onsets_s > -1.0) & (onsets_s < duration_s + 1.0)
    return _Schedule(onsets_s=onsets_s[keep], kind=kind[keep], has_p=has_p[keep], p_shift_s=p_shift_s[keep],
                     beat_scale=beat_scale[keep], qrs_scale=qrs_scale[keep], rotation_rad=rotation_rad[keep])


def _fibrillatory_waves(params: ECGParams, rng: np.random.Generator, n_samples: int,
                        sampling_rate_hz: float) -> np.ndarray:
    """(3, T) f waves of atrial fibrillation: disorganised 4-9 Hz activity, largest in V1 and inferiorly.

    Three wavelets with their own direction, rate and wandering phase, so the f
    waves change shape and axis from beat to beat.
    """
    t_s = np.arange(n_samples) / sampling_rate_hz
    amplitude = rng.uniform(0.02, 0.08) * params.attenuation_factor
    out = np.zeros((3, n_samples))
    for _ in range(3):
        rate_hz = rng.uniform(4.0, 9.0)
        wander = np.cumsum(rng.normal(0.0, 1.0, n_samples)) / sampling_rate_hz  # random-walk phase, rad
        phase = 2.0 * math.pi * rate_hz * t_s + 12.0 * wander + rng.uniform(0.0, 2.0 * math.pi)
        envelope = 1.0 + 0.5 * np.sin(2.0 * math.pi * rng.uniform(0.2, 1.0) * t_s + rng.uniform(0, 2 * math.pi))
        direction = direction_vector(rng.uniform(40.0, 140.0), rng.uniform(-80.0, -20.0))
        out += direction[:, None] * (amplitude / math.sqrt(3.0) * envelope * np.sin(phase))[None, :]
    return out


def _pacing_spikes(onsets_s: np.ndarray, n_samples: int, sampling_rate_hz: float,
                   direction: np.ndarray) -> np.ndarray:
    """(3, T) pacemaker stimuli 2 ms before the given times: one sample and a small overshoot."""
    out = np.zeros((3, n_samples))
    at = np.round((onsets_s - 0.002) * sampling_rate_hz).astype(np.int64)
    for k, scale in ((0, 1.0), (1, -0.25)):
        idx = at + k
        idx = idx[(idx >= 0) & (idx < n_samples)]
        out[:, idx] += scale * direction[:, None]
    return out


# --------------------------------------------------------------------------- noise

@lru_cache(maxsize=8)
def _lowpass_sos(sampling_rate_hz: float) -> np.ndarray:
    return sp_signal.butter(1, DEVICE_LOWPASS_HZ, btype="lowpass", fs=sampling_rate_hz, output="sos")


@lru_cache(maxsize=8)
def _emg_sos(sampling_rate_hz: float) -> np.ndarray:
    high_hz = min(150.0, 0.45 * sampling_rate_hz)
    return sp_signal.butter(2, [20.0, high_hz], btype="bandpass", fs=sampling_rate_hz, output="sos")


def _independent_noise(rng: np.random.Generator, n_samples: int, sampling_rate_hz: float,
                       mains_hz: float) -> np.ndarray:
    """(8, T) recording noise on I, II, V1-V6: baseline wander, mains hum, muscle noise.

    Levels follow PTB-XL (measured by `cardiacnets bench realism`): wander is
    log-uniform up to `BASELINE_WANDER_MAX_MV` (three sinusoids between 0.05 and
    0.45 Hz); mains hum is usually about a microvolt (the device filters it) and
    at most `MAINS_MAX_MV`; muscle noise (white noise band-passed to 20-150 Hz)
    has an RMS of a few microvolts, at most `EMG_RMS_MAX_MV`.
    """
    t_s = np.arange(n_samples) / sampling_rate_hz
    n_leads = len(DOWER_LEADS)
    # Baseline wander: per-lead amplitude split over three slow sinusoids (respiration, drift).
    freq_hz = rng.uniform(0.05, 0.45, (n_leads, 3))
    phase = rng.uniform(0.0, 2.0 * math.pi, (n_leads, 3))
    share = rng.dirichlet(np.ones(3), n_leads)                                     # (8, 3), rows sum to 1
    record_wander = math.exp(rng.uniform(math.log(0.04), math.log(BASELINE_WANDER_MAX_MV)))
    peak = record_wander * rng.uniform(0.3, 1.0, (n_leads, 1))
    wander = np.einsum("lc,lct->lt", peak * share,
                       np.sin(2.0 * math.pi * freq_hz[:, :, None] * t_s + phase[:, :, None]))
    # Mains hum: one amplitude per record (shared interference), lead-specific phase.
    hum_mV = math.exp(rng.uniform(math.log(0.00002), math.log(0.0004)))
    if rng.random() < 0.1:
        hum_mV = math.exp(rng.uniform(math.log(0.003), math.log(MAINS_MAX_MV)))
    mains = hum_mV * rng.uniform(0.5, 1.0, (n_leads, 1)) * np.sin(
        2.0 * math.pi * mains_hz * t_s + rng.uniform(0.0, 2.0 * math.pi, (n_leads, 1)))
    # Muscle noise: band-limited Gaussian, RMS drawn per record (log-normal, a few
    # microvolts) and per lead; filtered with scipy's causal SOS filter and rescaled.
    white = rng.standard_normal((n_leads, n_samples))
    emg = sp_signal.sosfilt(_emg_sos(sampling_rate_hz), white, axis=-1)
    emg_rms = np.clip(EMG_RMS_MEDIAN_MV * math.exp(rng.normal(0.0, 0.4)) * rng.uniform(0.7, 1.3, (n_leads, 1)),
                      0.0006, EMG_RMS_MAX_MV)
    emg *= emg_rms / np.maximum(np.sqrt(np.mean(emg ** 2, axis=-1, keepdims=True)), 1e-12)
    return wander + mains + emg


# --------------------------------------------------------------------------- synthesis

def synthesize_ecg(params: ECGParams, rng: np.random.Generator, *, sampling_rate_hz: float = 500.0,
                   duration_s: float = 10.0, mains_hz: float = 50.0, noise: bool = True) -> SimulatedECG:
    """Generate a resting 12-lead ECG strip, its median beat, measurements and statements.

    The random draws happen in a fixed order (beat schedule and morphology, then
    noise), so the same seed with ``noise=False`` gives exactly the noise-free
    version of the same strip. The device part works like a real one: the median
    beat is the median of the strip's dominant beats and every measurement comes
    from the delineator (`cardiacnets.simulate.delineate`) run on the recorded
    strip, so it carries the measurement error a device has, not the latents.

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
    fs = sampling_rate_hz

    # 1. Beats: the schedule, then each kind of beat rendered at its times.
    schedule = _beat_schedule(params, rng, duration_s)
    sinus_p = _p_lobes(params, params.p_axis_deg, params.p_amplitude_mV)
    ectopic_p = _p_lobes(params, float(rng.uniform(-80.0, 100.0)), params.p_amplitude_mV * rng.uniform(0.7, 1.1))
    qrst = _qrst_lobes(params, rng)
    pvc = _pvc_lobes(params, rng)
    lead_field = _subject_lead_field(rng)
    s = schedule
    conducted = s.kind != PVC
    lobe_jitter = 1.0 + rng.normal(0.0, BEAT_LOBE_JITTER, (int(conducted.sum()), len(qrst.center_s)))
    vcg = _render_vcg(qrst, s.onsets_s[conducted], s.beat_scale[conducted], s.qrs_scale[conducted], n_samples, fs,
                      s.rotation_rad[conducted], lobe_jitter)
    for p_lobes, which in ((sinus_p, s.has_p & (s.kind == SINUS)), (ectopic_p, s.has_p & (s.kind == PAC))):
        vcg += _render_vcg(p_lobes, s.onsets_s[which] + s.p_shift_s[which], s.beat_scale[which],
                           np.ones(int(which.sum())), n_samples, fs)
    ectopic_v = s.kind == PVC
    vcg += _render_vcg(pvc, s.onsets_s[ectopic_v], s.beat_scale[ectopic_v], np.ones(int(ectopic_v.sum())),
                       n_samples, fs)
    if params.atrial_fibrillation:
        vcg += _fibrillatory_waves(params, rng, n_samples, fs)
    if params.paced:
        spike = direction_vector(rng.uniform(-180.0, 180.0), rng.uniform(-60.0, 60.0)) * rng.uniform(0.4, 2.0)
        vcg += _pacing_spikes(s.onsets_s[conducted], n_samples, fs, spike)
        if not params.atrial_fibrillation:
            atrial = s.onsets_s[s.has_p & (s.kind == SINUS)] - params.pr_interval_ms / 1000.0
            vcg += _pacing_spikes(atrial, n_samples, fs, 0.6 * spike)
    independent = np.einsum("lk,kt->lt", lead_field, vcg)  # (8, T) I, II, V1-V6

    # 2. Recording noise, on the electrodes' independent leads so limb identities hold,
    # then the device's 100 Hz low-pass (UK Biobank's CardioSoft declares 0.01-100 Hz).
    if noise:
        independent = independent + _independent_noise(rng, n_samples, fs, mains_hz)
    if DEVICE_LOWPASS_HZ < 0.45 * fs:
        independent = sp_signal.sosfiltfilt(_lowpass_sos(float(fs)), independent, axis=-1)
    signal_mV = _assemble_12(independent).astype(np.float32)

    # 3. The device: median beat, measurements and statements from the recorded strip.
    in_strip = (s.onsets_s >= 0.0) & (s.onsets_s < duration_s)
    median_mV, measurements = _device_measurements(signal_mV, fs, params, qrst, s.onsets_s[in_strip])
    strip_content = {
        "atrial_fibrillation": params.atrial_fibrillation, "paced": params.paced,
        "pvc": int(np.sum(s.kind[in_strip] == PVC)), "pac": int(np.sum(s.kind[in_strip] == PAC)),
    }
    interpretation = interpret(median_mV, measurements, strip_content)
    return SimulatedECG(
        signal_mV=signal_mV, sampling_rate_hz=float(fs),
        median_mV=median_mV.astype(np.float32), measurements=measurements,
        interpretation=interpretation, beat_times_ms=np.round(s.onsets_s[in_strip] * 1000.0),
        beat_kinds=tuple(("normal", "pac", "pvc")[k] for k in s.kind[in_strip]),
    )


def _rounded(value: float) -> float:
    return float(round(value)) if math.isfinite(value) else math.nan


def _device_measurements(signal_mV: np.ndarray, sampling_rate_hz: float, params: ECGParams, qrst: _BeatLobes,
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
        median = vcg_to_leads(_render_vcg(qrst, onset, np.ones(1), np.ones(1), MEDIAN_N_SAMPLES,
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
    idx = {name: i for i, name in enumerate(STANDARD_LEADS)}
    rate = measurements["ventricular_rate_bpm"]
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
    if paced:
        statements += [s for s in borderline + abnormal if s != statements[0]]
        statements.append("Abnormal ECG")
        return statements

    if measurements["pq_interval_ms"] > 210 and not af:
        borderline.append("with 1st degree A-V block")
    if measurements["p_duration_ms"] >= 120:
        borderline.append("Left atrial enlargement")
    fs = MEDIAN_SAMPLING_RATE_HZ
    if math.isfinite(measurements["p_onset_ms"]) and math.isfinite(measurements["p_offset_ms"]):
        p_on = int(round(measurements["p_onset_ms"] / 1000.0 * fs))
        p_off = int(round(measurements["p_offset_ms"] / 1000.0 * fs))
        p_ii = median_mV[idx["II"], p_on:p_off + 1] - median_mV[idx["II"], max(p_on - 5, 0)]
        if p_ii.size and p_ii.max() >= 0.25:
            borderline.append("Right atrial enlargement")

    qrs_ms = measurements["qrs_duration_ms"]
    wide = qrs_ms >= 120
    fs_ms = 1000.0 / fs
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

    statements += [s for s in borderline + abnormal if s != statements[0]]
    statements.append("Abnormal ECG" if abnormal else "Borderline ECG" if len(statements) > 1 else "Normal ECG")
    return statements
