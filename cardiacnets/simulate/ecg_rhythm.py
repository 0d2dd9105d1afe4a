"""The simulated ECG's rhythm: when each beat of a strip comes, and the atrial activity between beats.

`beat_schedule` times every beat of a strip: sinus rhythm with respiratory and
slower autonomic RR variation (or the irregular RR of atrial fibrillation),
premature ventricular and atrial complexes with the right pauses, and each
beat's breathing change of amplitude and axis. `fibrillatory_waves` draws the f
waves of atrial fibrillation and `pacing_spikes` a pacemaker's stimuli.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardiacnets.simulate.ecg_geometry import direction_vector
from cardiacnets.simulate.ecg_params import ECGParams

SINUS, PAC, PVC = 0, 1, 2  # kinds of beat


@dataclass
class BeatSchedule:
    """Every beat of one strip (B beats), times in s from the strip's start."""

    onsets_s: np.ndarray      # (B,) QRS onset
    kind: np.ndarray          # (B,) SINUS (conducted or paced), PAC or PVC
    has_p: np.ndarray         # (B,) a P wave precedes the QRS
    p_shift_s: np.ndarray     # (B,) beat-to-beat PR variation
    beat_scale: np.ndarray    # (B,) breathing and random amplitude change
    qrs_scale: np.ndarray     # (B,) electrical alternans
    rotation_rad: np.ndarray  # (B,) breathing rotation of the heart vector


def beat_schedule(params: ECGParams, rng: np.random.Generator, duration_s: float) -> BeatSchedule:
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
    return BeatSchedule(onsets_s=onsets_s[keep], kind=kind[keep], has_p=has_p[keep], p_shift_s=p_shift_s[keep],
                     beat_scale=beat_scale[keep], qrs_scale=qrs_scale[keep], rotation_rad=rotation_rad[keep])


def fibrillatory_waves(params: ECGParams, rng: np.random.Generator, n_samples: int,
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


def pacing_spikes(onsets_s: np.ndarray, n_samples: int, sampling_rate_hz: float,
                  direction: np.ndarray) -> np.ndarray:
    """(3, T) pacemaker stimuli 2 ms before the given times: one sample and a small overshoot."""
    out = np.zeros((3, n_samples))
    at = np.round((onsets_s - 0.002) * sampling_rate_hz).astype(np.int64)
    for k, scale in ((0, 1.0), (1, -0.25)):
        idx = at + k
        idx = idx[(idx >= 0) & (idx < n_samples)]
        out[:, idx] += scale * direction[:, None]
    return out
