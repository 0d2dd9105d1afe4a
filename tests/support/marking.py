"""Checks that a file written for a generated image is marked synthetic: the burned-in SYNTHETIC label
in its pixels and the format's metadata (PNG text chunks, GIF comment, NIfTI description and JSON
extension) read back from disk; and that a real image carries neither."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageSequence

from cardiacnets.io.stamp import SYNTHETIC_STATEMENT, label_scale, synthetic_label_box, text_bitmap


def _open(source: Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def has_stamp(pixels: np.ndarray) -> bool:
    """Whether the whole SYNTHETIC label (white strokes on a black box) sits at the top-left of a frame.

    Args:
        pixels: (H, W) or (H, W, channels) frame as displayed (one frame, not a sheet of them).
    """
    frame = np.asarray(pixels)
    rows, cols = synthetic_label_box(frame.shape[0], frame.shape[1])
    box = frame[rows, cols]
    if box.shape[:2] != (rows.stop - rows.start, cols.stop - cols.start):
        return False
    strokes = np.zeros(box.shape[:2], bool)
    strokes[1:-1, 1:-1] = text_bitmap("SYNTHETIC", label_scale(frame.shape[0], frame.shape[1]))
    return bool(np.all(box[strokes] == 255) and np.all(box[~strokes] == 0))


def assert_png_metadata(source: Path | bytes) -> np.ndarray:
    """A PNG with the synthetic text chunks.

    Returns:
        The pixels, (H, W) grey or (H, W, 3) RGB.
    """
    image = _open(source)
    assert image.format == "PNG"
    assert image.text["Synthetic"] == "true", image.text
    assert image.text["Description"] == SYNTHETIC_STATEMENT
    assert image.text["Software"].startswith("cardiacnets ")
    assert image.info["Synthetic"] == "true"
    return np.asarray(image.convert("L" if image.mode in ("L", "P") else "RGB"))


def assert_png_marked(source: Path | bytes, frame_width: int | None = None) -> np.ndarray:
    """A generated PNG: synthetic text chunks, and the label in the first frame (of width `frame_width`).

    Returns:
        The pixels.
    """
    pixels = assert_png_metadata(source)
    assert has_stamp(pixels[:, :frame_width] if frame_width else pixels)
    return pixels


def gif_frames(source: Path | bytes) -> list[np.ndarray]:
    """Every frame of a GIF as (H, W) grey pixels."""
    return [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(_open(source))]


def assert_gif_metadata(source: Path | bytes) -> list[np.ndarray]:
    """A GIF with the synthetic comment extension.

    Returns:
        Its frames.
    """
    image = _open(source)
    assert image.format == "GIF"
    comment = image.info["comment"].decode()
    assert comment.startswith("SYNTHETIC: ") and SYNTHETIC_STATEMENT in comment
    return gif_frames(source)


def assert_gif_marked(source: Path | bytes) -> list[np.ndarray]:
    """A generated GIF: the comment extension, and the label in every frame.

    Returns:
        The frames.
    """
    frames = assert_gif_metadata(source)
    assert frames and all(has_stamp(frame) for frame in frames)
    return frames


def assert_not_marked(source: Path | bytes) -> None:
    """A picture of a real image: no synthetic metadata and no label."""
    image = _open(source)
    assert "Synthetic" not in image.info and "comment" not in image.info, image.info
    assert "Synthetic" not in getattr(image, "text", {})
    assert not any(has_stamp(frame) for frame in gif_frames(source))


def assert_nifti_marked(path: Path) -> dict:
    """A generated NIfTI: description starting SYNTHETIC, a JSON comment extension with ``synthetic: true``.

    Returns:
        The extension's record.
    """
    image = nib.load(path)
    assert bytes(image.header["descrip"]).startswith(b"SYNTHETIC"), image.header["descrip"]
    records = [json.loads(ext.get_content()) for ext in image.header.extensions if ext.get_code() == 6]
    assert len(records) == 1 and records[0]["synthetic"] is True, records
    return records[0]
