"""The cine segmenter at evaluation time: loading it, labelling cines, cavity measurements and its Dice.

`cardiacnets.evaluate.generation` measures cardiac function on generated and
true cines with a `CineSegmenter` trained by the ``segment`` task. This module
holds what that needs and the segmenter's own checks:

- `load_segmenter` opens a run (``RUN/model``) or model folder, with the
  standard-cine geometry it was trained on (``cmr_geometry.json``, written by
  the task's export); `segment_cines` labels (N, slices, frames, H, W) cines.
- `cavity_measurements` turns labels into LV/RV cavity "volumes" and ejection
  fractions with `cardiacnets.cmr.indices.function_indices` (Simpson's
  method: voxel counts × pixel area × slice spacing, summed over slices; ED
  and ES at the largest and smallest LV cavity). With the demo training sets'
  single mid-ventricular slice this is a **mid-slice area proxy**: cavity
  area × slice spacing (10 mm, UK Biobank's 8 mm slices with 2 mm gaps), and
  the EF is the area-based ejection fraction of that slice. It correlates
  with, but is not, the whole-heart volume.
- `evaluate_acdc` checks the simulator-trained segmenter on real scans: the
  ACDC expert labels (Bernard et al., IEEE TMI 2018; labels remapped to the UK
  Biobank convention by `cardiacnets.io.acdc`). Each patient's end-diastolic
  and end-systolic stacks form a two-frame cine, standardised like the
  training set (`standardize_cine`: heart centre from the temporal-variance
  map, not from the labels; resampled to the training pixel size; cropped;
  1st-99th percentile intensities). ACDC files store no voxel spacing, so an
  in-plane spacing is assumed (default 1.5 mm, the middle of the 1.37-1.68 mm
  range the ACDC paper reports). Dice is computed per volume (3-D, all
  slices, inside the crop) and on the mid-ventricular slice (the middle of
  the slices with LV cavity at ED, the slice the demo sets keep), per class.
- `evaluate_split` scores the segmenter on a training-set split against its
  stored segmentations (Dice per class, and the measurements' agreement).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cardiacnets.cmr.indices import (  # noqa: F401
    DEFAULT_SLICE_SPACING_MM, INDEX_COLUMNS, cavity_measurements, mid_ventricular_slice,
)
from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import SEG_LABELS, CMRImage
from cardiacnets.models.segmenter import GEOMETRY_FILE, CineGeometry

#: Foreground classes in label order.
CLASSES = tuple(name for name, label in sorted(SEG_LABELS.items(), key=lambda item: item[1]) if label > 0)
#: Assumed in-plane spacing of ACDC images (not stored in the files): the middle of the 1.37-1.68 mm range
#: reported by Bernard et al. (IEEE TMI 2018).
DEFAULT_ACDC_SPACING_MM = 1.5
#: Measurements compared between cines (function_indices keys).
MEASUREMENTS = ("lvedv_ml", "lvesv_ml", "lvef_pct", "rvedv_ml", "rvesv_ml", "rvef_pct", "lvm_g")


@dataclass
class Segmenter:
    """A loaded segmenter and where it came from.

    Attributes:
        model: the `CineSegmenter`, in eval mode.
        folder: its saved-model folder.
        geometry: the standard-cine geometry of its training set (``None`` when not recorded).
    """

    model: torch.nn.Module
    folder: Path
    geometry: CineGeometry | None


def load_segmenter(run: str | os.PathLike) -> Segmenter:
    """Load a trained segmenter.

    Args:
        run: a ``segment`` training run (uses ``RUN/model``) or a saved `CineSegmenter` folder.

    Returns:
        The `Segmenter`.

    Raises:
        InputError: no saved model, or one that is not a `CineSegmenter`.
    """
    from cardiacnets.models.pretrained import load_pretrained, resolve_model_dir
    from cardiacnets.models.segmenter import CineSegmenter

    folder = resolve_model_dir(run)
    model = load_pretrained(folder)
    if not isinstance(model, CineSegmenter):
        raise InputError(folder, f"holds a {type(model).__name__}, not a CineSegmenter "
                                 "(train one with 'cardiacnets train configs/demo/segment.yaml')")
    geometry = None
    if (folder / GEOMETRY_FILE).is_file():
        try:
            data = json.loads((folder / GEOMETRY_FILE).read_text())
            data["intensity_percentiles"] = tuple(data["intensity_percentiles"])
            geometry = CineGeometry(**data)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(folder / GEOMETRY_FILE, f"malformed geometry record ({err})") from None
    return Segmenter(model.eval(), folder, geometry)


def segment_cines(model: torch.nn.Module, cines: np.ndarray | torch.Tensor, batch_frames: int = 256,
                  device: str = "cpu", bf16: bool = False) -> np.ndarray:
    """Label cines frame by frame.

    Args:
        model: a `CineSegmenter`.
        cines: (N, slices, frames, H, W) intensities in the training set's [0, 1] scale.
        batch_frames: frames per forward pass.
        device: torch device.
        bf16: bf16 autocast (about as accurate here and faster on CPUs with bf16 support).

    Returns:
        (N, slices, frames, H, W) uint8 labels (`SEG_LABELS`).
    """
    cines = torch.as_tensor(np.asarray(cines, dtype=np.float32))
    model = model.to(device).eval()
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        labels = model.segment(cines.to(device), batch_frames=batch_frames)
    return labels.cpu().numpy()


def dice_scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each foreground class between two label arrays of one volume (all voxels together).

    A class absent from both scores NaN (nothing to compare).

    Args:
        prediction: integer labels, any shape.
        truth: integer labels, same shape.

    Returns:
        ``{class name: Dice}`` for LV cavity, LV myocardium and RV cavity.
    """
    from monai.metrics import compute_dice

    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    # compute_dice takes (batch, 1, spatial...) label maps; the whole array is one image.
    as_image = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64).reshape(1, 1, -1))  # noqa: E731
    scores = compute_dice(as_image(prediction), as_image(truth), include_background=False, ignore_empty=True,
                          num_classes=len(SEG_LABELS))[0]
    return {name: float(scores[i]) for i, name in enumerate(CLASSES)}


def _mean_dice(rows: list[dict[str, float]]) -> dict[str, float]:
    table = pd.DataFrame(rows, columns=list(CLASSES))
    out = {name: float(table[name].mean()) for name in CLASSES}
    out["mean"] = float(np.nanmean([out[name] for name in CLASSES]))
    return out


# --- ACDC ------------------------------------------------------------------------------------------------------

_ACDC_NAME = re.compile(r"patient(\d{3})_frame(\d{2})\.h5$", re.IGNORECASE)


def acdc_pairs(acdc_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """The (patient, ED file, ES file) triples of an ACDC HDF5 folder (``patientNNN_frame01/02.h5``).

    Raises:
        InputError: no such folder, or no complete pair in it.
    """
    acdc_dir = Path(acdc_dir)
    if not acdc_dir.is_dir():
        raise InputError(acdc_dir, "no such ACDC folder")
    files: dict[str, dict[int, Path]] = {}
    for path in sorted(acdc_dir.glob("*.h5")):
        match = _ACDC_NAME.search(path.name)
        if match:
            files.setdefault(f"patient{match.group(1)}", {})[int(match.group(2))] = path
    pairs = [(patient, frames[1], frames[2]) for patient, frames in sorted(files.items()) if {1, 2} <= set(frames)]
    if not pairs:
        raise InputError(acdc_dir, "holds no ACDC pair patientNNN_frame01.h5 + patientNNN_frame02.h5")
    return pairs


def standardize_acdc(ed_path: str | os.PathLike, es_path: str | os.PathLike, geometry: CineGeometry,
                     assumed_spacing_mm: float = DEFAULT_ACDC_SPACING_MM, crop_center: str = "variance") -> dict:
    """One ACDC patient's ED and ES stacks as a standardised two-frame cine with its expert labels.

    Args:
        ed_path: the end-diastolic file (``frame01``).
        es_path: the end-systolic file (``frame02``).
        geometry: the target geometry (the segmenter's training set).
        assumed_spacing_mm: in-plane spacing given to the images (ACDC files store none).
        crop_center: ``variance`` (the heart centre from the images, as for an unlabelled scan) or
            ``auto`` (from the expert labels, as the training sets are cropped).

    Returns:
        ``{"cine": (slices, 2, crop, crop) float32, "labels": same shape uint8, "coverage": fraction
        of the expert-labelled area that lies inside the crop, "center_method": str}``.

    Raises:
        InputError: unreadable files, ED/ES stacks of different shapes, or a cine that cannot be
            standardised (e.g. constant intensities).
    """
    from cardiacnets.cmr.config import CMRConfig
    from cardiacnets.cmr.standardize import standardize_cine
    from cardiacnets.io.acdc import read_acdc_h5

    (ed_image, ed_seg), (es_image, es_seg) = read_acdc_h5(ed_path), read_acdc_h5(es_path)
    if ed_image.data.shape != es_image.data.shape:
        raise InputError(es_path, f"stack shape {es_image.data.shape} differs from the ED stack {ed_image.data.shape}")
    n_slices = ed_image.n_slices
    affine = np.diag([assumed_spacing_mm, assumed_spacing_mm, DEFAULT_SLICE_SPACING_MM, 1.0])
    metadata = {**ed_image.metadata, "spacing_known": True, "spacing_assumed_mm": assumed_spacing_mm}
    image = CMRImage(np.concatenate([ed_image.data, es_image.data], axis=3), affine, str(ed_path), "acdc_h5", "sa",
                     metadata=metadata)
    seg = CMRImage(np.concatenate([ed_seg.data, es_seg.data], axis=3), affine, str(ed_path), "acdc_h5", "sa",
                   is_segmentation=True, metadata=metadata)
    config = CMRConfig(views=["sa"], n_frames=2, crop_size=geometry.crop_size, spacing_mm=geometry.spacing_mm,
                       sa_slices="all", n_sa_slices=n_slices,
                       intensity_percentiles=tuple(geometry.intensity_percentiles), crop_center=crop_center)
    standard = standardize_cine(image, config, seg)
    labelled_native_mm2 = float(np.count_nonzero(seg.data)) * assumed_spacing_mm**2
    labelled_crop_mm2 = float(np.count_nonzero(standard.seg)) * geometry.spacing_mm**2
    return {"cine": standard.frames, "labels": standard.seg, "center_method": standard.center_method,
            "coverage": labelled_crop_mm2 / labelled_native_mm2 if labelled_native_mm2 else float("nan")}


def acdc_label_cines(acdc_dir: str | os.PathLike, geometry: CineGeometry,
                     assumed_spacing_mm: float = DEFAULT_ACDC_SPACING_MM) -> np.ndarray:
    """The expert labels of every ACDC patient's mid-ventricular slice as a two-frame (ED, ES) label cine.

    Standardised like the training sets' segmentations (cropped around the labelled heart, resampled
    to ``geometry``); the mid-ventricular slice is the middle of the slices with an LV cavity at ED.

    Returns:
        (patients, 1, 2, crop, crop) uint8 labels, patients in `acdc_pairs` order.
    """
    cines = []
    for _, ed_path, es_path in acdc_pairs(acdc_dir):
        labels = standardize_acdc(ed_path, es_path, geometry, assumed_spacing_mm, crop_center="auto")["labels"]
        mid = mid_ventricular_slice(labels[:, 0], slice_axis=0)
        mid = labels.shape[0] // 2 if mid is None else mid
        cines.append(labels[mid][None])
    return np.stack(cines).astype(np.uint8)


def evaluate_acdc(segmenter: Segmenter, acdc_dir: str | os.PathLike, geometry: CineGeometry | None = None,
                  assumed_spacing_mm: float = DEFAULT_ACDC_SPACING_MM, device: str = "cpu",
                  bf16: bool = False) -> dict:
    """Dice of the segmenter against the ACDC expert labels, per class.

    Args:
        segmenter: the loaded segmenter.
        acdc_dir: folder of ``patientNNN_frame01.h5`` / ``frame02.h5`` pairs.
        geometry: standard-cine geometry (default: the segmenter's recorded one).
        assumed_spacing_mm: in-plane spacing assumed for the ACDC images.
        device: torch device.
        bf16: bf16 autocast.

    Returns:
        ``dice_volume`` (3-D Dice per ED or ES stack, mean over stacks, per class and ``mean``),
        ``dice_mid_slice`` (the mid-ventricular slice at ED and ES), ``dice_by_phase``,
        ``n_patients``, ``n_volumes``, ``label_coverage`` (mean fraction of the labelled area
        inside the crop), ``assumed_spacing_mm``, ``failures`` (patient, reason), ``seconds``.

    Raises:
        InputError: no geometry to standardise to, or no ACDC pairs.
    """
    geometry = geometry or segmenter.geometry
    if geometry is None:
        raise InputError(segmenter.folder, f"records no cine geometry ({GEOMETRY_FILE}); give it explicitly")
    started = time.perf_counter()
    volume_rows, mid_rows, phase_rows, coverage, failures = [], [], {"ED": [], "ES": []}, [], []
    ef_rows = []
    for patient, ed_path, es_path in acdc_pairs(acdc_dir):
        try:
            case = standardize_acdc(ed_path, es_path, geometry, assumed_spacing_mm)
        except InputError as err:
            failures.append({"patient": patient, "reason": str(err)})
            continue
        predicted = segment_cines(segmenter.model, case["cine"][None], device=device, bf16=bf16)[0]
        truth = case["labels"]
        mid = mid_ventricular_slice(truth[:, 0], slice_axis=0)
        mid = truth.shape[0] // 2 if mid is None else mid
        coverage.append(case["coverage"])
        for frame, phase in enumerate(("ED", "ES")):
            scores = dice_scores(predicted[:, frame], truth[:, frame])
            volume_rows.append(scores)
            phase_rows[phase].append(scores)
            mid_rows.append(dice_scores(predicted[mid, frame], truth[mid, frame]))
        ef_rows.append({"patient": patient, "expert": _voxel_ef(truth), "segmenter": _voxel_ef(predicted)})
    if not volume_rows:
        raise InputError(acdc_dir, f"no ACDC patient could be evaluated ({failures[0]['reason'] if failures else ''})")
    return {
        "dice_volume": _mean_dice(volume_rows),
        "dice_mid_slice": _mean_dice(mid_rows),
        "dice_by_phase": {phase: _mean_dice(rows) for phase, rows in phase_rows.items()},
        "lvef": _ef_agreement(ef_rows),
        "n_patients": len(coverage),
        "n_volumes": len(volume_rows),
        "label_coverage": float(np.mean(coverage)),
        "assumed_spacing_mm": assumed_spacing_mm,
        "geometry": asdict(geometry),
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _voxel_ef(labels: np.ndarray) -> float | None:
    """LVEF (%) of (slices, [ED, ES], H, W) labels from LV blood-pool voxel counts: the voxel volume cancels, so
    ACDC's unknown slice spacing does not matter. ``None`` without an ED blood pool."""
    counts = (labels == SEG_LABELS["lv_cavity"]).sum(axis=(0, 2, 3)).astype(float)
    return None if counts[0] <= 0 else float(100.0 * (1.0 - counts[1] / counts[0]))


def _ef_agreement(rows: list[dict]) -> dict:
    """MAE, bias and r of the segmenter's LVEF against the expert labels' over the patients where both exist."""
    pairs = np.array([(r["expert"], r["segmenter"]) for r in rows if r["expert"] is not None
                      and r["segmenter"] is not None], dtype=float).reshape(-1, 2)
    error = pairs[:, 1] - pairs[:, 0]
    r = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) if len(pairs) > 2 and pairs.std(axis=0).min() > 0 else None
    return {"n": int(len(pairs)), "mae_pct": float(np.abs(error).mean()) if len(pairs) else None,
            "bias_pct": float(error.mean()) if len(pairs) else None, "r": r, "per_patient": rows,
            "method": "voxel counts of the LV blood pool at ED and ES over the whole stack"}


# --- a training-set split ----------------------------------------------------------------------------------------

def evaluate_split(segmenter: Segmenter, data: str | os.PathLike, split: str = "test", view: str = "sa",
                   limit: int | None = None, slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                   batch_size: int = 32, device: str = "cpu", bf16: bool = False) -> dict:
    """The segmenter on a training-set split against its stored segmentations.

    Args:
        segmenter: the loaded segmenter.
        data: training set folder (with ``seg_<view>``).
        split: split to score.
        view: CMR view.
        limit: score only the first N subjects.
        slice_spacing_mm: slice spacing of the measurements.
        batch_size: subjects per forward pass.
        device: torch device.
        bf16: bf16 autocast.

    Returns:
        ``dice`` (per cine over all its frames, mean over cines, per class and ``mean``),
        ``measurements`` (Pearson r and mean absolute error of each measurement on predicted vs
        stored labels), ``n``, ``seconds``.

    Raises:
        InputError: no such split or view, or no stored segmentation.
    """
    from cardiacnets.data.store import TrainingSet

    geometry = CineGeometry.from_dataset(data)
    dataset = TrainingSet(data, split=split, require=(view, f"seg_{view}"))
    if f"seg_{view}" not in dataset.arrays:
        raise InputError(data, f"stores no seg_{view} to compare with")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise InputError(data, f"no subjects in split {split!r} with {view} and seg_{view}")
    started = time.perf_counter()
    dice_rows, predicted_all, truth_all = [], [], []
    for start in range(0, n, batch_size):
        samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
        cines = np.stack([s[f"cmr_{view}"] for s in samples])
        truth = np.stack([s[f"seg_{view}"] for s in samples])
        predicted = segment_cines(segmenter.model, cines, device=device, bf16=bf16)
        dice_rows += [dice_scores(p, t) for p, t in zip(predicted, truth)]
        predicted_all.append(predicted)
        truth_all.append(truth)
    measured = cavity_measurements(np.concatenate(predicted_all), geometry.spacing_mm, slice_spacing_mm)
    stored = cavity_measurements(np.concatenate(truth_all), geometry.spacing_mm, slice_spacing_mm)
    return {"n": n, "dice": _mean_dice(dice_rows), "measurements": agreement(measured, stored),
            "seconds": round(time.perf_counter() - started, 2)}


def agreement(measured: pd.DataFrame, reference: pd.DataFrame | dict, columns=MEASUREMENTS) -> dict:
    """Pearson r and mean absolute error of measurement columns against a reference, per column.

    Rows where either value is missing are left out (``n`` says how many were used).

    Args:
        measured: measurements (one row per cine).
        reference: the same columns for the same cines (a frame, or a dict of arrays).
        columns: which columns.

    Returns:
        ``{column: {"r": ..., "mae": ..., "n": ...}}`` (r is NaN with fewer than 3 pairs or a constant side).
    """
    out = {}
    for column in columns:
        a = pd.to_numeric(measured[column], errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(pd.Series(np.asarray(reference[column])), errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(a) & np.isfinite(b)
        r = float("nan")
        if keep.sum() >= 3 and a[keep].std() > 0 and b[keep].std() > 0:
            r = float(np.corrcoef(a[keep], b[keep])[0, 1])
        mae = float(np.abs(a[keep] - b[keep]).mean()) if keep.any() else float("nan")
        out[column] = {"r": r, "mae": mae, "n": int(keep.sum())}
    return out
