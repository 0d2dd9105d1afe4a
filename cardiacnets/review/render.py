"""Server-side rendering for the review app: the 12-lead ECG and cine players.

`ecg_svg` draws a standard ECG in the clinical print layout: three rows of four
2.5 s columns (I, aVR, V1, V4 / II, aVL, V2, V5 / III, aVF, V3, V6, each column
showing its own quarter of the 10 s record, as an electrocardiograph prints
them), a 10 s lead II rhythm strip below, a 1 mV calibration pulse at the start
of every row, on pink 1 mm / 5 mm paper at 25 mm/s and 10 mm/mV. SVG user units
are millimetres of paper, so the drawing is exact at any zoom and its geometry
is testable (`ecg_layout`).

Cines ((frames, H, W) in the training-set intensity scale, [0, 1]) become a PNG
sprite sheet (frames side by side) that a small JavaScript player in the page
steps through, and an animated GIF for download or pages without JavaScript
(`cine_sprite_png`, `cine_gif`, `cine_frames_uint8`: the package's preview
writers of `cardiacnets.io.previews`, named here for the routes). Generated
cines are stamped with the ``SYNTHETIC`` label in the pixels themselves, so the
mark travels with any saved or screenshotted copy, and marked in the file's
metadata (PNG text chunks, GIF comment); real cines carry neither.
`display_slice` picks the slice shown of a stored cine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.io.previews import cine_frames_uint8, cine_gif, cine_sprite_png  # noqa: F401  (the routes' renderers)

PAPER_SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0
COLUMN_DURATION_S = 2.5
ROW_HEIGHT_MM = 40.0
HEADER_MM = 9.0
FOOTER_MM = 7.0
CALIBRATION_MM = 10.0  # left margin holding the 1 mV pulse
RIGHT_MARGIN_MM = 5.0
CLINICAL_ROWS: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"
GRID_MINOR = "#f7c9c9"
GRID_MAJOR = "#e38f8f"


@dataclass(frozen=True)
class ECGPanel:
    """Where one lead segment sits on the paper.

    Attributes:
        lead: standard lead name.
        row: 0-2 for the 3 x 4 block, 3 for the rhythm strip.
        start_s, end_s: the time window of the record drawn in this panel.
        x0_mm: paper x of ``start_s``.
        baseline_mm: paper y of 0 mV (SVG y grows downwards).
    """

    lead: str
    row: int
    start_s: float
    end_s: float
    x0_mm: float
    baseline_mm: float


def ecg_layout(duration_s: float = 10.0) -> list[ECGPanel]:
    """The clinical 3 x 4 + rhythm layout of a record of ``duration_s`` seconds.

    Args:
        duration_s: length drawn; the four columns split it in equal parts
            (2.5 s each for the standard 10 s record).

    Returns:
        12 panels of the 3 x 4 block, then the lead II rhythm strip panel.
    """
    column_s = duration_s / 4.0
    panels = []
    for row, leads in enumerate(CLINICAL_ROWS):
        baseline = HEADER_MM + (row + 0.5) * ROW_HEIGHT_MM
        for col, lead in enumerate(leads):
            start = col * column_s
            panels.append(ECGPanel(lead, row, start, start + column_s,
                                   CALIBRATION_MM + start * PAPER_SPEED_MM_PER_S, baseline))
    baseline = HEADER_MM + 3.5 * ROW_HEIGHT_MM
    panels.append(ECGPanel(RHYTHM_LEAD, 3, 0.0, duration_s, CALIBRATION_MM, baseline))
    return panels


def paper_size_mm(duration_s: float = 10.0) -> tuple[float, float]:
    """(width, height) of the drawing in mm; the grid spans whole 5 mm squares."""
    trace = duration_s * PAPER_SPEED_MM_PER_S
    width = 5.0 * np.ceil((CALIBRATION_MM + trace + RIGHT_MARGIN_MM) / 5.0)
    return float(width), HEADER_MM + 4 * ROW_HEIGHT_MM + FOOTER_MM


def _points(samples_mV: np.ndarray, x0_mm: float, baseline_mm: float, sampling_rate_hz: float) -> str:
    t_s = np.arange(samples_mV.size) / sampling_rate_hz
    x = x0_mm + t_s * PAPER_SPEED_MM_PER_S
    y = baseline_mm - samples_mV * GAIN_MM_PER_MV
    return " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(x, y))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def ecg_svg(
    signal_mV: np.ndarray,
    sampling_rate_hz: float,
    *,
    lead_mask: np.ndarray | None = None,
    sample_mask: np.ndarray | None = None,
    lead_names: Sequence[str] = STANDARD_LEADS,
    title: str | None = None,
    note: str | None = None,
) -> str:
    """A 12-lead ECG as an SVG document in the clinical print layout.

    Args:
        signal_mV: (12, T) millivolts in ``lead_names`` order.
        sampling_rate_hz: samples per second of ``signal_mV``.
        lead_mask: (12,) bool, False for an absent or unusable lead (drawn as a
            flat gap with "lead absent"); all present when None.
        sample_mask: (T,) bool, False for padding; padding is not drawn.
        lead_names: the lead of each row of ``signal_mV``.
        title: header text (e.g. the case id); None for none (blinded pages).
        note: extra footer text (e.g. the filter settings).

    Returns:
        The SVG markup. User units are paper millimetres: 1 s = 25 units
        horizontally, 1 mV = 10 units vertically.

    Raises:
        ValueError: when ``signal_mV`` is not (len(lead_names), T).
    """
    signal_mV = np.asarray(signal_mV, dtype=np.float64)
    if signal_mV.ndim != 2 or signal_mV.shape[0] != len(lead_names):
        raise ValueError(f"signal_mV must be ({len(lead_names)}, T), got {signal_mV.shape}")
    n_samples = signal_mV.shape[1]
    lead_mask = np.ones(len(lead_names), bool) if lead_mask is None else np.asarray(lead_mask, bool)
    sample_mask = np.ones(n_samples, bool) if sample_mask is None else np.asarray(sample_mask, bool)
    index = {name: i for i, name in enumerate(lead_names)}
    duration_s = 10.0
    width, height = paper_size_mm(duration_s)
    grid_top, grid_height = HEADER_MM, 4 * ROW_HEIGHT_MM

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" '
        f'width="{width:g}mm" height="{height:g}mm" role="img" aria-label="12-lead ECG" class="ecg-svg">',
        "<defs>",
        f'<pattern id="ecg-minor" width="1" height="1" patternUnits="userSpaceOnUse">'
        f'<path d="M1 0H0V1" fill="none" stroke="{GRID_MINOR}" stroke-width="0.08"/></pattern>',
        f'<pattern id="ecg-major" width="5" height="5" patternUnits="userSpaceOnUse" y="{grid_top:g}">'
        f'<rect width="5" height="5" fill="url(#ecg-minor)"/>'
        f'<path d="M5 0H0V5" fill="none" stroke="{GRID_MAJOR}" stroke-width="0.2"/></pattern>',
        f'<clipPath id="ecg-paper"><rect y="{grid_top:g}" width="{width:g}" height="{grid_height:g}"/></clipPath>',
        "</defs>",
        f'<rect width="{width:g}" height="{height:g}" fill="#fff"/>',
        f'<rect id="ecg-grid" y="{grid_top:g}" width="{width:g}" height="{grid_height:g}" fill="url(#ecg-major)"/>',
    ]
    header = _escape(title) if title else ""
    out.append(f'<text x="2" y="6" font-family="sans-serif" font-size="4" fill="#222">{header}</text>')
    out.append(f'<text x="{width - 2:g}" y="6" font-family="sans-serif" font-size="3.2" fill="#222" '
               f'text-anchor="end">{PAPER_SPEED_MM_PER_S:g} mm/s   {GAIN_MM_PER_MV:g} mm/mV</text>')
    for row in range(4):
        baseline = HEADER_MM + (row + 0.5) * ROW_HEIGHT_MM
        # 1 mV calibration pulse: 0.2 s wide, 10 mm tall.
        x = 2.0
        pulse_mm = 0.2 * PAPER_SPEED_MM_PER_S
        out.append(f'<path class="ecg-calibration" d="M{x:g} {baseline:g}h1.5v{-GAIN_MM_PER_MV:g}h{pulse_mm:g}'
                   f'v{GAIN_MM_PER_MV:g}h1.5" fill="none" stroke="#000" stroke-width="0.25"/>')
    out.append('<g clip-path="url(#ecg-paper)">')  # tall complexes stay on the paper
    for panel in ecg_layout(duration_s):
        i = index.get(panel.lead)
        suffix = "-rhythm" if panel.row == 3 else ""
        label_y = panel.baseline_mm - 0.3 * ROW_HEIGHT_MM
        out.append(f'<text x="{panel.x0_mm + 1:g}" y="{label_y:g}" font-family="sans-serif" font-size="3.5" '
                   f'fill="#000">{panel.lead}</text>')
        if panel.row < 3 and panel.start_s > 0:
            out.append(f'<path d="M{panel.x0_mm:g} {panel.baseline_mm - 3:g}v6" stroke="#000" stroke-width="0.25"/>')
        if i is None or not lead_mask[i]:
            out.append(f'<text x="{panel.x0_mm + 8:g}" y="{label_y:g}" font-family="sans-serif" font-size="3" '
                       f'fill="#777">lead absent</text>')
            continue
        start = int(round(panel.start_s * sampling_rate_hz))
        # Include the first sample of the next column so adjacent segments meet.
        stop = min(n_samples, int(round(panel.end_s * sampling_rate_hz)) + (1 if panel.row < 3 else 0))
        valid = np.flatnonzero(sample_mask[start:stop])
        if valid.size == 0:
            continue
        segment = signal_mV[i, start + valid[0]:start + valid[-1] + 1]
        x0 = panel.x0_mm + valid[0] / sampling_rate_hz * PAPER_SPEED_MM_PER_S
        out.append(f'<polyline id="lead-{panel.lead}{suffix}" class="ecg-trace" fill="none" stroke="#000" '
                   f'stroke-width="0.25" stroke-linejoin="round" '
                   f'points="{_points(segment, x0, panel.baseline_mm, sampling_rate_hz)}"/>')
    out.append("</g>")
    footer = f"{sampling_rate_hz:g} Hz sampling"
    if note:
        footer += " · " + _escape(note)
    out.append(f'<text x="2" y="{height - 2:g}" font-family="sans-serif" font-size="3" fill="#444">{footer}</text>')
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------- cines

def display_slice(cine: np.ndarray) -> np.ndarray:
    """The slice shown of a stored cine: the middle of (slices, frames, H, W), or a (frames, H, W) cine as is."""
    cine = np.asarray(cine)
    if cine.ndim == 4:
        return cine[cine.shape[0] // 2]
    if cine.ndim == 3:
        return cine
    raise ValueError(f"cine must be (frames, H, W) or (slices, frames, H, W), got {cine.shape}")
