"""Files written for generated cines: NIfTI, a DICOM series marked synthetic, GIF, PNG strip, spread maps, provenance.

A generated cine is written the ways a user looks at cardiac MR:

- ``cine.nii.gz``: NIfTI-1 (x, y, 1 slice, frames) with a RAS-aligned affine
  of the training cines' in-plane spacing, the configured slice thickness,
  the image centred on the origin, and the frame interval as the 4th zoom
  (`cardiacnets.io.nifti.write_nifti`), marked synthetic in its description
  and in a JSON comment extension; ``anatomy_seg.nii.gz`` beside it (the
  anatomy-first generator): the label cine the image was drawn from;
- ``dicom/``: an MR Image Storage series (`cardiacnets.io.dicom_write.write_dicom_series`)
  marked as not acquired from a patient — ImageType ``DERIVED\\SECONDARY``,
  "SYNTHETIC" in the series description, the word SYNTHETIC burned into every
  frame, no patient name or ID;
- ``cine.gif`` (looping, one frame per frame interval) and ``frames.png`` (all
  frames side by side), written by `cardiacnets.io.previews`;
- with several samples per ECG, ``std.nii.gz`` (per-pixel standard deviation
  across samples, per frame) and ``std.png`` (its mean over frames, with a
  colour bar): where the model is unsure;
- ``provenance.json``: model folder, sampler settings, seed, the input file's
  SHA-256, timings.

Every picture (GIF, PNG, DICOM frame) carries the same burned-in SYNTHETIC
label (`cardiacnets.io.stamp`); the PNGs also carry text chunks (``Synthetic``
= ``true``, ``Description``, ``Software``) and the GIF a comment extension
saying the image was generated from an ECG, not acquired from a patient, and
is not for clinical use.

Array convention: a cine is (frames, H, W) as in the training set; H is the
image x axis and W the y axis (the training set's reoriented in-plane axes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from einops import rearrange

from cardiacnets.io.cmr_image import CMRImage


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (of a WFDB record's header and signal files together).

    Args:
        path: the file; for a WFDB ``.hea`` the ``.dat``/``.mat`` files beside it with the
            same stem are hashed after it.

    Returns:
        The hex digest.
    """
    path = Path(path)
    files = [path]
    if path.suffix.lower() == ".hea" or (not path.suffix and path.with_suffix(".hea").is_file()):
        header = path if path.suffix else path.with_suffix(".hea")
        files = [header] + [header.with_suffix(s) for s in (".dat", ".mat") if header.with_suffix(s).is_file()]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cine_image(cine: np.ndarray, *, view: str, spacing_mm: float | None, slice_thickness_mm: float = 8.0,
               frame_interval_ms: float | None = None, source: str = "generated") -> CMRImage:
    """A (frames, H, W) cine as a `CMRImage` (x, y, 1, frames) with a sensible affine.

    The affine is RAS-aligned (x towards the right, y anterior, the slice axis superior) with
    the in-plane spacing (1 mm when unknown) and the slice thickness, and places the image
    centre at the origin: a generated cine has no position in a scanner.

    Args:
        cine: (frames, H, W) intensities.
        view: the view (recorded in the image).
        spacing_mm: in-plane pixel size.
        slice_thickness_mm: slice thickness.
        frame_interval_ms: time between frames.
        source: recorded as the image's source.

    Returns:
        The `CMRImage`.
    """
    cine = np.asarray(cine, dtype=np.float32)
    if cine.ndim != 3:
        raise ValueError(f"cine must be (frames, H, W), got shape {cine.shape}")
    spacing = float(spacing_mm) if spacing_mm else 1.0
    affine = np.diag([spacing, spacing, float(slice_thickness_mm), 1.0])
    affine[:2, 3] = [-(cine.shape[1] - 1) / 2 * spacing, -(cine.shape[2] - 1) / 2 * spacing]
    return CMRImage(data=rearrange(cine, "f h w -> h w 1 f"), affine=affine, source=source, format="generated",
                    view=view, frame_interval_ms=frame_interval_ms, metadata={"synthetic": True})


def std_map_png(std_map: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Write a per-pixel standard-deviation map as a PNG with a colour bar, marked synthetic.

    The SYNTHETIC label is burned into the top-left corner (in a band kept free
    for it) and the PNG carries the synthetic text chunks (`cardiacnets.io.previews`).

    Args:
        std_map: (H, W) standard deviations (intensity units).
        path: the PNG file.
        title: shown above the map.

    Returns:
        The path written.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from cardiacnets.io.previews import png_bytes
    from cardiacnets.io.stamp import stamp_synthetic, synthetic_label_box

    width_px, height_px = 420, 360
    label_rows, _ = synthetic_label_box(height_px, width_px)
    fig, ax = plt.subplots(figsize=(width_px / 100, height_px / 100), dpi=100)
    shown = ax.imshow(np.asarray(std_map, dtype=np.float32), cmap="magma", interpolation="nearest", vmin=0.0)
    fig.colorbar(shown, ax=ax, label="SD across samples")
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - (label_rows.stop + 2) / height_px))  # the top band holds the label
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)  # width_px x height_px whatever the rc settings
    plt.close(fig)
    buffer.seek(0)
    pixels = np.asarray(Image.open(buffer).convert("RGB"))  # (height_px, width_px, 3)
    path = Path(path)
    path.write_bytes(png_bytes(stamp_synthetic(pixels, value=255, background=0), synthetic=True))
    return path


def write_generation_outputs(cines: np.ndarray, out_dir: str | os.PathLike, *, view: str,
                             spacing_mm: float | None, frame_interval_ms: float | None,
                             slice_thickness_mm: float = 8.0, uid_seed: str | None = None,
                             labels: np.ndarray | None = None) -> dict[str, list[str]]:
    """Write M generated cines of one ECG (and their spread when M > 1).

    Args:
        cines: (M, frames, H, W) cines in [0, 1].
        labels: (M, frames, H, W) the anatomy each cine was drawn from (anatomy-first generator),
            written as ``sample_<k>/anatomy_seg.nii.gz`` (a label NIfTI marked synthetic).
        out_dir: output folder (created); sample k goes to ``sample_<k>/``.
        view: the view generated.
        spacing_mm: in-plane pixel size.
        frame_interval_ms: time between frames (GIF timing and image headers).
        slice_thickness_mm: slice thickness in the headers.
        uid_seed: derive the DICOM UIDs from this (reproducible series); ``None``: random UIDs.

    Returns:
        Paths written, by kind (``nifti``, ``dicom``, ``gif``, ``png``, ``anatomy_nifti``, ``std_nifti``, ``std_png``),
        relative to `out_dir`.
    """
    from cardiacnets.io.dicom_write import write_dicom_series
    from cardiacnets.io.nifti import write_nifti
    from cardiacnets.io.previews import cine_gif, cine_sprite_png
    from cardiacnets.io.stamp import synthetic_label_box

    out_dir = Path(out_dir)
    cines = np.asarray(cines, dtype=np.float32)
    if cines.ndim != 4 or 0 in cines.shape:
        raise ValueError(f"cines must be (samples, frames, H, W), got shape {cines.shape}")
    # DICOM rows are the image y axis (W here), columns the x axis (H).
    label_rows, label_columns = synthetic_label_box(cines.shape[3], cines.shape[2])
    if label_rows.stop > cines.shape[3] or label_columns.stop > cines.shape[2]:
        raise ValueError(f"{cines.shape[2]} x {cines.shape[3]} frames are too small for the burned-in SYNTHETIC "
                         f"label of the DICOM series (it needs {label_columns.stop} x {label_rows.stop} pixels)")
    if labels is not None and np.shape(labels) != cines.shape:
        raise ValueError(f"labels {np.shape(labels)} and cines {cines.shape} differ in shape")
    written: dict[str, list[str]] = {"nifti": [], "dicom": [], "gif": [], "png": []}
    if labels is not None:
        written["anatomy_nifti"] = []
    from pydicom.uid import generate_uid

    # One study and frame of reference for all samples of the ECG.
    study_uid, frame_uid = (generate_uid(entropy_srcs=[uid_seed, part]) if uid_seed is not None else generate_uid()
                            for part in ("study", "frame_of_reference"))
    frame_ms = frame_interval_ms or 40.0
    for k, cine in enumerate(cines):
        folder = out_dir / f"sample_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        image = cine_image(cine, view=view, spacing_mm=spacing_mm, slice_thickness_mm=slice_thickness_mm,
                           frame_interval_ms=frame_interval_ms, source=f"cardiacnets generate, sample {k}")
        write_nifti(image, folder / "cine.nii.gz")
        if labels is not None:
            anatomy = CMRImage(data=rearrange(np.asarray(labels[k], dtype=np.uint8), "f h w -> h w 1 f"),
                               affine=image.affine, source=f"cardiacnets generate, anatomy of sample {k}",
                               format="generated", view=view, frame_interval_ms=frame_interval_ms,
                               is_segmentation=True, metadata={"synthetic": True})
            write_nifti(anatomy, folder / "anatomy_seg.nii.gz")
            written["anatomy_nifti"].append(f"sample_{k}/anatomy_seg.nii.gz")
        write_dicom_series(image, folder / "dicom", series_description=f"cardiacnets {view} cine sample {k}",
                           synthetic=True, series_number=k + 1, study_instance_uid=study_uid,
                           frame_of_reference_uid=frame_uid,
                           uid_seed=None if uid_seed is None else f"{uid_seed}:{k}")
        (folder / "cine.gif").write_bytes(cine_gif(cine, frame_ms=frame_ms, synthetic=True))
        (folder / "frames.png").write_bytes(cine_sprite_png(cine, synthetic=True))
        written["nifti"].append(f"sample_{k}/cine.nii.gz")
        written["dicom"].append(f"sample_{k}/dicom")
        written["gif"].append(f"sample_{k}/cine.gif")
        written["png"].append(f"sample_{k}/frames.png")
    if len(cines) > 1:
        std = cines.std(axis=0)  # (frames, H, W): spread across the samples of one ECG
        write_nifti(cine_image(std, view=view, spacing_mm=spacing_mm, slice_thickness_mm=slice_thickness_mm,
                               frame_interval_ms=frame_interval_ms, source="cardiacnets generate, SD across samples"),
                    out_dir / "std.nii.gz")
        std_map_png(std.mean(axis=0), out_dir / "std.png",
                    title=f"per-pixel SD of {len(cines)} samples (mean over frames)")
        written["std_nifti"] = ["std.nii.gz"]
        written["std_png"] = ["std.png"]
    return written


def write_provenance(path: str | os.PathLike, provenance: dict) -> Path:
    """Write the provenance record as indented JSON.

    Args:
        path: the JSON file.
        provenance: JSON-serialisable values.

    Returns:
        The path written.
    """
    path = Path(path)
    path.write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return path
