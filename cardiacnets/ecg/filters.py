"""Zero-phase ECG filters: band-pass, mains notch and median baseline removal.

Filters come from `scipy.signal`: Butterworth band-pass and ``iirnotch`` as
second-order sections, run forwards and backwards (`scipy.signal.sosfiltfilt`)
so that waves keep their timing (zero phase; the magnitude response is squared,
so an order-``n`` design acts as order ``2n``). Designs are cached per
(sampling rate, settings), and the notch and band-pass are cascaded into one
set of sections so that one ``sosfiltfilt`` call filters every lead at once.

Baseline wander is removed either by the band-pass's high-pass edge (0.5 Hz by
default) or by subtracting a two-stage median-filter estimate (200 ms window to
suppress the QRS and P waves, then 600 ms to suppress T waves), the classic
method of de Chazal et al., IEEE TBME 2004.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.ndimage
import scipy.signal

from cardiacnets.ecg.config import ECGConfig


@lru_cache(maxsize=64)
def bandpass_sos(sampling_rate_hz: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Butterworth band-pass as second-order sections (cached, read-only).

    Args:
        sampling_rate_hz: rate of the signal to be filtered.
        low_hz: high-pass edge (removes baseline wander below it).
        high_hz: low-pass edge; must lie below Nyquist.
        order: Butterworth order of each edge.

    Returns:
        (sections, 6) array for `scipy.signal.sosfiltfilt`.
    """
    nyquist = sampling_rate_hz / 2.0
    if not 0 < low_hz < high_hz < nyquist:
        raise ValueError(f"band-pass needs 0 < low < high < Nyquist ({nyquist:g} Hz), got ({low_hz}, {high_hz})")
    sos = scipy.signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sampling_rate_hz, output="sos")
    sos.setflags(write=False)
    return sos


@lru_cache(maxsize=64)
def notch_sos(sampling_rate_hz: float, notch_hz: float, quality: float = 30.0) -> np.ndarray:
    """Second-order IIR notch at the mains frequency, as sections (cached, read-only).

    Args:
        sampling_rate_hz: rate of the signal to be filtered.
        notch_hz: frequency to remove (50 or 60 Hz); must lie below Nyquist.
        quality: quality factor; the -3 dB width is ``notch_hz / quality``.

    Returns:
        (1, 6) array for `scipy.signal.sosfiltfilt`.
    """
    if not 0 < notch_hz < sampling_rate_hz / 2.0:
        raise ValueError(f"notch frequency {notch_hz} Hz must lie below Nyquist ({sampling_rate_hz / 2:g} Hz)")
    b, a = scipy.signal.iirnotch(notch_hz, quality, fs=sampling_rate_hz)
    sos = scipy.signal.tf2sos(b, a)
    sos.setflags(write=False)
    return sos


@lru_cache(maxsize=64)
def filter_cascade(
    sampling_rate_hz: float,
    bandpass_hz: tuple[float, float] | None,
    bandpass_order: int,
    notch_hz: float | None,
    notch_quality: float,
) -> np.ndarray | None:
    """Notch and band-pass cascaded into one set of sections (cached).

    Args:
        sampling_rate_hz: rate of the signal to be filtered.
        bandpass_hz: (low, high) edges, or ``None`` for no band-pass.
        bandpass_order: Butterworth order of each edge.
        notch_hz: mains frequency, or ``None`` for no notch.
        notch_quality: notch quality factor.

    Returns:
        (sections, 6) array, or ``None`` when neither filter is asked for.
    """
    parts = []
    if notch_hz is not None:
        parts.append(notch_sos(sampling_rate_hz, notch_hz, notch_quality))
    if bandpass_hz is not None:
        parts.append(bandpass_sos(sampling_rate_hz, bandpass_hz[0], bandpass_hz[1], bandpass_order))
    if not parts:
        return None
    sos = np.vstack(parts)
    sos.setflags(write=False)
    return sos


def zero_phase(signal: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Filter along the last axis forwards and backwards (float64 inside).

    Args:
        signal: (..., time) array, e.g. (leads, time).
        sos: second-order sections.

    Returns:
        The filtered array, float64, same shape (the input is not modified).
    """
    # The cached designs are read-only; scipy's Cython kernel wants a writable buffer.
    return scipy.signal.sosfiltfilt(np.array(sos), np.asarray(signal, dtype=np.float64), axis=-1)


def bandpass(signal: np.ndarray, sampling_rate_hz: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass of every lead.

    Args:
        signal: (..., time) array.
        sampling_rate_hz: samples per second.
        low_hz: high-pass edge.
        high_hz: low-pass edge.
        order: Butterworth order of each edge.

    Returns:
        Filtered float64 array of the same shape.
    """
    return zero_phase(signal, bandpass_sos(float(sampling_rate_hz), float(low_hz), float(high_hz), int(order)))


def notch(signal: np.ndarray, sampling_rate_hz: float, notch_hz: float = 50.0, quality: float = 30.0) -> np.ndarray:
    """Zero-phase mains notch of every lead.

    Args:
        signal: (..., time) array.
        sampling_rate_hz: samples per second.
        notch_hz: mains frequency (50 Hz Europe/UK Biobank, 60 Hz Americas).
        quality: notch quality factor.

    Returns:
        Filtered float64 array of the same shape.
    """
    return zero_phase(signal, notch_sos(float(sampling_rate_hz), float(notch_hz), float(quality)))


def median_baseline(
    signal: np.ndarray, sampling_rate_hz: float, first_window_s: float = 0.2, second_window_s: float = 0.6
) -> np.ndarray:
    """Baseline estimate by two median filters in series (200 ms, then 600 ms).

    Args:
        signal: (leads, time) array.
        sampling_rate_hz: samples per second.
        first_window_s: first window, long enough to flatten QRS complexes and P waves.
        second_window_s: second window, long enough to flatten T waves.

    Returns:
        (leads, time) float64 baseline; subtract it to remove wander. Edges are
        handled by reflecting the signal, not by zero padding.
    """
    signal = np.asarray(signal, dtype=np.float64)
    baseline = np.empty_like(signal)
    first = _odd_window(first_window_s, sampling_rate_hz)
    second = _odd_window(second_window_s, sampling_rate_hz)
    for lead in range(signal.shape[0]):
        # 1-D calls: scipy.ndimage's 2-D median with a (1, w) footprint is ~20x slower.
        stage = scipy.ndimage.median_filter(signal[lead], size=first, mode="reflect")
        baseline[lead] = scipy.ndimage.median_filter(stage, size=second, mode="reflect")
    return baseline


def apply_filters(signal: np.ndarray, sampling_rate_hz: float, config: ECGConfig) -> np.ndarray:
    """All conditioning an `ECGConfig` asks for, on every lead at once.

    Median baseline removal (when ``config.baseline_removal == "median"``) runs
    first, then the cached notch + band-pass cascade, zero phase.

    Args:
        signal: (leads, time) array in mV.
        sampling_rate_hz: rate of ``signal``.
        config: filter settings (``bandpass_hz``, ``bandpass_order``, ``notch_hz``,
            ``notch_quality``, ``baseline_removal``).

    Returns:
        Filtered (leads, time) float32 array (a new array).
    """
    out = np.asarray(signal, dtype=np.float64)
    if config.baseline_removal == "median":
        out = out - median_baseline(out, sampling_rate_hz)
    bandpass_hz = tuple(float(f) for f in config.bandpass_hz) if config.bandpass_hz is not None else None
    sos = filter_cascade(
        float(sampling_rate_hz),
        bandpass_hz,
        int(config.bandpass_order),
        None if config.notch_hz is None else float(config.notch_hz),
        float(config.notch_quality),
    )
    if sos is not None:
        out = zero_phase(out, sos)
    return out.astype(np.float32)


def _odd_window(seconds: float, sampling_rate_hz: float) -> int:
    samples = max(1, int(round(seconds * sampling_rate_hz)))
    return samples if samples % 2 else samples + 1
