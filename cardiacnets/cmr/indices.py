"""Cardiac function indices from a short-axis segmentation (Simpson's method).

Volumes are voxel counts times the voxel volume from the affine, summed over
the short-axis stack (slice spacing is the affine's third column, so gaps
between slices are counted as UK Biobank's pipeline does). End-diastole (ED)
and end-systole (ES) are the frames of largest and smallest LV cavity volume,
and both ventricles are measured at those frames. LV mass is the ED myocardial
volume times 1.05 g/ml. Labels follow `cardiacnets.io.cmr_image.SEG_LABELS`.
"""

from __future__ import annotations

import numpy as np

from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import SEG_LABELS, CMRImage

MYOCARDIAL_DENSITY_G_PER_ML = 1.05

INDEX_UNITS: dict[str, str] = {
    "lvedv_ml": "ml", "lvesv_ml": "ml", "lvsv_ml": "ml", "lvef_pct": "%", "lvm_g": "g",
    "rvedv_ml": "ml", "rvesv_ml": "ml", "rvsv_ml": "ml", "rvef_pct": "%",
}


def label_volumes_ml(seg: np.ndarray, voxel_volume_ml: float) -> dict[str, np.ndarray]:
    """Per-frame volume of each label.

    Args:
        seg: (x, y, slices, frames) integer labels.
        voxel_volume_ml: volume of one voxel in ml.

    Returns:
        ``{"lv_cavity": (frames,), "lv_myocardium": ..., "rv_cavity": ...}`` in ml.
    """
    counts = {
        name: np.count_nonzero(seg == label, axis=(0, 1, 2)).astype(np.float64) * voxel_volume_ml
        for name, label in SEG_LABELS.items()
        if name != "background"
    }
    return counts


def _ejection_fraction(edv: float, esv: float) -> float:
    return float(100.0 * (edv - esv) / edv) if edv > 0 else float("nan")


def function_indices(seg: CMRImage, ed_frame: int | None = None, es_frame: int | None = None) -> dict:
    """LV and RV volumes, ejection fractions and LV mass from a cine segmentation.

    Args:
        seg: segmentation with data (x, y, slices, frames) in the UK Biobank label
            convention; a single-frame segmentation needs both frames given as 0
            and is better measured with `ed_es_indices`.
        ed_frame, es_frame: override the frames (default: max / min LV cavity).

    Returns:
        Dict with ``lvedv_ml, lvesv_ml, lvsv_ml, lvef_pct, lvm_g, rvedv_ml,
        rvesv_ml, rvsv_ml, rvef_pct, ed_frame, es_frame``.

    Raises:
        InputError: when the segmentation has no LV cavity at all.
    """
    data = np.asarray(seg.data)
    if data.ndim != 4:
        raise InputError(seg.source or "<segmentation>", f"expected (x, y, slices, frames) labels, got shape {data.shape}")
    volumes = label_volumes_ml(data, seg.voxel_volume_ml)
    lv = volumes["lv_cavity"]
    if not np.any(lv > 0):
        raise InputError(seg.source or "<segmentation>", "segmentation has no LV cavity (label 1) in any frame")
    ed = int(np.argmax(lv)) if ed_frame is None else int(ed_frame)
    es = int(np.argmin(np.where(lv > 0, lv, np.inf))) if es_frame is None else int(es_frame)
    return _indices_from_volumes(volumes, ed, es)


def ed_es_indices(seg_ed: CMRImage, seg_es: CMRImage) -> dict:
    """The same indices from separate ED and ES segmentations (ACDC style).

    Args:
        seg_ed, seg_es: single-phase segmentations (time axis of length 1) with
            equal geometry.
    """
    if seg_ed.data.shape != seg_es.data.shape:
        raise InputError(seg_es.source or "<segmentation>", f"ES shape {seg_es.data.shape} differs from ED {seg_ed.data.shape}")
    both = np.concatenate([np.asarray(seg_ed.data)[..., :1], np.asarray(seg_es.data)[..., :1]], axis=3)
    volumes = label_volumes_ml(both, seg_ed.voxel_volume_ml)
    return _indices_from_volumes(volumes, 0, 1)


def _indices_from_volumes(volumes: dict[str, np.ndarray], ed: int, es: int) -> dict:
    lv, myo, rv = volumes["lv_cavity"], volumes["lv_myocardium"], volumes["rv_cavity"]
    out = {
        "lvedv_ml": float(lv[ed]),
        "lvesv_ml": float(lv[es]),
        "lvsv_ml": float(lv[ed] - lv[es]),
        "lvef_pct": _ejection_fraction(lv[ed], lv[es]),
        "lvm_g": float(myo[ed] * MYOCARDIAL_DENSITY_G_PER_ML),
        "rvedv_ml": float(rv[ed]),
        "rvesv_ml": float(rv[es]),
        "rvsv_ml": float(rv[ed] - rv[es]),
        "rvef_pct": _ejection_fraction(rv[ed], rv[es]),
        "ed_frame": ed,
        "es_frame": es,
    }
    return out


#: Default slice spacing of stacks measured without an affine: UK Biobank short-axis stacks (8 mm slices, 2 mm gaps).
DEFAULT_SLICE_SPACING_MM = 10.0
#: Columns of `cavity_measurements` (the `function_indices` keys).
INDEX_COLUMNS = ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "lvm_g", "rvedv_ml", "rvesv_ml", "rvsv_ml",
                 "rvef_pct", "ed_frame", "es_frame")


def cavity_measurements(labels: np.ndarray, spacing_mm: float, slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM):
    """LV/RV cavity volumes (or a single slice's area proxy), EF and LV mass of each labelled cine.

    The same numbers as `function_indices` on each cine with an affine of ``spacing_mm`` in-plane
    and ``slice_spacing_mm`` between slices, computed for all cines at once from label counts.
    With one slice, "volumes" are the slice's cavity areas × ``slice_spacing_mm`` (a mid-slice
    proxy of the volume) and the EF is that slice's area-based ejection fraction.

    Args:
        labels: (N, slices, frames, H, W) labels (`SEG_LABELS`).
        spacing_mm: in-plane pixel size.
        slice_spacing_mm: distance between slice centres (the thickness a single slice stands for).

    Returns:
        A ``pandas.DataFrame``, one row per cine, with the `INDEX_COLUMNS` and ``failure``: empty, or
        why the cine could not be measured (then the other columns are NaN): no LV cavity in any frame.
    """
    import pandas as pd

    labels = np.asarray(labels)
    if labels.ndim != 5:
        raise ValueError(f"labels must be (N, slices, frames, H, W), got shape {labels.shape}")
    voxel_ml = spacing_mm * spacing_mm * slice_spacing_mm / 1000.0
    volumes = {name: np.count_nonzero(labels == label, axis=(1, 3, 4)).astype(np.float64) * voxel_ml
               for name, label in SEG_LABELS.items() if name != "background"}  # each (N, frames)
    lv = volumes["lv_cavity"]
    rows = []
    for i in range(len(labels)):
        if not np.any(lv[i] > 0):
            rows.append({"failure": "segmentation has no LV cavity (label 1) in any frame"})
            continue
        ed = int(np.argmax(lv[i]))
        es = int(np.argmin(np.where(lv[i] > 0, lv[i], np.inf)))
        rows.append({**_indices_from_volumes({k: v[i] for k, v in volumes.items()}, ed, es), "failure": ""})
    return pd.DataFrame(rows, columns=[*INDEX_COLUMNS, "failure"])


def mid_ventricular_slice(ed_labels: np.ndarray, slice_axis: int = -1) -> int | None:
    """The middle of the slices with an LV cavity at end-diastole.

    Args:
        ed_labels: end-diastolic labels (`SEG_LABELS`) with the slices along `slice_axis`, e.g. (H, W, slices).
        slice_axis: the slice axis.

    Returns:
        The slice index, or None when no slice has an LV cavity.
    """
    lv = np.moveaxis(np.asarray(ed_labels) == SEG_LABELS["lv_cavity"], slice_axis, -1)
    with_lv = np.flatnonzero(lv.reshape(-1, lv.shape[-1]).any(axis=0))
    return int((with_lv[0] + with_lv[-1]) // 2) if with_lv.size else None
