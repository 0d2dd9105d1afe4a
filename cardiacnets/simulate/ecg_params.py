"""The simulated ECG's latents: a subject's `Physiology` mapped to the `ECGParams` its ECG is generated from.

`ecg_parameters` draws, in a fixed order from the subject's generator, the
ECG-visible latents: voltage (the LV's source dipole through a random volume
conductor, attenuated by habitus and effusion), rhythm and conduction (atrial
fibrillation, premature complexes, bundle branch and fascicular blocks,
pacing, at the rates of `RhythmPrevalence`), the QRS, the atria, repolarisation
(T and ST, strain, infarct Q waves, myocarditis and pericarditis) and the
beat-to-beat variation. The partial observability this encodes is tabulated
in `cardiacnets.simulate.ecg_model`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from cardiacnets.simulate.ecg_geometry import angles_of, display_vector, wrap_deg
from cardiacnets.simulate.physiology import Physiology, RhythmPrevalence

_INFARCT_Q_DIRECTIONS = {  # (axis_deg, elevation_deg) pointing away from the territory
    "inferior": (-80.0, 0.0),    # superior (Frank -Y): Q in II, III, aVF
    "anterior": (0.0, 90.0),     # posterior: Q in V1-V4
    "lateral": (170.0, -45.0),   # rightward, anterior: Q in I, aVL, V4-V6
}
_INFARCT_Q_VISIBLE_PROB = {"anterior": 0.85, "inferior": 0.75, "lateral": 0.5}
# Version 2's repolarisation: (male QTc Fridericia mean, ms; T axis offset from 0.6 x QRS axis,
# deg), version 1 (408, 30). Measured by the same delineator, healthy simulated subjects had
# a QT 22 ms longer than PTB-XL NORM's (408 vs 386 ms; QTc 421 vs 409) and a T axis 12 deg
# more inferior (sin 0.81 vs 0.66); the heart's dependence (QRS width, HCM, HF, sex) is kept.
REPOLARISATION_V2 = (398.0, 20.0)
# Version 3's T vector: (axis offset, deg, as above; mean elevation, deg, version 2 -45).
# Version 2's healthy subjects had T at its peak in V5 at 1.20 x PTB-XL NORM's median but
# in II at 0.83 and V2 at 0.86: seen through Dower's table NORM's T peak points at 68 deg
# (quartiles 59-76), version 2's at 44 (30-61), elevation -45 in both; but NORM's T axis from
# the net areas of I and aVF (the device's) is 41 deg. Fitted with `ecg_beats.QRS_LOBE_TURN_V3`,
# trading the two: version 3's T in II, V2, V5 at 0.91, 0.90, 0.99 of NORM's.
T_DIRECTION_V3 = (29.0, -49.0)
# Version 3's mean QRS elevation (deg; version 2: 20), fitted with `ecg_beats.QRS_LOBE_TURN_V3`.
QRS_ELEVATION_V3_DEG = 17.5
# Version 3's between-subject SDs of QTc (ms; version 2: 14) and of the sinus RR variability
# (share of RR; version 2: 0.01). Version 2's healthy subjects' QTc quartiles spanned 395-422 ms
# against PTB-XL NORM's 394-430, their RR SD / mean 0.026-0.046 against NORM's 0.019-0.057.
QTC_SD_V3_MS = 20.0
RR_VARIABILITY_SD_V3 = 0.02
#: Version 4: the variety between subjects that real ECGs have and version 3's lacked. Marginal by
#: marginal version 3 was close to PTB-XL NORM (no feature above univariate AUROC 0.69), yet a logistic
#: regression on all of them told the two apart (AUROC 0.97): small shifts of the means, each under
#: 0.65 SD, that add up across correlated features (the squared Mahalanobis distance between the means
#: was 7.6; the largest terms the 40-100 Hz band, V1's upstroke and S wave, the T and QRS axes, the
#: beat-to-beat residual), and spreads narrower than NORM's (QTc's 90th percentile 1.6 interquartile
#: ranges below NORM's). Fitted to PTB-XL NORM of ``strat_fold`` 1-8 (``preprocessing/calibrate_ecg.py --version 4``,
#: the Mahalanobis distance as the loss; folds 9-10 held out):
#:
#: * ``lobe_share_sd``, ``lobe_axis_sd_deg``: SDs of each normal-conduction QRS lobe's log size and of its
#:   direction in a subject (version 3: 0.12 and 8; right bundle branch and fascicular blocks keep version
#:   3's QRS, so a device reads them as before);
#: * ``corner_smoothing_ms``: uniform range of the QRS corners' rounding (version 3: 0.9 ms);
#: * ``beat_jitter``: log-uniform range of a per-subject factor on the beat-to-beat jitter of the lobes;
#: * ``qtc_tail_ms``, ``p_duration_tail_ms``: means of exponential terms added to QTc and the P wave's
#:   duration, less their medians (NORM's long tails);
#: * ``rr_log_sd``: SD of a per-subject log factor on the sinus RR variability (and its cap 0.12, version
#:   3: 0.08);
#: * ``qrs_axis_shift_deg``, ``t_axis_shift_deg``: added to the mean frontal QRS axis and the T axis offset;
#: * ``t_amplitude_factor``: on the T wave's size (mean and SD of its draw);
#: * ``basal_lobe_share``: factor on the postero-basal QRS lobe's size (S in V1-V3).
#:
#: The search's own optimum (``lobe_share_sd`` 0.4, its bound; ``lobe_axis_sd_deg`` 20; ``basal_lobe_share``
#: 0.85; ``qrs_axis_shift_deg`` -7) reached healthy-vs-NORM AUROC 0.93 at seed 0 but put the median S in V2
#: of healthy subjects at 0.66-0.79 of NORM's and S in V5 at 1.3, outside the 25 % the simulator issue
#: allows; the landed values (0.2, 12, 1.1, -4) keep every precordial median within it and give back most
#: of the gain (0.956; version 3 0.973). Two more settings were searched and left at 0, so they are not
#: here: a per-subject factor on every lobe's width and a per-lobe one (QRS sharpness).
ECG_V4 = dict(lobe_share_sd=0.2, lobe_axis_sd_deg=12.0, corner_smoothing_ms=(0.9, 1.1), beat_jitter=(0.8, 2.0),
              qtc_tail_ms=30.0, p_duration_tail_ms=16.0, rr_log_sd=0.4, qrs_axis_shift_deg=-4.0,
              t_axis_shift_deg=1.0, t_amplitude_factor=1.15, basal_lobe_share=1.1)
#: Simulator version 5's ECG: version 4's settings (refitted) and these, fitted by
#: ``preprocessing/calibrate_ecg.py --version 5`` to PTB-XL NORM of ``strat_fold`` 1-8 (see the README's
#: realism section):
#:
#: * ``chest_gain_V1`` ... ``chest_gain_V6``: a factor on each chest lead's gain (Dower's table is one torso
#:   model's; version 4's healthy subjects had S in V1 and V3 and V1's upstroke 0.5-0.75 SD above NORM's
#:   means, R in V2 below);
#: * ``limb_lead_gain``: a factor on I and II (so on every limb lead) beyond version 3's `LIMB_LEAD_GAIN_V3`;
#: * ``device_lowpass_hz``: log-uniform range of the recorder's first-order low-pass (version 4: 150 Hz for
#:   every strip; recorders differ), drawn after every other draw of the strip;
#: * ``qrs_lobe_width``: a factor on the half-widths of the normal-conduction QRS lobes after the apical one
#:   (the initial forces and infarct Q waves keep theirs);
#: * ``p_amplitude_factor``: on the P wave's size;
#: * ``terminal_lobe_share``: on the terminal (rightward, basal) QRS lobe's size: S in I and V4-V6.
ECG_V5 = dict(chest_gain_V1=0.84, chest_gain_V2=1.12, chest_gain_V3=0.88, chest_gain_V4=0.96, chest_gain_V5=0.92,
              chest_gain_V6=1.0, limb_lead_gain=1.0, device_lowpass_hz=(130.0, 150.0), qrs_lobe_width=1.05,
              p_amplitude_factor=1.25, terminal_lobe_share=0.8, qrs_axis_shift_deg=-8.0, t_axis_shift_deg=1.0,
              t_amplitude_factor=1.1, basal_lobe_share=0.95, lobe_share_sd=0.4, lobe_axis_sd_deg=21.0,
              corner_smoothing_ms=(0.1, 0.9), beat_jitter=(0.8, 1.6), qtc_tail_ms=40.0, p_duration_tail_ms=24.0,
              rr_log_sd=0.1)


def ecg_variety(version: int) -> dict:
    """The ECG variety table of a simulator ``version`` from 4 (`ECG_V4`; `ECG_V5` from 5)."""
    return ECG_V5 if version >= 5 else ECG_V4


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



def ecg_parameters(phys: Physiology, rng: np.random.Generator,
                   rhythm: RhythmPrevalence | None = None, *, version: int = 2) -> ECGParams:
    """Map a subject's physiology to the ECG parameters, with subject-level noise.

    Partial observability lives here: QRS voltage is proportional to LV mass but
    multiplied by a random thorax factor and attenuated by BMI, sex and effusion;
    QRS width grows with LV size only loosely; right-heart load rotates the axis;
    infarcts (any ``infarct_territory``, whatever ``cad`` says) show Q waves only
    with a territory-dependent probability. Rhythm and conduction patterns
    (atrial fibrillation, ectopic beats, bundle branch and fascicular blocks,
    pacing) are drawn at the rates of ``rhythm``; atrial fibrillation grows with
    age, DCM and heart failure add their own LBBB.

    The steps below draw from `rng` in a fixed order (a subject's ECG depends on its seed
    only); each returns the fields it sets, and later steps read the earlier ones.

    Args:
        phys: the subject's latent state.
        rng: random generator (all of this subject's variability is drawn from it).
        rhythm: rates of the rhythm and conduction patterns (defaults if None).
        version: the simulator's calibration (`SynthConfig.version`; 1 reproduces cardiacnets
            0.1.0; 2 moves the QTc and T axis to PTB-XL's, same draws; 3 also the QRS and T
            elevation, T axis, QTc and RR-variability spreads, same draws).

    Returns:
        The subject's `ECGParams`.

    Raises:
        ValueError: ``phys.infarct_territory`` is not one of anterior/inferior/lateral/None.
    """
    if phys.infarct_territory not in (None, *_INFARCT_Q_DIRECTIONS):
        raise ValueError(f"unknown infarct_territory {phys.infarct_territory!r}; "
                         f"expected one of {', '.join(_INFARCT_Q_DIRECTIONS)} or None")
    p: dict = {"heart_rate_bpm": float(phys.heart_rate_bpm)}
    p.update(_voltage(phys, rng))                                       # 1. voltage
    p.update(_conduction(phys, rng, rhythm or RhythmPrevalence()))      # 2. rhythm and conduction
    p.update(_depolarisation(phys, rng, p, version))                    # 3. QRS
    p.update(_atria(phys, rng, p, version))                                      # 4. P wave and atrial repolarisation
    p.update(_repolarisation(phys, rng, p, version))                    # 5. T wave, secondary and strain ST-T
    p.update(_infarct_q_wave(phys, rng, p))                             # 6. Q waves of an old infarct
    p.update(_inflammation(phys, rng, p))                               # 7. myocarditis, pericarditis
    st = p.pop("st_vector")
    p["st_axis_deg"], p["st_elevation_deg"], p["st_amplitude_mV"] = angles_of(st)
    p.update(_beat_variation(phys, rng, p, version))                    # 8. alternans, RR and breathing
    return ECGParams(**p)


def _gain(p: dict) -> float:
    """The volume conductor's gain: thorax factor x attenuation."""
    return p["thorax_factor"] * p["attenuation_factor"]


def _voltage(phys: Physiology, rng: np.random.Generator) -> dict:
    """Source proportional to LV mass, seen through a random volume conductor and attenuated by fat,
    breast tissue and pericardial fluid."""
    source_dipole_mV = 1.88 * phys.lv_mass_g / 110.0 * max(1.0 - 0.004 * (phys.age_years - 55.0), 0.7)
    thorax_factor = float(np.exp(rng.normal(0.0, 0.2)))
    habitus = math.exp(-0.025 * (phys.bmi - 26.0)) * (1.0 if phys.is_male else 0.9)
    effusion = math.exp(-phys.effusion_mm / 10.0)
    attenuation_factor = float(np.clip(habitus * effusion, 0.05, 1.5))
    return {"source_dipole_mV": float(source_dipole_mV), "thorax_factor": thorax_factor,
            "attenuation_factor": attenuation_factor}


def _conduction(phys: Physiology, rng: np.random.Generator, rhythm: RhythmPrevalence) -> dict:
    """Rhythm and conduction. Atrial fibrillation rises with age (weight 1 at the imaging visit's
    mean age, so the configured rate holds on average); DCM and heart failure add their own LBBB."""
    u = rng.random(7)
    age_weight = float(np.clip((phys.age_years - 45.0) / 19.5, 0.2, 2.0))
    atrial_fibrillation = bool(u[0] < rhythm.atrial_fibrillation * age_weight)
    paced = bool(u[1] < rhythm.paced)
    lbbb_prob = max(0.35 if phys.dcm else 0.0, 0.25 if phys.hf else 0.0, rhythm.lbbb)
    lbbb = bool(u[2] < lbbb_prob) and not paced
    rbbb = bool(u[3] < rhythm.rbbb / max(1.0 - rhythm.lbbb, 1e-9)) and not (lbbb or paced)
    lafb = bool(u[4] < rhythm.lafb) and not (lbbb or paced)
    pvc_per_min = float(np.exp(rng.uniform(math.log(3.0), math.log(15.0)))) if u[5] < rhythm.pvc else 0.0
    pac_per_min = (float(np.exp(rng.uniform(math.log(3.0), math.log(15.0))))
                   if u[6] < rhythm.pac and not atrial_fibrillation else 0.0)
    return {"atrial_fibrillation": atrial_fibrillation, "paced": paced, "lbbb": lbbb, "rbbb": rbbb, "lafb": lafb,
            "pvc_per_min": pvc_per_min, "pac_per_min": pac_per_min}


def _rv_excess(phys: Physiology) -> float:
    """Indexed RV end-diastolic volume above 90 ml/m2 (0 below)."""
    return max(phys.rvedv_ml / phys.bsa_m2 - 90.0, 0.0)


def _tail(rng: np.random.Generator, mean: float) -> float:
    """An exponential term of this mean less its median (0 at mean 0, without a draw): a right tail that
    leaves the median where it was."""
    return float(rng.exponential(mean)) - mean * math.log(2.0) if mean > 0 else 0.0


def _depolarisation(phys: Physiology, rng: np.random.Generator, p: dict, version: int = 2) -> dict:
    """QRS width, axis, elevation and size; the septal and late right-ventricular forces."""
    normal = rng.normal
    male = 1.0 if phys.is_male else 0.0
    lbbb, rbbb, lafb, paced = p["lbbb"], p["rbbb"], p["lafb"], p["paced"]
    rv_excess = _rv_excess(phys)
    qrs_ms = (82.0 + 6.0 * male + 0.3 * max(phys.lvedv_ml / phys.bsa_m2 - 80.0, 0.0)
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
    axis_shift = ecg_variety(version)["qrs_axis_shift_deg"] if version >= 4 else 0.0
    qrs_axis = (normal(42.0 + axis_shift, 22.0) - 0.4 * (phys.age_years - 55.0) - 1.2 * (phys.bmi - 26.0)
                + 0.15 * rv_excess - 25.0 * lbbb - 10.0 * phys.hcm)
    if lafb:  # the left anterior fascicle's territory activates late: left superior axis
        qrs_axis = rng.uniform(-80.0, -50.0)
    if paced:  # RV apical pacing spreads from the apex upwards
        qrs_axis = rng.uniform(-100.0, -50.0)
    qrs_axis = wrap_deg(qrs_axis)
    elevation_mean_deg = QRS_ELEVATION_V3_DEG if version >= 3 else 20.0
    qrs_elevation = float(np.clip(normal(elevation_mean_deg, 8.0) + 0.06 * (phys.lv_mass_g - 110.0)
                                  - 0.2 * rv_excess + 15.0 * (lbbb or paced), -60.0, 70.0))
    gain = _gain(p)
    qrs_amplitude_mV = p["source_dipole_mV"] * gain
    septal_amplitude_mV = (0.0 if (lbbb or paced)
                           else 0.2 * qrs_amplitude_mV * float(np.clip(normal(1.0, 0.25), 0.3, 1.8)))
    # Right ventricle: its late rightward-anterior forces grow with dilation and, more,
    # with the hypertrophy of pressure overload; they turn the mean axis rightward.
    rv_amplitude_mV = ((0.10 + 0.02 * rv_excess + 0.8 * phys.ph) * gain
                       * float(np.exp(normal(0.0, 0.2)))) if not (lbbb or paced) else 0.0
    return {"qrs_duration_ms": qrs_ms, "qrs_axis_deg": float(qrs_axis), "qrs_elevation_deg": qrs_elevation,
            "qrs_amplitude_mV": float(qrs_amplitude_mV), "septal_amplitude_mV": float(septal_amplitude_mV),
            "rv_amplitude_mV": float(rv_amplitude_mV)}


def _atria(phys: Physiology, rng: np.random.Generator, p: dict, version: int = 2) -> dict:
    """PR interval and the P wave. Left atrial enlargement widens the P wave and weights its late (LA)
    part; right atrial enlargement makes it tall (P pulmonale). Indexed maximal atrial volumes,
    normal about 35 (LA) and 45 (RA) ml/m2."""
    normal = rng.normal
    age, bsa_m2 = phys.age_years, phys.bsa_m2
    male = 1.0 if phys.is_male else 0.0
    pr_ms = float(np.clip(normal(155.0 + 0.4 * (age - 55.0) + 6.0 * male - 0.3 * (p["heart_rate_bpm"] - 70.0), 18.0),
                          110.0, 280.0))
    la_excess = max(phys.la_max_ml / bsa_m2 - 35.0, 0.0)
    ra_excess = max(phys.ra_max_ml / bsa_m2 - 45.0, 0.0)
    p_duration_ms = normal(98.0 + 0.2 * (age - 55.0) + 0.6 * la_excess, 8.0)  # then the tail: the draws' order
    p_duration_ms += _tail(rng, ecg_variety(version)["p_duration_tail_ms"]) if version >= 4 else 0.0
    p_duration_ms = float(np.clip(p_duration_ms, 70.0, 160.0))
    p_axis = float(np.clip(normal(45.0 + 0.3 * ra_excess, 20.0), -30.0, 100.0))
    p_size = ecg_variety(version)["p_amplitude_factor"] if version >= 5 else 1.0
    p_amplitude_mV = (float(np.clip(normal(0.12 + 0.004 * ra_excess, 0.03), 0.04, 0.4)) * _gain(p)
                      / p["thorax_factor"] ** 0.5) * p_size
    la_fraction = float(np.clip(normal(0.45 + 0.006 * la_excess - 0.003 * ra_excess, 0.05), 0.2, 0.8))
    pr_depression_mV = abs(normal(0.02, 0.008))
    return {"pr_interval_ms": pr_ms, "p_duration_ms": p_duration_ms, "p_axis_deg": p_axis,
            "p_amplitude_mV": p_amplitude_mV, "la_fraction": la_fraction, "pr_depression_mV": float(pr_depression_mV)}


def _repolarisation(phys: Physiology, rng: np.random.Generator, p: dict, version: int = 2) -> dict:
    """QT and the T vector; RV strain, the discordant ST-T of a wide QRS and LVH strain.

    Returns the T fields, ``qt_interval_ms`` and ``st_vector``: the display-frame ST vector (mV) so far.
    """
    normal = rng.normal
    male = 1.0 if phys.is_male else 0.0
    gain = _gain(p)
    qrs_axis, qrs_elevation = p["qrs_axis_deg"], p["qrs_elevation_deg"]
    qtc_base_ms, t_axis_offset_deg = REPOLARISATION_V2 if version >= 2 else (408.0, 30.0)
    t_elevation_mean_deg = -45.0
    if version >= 3:
        t_axis_offset_deg, t_elevation_mean_deg = T_DIRECTION_V3
    qtc_sd_ms = QTC_SD_V3_MS if version >= 3 else 14.0
    qtc_fridericia_ms = (normal(qtc_base_ms + 10.0 * (1 - male), qtc_sd_ms) + 0.5 * max(p["qrs_duration_ms"] - 95.0, 0.0)
                         + 15.0 * phys.hcm + 10.0 * phys.myocarditis + 10.0 * phys.hf)
    if version >= 4:
        qtc_fridericia_ms += _tail(rng, ecg_variety(version)["qtc_tail_ms"])
    qt_ms = float(qtc_fridericia_ms * (60.0 / p["heart_rate_bpm"]) ** (1.0 / 3.0))
    if version >= 4:
        t_axis_offset_deg += ecg_variety(version)["t_axis_shift_deg"]
    t_axis = wrap_deg(0.6 * qrs_axis + t_axis_offset_deg + normal(0.0, 15.0))
    t_elevation = float(normal(t_elevation_mean_deg, 12.0))
    t_size = ecg_variety(version)["t_amplitude_factor"] if version >= 4 else 1.0
    t_amplitude_mV = (float(np.clip(normal(0.44 * t_size, 0.1 * t_size), 0.1, 1.0)) * gain
                      * (0.8 + 0.2 * phys.lv_mass_g / 110.0) * (0.8 if phys.hf else 1.0))
    st = np.zeros(3)  # display-frame ST vector, mV

    if phys.ph or (phys.rvedv_ml / phys.bsa_m2 > 130.0 and rng.random() < 0.5):  # right ventricular strain
        t_elevation = float(normal(55.0, 8.0))
        t_axis = wrap_deg(t_axis + 30.0)
    strain_prob = 0.7 if phys.hcm else (0.4 if phys.lv_mass_g > 180.0 else 0.0)
    if p["lbbb"] or p["paced"]:  # secondary, discordant repolarisation
        t_axis = wrap_deg(qrs_axis + 180.0 + normal(0.0, 15.0))
        t_elevation = -(qrs_elevation + 10.0)
        t_amplitude_mV = 0.3 * p["qrs_amplitude_mV"]
        st += rng.uniform(0.08, 0.15) * gain * display_vector(t_axis, t_elevation)
    elif rng.random() < strain_prob:  # LVH strain: lateral T inversion and ST depression
        t_axis = wrap_deg(qrs_axis + 180.0 + normal(0.0, 20.0))
        t_elevation = -qrs_elevation
        t_amplitude_mV *= rng.uniform(0.8, 1.5)
        st += rng.uniform(0.08, 0.15) * gain * display_vector(t_axis, t_elevation)
    return {"qt_interval_ms": qt_ms, "t_axis_deg": t_axis, "t_elevation_deg": t_elevation,
            "t_amplitude_mV": t_amplitude_mV, "st_vector": st}


def _infarct_q_wave(phys: Physiology, rng: np.random.Generator, p: dict) -> dict:
    """The Q vector of an old infarct (seen with a territory-dependent probability), its T inversion,
    or the ischaemic T flattening of coronary disease without a scar."""
    q_axis = q_elevation = q_amplitude_mV = q_duration_ms = 0.0
    t_axis, t_elevation, t_amplitude_mV = p["t_axis_deg"], p["t_elevation_deg"], p["t_amplitude_mV"]
    territory = phys.infarct_territory
    if territory is not None and rng.random() < _INFARCT_Q_VISIBLE_PROB[territory]:
        q_axis, q_elevation = _INFARCT_Q_DIRECTIONS[territory]
        n_segments = max(len(phys.akinetic_segments), 1)
        q_amplitude_mV = float((0.3 + 0.08 * n_segments) * np.clip(rng.normal(1.0, 0.2), 0.5, 1.5) * _gain(p))
        q_duration_ms = float(rng.uniform(40.0, 55.0))
        if rng.random() < 0.5:  # T inverted over the scar: tilt the T vector away from it
            t_vec = display_vector(t_axis, t_elevation) + 1.2 * display_vector(q_axis, q_elevation)
            t_axis, t_elevation, norm = angles_of(t_vec)
            t_amplitude_mV *= max(norm, 0.5) / 1.2
    elif phys.cad and rng.random() < 0.3:  # ischaemic T flattening without a scar
        t_amplitude_mV *= 0.5
    return {"q_axis_deg": q_axis, "q_elevation_deg": q_elevation, "q_amplitude_mV": q_amplitude_mV,
            "q_duration_ms": q_duration_ms, "t_axis_deg": t_axis, "t_elevation_deg": t_elevation,
            "t_amplitude_mV": t_amplitude_mV}


def _inflammation(phys: Physiology, rng: np.random.Generator, p: dict) -> dict:
    """Myocarditis' nonspecific ST-T changes; pericarditis' diffuse injury current toward the apex and
    PR depression."""
    t_axis, t_amplitude_mV, st = p["t_axis_deg"], p["t_amplitude_mV"], p["st_vector"]
    pr_depression_mV = p["pr_depression_mV"]
    if phys.myocarditis:
        t_amplitude_mV *= rng.uniform(0.3, 0.7)
        t_axis = wrap_deg(t_axis + rng.normal(0.0, 35.0))
        st = st + rng.uniform(0.03, 0.07) * _gain(p) * display_vector(rng.uniform(-180, 180), rng.uniform(-40, 40))
    if phys.pericardial:
        attenuation = p["attenuation_factor"]
        st = st + rng.uniform(0.12, 0.25) * attenuation * display_vector(rng.normal(50.0, 10.0),
                                                                         rng.normal(-15.0, 8.0))
        pr_depression_mV = float(rng.uniform(0.05, 0.1) * attenuation)
    return {"t_axis_deg": t_axis, "t_amplitude_mV": t_amplitude_mV, "st_vector": st,
            "pr_depression_mV": pr_depression_mV}


def _beat_variation(phys: Physiology, rng: np.random.Generator, p: dict, version: int = 2) -> dict:
    """Electrical alternans of a large effusion, RBBB's secondary T inversion in V1-V2, RR variability
    (irregularly irregular in atrial fibrillation) and the breathing swing of the axis."""
    qrs_alternans_frac = 0.0
    if phys.effusion_mm > 15.0 and rng.random() < 0.5:
        qrs_alternans_frac = float(rng.uniform(0.1, 0.25))
    t_axis, t_elevation = p["t_axis_deg"], p["t_elevation_deg"]
    if p["rbbb"]:  # secondary T inversion in the right precordial leads
        t_vec = display_vector(t_axis, t_elevation) + 0.9 * display_vector(160.0, 70.0)
        t_axis, t_elevation, _ = angles_of(t_vec)
    heart_rate_bpm = p["heart_rate_bpm"]
    rr_sd = RR_VARIABILITY_SD_V3 if version >= 3 else 0.01
    base = rng.normal(0.035, rr_sd)  # then the subject's spread: the draws' order
    spread = np.exp(rng.normal(0.0, ecg_variety(version)["rr_log_sd"])) if version >= 4 else 1.0
    rr_variability_frac = float(np.clip(base * 70.0 / heart_rate_bpm * (0.5 if phys.hf else 1.0) * spread,
                                        0.003, 0.08 if version < 4 else 0.12))
    if p["atrial_fibrillation"]:  # irregularly irregular: SD of RR as a share of the mean
        rr_variability_frac = float(rng.uniform(0.12, 0.25))
    resp_axis_swing_deg = float(rng.uniform(1.0, 6.0))
    return {"qrs_alternans_frac": qrs_alternans_frac, "t_axis_deg": float(t_axis),
            "t_elevation_deg": float(t_elevation), "t_amplitude_mV": float(p["t_amplitude_mV"]),
            "rr_variability_frac": rr_variability_frac, "resp_axis_swing_deg": resp_axis_swing_deg}
