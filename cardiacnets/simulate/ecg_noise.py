"""The simulated ECG's recording: baseline wander, mains hum, muscle noise and the device's low-pass.

Levels follow PTB-XL (measured by `cardiacnets bench realism`). The noise is
added to the electrodes' independent leads (I, II, V1-V6) so the derived limb
leads stay exactly consistent.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import signal as sp_signal

from cardiacnets.simulate.ecg_geometry import DOWER_LEADS

# Noise bounds (per independent lead I, II, V1-V6; the derived limb leads are
# combinations of I and II, so at most twice these, in III = II - I).
BASELINE_WANDER_MAX_MV = 0.4   # peak, sum of sinusoids below 0.5 Hz
MAINS_MAX_MV = 0.02            # peak amplitude of the mains sinusoid
EMG_RMS_MAX_MV = 0.02          # RMS of band-limited (20-150 Hz) muscle noise
DEVICE_LOWPASS_HZ = 150.0      # the recorder's low-pass (first order, applied forwards and backwards)
EMG_RMS_MEDIAN_MV = 0.0019     # its typical level (PTB-XL's high-frequency noise)
# Version 2's electrode motion (`electrode_motion`): Brownian baseline above 0.3 Hz, RMS per
# record log-normal around this level, which brings the dominant beats' residual around the
# median beat from 0.8 % to 1.0 % of the QRS size (PTB-XL: 1.2 %; more moves the noisy
# median beat by a sample against the clean one).
ELECTRODE_MOTION_RMS_MV = 0.015
ELECTRODE_MOTION_HIGHPASS_HZ = 0.3
ELECTRODE_MOTION_LOWPASS_HZ = 8.0   # motion is slow: it leaves the 40-150 Hz noise (hf_noise_uV) as it is
# Version 3's baseline wander: a record's peak is log-uniform over this range (mV) rather than
# 0.04 to `BASELINE_WANDER_MAX_MV`. Version 2's share of power below 0.67 Hz spread too widely
# (log10 quartiles -1.70 to -0.78 against PTB-XL's -1.57 to -1.04), and its large wander took
# the 5-15 Hz share down (median 10^-0.53 against 10^-0.43).
BASELINE_WANDER_RANGE_V3_MV = (0.06, 0.2)
# Version 3's mains hum (mV): a record's amplitude is log-uniform over the first range, and in
# `MAINS_LARGE_PROB_V3` of records over the second (version 2: 0.00002-0.0004, and 0.003 to
# `MAINS_MAX_MV` in 10 %). Measured at 50/60 Hz with the other noise, version 2's strips had
# 5-95 % quantiles of 0.23-9.4 uV, PTB-XL's 0.42-2.3 uV.
MAINS_RANGE_V3_MV = ((0.0003, 0.0012), (0.0012, 0.003))
MAINS_LARGE_PROB_V3 = 0.05


@lru_cache(maxsize=8)
def device_lowpass_sos(sampling_rate_hz: float, cutoff_hz: float = DEVICE_LOWPASS_HZ) -> np.ndarray:
    """The recorder's first-order low-pass (second-order sections; `DEVICE_LOWPASS_HZ` unless the
    simulator version draws the recorder's own)."""
    return sp_signal.butter(1, cutoff_hz, btype="lowpass", fs=sampling_rate_hz, output="sos")


@lru_cache(maxsize=8)
def _emg_sos(sampling_rate_hz: float) -> np.ndarray:
    high_hz = min(150.0, 0.45 * sampling_rate_hz)
    return sp_signal.butter(2, [20.0, high_hz], btype="bandpass", fs=sampling_rate_hz, output="sos")


def recording_noise(rng: np.random.Generator, n_samples: int, sampling_rate_hz: float,
                    mains_hz: float, *, version: int = 2) -> np.ndarray:
    """(8, T) recording noise on I, II, V1-V6: baseline wander, mains hum, muscle noise.

    Levels follow PTB-XL (measured by `cardiacnets bench realism`): wander is
    log-uniform up to `BASELINE_WANDER_MAX_MV` (three sinusoids between 0.05 and
    0.45 Hz); mains hum is usually about a microvolt (the device filters it) and
    at most `MAINS_MAX_MV`; muscle noise (white noise band-passed to 20-150 Hz)
    has an RMS of a few microvolts, at most `EMG_RMS_MAX_MV`. From ``version`` 2,
    electrode motion adds a random (Brownian, band-passed to 0.3-8 Hz)
    baseline whose RMS per record is log-normal around `ELECTRODE_MOTION_RMS_MV`; its
    draws come after version 1's, so the rest of the noise is the same.

    Args:
        rng: random generator.
        n_samples: strip length in samples.
        sampling_rate_hz: strip sampling rate.
        mains_hz: mains frequency.
        version: the simulator's calibration (1 reproduces cardiacnets 0.1.0).

    Returns:
        (8, n_samples) noise in mV.
    """
    t_s = np.arange(n_samples) / sampling_rate_hz
    n_leads = len(DOWER_LEADS)
    # Baseline wander: per-lead amplitude split over three slow sinusoids (respiration, drift).
    freq_hz = rng.uniform(0.05, 0.45, (n_leads, 3))
    phase = rng.uniform(0.0, 2.0 * math.pi, (n_leads, 3))
    share = rng.dirichlet(np.ones(3), n_leads)                                     # (8, 3), rows sum to 1
    wander_lo, wander_hi = BASELINE_WANDER_RANGE_V3_MV if version >= 3 else (0.04, BASELINE_WANDER_MAX_MV)
    record_wander = math.exp(rng.uniform(math.log(wander_lo), math.log(wander_hi)))
    peak = record_wander * rng.uniform(0.3, 1.0, (n_leads, 1))
    wander = np.einsum("lc,lct->lt", peak * share,
                       np.sin(2.0 * math.pi * freq_hz[:, :, None] * t_s + phase[:, :, None]))
    # Mains hum: one amplitude per record (shared interference), lead-specific phase.
    (hum_lo, hum_hi), (large_lo, large_hi), large_prob = ((0.00002, 0.0004), (0.003, MAINS_MAX_MV), 0.1)
    if version >= 3:
        (hum_lo, hum_hi), (large_lo, large_hi), large_prob = (*MAINS_RANGE_V3_MV, MAINS_LARGE_PROB_V3)
    hum_mV = math.exp(rng.uniform(math.log(hum_lo), math.log(hum_hi)))
    if rng.random() < large_prob:
        hum_mV = math.exp(rng.uniform(math.log(large_lo), math.log(large_hi)))
    mains = hum_mV * rng.uniform(0.5, 1.0, (n_leads, 1)) * np.sin(
        2.0 * math.pi * mains_hz * t_s + rng.uniform(0.0, 2.0 * math.pi, (n_leads, 1)))
    # Muscle noise: band-limited Gaussian, RMS drawn per record (log-normal, a few
    # microvolts) and per lead; filtered with scipy's causal SOS filter and rescaled.
    white = rng.standard_normal((n_leads, n_samples))
    emg = sp_signal.sosfilt(_emg_sos(sampling_rate_hz), white, axis=-1)
    emg_rms = np.clip(EMG_RMS_MEDIAN_MV * math.exp(rng.normal(0.0, 0.4)) * rng.uniform(0.7, 1.3, (n_leads, 1)),
                      0.0006, EMG_RMS_MAX_MV)
    emg *= emg_rms / np.maximum(np.sqrt(np.mean(emg ** 2, axis=-1, keepdims=True)), 1e-12)
    if version < 2:
        return wander + mains + emg
    return wander + mains + emg + electrode_motion(rng, n_samples, sampling_rate_hz)


def electrode_motion(rng: np.random.Generator, n_samples: int, sampling_rate_hz: float) -> np.ndarray:
    """(8, T) electrode-motion baseline: Brownian noise band-passed to 0.3-8 Hz.

    Unlike the slow sinusoidal wander, it has power from 0.3 to a few Hz (a 1/f^2
    spectrum), so it survives the delineator's 0.5 Hz high-pass and moves each beat's
    ST-T a little against the median beat, as in real recordings.

    Args:
        rng: random generator.
        n_samples: strip length in samples.
        sampling_rate_hz: strip sampling rate.

    Returns:
        (8, n_samples) baseline in mV.
    """
    n_leads = len(DOWER_LEADS)
    walk = np.cumsum(rng.standard_normal((n_leads, n_samples)), axis=-1)
    walk = sp_signal.sosfiltfilt(_motion_sos(sampling_rate_hz), walk, axis=-1)
    rms = ELECTRODE_MOTION_RMS_MV * math.exp(rng.normal(0.0, 0.5)) * rng.uniform(0.5, 1.0, (n_leads, 1))
    return walk * rms / np.maximum(np.sqrt(np.mean(walk ** 2, axis=-1, keepdims=True)), 1e-12)


@lru_cache(maxsize=8)
def _motion_sos(sampling_rate_hz: float) -> np.ndarray:
    return sp_signal.butter(1, [ELECTRODE_MOTION_HIGHPASS_HZ, ELECTRODE_MOTION_LOWPASS_HZ], btype="bandpass",
                            fs=sampling_rate_hz, output="sos")
