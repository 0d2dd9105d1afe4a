"""The standard ECG representation every model in the package consumes.

`standardize_ecg` turns any `ECGRecord` into a `StandardECG`: a (12, T)
float32 array in `STANDARD_LEADS` order at one sampling rate and length, with a
per-sample mask (real vs padded) and a per-lead mask (present and usable).
Steps, in order:

1. quality check (`check_quality`); any error raises `InputError` naming the
   file and the problems;
2. map the file's leads onto the 12 standard leads; flat, disconnected and
   all-NaN leads are left out (zeros, lead-mask False), unknown ones ignored;
3. resample to ``config.sampling_rate_hz`` (rational up/down ratio, the
   anti-aliasing FIR of `scipy.signal.resample_poly`) and
4. filter (median baseline removal if asked, mains notch, band-pass), zero
   phase with an odd-symmetric edge extension of
   `cardiacnets.ecg.filters.EDGE_PAD_S` seconds. The order depends on the rates:
   upsampling by an integer factor (100 or 250 Hz to 500 Hz) filters at the
   source length and resamples in the same FFT pair
   (`cardiacnets.ecg.filters.zero_phase_fft`; both are linear and
   time-invariant, so they commute), which is ~9x faster than resampling and
   then filtering 5x as many samples; downsampling (and other ratios)
   resamples first (`scipy.signal.resample_poly`), so that the filters see the
   fewer samples; equal rates only filter. The median baseline estimate is not
   linear and always runs at the target rate, after resampling. Without any
   filter the output is exactly ``resample_poly``'s;
5. derive III, aVR, aVL, aVF from I and II when the file lacks them (8-lead
   storage), after filtering, so the Einthoven/Goldberger relations hold exactly
   in the output;
6. crop (from the start or the centre) or zero-pad to ``config.n_samples``;
7. normalise (none: millivolts; z-score per lead or per record, statistics over
   real samples of usable leads, recorded in ``normalization``).

`apply_lead_subset` and `reduce_leads` give reduced-lead views (lead I only,
lead II only, limb leads, any subset) on single records or batches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import scipy.signal

from cardiacnets.ecg.config import ECGConfig
from cardiacnets.ecg.filters import apply_filters, cascade_settings, resampling_taps, zero_phase_fft
from cardiacnets.ecg.quality import QualityFinding, check_quality, errors, unusable_leads
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.ecg_leads import STANDARD_LEADS, canonical_lead_name, derive_limb_leads, lead_mask as subset_mask
from cardiacnets.io.ecg_record import ECGRecord

DERIVABLE_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")
MAX_RESAMPLING_FACTOR = 2000  # largest up or down factor of the rational resampling ratio
MAX_RATE_ERROR = 1e-3  # relative error of the realised rate: 0.4 ms on a 400 ms QT, under one sample at 500 Hz
_STD_FLOOR_MV = 1e-6  # z-score: a lead with less spread than this is left unscaled
_LEAD_INDEX = {name: i for i, name in enumerate(STANDARD_LEADS)}


@dataclass
class StandardECG:
    """An ECG in the package's standard form.

    Attributes:
        signal: (12, T) float32 in `STANDARD_LEADS` order; millivolts unless
            ``normalization["method"]`` says otherwise; zeros where a lead is
            unusable or a sample is padding.
        sample_mask: (T,) bool, True where the sample is real, False where padded.
        lead_mask: (12,) bool, True where the lead is present (or derived) and usable.
        sampling_rate_hz: samples per second of ``signal``.
        normalization: what was applied: ``method`` and its statistics
            (``mean_mV``/``std_mV`` per lead or for the record).
        findings: the quality findings of the source record.
        source: the file it came from.
        derived_leads: leads computed from I and II rather than read.
    """

    signal: np.ndarray
    sample_mask: np.ndarray
    lead_mask: np.ndarray
    sampling_rate_hz: float
    normalization: dict
    findings: list[QualityFinding] = field(default_factory=list)
    source: str = ""
    derived_leads: tuple[str, ...] = ()

    @property
    def lead_names(self) -> tuple[str, ...]:
        return STANDARD_LEADS

    @property
    def n_valid_samples(self) -> int:
        return int(self.sample_mask.sum())


def standardize_ecg(record: ECGRecord, config: ECGConfig) -> StandardECG:
    """Turn a record into the standard (12, T) representation.

    Args:
        record: an ECG as read from a file (`cardiacnets.io.ecg.read_ecg`).
        config: target rate, duration, crop, filters and normalisation.

    Returns:
        The `StandardECG`.

    Raises:
        InputError: the record has quality errors (the message names the file
            and lists them) or cannot be resampled to the target rate.
        ConfigError: the configuration is inconsistent.
    """
    config.validate()
    source = record.source or "<in-memory record>"
    # 1. Quality.
    findings = check_quality(record)
    problems = errors(findings)
    if problems:
        raise InputError(source, "; ".join(_describe(f) for f in problems))

    # 2. Leads present and usable, in standard order.
    bad = unusable_leads(findings)
    in_file = [canonical_lead_name(name) for name in record.lead_names]
    rows = {standard: row for row, standard in enumerate(in_file) if standard is not None and standard not in bad}
    present = [name for name in STANDARD_LEADS if name in rows]
    derived: tuple[str, ...] = ()
    if config.derive_limb_leads and "I" in rows and "II" in rows:
        derived = tuple(name for name in DERIVABLE_LEADS if name not in in_file)
    assert present, "check_quality reports a record without usable standard leads as an error"
    source_signal = np.asarray(record.signal_mV)[[rows[name] for name in present]]  # (present, time)

    # 3-4. Resample and filter.
    target_hz = float(config.sampling_rate_hz)
    filtered = _resample_and_filter(source, source_signal, float(record.sampling_rate_hz), target_hz, config)

    # 6 before 5: crop or pad the present rows first (derivation is per sample, so
    # the order does not matter), which spares a copy of the full record.
    cropped, sample_mask = _crop_or_pad(filtered, config.n_samples, config.crop)  # (present, n_samples)

    # 5. Assemble the 12 rows and derive missing limb leads.
    mask = np.zeros(len(STANDARD_LEADS), dtype=bool)
    mask[[_LEAD_INDEX[name] for name in present]] = True
    if len(present) == len(STANDARD_LEADS):
        signal = cropped  # already in standard order
    else:
        signal = np.zeros((len(STANDARD_LEADS), config.n_samples), dtype=np.float32)
        signal[mask] = cropped
    if derived:
        limb = derive_limb_leads(signal[_LEAD_INDEX["I"]], signal[_LEAD_INDEX["II"]])
        for name in derived:
            signal[_LEAD_INDEX[name]] = limb[name]
            mask[_LEAD_INDEX[name]] = True

    # 7. Normalise.
    signal, normalization = _normalize(signal, sample_mask, mask, config.normalization)
    return StandardECG(
        signal=signal,
        sample_mask=sample_mask,
        lead_mask=mask,
        sampling_rate_hz=target_hz,
        normalization=normalization,
        findings=findings,
        source=record.source,
        derived_leads=derived,
    )


def apply_lead_subset(signal, lead_mask, subset: str | list[str] | tuple[str, ...]):
    """Reduced-lead view: zero the leads outside ``subset`` and clear their mask bits.

    Works on one record or a batch, numpy arrays or torch tensors; the 12-row
    layout is kept so that models see a fixed shape plus a mask.

    Args:
        signal: (..., 12, T) array in `STANDARD_LEADS` order.
        lead_mask: (..., 12) boolean array.
        subset: ``"I"``, ``"II"``, ``"limb"``, ``"precordial"``, ``"8"``, ``"12"``,
            ``"I,II,V1"`` or a list of names (see `resolve_lead_subset`).

    Returns:
        ``(signal, lead_mask)``: new arrays of the same shapes and types.

    Raises:
        ValueError: an unknown lead name, or arrays without a 12-lead axis.
    """
    keep = subset_mask(subset)  # (12,) numpy bool
    n = len(STANDARD_LEADS)
    if tuple(signal.shape[-2:-1]) != (n,) or tuple(lead_mask.shape[-1:]) != (n,):
        raise ValueError(
            f"expected signal (..., {n}, time) and lead_mask (..., {n}); got {tuple(signal.shape)} and {tuple(lead_mask.shape)}"
        )
    if isinstance(signal, np.ndarray):
        return signal * keep[:, None].astype(signal.dtype), np.asarray(lead_mask, dtype=bool) & keep
    import torch  # tensors: keep device and dtype

    keep_t = torch.as_tensor(keep, device=signal.device)
    return signal * keep_t[:, None].to(signal.dtype), lead_mask.bool() & keep_t


def reduce_leads(std: StandardECG, subset: str | list[str] | tuple[str, ...]) -> StandardECG:
    """A copy of ``std`` showing only ``subset`` (see `apply_lead_subset`).

    Args:
        std: a standardised ECG.
        subset: lead subset spec (``"I"``, ``"II"``, ``"limb"``, ``"I,V2"``...).

    Returns:
        A new `StandardECG` whose other leads are zero and masked out.
    """
    signal, mask = apply_lead_subset(std.signal, std.lead_mask, subset)
    return dataclasses.replace(std, signal=signal, lead_mask=mask)


def _describe(finding: QualityFinding) -> str:
    where = f" [{finding.lead}]" if finding.lead else ""
    return f"{finding.code}{where}: {finding.message}"


def _resample_and_filter(
    source: str, signal: np.ndarray, from_hz: float, to_hz: float, config: ECGConfig
) -> np.ndarray:
    """Resample with the best rational up/down ratio and filter; (leads, time) float32 at ``to_hz``.

    The ratio is the closest fraction with factors up to `MAX_RESAMPLING_FACTOR`
    (exact for 100, 250, 257, 360, 500, 1000 Hz...); a rate it cannot match to
    within `MAX_RATE_ERROR` is an error rather than a silently wrong time axis.
    See the module docstring for the order of the two steps.
    """
    if from_hz == to_hz:
        return apply_filters(signal, to_hz, config)
    ratio = Fraction(to_hz / from_hz).limit_denominator(MAX_RESAMPLING_FACTOR)
    up, down = ratio.numerator, ratio.denominator
    if up > MAX_RESAMPLING_FACTOR or abs(from_hz * up / down - to_hz) > MAX_RATE_ERROR * to_hz:
        raise InputError(source, f"cannot resample {from_hz:g} Hz to {to_hz:g} Hz with a rational ratio of small factors")
    if down == 1 and config.baseline_removal != "median" and cascade_settings(config) is not None:
        # Integer upsampling: the filters (designed at to_hz) and the band-limited
        # interpolation as one FFT pair at the source length.
        return zero_phase_fft(signal, from_hz, config, up=up)
    # padtype="line": extend each edge linearly, so offsets and slopes do not ring at the ends.
    resampled = scipy.signal.resample_poly(
        np.asarray(signal, dtype=np.float64), up, down, axis=-1, padtype="line", window=resampling_taps(up, down)
    )
    return apply_filters(resampled, to_hz, config)


def _crop_or_pad(full: np.ndarray, n_samples: int, crop: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, n_samples) float32 copy of ``full`` cropped or zero-padded, and the real-sample mask."""
    length = full.shape[1]
    sample_mask = np.zeros(n_samples, dtype=bool)
    if length >= n_samples:
        start = (length - n_samples) // 2 if crop == "center" else 0
        sample_mask[:] = True
        return np.array(full[:, start: start + n_samples], dtype=np.float32), sample_mask
    out = np.zeros((full.shape[0], n_samples), dtype=np.float32)
    out[:, :length] = full
    sample_mask[:length] = True
    return out, sample_mask


def _normalize(signal: np.ndarray, sample_mask: np.ndarray, lead_mask: np.ndarray, method: str) -> tuple[np.ndarray, dict]:
    if method == "none":
        return signal, {"method": "none", "units": "mV"}
    valid = signal[lead_mask][:, sample_mask].astype(np.float64)  # (usable leads, real samples)
    if method == "zscore_lead":
        mean = np.zeros(len(STANDARD_LEADS))
        std = np.ones(len(STANDARD_LEADS))
        mean[lead_mask] = valid.mean(axis=1)
        spread = valid.std(axis=1)
        std[lead_mask] = np.where(spread > _STD_FLOOR_MV, spread, 1.0)
        out = (signal - mean[:, None]) / std[:, None]
        stats = {"mean_mV": mean.tolist(), "std_mV": std.tolist()}
    elif method == "zscore_record":
        mean_value = float(valid.mean())
        spread = float(valid.std())
        std_value = spread if spread > _STD_FLOOR_MV else 1.0
        out = (signal - mean_value) / std_value
        stats = {"mean_mV": mean_value, "std_mV": std_value}
    else:
        raise ConfigError(f"ecg.normalization: unknown method {method!r} (none, zscore_lead, zscore_record)")
    out[~lead_mask] = 0.0
    out[:, ~sample_mask] = 0.0
    return out.astype(np.float32), {"method": method, **stats}
