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

This module assembles the strip (`synthesize_ecg`); the pieces live beside it:
the latents (`ecg_params`), the lead geometry (`ecg_geometry`), the beats'
lobes (`ecg_beats`), the beat schedule and atrial activity (`ecg_rhythm`), the
recording noise (`ecg_noise`), the device's median beat and measurements
(`ecg_device`) and its statements (`ecg_interpretation`). Their public names
are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sp_signal
from scipy.ndimage import gaussian_filter1d

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.io.ecg_record import ECGRecord
from cardiacnets.simulate.ecg_beats import (
    BEAT_LOBE_JITTER, BEAT_LOBE_JITTER_V2, BEAT_T_JITTER_V2, BeatLobes, p_wave_lobes, pvc_lobes, qrst_lobes,
    render_vcg,
)
from cardiacnets.simulate.ecg_device import (
    MEDIAN_N_SAMPLES, MEDIAN_QRS_ONSET_MS, MEDIAN_SAMPLING_RATE_HZ, device_measurements,
)
from cardiacnets.simulate.ecg_geometry import (
    DOWER_LEADS, DOWER_MATRIX, FRANK_FROM_DISPLAY, assemble_12, direction_vector, subject_lead_field, vcg_to_leads,
)
from cardiacnets.simulate.ecg_interpretation import LeadFeatures, interpret, lead_features
from cardiacnets.simulate.ecg_noise import (
    BASELINE_WANDER_MAX_MV, DEVICE_LOWPASS_HZ, EMG_RMS_MAX_MV, EMG_RMS_MEDIAN_MV, MAINS_MAX_MV, device_lowpass_sos,
    recording_noise,
)
from cardiacnets.simulate.ecg_params import ECG_VISIBLE_LATENTS, ECGParams, ecg_parameters, ecg_variety
from cardiacnets.simulate.ecg_rhythm import (
    PAC, PVC, SINUS, BeatSchedule, beat_schedule, fibrillatory_waves, pacing_spikes,
)

__all__ = [
    "BASELINE_WANDER_MAX_MV", "DEVICE_LOWPASS_HZ", "DOWER_LEADS", "DOWER_MATRIX", "ECG_VISIBLE_LATENTS",
    "EMG_RMS_MAX_MV", "EMG_RMS_MEDIAN_MV", "FRANK_FROM_DISPLAY", "MAINS_MAX_MV", "MEDIAN_N_SAMPLES",
    "MEDIAN_QRS_ONSET_MS", "MEDIAN_SAMPLING_RATE_HZ", "ECGParams", "LeadFeatures", "SimulatedECG",
    "direction_vector", "ecg_parameters", "interpret", "lead_features", "synthesize_ecg", "vcg_to_leads",
]


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


# Version 3 (`cardiacnets bench realism`): the triangular lobes' corners are rounded by a
# Gaussian of this SD (ms; activation fronts do not start and stop at once). Version 2's
# healthy subjects had 10^-2.14 of a strip's power at 40-100 Hz and 10^-3.25 at 100-250 Hz
# where PTB-XL NORM has 10^-2.31 and 10^-3.41.
QRS_CORNER_SMOOTHING_MS_V3 = 0.9  # fitted with `ecg_beats.QRS_LOBE_TURN_V3`


def _ventricular_vcg_v2(qrst: BeatLobes, pvc: BeatLobes, s: BeatSchedule, rng: np.random.Generator,
                        n_samples: int, fs: float, version: int = 2) -> np.ndarray:
    """Version 2's ventricular VCG: conducted and ectopic beats, with beat-to-beat QRS and T morphology.

    Each conducted beat's QRS lobes vary in size (`BEAT_LOBE_JITTER_V2`) and its T wave
    in size (`BEAT_T_JITTER_V2`), beyond the breathing changes of the schedule. From
    ``version`` 3 the result is smoothed by `QRS_CORNER_SMOOTHING_MS_V3` (no draws).

    Args:
        qrst: the conducted beat's lobes.
        pvc: the ectopic ventricular beat's lobes.
        s: the strip's beat schedule.
        rng: random generator.
        n_samples: strip length in samples.
        fs: sampling rate.
        version: the simulator's calibration (2 or later).

    Returns:
        (3, n_samples) Frank VCG of the ventricular beats, mV.
    """
    conducted, ectopic_v = s.kind != PVC, s.kind == PVC
    shape = (int(conducted.sum()), len(qrst.center_s))
    lobe_sd = np.where(qrst.is_qrs, BEAT_LOBE_JITTER_V2, BEAT_T_JITTER_V2)
    smoothing_ms = QRS_CORNER_SMOOTHING_MS_V3
    if version >= 4:  # the subject's own beat-to-beat variability and corner rounding (`ECG_V4`)
        lo, hi = ecg_variety(version)["beat_jitter"]
        lobe_sd = lobe_sd * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        smoothing_ms = float(rng.uniform(*ecg_variety(version)["corner_smoothing_ms"]))
    lobe_jitter = 1.0 + rng.normal(0.0, 1.0, shape) * lobe_sd
    vcg = render_vcg(qrst, s.onsets_s[conducted], s.beat_scale[conducted], s.qrs_scale[conducted], n_samples, fs,
                     s.rotation_rad[conducted], lobe_jitter)
    vcg += render_vcg(pvc, s.onsets_s[ectopic_v], s.beat_scale[ectopic_v], np.ones(int(ectopic_v.sum())),
                      n_samples, fs)
    if version >= 3:
        vcg = gaussian_filter1d(vcg, smoothing_ms * fs / 1000.0, axis=-1, mode="nearest")
    return vcg


def synthesize_ecg(params: ECGParams, rng: np.random.Generator, *, sampling_rate_hz: float = 500.0,
                   duration_s: float = 10.0, mains_hz: float = 50.0, noise: bool = True,
                   version: int = 2) -> SimulatedECG:
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
        version: the simulator's calibration (`SynthConfig.version`; 1 reproduces cardiacnets 0.1.0).

    Returns:
        A `SimulatedECG`; the median beat is always 600 samples at 500 Hz.
    """
    if sampling_rate_hz <= 0 or duration_s <= 0:
        raise ValueError(f"sampling_rate_hz and duration_s must be positive, got {sampling_rate_hz}, {duration_s}")
    n_samples = int(round(duration_s * sampling_rate_hz))
    fs = sampling_rate_hz

    # 1. Beats: the schedule, then each kind of beat rendered at its times.
    schedule = beat_schedule(params, rng, duration_s)
    sinus_p = p_wave_lobes(params, params.p_axis_deg, params.p_amplitude_mV)
    ectopic_p = p_wave_lobes(params, float(rng.uniform(-80.0, 100.0)), params.p_amplitude_mV * rng.uniform(0.7, 1.1))
    qrst = qrst_lobes(params, rng, version=version)
    pvc = pvc_lobes(params, rng)
    lead_field = subject_lead_field(rng, version=version)
    s = schedule
    conducted = s.kind != PVC
    ectopic_v = s.kind == PVC
    if version >= 2:
        vcg = _ventricular_vcg_v2(qrst, pvc, s, rng, n_samples, fs, version)
    else:
        lobe_jitter = 1.0 + rng.normal(0.0, BEAT_LOBE_JITTER, (int(conducted.sum()), len(qrst.center_s)))
        vcg = render_vcg(qrst, s.onsets_s[conducted], s.beat_scale[conducted], s.qrs_scale[conducted], n_samples,
                         fs, s.rotation_rad[conducted], lobe_jitter)
    for p_wave, which in ((sinus_p, s.has_p & (s.kind == SINUS)), (ectopic_p, s.has_p & (s.kind == PAC))):
        vcg += render_vcg(p_wave, s.onsets_s[which] + s.p_shift_s[which], s.beat_scale[which],
                          np.ones(int(which.sum())), n_samples, fs)
    if version < 2:
        vcg += render_vcg(pvc, s.onsets_s[ectopic_v], s.beat_scale[ectopic_v], np.ones(int(ectopic_v.sum())),
                          n_samples, fs)
    if params.atrial_fibrillation:
        vcg += fibrillatory_waves(params, rng, n_samples, fs)
    if params.paced:
        spike = direction_vector(rng.uniform(-180.0, 180.0), rng.uniform(-60.0, 60.0)) * rng.uniform(0.4, 2.0)
        vcg += pacing_spikes(s.onsets_s[conducted], n_samples, fs, spike)
        if not params.atrial_fibrillation:
            atrial = s.onsets_s[s.has_p & (s.kind == SINUS)] - params.pr_interval_ms / 1000.0
            vcg += pacing_spikes(atrial, n_samples, fs, 0.6 * spike)
    variety = ecg_variety(version)  # read from version 5 on
    if version >= 5:  # `ECG_V5`: the population's lead gains, refitted to PTB-XL NORM
        gains = [variety["limb_lead_gain"]] * 2 + [variety[f"chest_gain_V{k}"] for k in range(1, 7)]
        lead_field = lead_field * np.array(gains)[:, None]
    independent = np.einsum("lk,kt->lt", lead_field, vcg)  # (8, T) I, II, V1-V6

    # 2. Recording noise, on the electrodes' independent leads so limb identities hold,
    # then the device's low-pass (version 5: the recorder's own, drawn after every other draw).
    if noise:
        independent = independent + recording_noise(rng, n_samples, fs, mains_hz, version=version)
    lowpass_hz = DEVICE_LOWPASS_HZ
    if version >= 5:
        lo, hi = variety["device_lowpass_hz"]
        lowpass_hz = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if lowpass_hz < 0.45 * fs:
        independent = sp_signal.sosfiltfilt(device_lowpass_sos(float(fs), lowpass_hz), independent, axis=-1)
    signal_mV = assemble_12(independent).astype(np.float32)

    # 3. The device: median beat, measurements and statements from the recorded strip.
    in_strip = (s.onsets_s >= 0.0) & (s.onsets_s < duration_s)
    median_mV, measurements = device_measurements(signal_mV, fs, params, qrst, s.onsets_s[in_strip])
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

