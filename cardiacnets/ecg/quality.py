"""Quality checks on an ECG record before it is standardised.

`check_quality` returns a list of `QualityFinding` (code, severity, lead,
message). Errors make a record unusable (`standardize_ecg` raises on them);
warnings mark single leads as unusable (``flat_lead``, ``disconnected_lead``,
a lead that is entirely NaN) or only inform (``clipping``, ``unknown_lead``).
The thresholds are the module constants below, in the units of their names.

Codes:
    nan               non-finite samples: the whole lead (warning, lead unusable)
                      or part of it (error: filters cannot run through gaps).
    flat_lead         the whole lead's peak-to-peak amplitude is below `FLAT_PTP_MV`.
    disconnected_lead a stretch of `DISCONNECTED_MIN_S` stays within `FLAT_PTP_MV`
                      (electrode off for part of the record). Windows are
                      aligned to steps of `DISCONNECTED_MIN_S` / 8, so any flat
                      stretch of 9/8 x `DISCONNECTED_MIN_S` is always found.
    clipping          at least `CLIPPING_MIN_FRACTION` of the samples sit on the
                      lead's extreme value in plateaus of `CLIPPING_MIN_RUN_S` or
                      longer (amplifier saturation). Plateaus touching the first
                      or last sample do not count (PTB-XL, for one, holds the
                      last value for the final ~0.1 s of many records), nor an
                      extreme within `CLIPPING_MIN_EXCURSION` of the lead's
                      peak-to-peak from its median (a noise-free isoelectric line
                      sitting at the lead's minimum is not saturation).
    too_short         shorter than `MIN_DURATION_S` (error).
    unknown_lead      a label that is not one of the 12 standard leads (ignored).
    duplicate_lead    two rows map to the same standard lead (error).
    no_standard_leads no row is one of the 12 standard leads (error).
    no_usable_leads   every standard lead is flat, disconnected or NaN (error).
    implausible_units amplitudes that no ECG in millivolts has: a typical lead
                      above `IMPLAUSIBLE_MAX_MV` (microvolts stored as
                      millivolts?) or every lead below `IMPLAUSIBLE_MIN_MV`
                      (volts stored as millivolts?) (error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from einops import rearrange
from numpy.lib.stride_tricks import sliding_window_view

from cardiacnets.io.ecg_leads import canonical_lead_name
from cardiacnets.io.ecg_record import ECGRecord

MIN_DURATION_S = 2.0
"""Records shorter than this are rejected: too few beats for any use."""
FLAT_PTP_MV = 0.02
"""Peak-to-peak below 20 µV: no cardiac signal (a real lead's QRS is >= 0.1 mV)."""
DISCONNECTED_MIN_S = 2.0
"""A flat stretch this long in a lead that is otherwise live. At heart rates
above 30 bpm every 2 s window of a connected lead holds a QRS complex."""
CLIPPING_MIN_RUN_S = 0.02
"""A plateau at the lead's extreme lasting 20 ms; a genuine R or S peak is
rounded and touches its maximum for only a few samples."""
CLIPPING_MIN_FRACTION = 0.01
"""Fraction of samples in such plateaus that counts as clipping."""
CLIPPING_MIN_EXCURSION = 0.25
"""A clipped extreme lies at least this fraction of the peak-to-peak from the median."""
IMPLAUSIBLE_MAX_MV = 30.0
"""Median over leads of the peak-to-peak amplitude above this is not millivolts."""
IMPLAUSIBLE_MIN_MV = 0.05
"""Largest lead peak-to-peak below this (but not zero) is not millivolts."""

# Findings that make a single lead unusable (the standard tensor zeroes it and
# clears its lead-mask bit) without rejecting the record.
UNUSABLE_LEAD_CODES = frozenset({"nan", "flat_lead", "disconnected_lead"})


@dataclass(frozen=True)
class QualityFinding:
    """One problem found in a record.

    Attributes:
        code: machine-readable kind (see the module docstring).
        severity: ``"error"`` (record unusable) or ``"warning"``.
        lead: the lead concerned (standard name where recognised), or ``None``
            for record-level findings.
        message: a sentence a user can act on.
    """

    code: str
    severity: Literal["error", "warning"]
    lead: str | None
    message: str

    def __str__(self) -> str:
        where = f" [{self.lead}]" if self.lead else ""
        return f"{self.severity}: {self.code}{where}: {self.message}"


def check_quality(record: ECGRecord) -> list[QualityFinding]:
    """Check a record for unusable leads and implausible content.

    Args:
        record: an ECG as read from a file (millivolts).

    Returns:
        The findings, record-level ones first, then per lead in row order;
        empty for a clean record.
    """
    findings: list[QualityFinding] = []
    signal = np.asarray(record.signal_mV)
    fs = float(record.sampling_rate_hz)
    names = list(record.lead_names)

    if record.duration_s < MIN_DURATION_S:
        findings.append(QualityFinding(
            "too_short", "error", None,
            f"{record.duration_s:.3g} s long ({record.n_samples} samples at {fs:g} Hz); need at least {MIN_DURATION_S:g} s",
        ))

    standard = [canonical_lead_name(name) for name in names]
    seen: dict[str, int] = {}
    for row, (name, std_name) in enumerate(zip(names, standard)):
        if std_name is None:
            findings.append(QualityFinding(
                "unknown_lead", "warning", name,
                f"lead {name!r} is not one of the 12 standard leads; ignored",
            ))
        elif std_name in seen:
            findings.append(QualityFinding(
                "duplicate_lead", "error", std_name,
                f"rows {seen[std_name] + 1} and {row + 1} are both lead {std_name}",
            ))
        else:
            seen[std_name] = row
    if not seen:
        findings.append(QualityFinding(
            "no_standard_leads", "error", None,
            f"none of the leads ({', '.join(names) or 'none'}) is one of the 12 standard leads",
        ))

    lead_findings, unusable_rows, ptp_mV = _lead_findings(signal, fs, [s or n for s, n in zip(standard, names)])
    findings.extend(_units_findings(ptp_mV))
    findings.extend(lead_findings)

    usable_standard = [row for row in seen.values() if row not in unusable_rows]
    if seen and not usable_standard:
        findings.append(QualityFinding(
            "no_usable_leads", "error", None, "every standard lead is flat, disconnected or missing (NaN)",
        ))
    return findings


def unusable_leads(findings: list[QualityFinding]) -> set[str]:
    """Leads that a finding marks as unusable (flat, disconnected, all NaN).

    Args:
        findings: output of `check_quality`.

    Returns:
        Lead names (standard names where recognised).
    """
    return {f.lead for f in findings if f.code in UNUSABLE_LEAD_CODES and f.severity == "warning" and f.lead}


def errors(findings: list[QualityFinding]) -> list[QualityFinding]:
    """The findings of severity ``"error"``."""
    return [f for f in findings if f.severity == "error"]


def _lead_findings(
    signal: np.ndarray, fs: float, labels: list[str]
) -> tuple[list[QualityFinding], set[int], np.ndarray]:
    """Per-lead NaN, flat, disconnected and clipping checks (vectorised where it pays)."""
    findings: list[QualityFinding] = []
    unusable: set[int] = set()
    n_leads, n_samples = signal.shape if signal.ndim == 2 else (0, 0)
    ptp_mV = np.full(n_leads, np.nan)
    if n_leads == 0 or n_samples == 0:
        return findings, unusable, ptp_mV

    finite = np.isfinite(signal)
    all_finite = bool(finite.all())
    n_bad = n_samples - finite.sum(axis=1) if not all_finite else np.zeros(n_leads, dtype=int)
    clean_rows = [row for row in range(n_leads) if n_bad[row] == 0]
    for row in range(n_leads):
        if n_bad[row] == n_samples:
            findings.append(QualityFinding("nan", "warning", labels[row], "every sample is missing (NaN); lead unusable"))
            unusable.add(row)
        elif n_bad[row]:
            findings.append(QualityFinding(
                "nan", "error", labels[row],
                f"{int(n_bad[row])} of {n_samples} samples are missing (NaN/inf); cannot filter through gaps",
            ))
            unusable.add(row)
    if not clean_rows:
        return findings, unusable, ptp_mV

    clean = signal[clean_rows] if not all_finite else signal  # (clean leads, time)
    high = clean.max(axis=1)
    low = clean.min(axis=1)
    ptp_mV[clean_rows] = high - low

    stuck = _flat_windows(clean, fs)

    min_run = max(2, int(round(CLIPPING_MIN_RUN_S * fs)))
    clipped = _plateau_fraction(clean, high, low, min_run)
    for i, row in enumerate(clean_rows):
        label = labels[row]
        if ptp_mV[row] < FLAT_PTP_MV:
            findings.append(QualityFinding(
                "flat_lead", "warning", label,
                f"peak-to-peak {ptp_mV[row] * 1000:.3g} µV < {FLAT_PTP_MV * 1000:g} µV: no signal; lead unusable",
            ))
            unusable.add(row)
            continue
        if stuck[i]:
            findings.append(QualityFinding(
                "disconnected_lead", "warning", label,
                f"flat (< {FLAT_PTP_MV * 1000:g} µV) for {DISCONNECTED_MIN_S:g} s or longer: electrode off; lead unusable",
            ))
            unusable.add(row)
            continue
        fraction = clipped[i]
        if fraction >= CLIPPING_MIN_FRACTION:
            findings.append(QualityFinding(
                "clipping", "warning", label,
                f"{fraction:.1%} of samples sit on the lead's extreme value in plateaus of "
                f">= {CLIPPING_MIN_RUN_S * 1000:g} ms (amplifier saturation at {low[i]:.3g} / {high[i]:.3g} mV)",
            ))
    return findings, unusable, ptp_mV


def _flat_windows(clean: np.ndarray, fs: float) -> np.ndarray:
    """Per lead: does some block-aligned window of DISCONNECTED_MIN_S have ptp < FLAT_PTP_MV?

    Block maxima and minima, then a running max/min over 8 blocks: a tenth of the
    cost of sample-exact running filters (scipy.ndimage ``maximum_filter1d``
    took ~1 ms per 12 x 5000 record), for a detection granularity of 1/8 window.
    """
    n_leads, n_samples = clean.shape
    blocks_per_window = 8
    block = max(1, int(round(DISCONNECTED_MIN_S * fs / blocks_per_window)))
    n_blocks = n_samples // block
    if n_blocks < blocks_per_window:
        return np.zeros(n_leads, dtype=bool)
    blocks = rearrange(clean[:, : n_blocks * block], "lead (block sample) -> lead block sample", sample=block)
    block_max = blocks.max(axis=2)
    block_min = blocks.min(axis=2)
    window_max = sliding_window_view(block_max, blocks_per_window, axis=1).max(axis=2)
    window_min = sliding_window_view(block_min, blocks_per_window, axis=1).min(axis=2)
    return ((window_max - window_min) < FLAT_PTP_MV).any(axis=1)


def _plateau_fraction(clean: np.ndarray, high: np.ndarray, low: np.ndarray, min_run: int) -> np.ndarray:
    """Per lead, the fraction of samples in interior runs of >= ``min_run`` samples at its max or min."""
    n_leads, n_samples = clean.shape
    tolerance = 1e-6 * np.maximum(1.0, np.maximum(np.abs(high), np.abs(low)))[:, None]
    at_high = clean >= high[:, None] - tolerance
    at_low = clean <= low[:, None] + tolerance
    fraction = np.zeros(n_leads)
    # Only leads with enough extreme samples in total can reach the threshold; in
    # a normal record that is none, so the run-length pass below rarely runs.
    candidates = np.flatnonzero(at_high.sum(axis=1) + at_low.sum(axis=1) >= CLIPPING_MIN_FRACTION * n_samples)
    for lead in candidates:
        total = 0
        median = float(np.median(clean[lead]))
        min_excursion = CLIPPING_MIN_EXCURSION * (high[lead] - low[lead])
        for extreme, at_extreme in ((high[lead], at_high[lead]), (low[lead], at_low[lead])):
            if abs(extreme - median) < min_excursion:
                continue  # the isoelectric line, not a rail
            edges = np.diff(np.concatenate(([0], at_extreme.view(np.int8), [0])))
            starts = np.flatnonzero(edges == 1)
            ends = np.flatnonzero(edges == -1)
            lengths = ends - starts
            # Runs touching the first or last sample are held padding, not saturation.
            counted = (lengths >= min_run) & (starts > 0) & (ends < n_samples)
            total += int(lengths[counted].sum())
        fraction[lead] = total / n_samples
    return fraction


def _units_findings(ptp_mV: np.ndarray) -> list[QualityFinding]:
    live = np.array([row for row in range(len(ptp_mV)) if np.isfinite(ptp_mV[row])], dtype=int)
    if live.size == 0:
        return []
    amplitudes = ptp_mV[live]
    typical = float(np.median(amplitudes))
    largest = float(amplitudes.max())
    if typical > IMPLAUSIBLE_MAX_MV:
        return [QualityFinding(
            "implausible_units", "error", None,
            f"typical lead peak-to-peak is {typical:.4g} mV (> {IMPLAUSIBLE_MAX_MV:g} mV); "
            "values look like microvolts stored as millivolts",
        )]
    if 0 < largest < IMPLAUSIBLE_MIN_MV:
        return [QualityFinding(
            "implausible_units", "error", None,
            f"largest lead peak-to-peak is {largest * 1000:.3g} µV (< {IMPLAUSIBLE_MIN_MV * 1000:g} µV); "
            "values look like volts stored as millivolts, or every lead is disconnected",
        )]
    return []
