"""Configuration of the standard ECG representation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cardiacnets.errors import ConfigError


@dataclass
class ECGConfig:
    """How any ECG is turned into the standard (12, time) tensor.

    Attributes:
        sampling_rate_hz: target rate after resampling.
        duration_s: target length; longer records are cropped, shorter padded
            (the valid-sample mask records which samples are real).
        crop: where to take the window from a longer record.
        bandpass_hz: (low, high) zero-phase Butterworth band-pass; ``None`` disables.
            The high-pass edge also removes baseline wander.
        bandpass_order: Butterworth order of each edge.
        notch_hz: mains frequency to notch out (50 in Europe, 60 in the Americas); ``None`` disables.
        notch_quality: quality factor of the notch.
        baseline_removal: ``"bandpass"`` (the high-pass edge does it), ``"median"``
            (two-stage 200/600 ms median filter estimate subtracted) or ``"none"``.
        normalization: ``"none"`` keeps millivolts (amplitude is diagnostic, e.g. LVH
            voltage), ``"zscore_lead"`` per lead per record, ``"zscore_record"`` per record.
        derive_limb_leads: compute III, aVR, aVL, aVF from I and II when missing.
    """

    sampling_rate_hz: float = 500.0
    duration_s: float = 10.0
    crop: Literal["start", "center"] = "start"
    bandpass_hz: tuple[float, float] | None = (0.5, 100.0)
    bandpass_order: int = 2
    notch_hz: float | None = 50.0
    notch_quality: float = 30.0
    baseline_removal: Literal["bandpass", "median", "none"] = "bandpass"
    normalization: Literal["none", "zscore_lead", "zscore_record"] = "none"
    derive_limb_leads: bool = True

    @property
    def n_samples(self) -> int:
        return int(round(self.sampling_rate_hz * self.duration_s))

    def validate(self) -> None:
        if self.sampling_rate_hz <= 0 or self.duration_s <= 0:
            raise ConfigError("ecg: sampling_rate_hz and duration_s must be positive")
        nyquist = self.sampling_rate_hz / 2
        if self.bandpass_hz is not None:
            low, high = self.bandpass_hz
            if not 0 < low < high < nyquist:
                raise ConfigError(f"ecg.bandpass_hz: need 0 < low < high < {nyquist:g} Hz (Nyquist), got {self.bandpass_hz}")
        if self.notch_hz is not None and not 0 < self.notch_hz < nyquist:
            raise ConfigError(f"ecg.notch_hz: must lie below Nyquist ({nyquist:g} Hz)")
        if self.baseline_removal == "bandpass" and self.bandpass_hz is None:
            raise ConfigError("ecg.baseline_removal 'bandpass' needs ecg.bandpass_hz")
