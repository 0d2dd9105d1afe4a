"""Comparison pictures of a generation evaluation: a few subjects' true cine beside each method's.

Generated panels carry the burned-in SYNTHETIC label and the files that hold
them are marked synthetic in their metadata (`cardiacnets.io.previews`); the
true cine and the retrieved neighbours' cines are real acquisitions and are not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Methods whose cines are real acquisitions (of another subject): their comparison panels are not stamped.
RETRIEVED_METHODS = ("nn_baseline", "random_baseline")


def write_comparisons(out_dir: Path, true_cines: np.ndarray, generated: dict[str, np.ndarray], subject_ids: list,
                      n_examples: int = 4, n_strip_frames: int = 8, scale: int = 2,
                      retrieved: tuple[str, ...] = RETRIEVED_METHODS) -> list[Path]:
    """Side-by-side pictures of a few subjects: true cine, then each method's.

    For each of the first `n_examples` subjects: ``compare_<subject>.png``, rows true / method...,
    `n_strip_frames` evenly spaced frames (mid slice); and ``compare_<subject>.gif``, the cines
    side by side, animated over the cycle. Pixels are repeated `scale` times (no interpolation).
    Every frame of a generated panel (any method but the true cine and the `retrieved` ones)
    carries the burned-in SYNTHETIC label, and a file with such panels is marked synthetic in
    its metadata (PNG text chunks, GIF comment; `cardiacnets.io.previews`).

    Args:
        out_dir: the folder written into.
        true_cines: (N, slices, frames, H, W) in [0, 1].
        generated: method name → (N, slices, frames, H, W) cines, in the order shown.
        subject_ids: the subjects' ids (file names).
        n_examples: subjects drawn.
        n_strip_frames: frames per row of the PNG.
        scale: pixel repetition of both axes.
        retrieved: methods whose cines are real acquisitions of other subjects (not stamped).

    Returns:
        The files written.
    """
    from einops import rearrange

    from cardiacnets.io.previews import frames_to_uint8, gif_bytes, png_bytes, stamp_frames

    written = []
    names = ["true", *generated]
    stamped = [name != "true" and name not in retrieved for name in names]
    for i in range(min(n_examples, len(true_cines))):
        mid = true_cines.shape[1] // 2
        cines = [true_cines[i, mid], *(g[i, mid] for g in generated.values())]  # each (frames, H, W)
        panels = [frames_to_uint8(c, scale=scale) for c in cines]  # each (frames, H * scale, W * scale) uint8
        panels = [stamp_frames(p) if synthetic else p for p, synthetic in zip(panels, stamped)]
        n_frames = cines[0].shape[0]
        picks = np.linspace(0, n_frames - 1, min(n_strip_frames, n_frames)).round().astype(int)
        strip = rearrange(np.stack([p[picks] for p in panels]), "m k h w -> (m h) (k w)")
        png = out_dir / f"compare_{subject_ids[i]}.png"
        png.write_bytes(png_bytes(strip, synthetic=any(stamped)))
        side_by_side = rearrange(np.stack(panels), "m f h w -> f h (m w)")
        gif = out_dir / f"compare_{subject_ids[i]}.gif"
        gif.write_bytes(gif_bytes(side_by_side, frame_ms=40.0, synthetic=any(stamped)))
        written += [png, gif]
    if written:
        (out_dir / "compare_legend.txt").write_text(
            "rows (PNG) / panels left to right (GIF): " + ", ".join(names) + "\n"
            "panels labelled SYNTHETIC are generated; the true cine and retrieved neighbours are real\n")
        written.append(out_dir / "compare_legend.txt")
    return written
