"""Preview pictures and synthetic marking (`cardiacnets.io.previews`, `cardiacnets.io.stamp`): one burned-in
label for every writer (GIF, PNG, DICOM), metadata on every generated PNG and GIF, none on real ones, and
every file of `write_generation_outputs` read back from disk."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cardiacnets.generation.outputs import write_generation_outputs
from cardiacnets.io import previews
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom_write import write_dicom_series
from cardiacnets.io.stamp import (SYNTHETIC_STATEMENT, label_fits, stamp_synthetic, synthetic_label_box,
                                  text_bitmap)

from support import REPO_ROOT
from support.marking import assert_gif_marked, assert_nifti_marked, assert_not_marked, assert_png_marked, has_stamp

PACKAGE = REPO_ROOT / "cardiacnets"


def _cine(frames: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((frames, size, size)) * 0.8 + 0.1).astype(np.float32)


def test_stamp_is_the_label_box_and_clips_only_when_asked():
    pixels = np.full((40, 80), 9, np.uint8)
    stamped = stamp_synthetic(pixels, value=255, background=0)
    rows, cols = synthetic_label_box(40, 80)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (1, 10, 1, 56)
    changed = np.argwhere(stamped != pixels)
    assert changed[:, 0].min() >= 1 and changed[:, 0].max() < 10 and changed[:, 1].max() < 56
    assert has_stamp(stamped) and (pixels == 9).all()
    rgb = stamp_synthetic(np.full((360, 420, 3), 128, np.uint8), value=255, background=0)
    assert has_stamp(rgb) and (rgb[200:, 200:] == 128).all()  # magnified with the image, every channel
    assert not label_fits(20, 24) and label_fits(10, 56)
    with pytest.raises(ValueError, match="does not fit"):
        stamp_synthetic(np.zeros((20, 24), np.uint8), value=255, background=0)
    clipped = stamp_synthetic(np.full((20, 24), 9, np.uint8), value=255, background=0, clip=True)
    assert clipped.shape == (20, 24) and (clipped[1:10, 1:] != 9).all() and (clipped[10:] == 9).all()
    np.testing.assert_array_equal(clipped[2:9, 2:24] == 255, text_bitmap("SYNTHETIC")[:, :22])


def test_previews_and_dicom_burn_the_same_label(tmp_path):
    cine = _cine(size=64)
    preview = previews.cine_frames_uint8(cine, scale=3, synthetic=True)  # 192 x 192
    data = np.round(np.stack([np.full((192, 192), 0.5)] * 2, axis=-1) * 1000)[:, :, None, :]  # (x, y, 1, frames)
    paths = write_dicom_series(CMRImage(data, np.eye(4), view="sa"), tmp_path, series_description="g",
                               synthetic=True, uid_seed="s")
    shown = pydicom.dcmread(paths[0]).pixel_array  # rows x columns as displayed
    rows, cols = synthetic_label_box(192, 192)
    np.testing.assert_array_equal(shown[rows, cols] == shown.max(), preview[0][rows, cols] == 255)
    assert pydicom.dcmread(paths[0]).DerivationDescription.endswith(SYNTHETIC_STATEMENT)


def test_frames_to_uint8_repeat_and_smooth():
    frames = np.array([[[np.nan, -1.0], [0.5, 2.0]]], np.float32)
    np.testing.assert_array_equal(previews.frames_to_uint8(frames), [[[0, 0], [128, 255]]])
    repeated = previews.frames_to_uint8(frames, scale=3)
    assert repeated.shape == (1, 6, 6) and (repeated[0, :3, 3:] == 0).all() and (repeated[0, 3:, 3:] == 255).all()
    assert previews.frames_to_uint8(np.zeros((2, 2, 4, 5)), scale=2, smooth=True).shape == (2, 2, 8, 10)
    with pytest.raises(ValueError):
        previews.frames_to_uint8(np.zeros(4))


def test_generated_previews_are_marked_and_real_ones_are_not():
    cine = _cine(frames=4, size=32)
    png = previews.cine_sprite_png(cine, scale=3, synthetic=True)
    sheet = assert_png_marked(png, frame_width=96)
    assert sheet.shape == (96, 4 * 96) and all(has_stamp(sheet[:, k * 96:(k + 1) * 96]) for k in range(4))
    gif = previews.cine_gif(cine, frame_ms=50.0, scale=3, synthetic=True)
    assert len(assert_gif_marked(gif)) == 4 and Image.open(io.BytesIO(gif)).info["duration"] == 50
    assert_not_marked(previews.cine_sprite_png(cine, scale=3))
    assert_not_marked(previews.cine_gif(cine, scale=3))
    # Frames too small for the whole label still get the part that fits, and the metadata.
    small = Image.open(io.BytesIO(previews.cine_sprite_png(cine[:, :8, :8], scale=2, synthetic=True)))
    corner = np.asarray(small)[1:10, 1:16]  # the first 16 x 16 frame's label box, cut at its edge
    assert small.text["Synthetic"] == "true" and set(np.unique(corner)) == {0, 255}


def test_generation_outputs_are_marked_on_disk(tmp_path):
    cines = np.stack([_cine(frames=3, size=64, seed=k) for k in range(2)])
    labels = (cines > 0.5).astype(np.uint8)
    written = write_generation_outputs(cines, tmp_path, view="sa", spacing_mm=2.0, frame_interval_ms=40.0,
                                       uid_seed="t", labels=labels)
    for k in range(2):
        folder = tmp_path / f"sample_{k}"
        assert len(assert_gif_marked(folder / "cine.gif")) == 3
        assert_png_marked(folder / "frames.png", frame_width=192)
        assert_nifti_marked(folder / "cine.nii.gz")
        assert_nifti_marked(folder / "anatomy_seg.nii.gz")
        ds = pydicom.dcmread(sorted((folder / "dicom").glob("*.dcm"))[0])
        assert ds.BurnedInAnnotation == "YES" and "SYNTHETIC" in ds.SeriesDescription
    std_png = assert_png_marked(tmp_path / "std.png")
    assert std_png.shape == (360, 420, 3)
    assert_nifti_marked(tmp_path / "std.nii.gz")
    assert written["std_png"] == ["std.png"] and written["anatomy_nifti"][1] == "sample_1/anatomy_seg.nii.gz"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_previews_live_in_io_and_generation_does_not_borrow_the_review_app():
    for module in ("io/previews.py", "io/stamp.py"):
        imported = {m for m in _imported_modules(PACKAGE / module) if m.startswith("cardiacnets.")}
        assert all(m.startswith(("cardiacnets.io.", "cardiacnets.errors")) for m in imported), (module, imported)
    assert "cardiacnets.io.stamp" in _imported_modules(PACKAGE / "io/dicom_write.py")
    assert "cardiacnets.io.previews" in _imported_modules(PACKAGE / "review/render.py")
    for module in (PACKAGE / "generation").glob("*.py"):
        assert not any(m.startswith("cardiacnets.review") for m in _imported_modules(module)), module
