"""Tests of the review app's rendering: the clinical ECG layout and its paper geometry
(25 mm/s, 10 mm/mV, 1 mV calibration), masks, and the cine sprite sheet and GIF with
the SYNTHETIC stamp."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.review import render

SVG = "{http://www.w3.org/2000/svg}"
RATE_HZ = 250.0


def _points(svg: str, element_id: str) -> np.ndarray:
    root = ET.fromstring(svg)
    for element in root.iter(f"{SVG}polyline"):
        if element.get("id") == element_id:
            return np.array([[float(v) for v in pair.split(",")] for pair in element.get("points").split()])
    raise KeyError(element_id)


def _ids(svg: str) -> set[str]:
    return {e.get("id") for e in ET.fromstring(svg).iter() if e.get("id")}


def test_layout_is_three_by_four_plus_rhythm_strip():
    panels = render.ecg_layout(10.0)
    assert [p.lead for p in panels] == ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II"]
    # Columns of 2.5 s at 25 mm/s start 62.5 mm apart after the 10 mm calibration margin.
    assert [p.x0_mm for p in panels[:4]] == [10.0, 72.5, 135.0, 197.5]
    assert [(p.start_s, p.end_s) for p in panels[4:8]] == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    rhythm = panels[-1]
    assert (rhythm.row, rhythm.start_s, rhythm.end_s) == (3, 0.0, 10.0)
    baselines = sorted({p.baseline_mm for p in panels})
    assert np.allclose(np.diff(baselines), render.ROW_HEIGHT_MM)
    width, height = render.paper_size_mm()
    assert width == 265.0 and width % 5 == 0  # 10 + 250 + 5 mm, whole 5 mm squares


def test_paper_speed_and_gain_against_hand_computed_points():
    signal = np.zeros((12, 2500), np.float32)
    signal[0, 100:150] = 1.0  # lead I: a 1 mV step from 0.4 s to 0.6 s
    signal[1] = 0.5 * np.sin(2 * np.pi * np.arange(2500) / RATE_HZ)  # lead II: 1 Hz, 0.5 mV
    svg = render.ecg_svg(signal, RATE_HZ)
    lead_i = _points(svg, "lead-I")
    baseline = render.ecg_layout()[0].baseline_mm
    # Column 1 shows samples 0..625 (the first sample of column 2 joins them).
    assert len(lead_i) == 626
    np.testing.assert_allclose(lead_i[:, 0], 10.0 + np.arange(626) * 0.1, atol=0.006)  # 0.1 mm per 4 ms sample
    np.testing.assert_allclose(lead_i[100:150, 1], baseline - 10.0, atol=0.006)  # 1 mV = 10 mm up
    np.testing.assert_allclose(lead_i[:100, 1], baseline, atol=0.006)
    rhythm = _points(svg, "lead-II-rhythm")
    assert len(rhythm) == 2500
    assert rhythm[-1, 0] == pytest.approx(10.0 + 2499 * 0.1, abs=0.006)  # 10 s span 250 mm
    rhythm_baseline = render.ecg_layout()[-1].baseline_mm
    assert rhythm[:, 1].min() == pytest.approx(rhythm_baseline - 5.0, abs=0.01)  # 0.5 mV peak = 5 mm
    # The aVR column starts at 2.5 s: its first point is sample 625 at x = 72.5 mm.
    avr = _points(svg, "lead-aVR")
    assert avr[0, 0] == pytest.approx(72.5)
    calibrations = [e for e in ET.fromstring(svg).iter(f"{SVG}path") if e.get("class") == "ecg-calibration"]
    assert len(calibrations) == 4 and all("v-10h5v10" in e.get("d") for e in calibrations)  # 1 mV x 0.2 s


def test_masks_and_title():
    rng = np.random.default_rng(0)
    signal = rng.normal(scale=0.1, size=(12, 2500)).astype(np.float32)
    lead_mask = np.ones(12, bool)
    lead_mask[STANDARD_LEADS.index("V1")] = False
    sample_mask = np.zeros(2500, bool)
    sample_mask[:1875] = True  # 7.5 s real, then padding
    svg = render.ecg_svg(signal, RATE_HZ, lead_mask=lead_mask, sample_mask=sample_mask, title='<x & "y">')
    ids = _ids(svg)
    assert "lead-V1" not in ids and "lead absent" in svg
    assert "lead-V4" not in ids  # its 7.5-10 s window is all padding
    assert _points(svg, "lead-II-rhythm")[-1, 0] == pytest.approx(10.0 + 1874 * 0.1, abs=0.006)
    assert "&lt;x &amp; &quot;y&quot;&gt;" in svg and '<x & "y">' not in svg
    assert ET.fromstring(svg).get("viewBox") == "0 0 265 176"
    with pytest.raises(ValueError, match=r"\(12, T\)"):
        render.ecg_svg(signal[:8], RATE_HZ)


def test_cine_frames_scale_clip_and_stamp():
    cine = np.stack([np.full((8, 8), v, np.float32) for v in (-0.5, 0.0, 0.5, 1.0, 1.7)])
    frames = render.cine_frames_uint8(cine, scale=2)
    assert frames.shape == (5, 16, 16) and frames.dtype == np.uint8
    assert [int(f.mean()) for f in frames] == [0, 0, 128, 255, 255]  # clipped to [0, 1], then x 255
    dark = np.zeros((3, 64, 64), np.float32)
    plain = render.cine_frames_uint8(dark, scale=3)
    stamped = render.cine_frames_uint8(dark, scale=3, synthetic=True)
    changed = np.argwhere(stamped[0] != plain[0])
    assert len(changed) > 50  # white letters on black
    assert changed[:, 0].max() < 40 and changed[:, 1].max() < 150  # only in the top-left corner
    with pytest.raises(ValueError):
        render.cine_frames_uint8(np.zeros((4, 4)))


def test_sprite_png_holds_every_frame_side_by_side():
    rng = np.random.default_rng(1)
    cine = rng.random((6, 10, 12)).astype(np.float32)
    png = render.cine_sprite_png(cine, scale=2, synthetic=True)
    sheet = np.asarray(Image.open(io.BytesIO(png)))
    assert sheet.shape == (20, 6 * 24)
    frames = render.cine_frames_uint8(cine, scale=2, synthetic=True)
    for k in range(6):
        np.testing.assert_array_equal(sheet[:, k * 24:(k + 1) * 24], frames[k])


def test_gif_frames_and_timing():
    cine = np.random.default_rng(2).random((5, 16, 16)).astype(np.float32)
    gif = Image.open(io.BytesIO(render.cine_gif(cine, frame_ms=50.0, scale=2)))
    assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (32, 32)
    assert gif.info["duration"] == 50 and gif.info["loop"] == 0


def test_display_slice():
    stack = np.arange(3 * 2 * 4 * 4).reshape(3, 2, 4, 4)
    np.testing.assert_array_equal(render.display_slice(stack), stack[1])
    np.testing.assert_array_equal(render.display_slice(stack[0]), stack[0])
    with pytest.raises(ValueError):
        render.display_slice(np.zeros((4, 4)))
