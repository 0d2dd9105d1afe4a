"""The in-memory ECG record every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ECGRecord:
    """One ECG as read from a file, before standardisation.

    Attributes:
        signal_mV: (leads, time) float32 array in millivolts.
        lead_names: one label per row; standard names (``"I"``, ``"aVR"``, ``"V1"``)
            where the file's label was recognised, otherwise the file's label.
        sampling_rate_hz: samples per second.
        source: path of the file read.
        format: reader that produced it: ``"ukb_xml"``, ``"wfdb"``, ``"wfdb_mat"``, ``"npy"``.
        units: units of the file's stored values before conversion (``"uV"``, ``"mV"``...).
        measurements: device measurements when the file has them, in the units of
            their names (``ventricular_rate_bpm``, ``pq_interval_ms``, ``qrs_duration_ms``,
            ``qt_interval_ms``, ``qtc_interval_ms``, ``p_axis_deg``, ``r_axis_deg``,
            ``t_axis_deg``, ``rr_interval_ms``); missing ones are ``None``.
        interpretation: the device's interpretation statements, in order.
        median_mV: (leads, samples) median beats when present (UK Biobank XML).
        median_lead_names: labels of the median-beat rows.
        metadata: anything else the file says (age, sex, comments, device...).
    """

    signal_mV: np.ndarray
    lead_names: list[str]
    sampling_rate_hz: float
    source: str = ""
    format: str = ""
    units: str = "mV"
    measurements: dict[str, float | None] = field(default_factory=dict)
    interpretation: list[str] = field(default_factory=list)
    median_mV: np.ndarray | None = None
    median_lead_names: list[str] | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_leads(self) -> int:
        return int(self.signal_mV.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.signal_mV.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.sampling_rate_hz)

    def lead(self, name: str) -> np.ndarray:
        """The samples of one lead by standard name (KeyError if absent)."""
        try:
            return self.signal_mV[self.lead_names.index(name)]
        except ValueError:
            raise KeyError(f"{self.source}: no lead {name!r} (has {', '.join(self.lead_names)})") from None
