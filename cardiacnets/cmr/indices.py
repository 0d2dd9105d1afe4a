"""Cardiac function indices from a short-axis segmentation (Simpson's method).

Volumes are voxel counts times the voxel volume from the affine, summed over
the short-axis stack (slice spacing is the affine's third column, so gaps
between slices are counted as UK Biobank's pipeline does). End-diastole (ED)
and end-systole (ES) are the frames of largest and smallest LV cavity volume,
and both ventricles are measured at those frames. LV mass is the ED myocardial
volume times 1.05 g/ml. Labels follow `cardiacnets.cmr.image.SEG_LABELS`.
"""

from __future__ import annotations

import numpy as np

from cardiacnets.cmr.image import SEG_LABELS, CMRImage
from cardiacnets.errors import InputError

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
