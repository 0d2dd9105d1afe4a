"""A small ECG delineator: beats, a median beat and its global fiducial points.

Run identically on simulated and real recordings, it is what the simulator's
"device" measures (the measurements written into the UK Biobank XML) and what
the realism benchmark (`cardiacnets.bench.realism`) compares. It follows the
way a resting-ECG device such as GE's 12SL measures (GE Healthcare, Marquette
12SL physician's guide): QRS complexes are detected on all leads together,
the dominant beats are averaged into a median beat, and the global fiducials
are found on that median beat from all leads at once.

1. Beats (`detect_beats`): the eight independent leads (I, II, V1-V6) are
   band-passed to 8-25 Hz, squared, summed and smoothed over 60 ms; peaks at
   least 250 ms apart above a third of the typical beat's energy are QRS
   complexes (a Pan & Tompkins-like detector, IEEE TBME 1985, on all leads).
2. Median beat (`median_beat`): beats are aligned by cross-correlation with a
   first template; beats whose QRS correlates poorly with it (ectopic) or that
   come early (premature) are left out; the median of the rest, 1.2 s at
   500 Hz with the QRS near 400 ms, is the median beat.
3. Fiducials (`delineate_median`): QRS onset and offset where the spatial
   velocity (the norm of the eight leads' derivative, 40 Hz low-passed) falls
   to a small fraction of its QRS peak for 12 ms; T end by the tangent method
   on the spatial magnitude of the repolarisation (the tangent at its steepest
   descent, down to the level that follows; Lepeschkin & Surawicz 1952 on one
   lead, here on the spatial magnitude); the P wave as the largest hump of the
   spatial magnitude 50-330 ms before the QRS, bounded where it falls to a
   fifth of its peak (absent when too small or not bounded, when the beats' own
   P waves do not repeat it, or when the rhythm is irregularly irregular, as in
   atrial fibrillation).

Written here rather than taken from neurokit2 (on PyPI): its delineators work
per lead on the whole strip and return per-beat, per-lead points, whereas the
device reports one set of global intervals from a 12-lead median beat; this
one takes about 5 ms for a 10 s, 12-lead record and needs only scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import signal as sp_signal

from cardiacnets.io.ecg_leads import INDEPENDENT_LEADS, STANDARD_LEADS

MEDIAN_RATE_HZ = 500.0
MEDIAN_SAMPLES = 600
# Where the beat's alignment point (the QRS energy peak) sits in the median beat.
MEDIAN_ALIGN_MS = 428.0
_INDEPENDENT = [STANDARD_LEADS.index(name) for name in INDEPENDENT_LEADS]
_LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}

# Delineation settings, chosen on PTB-XL records (see the module docstring of
# `cardiacnets.bench.realism` for the check against the records' diagnoses).
QRS_VELOCITY_FRACTION = 0.06   # QRS onset/offset: spatial velocity below this share of its QRS peak ...
QRS_QUIET_MS = 12.0            # ... for this long
P_MIN_MV = 0.03                # smallest spatial P magnitude accepted as a P wave
P_EDGE_FRACTION = 0.2          # P onset/offset where its magnitude falls to this share of its peak
DOMINANT_MIN_CORRELATION = 0.9
T_END_FRACTION = 0.05
P_MIN_CONSISTENCY = 0.5         # median beat-to-median correlation of a real P wave


@dataclass
class Delineation:
    """What the delineator measured on one record.

    Attributes:
        median_mV: (12, 600) median beat at 500 Hz in `STANDARD_LEADS` order.
        fiducials_ms: ``p_onset``, ``p_offset``, ``q_onset``, ``q_offset``,
            ``t_offset`` in ms from the median's first sample (P ones NaN when no P
            wave was found).
        beat_samples: QRS alignment points of every detected beat (strip samples).
        dominant: (beats,) True for the beats that formed the median.
        beat_correlation: (beats,) correlation of each beat's QRS with the median.
        sampling_rate_hz: rate of the strip the beats refer to.
    """

    median_mV: np.ndarray
    fiducials_ms: dict[str, float]
    beat_samples: np.ndarray
    dominant: np.ndarray
    beat_correlation: np.ndarray
    sampling_rate_hz: float
    extra: dict = field(default_factory=dict)

    @property
    def rr_ms(self) -> np.ndarray:
        """Intervals between consecutive detected beats, ms."""
        return np.diff(self.beat_samples) / self.sampling_rate_hz * 1000.0

    def intervals(self) -> dict[str, float]:
        """Device-style measurements (NaN where a wave was not found).

        Returns:
            ``ventricular_rate_bpm``, ``rr_interval_ms``, ``pq_interval_ms``,
            ``p_duration_ms``, ``qrs_duration_ms``, ``qt_interval_ms``,
            ``qtc_interval_ms`` (Bazett), ``p_axis_deg``, ``r_axis_deg``, ``t_axis_deg``.
        """
        f = self.fiducials_ms
        rr = self.rr_ms
        rr_ms = float(np.mean(rr)) if rr.size else math.nan
        qt = f["t_offset"] - f["q_onset"]
        return {
            "ventricular_rate_bpm": 60000.0 / rr_ms if rr.size else math.nan,
            "rr_interval_ms": rr_ms,
            "pq_interval_ms": f["q_onset"] - f["p_onset"],
            "p_duration_ms": f["p_offset"] - f["p_onset"],
            "qrs_duration_ms": f["q_offset"] - f["q_onset"],
            "qt_interval_ms": qt,
            "qtc_interval_ms": qt / math.sqrt(rr_ms / 1000.0) if rr.size else math.nan,
            "p_axis_deg": net_area_axis_deg(self.median_mV, f["p_onset"], f["p_offset"]),
            "r_axis_deg": net_area_axis_deg(self.median_mV, f["q_onset"], f["q_offset"]),
            "t_axis_deg": net_area_axis_deg(self.median_mV, f["q_offset"], f["t_offset"]),
        }

    def pr_baseline_mV(self) -> np.ndarray:
        """Each lead's level on the PR segment of the median beat (2-20 ms before QRS onset), (12,) mV."""
        q_on = int(round(self.fiducials_ms["q_onset"] / 1000.0 * MEDIAN_RATE_HZ))
        return self.median_mV[:, max(q_on - 10, 0):max(q_on - 2, 1)].mean(axis=1)

    def qrs_amplitudes_mV(self) -> tuple[np.ndarray, np.ndarray]:
        """R and S amplitudes of every lead of the median beat, against the PR baseline.

        R is the QRS's highest point above the baseline and S its deepest point below it (each 0 when
        the QRS never crosses the baseline that way), between QRS onset and offset: the amplitudes the
        voltage criteria of left ventricular hypertrophy use (Sokolow-Lyon, Cornell).

        Returns:
            ``(r_mV, s_mV)``: two (12,) arrays, >= 0, in `STANDARD_LEADS` order.
        """
        to_index = lambda ms: int(round(ms / 1000.0 * MEDIAN_RATE_HZ))  # noqa: E731
        q_on, q_off = to_index(self.fiducials_ms["q_onset"]), to_index(self.fiducials_ms["q_offset"])
        qrs = self.median_mV[:, q_on:q_off + 1] - self.pr_baseline_mV()[:, None]
        return np.maximum(qrs.max(axis=1), 0.0), np.maximum(-qrs.min(axis=1), 0.0)


# --------------------------------------------------------------------------- filters

@lru_cache(maxsize=16)
def _sos(kind: str, sampling_rate_hz: float) -> np.ndarray:
    if kind == "detect":
        return sp_signal.butter(2, [8.0, 25.0], btype="bandpass", fs=sampling_rate_hz, output="sos")
    if kind == "highpass":
        return sp_signal.butter(2, 0.5, btype="highpass", fs=sampling_rate_hz, output="sos")
    if kind == "smooth":
        return sp_signal.butter(2, 40.0, btype="lowpass", fs=sampling_rate_hz, output="sos")
    if kind == "atrial":
        return sp_signal.butter(2, [2.0, 25.0], btype="bandpass", fs=sampling_rate_hz, output="sos")
    if kind == "p":
        return sp_signal.butter(2, 25.0, btype="lowpass", fs=sampling_rate_hz, output="sos")
    raise ValueError(kind)


def _filtfilt(kind: str, x: np.ndarray, fs: float) -> np.ndarray:
    return sp_signal.sosfiltfilt(_sos(kind, float(fs)), x, axis=-1)


def to_standard_order(signal_mV: np.ndarray, lead_names) -> np.ndarray:
    """(12, T) float64 strip in `STANDARD_LEADS` order from a record's leads.

    Missing limb leads are derived from I and II.

    Raises:
        ValueError: I, II or a precordial lead is missing.
    """
    names = list(lead_names)
    rows = {}
    for name in INDEPENDENT_LEADS:
        if name not in names:
            raise ValueError(f"the record has no lead {name} (has {', '.join(names)})")
        rows[name] = np.asarray(signal_mV[names.index(name)], dtype=np.float64)
    i, ii = rows["I"], rows["II"]
    derived = {"III": ii - i, "aVR": -(i + ii) / 2.0, "aVL": i - ii / 2.0, "aVF": ii - i / 2.0}
    return np.stack([rows[n] if n in rows else (np.asarray(signal_mV[names.index(n)], dtype=np.float64)
                                                 if n in names else derived[n]) for n in STANDARD_LEADS])


def resample_to(signal: np.ndarray, sampling_rate_hz: float, target_hz: float = MEDIAN_RATE_HZ) -> np.ndarray:
    """Resample (..., T) to ``target_hz`` (polyphase); unchanged when equal."""
    if abs(sampling_rate_hz - target_hz) < 1e-9:
        return signal
    frac = math.gcd(int(round(target_hz)), int(round(sampling_rate_hz)))
    return sp_signal.resample_poly(signal, int(round(target_hz)) // frac, int(round(sampling_rate_hz)) // frac,
                                   axis=-1)


# --------------------------------------------------------------------------- beats

def detect_beats(strip_mV: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """QRS complexes of a 12-lead strip (standard order), as sample indices.

    Args:
        strip_mV: (12, T) strip in `STANDARD_LEADS` order.
        sampling_rate_hz: its rate.

    Returns:
        (beats,) sorted sample indices of each QRS's energy peak; empty when none.
    """
    fs = float(sampling_rate_hz)
    band = _filtfilt("detect", strip_mV[_INDEPENDENT], fs)
    energy = np.sum(band * band, axis=0)
    width = max(int(round(0.06 * fs)), 1)
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    peaks, props = sp_signal.find_peaks(energy, distance=max(int(0.25 * fs), 1), height=0.0)
    if peaks.size == 0:
        return peaks
    heights = props["peak_heights"]
    # Typical beat energy: robust to a few artefacts far larger than every beat.
    big = heights[heights >= 0.2 * np.percentile(heights, 90)]
    keep = heights >= 0.3 * float(np.median(big))
    return peaks[keep]


def median_beat(strip_mV: np.ndarray, sampling_rate_hz: float, beats: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median of the dominant beats, 1.2 s at 500 Hz, alignment point at 440 ms.

    Args:
        strip_mV: (12, T) strip in standard order (any baseline).
        sampling_rate_hz: its rate.
        beats: alignment points from `detect_beats`.

    Returns:
        ``(median_mV (12, 600), aligned beat samples (beats,), dominant (beats,) bool,
        correlation (beats,))``; the median is all zeros when no beat fits the strip.
    """
    fs = MEDIAN_RATE_HZ
    strip = resample_to(strip_mV, sampling_rate_hz, fs)
    scale = fs / float(sampling_rate_hz)
    strip = _filtfilt("highpass", strip, fs)
    at = np.round(np.asarray(beats, dtype=np.float64) * scale).astype(np.int64)
    before = int(round(MEDIAN_ALIGN_MS / 1000.0 * fs))
    after = MEDIAN_SAMPLES - before
    n = strip.shape[1]
    corr = np.zeros(len(at))
    dominant = np.zeros(len(at), dtype=bool)
    inside = (at - before - 10 >= 0) & (at + after + 10 <= n)
    if not inside.any():
        return np.zeros((12, MEDIAN_SAMPLES)), beats, dominant, corr

    # QRS windows (-60..+80 ms) of the independent leads, for alignment and typing.
    q0, q1 = int(0.06 * fs), int(0.08 * fs)
    indep = strip[_INDEPENDENT]

    def qrs_window(center: int) -> np.ndarray:
        return indep[:, center - q0:center + q1].ravel()

    idx = np.flatnonzero(inside)
    windows = np.stack([qrs_window(at[i]) for i in idx])
    template = np.median(windows, axis=0)
    # Align each beat on the template (lags within +-10 ms).
    lags = range(-5, 6)
    for k, i in enumerate(idx):
        best, best_lag = -2.0, 0
        for lag in lags:
            w = qrs_window(at[i] + lag)
            c = _correlation(w, template)
            if c > best:
                best, best_lag = c, lag
        at[i] += best_lag
        corr[i] = best
    rr = np.diff(at)
    rr_median = float(np.median(rr)) if rr.size else math.inf
    premature = np.zeros(len(at), dtype=bool)
    premature[1:] = rr < 0.85 * rr_median
    dominant = inside & (corr >= DOMINANT_MIN_CORRELATION)
    if (dominant & ~premature).sum() >= 3:
        dominant &= ~premature
    if not dominant.any():  # nothing typical: use every beat that fits
        dominant = inside.copy()
    stack = np.stack([strip[_INDEPENDENT, a - before:a + after] for a in at[dominant]])  # (beats, 8, 600)
    independent = np.median(stack, axis=0)
    # The limb leads follow from I and II (as the device derives them), so the
    # Einthoven/Goldberger identities hold in the median beat too.
    i, ii = independent[0], independent[1]
    median = np.stack([i, ii, ii - i, -(i + ii) / 2.0, i - ii / 2.0, ii - i / 2.0, *independent[2:]])
    # Recompute the correlation of every beat with the final median's QRS.
    final = np.concatenate([median[_INDEPENDENT][:, before - q0:before + q1].ravel()])
    for i in idx:
        corr[i] = _correlation(qrs_window(at[i]), final)
    aligned = at / scale
    return median, aligned, dominant, corr


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else 0.0


# --------------------------------------------------------------------------- fiducials

def delineate_median(median_mV: np.ndarray, align_ms: float = MEDIAN_ALIGN_MS,
                     rr_ms: float | None = None) -> dict[str, float]:
    """Global fiducial points of a 500 Hz, 12-lead median beat.

    Args:
        median_mV: (12, N) median beat in `STANDARD_LEADS` order at 500 Hz.
        align_ms: where the QRS is expected (its energy peak), ms from the first sample.
        rr_ms: the typical RR interval; when given, the P wave is not searched for
            before the previous beat's T wave has ended (fast rates).

    Returns:
        ``p_onset``, ``p_offset``, ``q_onset``, ``q_offset``, ``t_offset`` in ms from
        the first sample; the P ones are NaN when no P wave is found.
    """
    fs = MEDIAN_RATE_HZ
    ms = 1000.0 / fs
    n = median_mV.shape[1]
    x = _filtfilt("smooth", np.asarray(median_mV, dtype=np.float64)[_INDEPENDENT], fs)
    velocity = np.sqrt(np.sum(np.gradient(x, axis=1) ** 2, axis=0)) * fs  # mV/s

    # QRS: around the velocity peak nearest the expected position.
    center = int(round(align_ms / ms))
    lo, hi = max(center - 50, 1), min(center + 50, n - 1)
    peak = lo + int(np.argmax(velocity[lo:hi]))
    floor = float(np.percentile(velocity, 10))
    threshold = floor + QRS_VELOCITY_FRACTION * (velocity[peak] - floor)
    quiet = max(int(round(QRS_QUIET_MS / ms)), 1)
    below = velocity < threshold
    q_on = _quiet_edge(below, peak, -1, quiet, max(peak - int(150 / ms), 0))
    q_off = _quiet_edge(below, peak, +1, quiet, min(peak + int(220 / ms), n - 1))

    # Baseline: the PR segment just before QRS onset. Waves are located on a 25 Hz
    # low-passed copy, where the residual noise of a median beat is small.
    xp = _filtfilt("p", np.asarray(median_mV, dtype=np.float64)[_INDEPENDENT], fs)
    base_lo = max(q_on - int(20 / ms), 0)
    base_hi = max(q_on - int(4 / ms), base_lo + 1)
    magnitude = np.sqrt(np.sum((xp - xp[:, base_lo:base_hi].mean(axis=1, keepdims=True)) ** 2, axis=0))

    # T end: tangent at the steepest descent after the T peak, down to the following level.
    t_lo = min(q_off + int(60 / ms), n - 2)
    t_hi = min(q_on + int(650 / ms), n - 1)
    t_off = float(t_hi)
    if t_hi - t_lo > 10:
        t_peak = t_lo + int(np.argmax(magnitude[t_lo:t_hi]))
        d_hi = min(t_peak + int(250 / ms), t_hi)
        if d_hi - t_peak > 3:
            slope = np.gradient(magnitude)[t_peak:d_hi]
            steep = t_peak + int(np.argmin(slope))
            s = float(slope[steep - t_peak])
            level = float(magnitude[steep:min(steep + int(200 / ms), n)].min())
            if s < 0:
                t_off = steep + (level - magnitude[steep]) / s
            # The tangent ends the T wave where its steepest part would reach the baseline;
            # 12SL ends it later, where the slow tail has returned (on the UK Biobank sample
            # file the tangent alone ends it 29 ms before 12SL): take the later of the
            # tangent and the return to within T_END_FRACTION of the T height.
            tail = np.flatnonzero(magnitude[steep:t_hi] <= level + T_END_FRACTION * (magnitude[t_peak] - level))
            if tail.size:
                t_off = max(t_off, float(steep + tail[0]))
            t_off = float(np.clip(t_off, steep, t_hi))

    # P: the largest hump of the spatial magnitude 40-330 ms before the QRS. Its
    # onset is measured against the level before it (the TP segment, where the
    # spatial velocity is lowest), its offset against the PR segment.
    p_on = p_off = math.nan
    w_lo, w_hi = max(q_on - int(330 / ms), 0), q_on - int(40 / ms)
    if rr_ms is not None and math.isfinite(rr_ms):
        w_lo = max(w_lo, int(t_off - rr_ms / ms) + int(20 / ms))
    if w_hi - w_lo > 10:
        p_peak = w_lo + int(np.argmax(magnitude[w_lo:w_hi]))
        s_lo, s_hi = max(p_peak - int(160 / ms), w_lo - int(20 / ms), 0), p_peak - int(30 / ms)
        if magnitude[p_peak] >= P_MIN_MV and s_hi - s_lo > 5:
            speed = np.sqrt(np.sum(np.gradient(xp[:, s_lo:s_hi], axis=1) ** 2, axis=0))
            speed = np.convolve(speed, np.ones(5) / 5, mode="same")
            rest = s_lo + int(np.argmin(speed))
            before = np.sqrt(np.sum((xp[:, rest:p_peak + 1]
                                     - xp[:, max(rest - 3, 0):rest + 4].mean(axis=1, keepdims=True)) ** 2, axis=0))
            height = float(min(before[-1], magnitude[p_peak]))
            if height >= P_MIN_MV:
                left = np.flatnonzero(before < P_EDGE_FRACTION * before[-1])
                right = np.flatnonzero(magnitude[p_peak:q_on] < P_EDGE_FRACTION * magnitude[p_peak])
                if left.size and right.size:
                    on, off = rest + int(left[-1]), p_peak + int(right[0])
                    if 40.0 <= (off - on) * ms <= 200.0:
                        p_on, p_off = on * ms, off * ms
    return {"p_onset": p_on, "p_offset": p_off, "q_onset": q_on * ms, "q_offset": q_off * ms,
            "t_offset": t_off * ms}


def _quiet_edge(below: np.ndarray, start: int, step: int, quiet: int, limit: int) -> int:
    """First index from ``start`` (towards ``step``) that begins ``quiet`` samples below threshold."""
    run = 0
    i = start
    while (i - limit) * step < 0:
        i += step
        run = run + 1 if below[i] else 0
        if run >= quiet:  # the edge is the quiet run's sample next to the complex
            return i - step * (quiet - 1)
    return limit


def net_area_axis_deg(median_mV: np.ndarray, start_ms: float, end_ms: float) -> float:
    """Frontal axis (hexaxial) from the net areas of I and aVF over a window of the median beat.

    Args:
        median_mV: (12, N) median beat at 500 Hz, standard order.
        start_ms, end_ms: the window (NaN gives NaN).

    Returns:
        Degrees in (-180, 180]; NaN for an empty or undefined window.
    """
    if not (math.isfinite(start_ms) and math.isfinite(end_ms)):
        return math.nan
    i0 = max(int(round(start_ms / 1000.0 * MEDIAN_RATE_HZ)), 0)
    i1 = min(int(round(end_ms / 1000.0 * MEDIAN_RATE_HZ)) + 1, median_mV.shape[1])
    if i1 <= i0:
        return math.nan
    base = median_mV[:, max(i0 - 3, 0):i0 + 1].mean(axis=1) if start_ms > 0 else 0.0
    lead_i = float(np.sum(median_mV[_LEAD["I"], i0:i1] - (base[_LEAD["I"]] if np.ndim(base) else 0.0)))
    lead_avf = float(np.sum(median_mV[_LEAD["aVF"], i0:i1] - (base[_LEAD["aVF"]] if np.ndim(base) else 0.0)))
    return math.degrees(math.atan2(lead_avf * 2.0 / math.sqrt(3.0), lead_i))


# --------------------------------------------------------------------------- entry point

def delineate(strip_mV: np.ndarray, sampling_rate_hz: float, lead_names=STANDARD_LEADS) -> Delineation:
    """Beats, median beat and fiducials of a 12-lead strip.

    Args:
        strip_mV: (leads, T) strip in mV.
        sampling_rate_hz: its rate.
        lead_names: labels of its rows (standard names; limb leads may be missing).

    Returns:
        A `Delineation`.

    Raises:
        ValueError: a needed lead is missing, or the strip has fewer than two beats.
    """
    strip = to_standard_order(strip_mV, lead_names)
    beats = detect_beats(strip, sampling_rate_hz)
    if beats.size < 2:
        raise ValueError(f"found {beats.size} QRS complex(es); need at least 2")
    median, aligned, dominant, corr = median_beat(strip, sampling_rate_hz, beats)
    rr = np.diff(aligned)
    fiducials = delineate_median(median, rr_ms=float(np.median(rr)) / sampling_rate_hz * 1000.0 if rr.size else None)
    p_consistency = _p_consistency(strip, sampling_rate_hz, aligned[dominant], median, fiducials)
    # Irregularly irregular: most successive RR intervals differ by more than 10 %.
    # Intervals between two beats of the dominant QRS shape (ectopic ventricular beats left out).
    normal = corr >= DOMINANT_MIN_CORRELATION
    rr_normal = rr[normal[1:] & normal[:-1]]
    irregular = rr_normal.size >= 4 and float(np.mean(np.abs(np.diff(rr_normal)) > 0.1 * np.median(rr_normal))) >= 0.5
    if p_consistency < P_MIN_CONSISTENCY or irregular:  # atrial fibrillation: no P wave is reported
        fiducials["p_onset"] = fiducials["p_offset"] = math.nan
    return Delineation(median_mV=median, fiducials_ms=fiducials, beat_samples=aligned, dominant=dominant,
                       beat_correlation=corr, sampling_rate_hz=float(sampling_rate_hz),
                       extra={"p_consistency": p_consistency, "irregular_rr": irregular})


def _p_consistency(strip: np.ndarray, sampling_rate_hz: float, beats: np.ndarray, median: np.ndarray,
                   fiducials: dict[str, float]) -> float:
    """Median correlation of each dominant beat's P wave with the median's (NaN without a P).

    A sinus P wave repeats beat after beat (correlation near 1); the f waves of
    atrial fibrillation do not, although their average can leave a small hump.
    """
    if not math.isfinite(fiducials["p_onset"]) or len(beats) < 3:
        return math.nan
    fs = MEDIAN_RATE_HZ
    # 2-25 Hz: the P wave's band, without the slow swings that every beat shares.
    x = _filtfilt("atrial", resample_to(strip, sampling_rate_hz, fs)[_INDEPENDENT], fs)
    ref = _filtfilt("atrial", median[_INDEPENDENT], fs)
    lo = int(round(fiducials["p_onset"] / 1000.0 * fs)) - 5
    hi = min(int(round(fiducials["p_offset"] / 1000.0 * fs)) + 5,
             int(round(fiducials["q_onset"] / 1000.0 * fs)) - 4)  # not into the QRS
    before = int(round(MEDIAN_ALIGN_MS / 1000.0 * fs))
    if lo < 0 or hi > ref.shape[1]:
        return math.nan

    def shape(segment: np.ndarray) -> np.ndarray:  # each lead's own level and slope removed
        ramp = np.linspace(-1.0, 1.0, segment.shape[1])
        segment = segment - segment.mean(axis=1, keepdims=True)
        return (segment - np.outer(segment @ ramp / (ramp @ ramp), ramp)).ravel()

    template = shape(ref[:, lo:hi])
    values = []
    for beat in np.round(np.asarray(beats) * fs / sampling_rate_hz).astype(int):
        start = beat - before
        if start + lo >= 0 and start + hi <= x.shape[1]:
            values.append(_correlation(shape(x[:, start + lo:start + hi]), template))
    return float(np.median(values)) if values else math.nan
