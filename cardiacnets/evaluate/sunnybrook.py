"""The simulator-trained segmenter on a real short-axis cine: the Sunnybrook Cardiac Data.

The Sunnybrook Cardiac Data (Radau et al., MIDAS Journal 2009, the 2009 LV
segmentation challenge) hold short-axis cines as DICOM with expert LV
contours as text files: ``IM-0001-NNNN-icontour-manual.txt`` (endocardium) and
``...-ocontour-manual.txt`` (epicardium), one ``x y`` point a line in pixel
coordinates (x along a row, i.e. the column; y the row), on the image whose
InstanceNumber is NNNN. The experts drew the endocardium at end-diastole and
end-systole of the mid-ventricular slices and the epicardium at end-diastole.

`evaluate_sunnybrook` reads the cine as a user would (`cardiacnets.io.cmr.read_cmr`),
labels every slice and phase with the segmenter after standardising the cine
to the segmenter's training geometry (`standardize_cine`, as
`cardiacnets.evaluate.segmentation.standardize_acdc` does for ACDC: heart
centre from the temporal-variance map, not from the contours), and compares
it with the contours:

- the compared slices are those with an endocardial contour at every contoured
  phase; ED and ES are the contoured phases of largest and smallest expert LV
  blood-pool volume over those slices;
- volumes are blood-pool areas × pixel area × slice spacing, summed over the
  compared slices (`cardiacnets.cmr.indices.function_indices`, Simpson's
  method; slice spacing from the DICOM geometry), the expert's from the
  contours rasterised on the native grid (pixel centres inside the polygon),
  the segmenter's on its crop; EF from both, and its error;
- the segmenter's own whole-stack figures: every slice, ED and ES at its own
  largest and smallest LV volume over all phases (`cavity_measurements`);
- Dice of the LV blood pool on every contoured image, and of the myocardium
  (inside the epicardium, outside the endocardium) where both contours exist,
  on the crop grid (the contours follow the cine through the crop, nearest
  neighbour).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from einops import rearrange

from cardiacnets.cmr.indices import MYOCARDIAL_DENSITY_G_PER_ML, cavity_measurements, function_indices
from cardiacnets.errors import InputError
from cardiacnets.evaluate.segmentation import Segmenter, dice_scores, segment_cines
from cardiacnets.io.cmr_image import SEG_LABELS, CMRImage
from cardiacnets.models.segmenter import GEOMETRY_FILE, CineGeometry

#: Contour file names: the image's InstanceNumber and the surface (i = endocardium, o = epicardium).
CONTOUR_NAME = re.compile(r"^IM-\d{4}-(\d{4})-([io])contour-manual\.txt$")
SURFACES = {"i": "endocardium", "o": "epicardium"}
#: Sunnybrook's first patient, as ``shared/data/sunnybrook`` holds it (cine folder, contour folder).
DEFAULT_CINE, DEFAULT_CONTOURS = "SCD0000101", "SC-HF-I-1"
LV, MYO = SEG_LABELS["lv_cavity"], SEG_LABELS["lv_myocardium"]


def read_contours(folder: str | os.PathLike) -> dict[str, dict[int, np.ndarray]]:
    """The expert contours of one Sunnybrook patient.

    Args:
        folder: the patient's contour folder (``SC-HF-I-1``), searched recursively for
            ``IM-0001-NNNN-icontour-manual.txt`` / ``-ocontour-manual.txt``.

    Returns:
        ``{"endocardium": {instance number: (points, 2) x, y pixel coordinates}, "epicardium": {...}}``.

    Raises:
        InputError: no such folder, no contour file in it, or a file that is not a list of at least
            three finite ``x y`` pairs (the message names the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such contour folder")
    contours: dict[str, dict[int, np.ndarray]] = {name: {} for name in SURFACES.values()}
    for path in sorted(folder.rglob("*contour-manual.txt")):
        match = CONTOUR_NAME.match(path.name)
        if not match:
            continue
        try:
            points = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise InputError(path, f"not a list of 'x y' pixel coordinates ({err})") from None
        if points.shape[1] != 2 or len(points) < 3 or not np.all(np.isfinite(points)):
            raise InputError(path, f"expected at least 3 finite 'x y' pairs, got an array of shape {points.shape}")
        contours[SURFACES[match.group(2)]][int(match.group(1))] = points
    if not contours["endocardium"]:
        raise InputError(folder, "holds no endocardial contour (IM-0001-NNNN-icontour-manual.txt)")
    return contours


def contour_mask(points: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The pixels whose centres lie inside a closed contour.

    Args:
        points: (n, 2) ``x`` (column), ``y`` (row) pixel coordinates, pixel centres at integers.
        rows, columns: the image size.

    Returns:
        (rows, columns) bool mask.
    """
    from matplotlib.path import Path as Polygon

    row, column = np.mgrid[:rows, :columns]
    inside = Polygon(points).contains_points(np.column_stack([column.ravel(), row.ravel()]))
    return inside.reshape(rows, columns)


def expert_labels(image: CMRImage, contours: dict[str, dict[int, np.ndarray]]) -> tuple[np.ndarray, list[dict]]:
    """The contours as labels on the cine's grid: LV blood pool inside the endocardium, myocardium between.

    Args:
        image: the cine as read by `read_cmr` (its metadata's ``instance_numbers`` place each contour).
        contours: from `read_contours`.

    Returns:
        ``(labels, images)``: (x, y, slices, frames) uint8 labels (`SEG_LABELS`, 0 where nothing is
        contoured) and one entry per contoured image: ``instance``, ``slice``, ``phase`` (0-based
        indices into the cine), ``trigger_time_ms``, ``epicardium`` (whether it has one).

    Raises:
        InputError: the cine records no instance numbers, or a contour names an image the cine lacks.
    """
    instances = image.metadata.get("instance_numbers")
    if not instances:
        raise InputError(image.source, "the cine records no DICOM InstanceNumbers; cannot place the contours")
    where = {number: (s, f) for s, row in enumerate(instances) for f, number in enumerate(row) if number is not None}
    columns, rows = image.data.shape[:2]
    labels = np.zeros(image.data.shape, dtype=np.uint8)
    images = []
    for instance, endo in sorted(contours["endocardium"].items()):
        if instance not in where:
            raise InputError(image.source, f"has no image with InstanceNumber {instance}, which a contour names")
        s, f = where[instance]
        blood = contour_mask(endo, rows, columns).T  # (rows, columns) -> (x, y)
        epi = contours["epicardium"].get(instance)
        if epi is not None:
            labels[:, :, s, f][contour_mask(epi, rows, columns).T & ~blood] = MYO
        labels[:, :, s, f][blood] = LV
        trigger = image.metadata.get("trigger_times_ms") or []
        images.append({"instance": instance, "slice": s, "phase": f, "epicardium": epi is not None,
                       "trigger_time_ms": float(trigger[f]) if f < len(trigger) else None})
    for instance in sorted(set(contours["epicardium"]) - set(contours["endocardium"])):
        images.append({"instance": instance, "ignored": "epicardium without endocardium"})
    return labels, images


def _standardize(image: CMRImage, labels: np.ndarray, geometry: CineGeometry, ed_phase: int,
                 crop_center: str) -> dict:
    """The cine and the expert labels on the segmenter's grid, every slice and phase, phases in the cine's order."""
    from cardiacnets.cmr.config import CMRConfig
    from cardiacnets.cmr.standardize import standardize_cine

    # standardize_cine reads its segmentation's first frame as end-diastole (to find the LV's slices);
    # the cine is rolled to start at the contoured ED phase and rolled back after. The crop centre
    # (temporal variance) and the frame-by-frame segmentation do not depend on where the cycle starts.
    rolled = CMRImage(np.roll(image.data, -ed_phase, axis=3), image.affine, image.source, image.format, "sa",
                      image.frame_interval_ms, metadata=image.metadata)
    seg = CMRImage(np.roll(labels, -ed_phase, axis=3), image.affine, image.source, image.format, "sa",
                   is_segmentation=True)
    config = CMRConfig(views=["sa"], n_frames=image.n_frames, crop_size=geometry.crop_size,
                       spacing_mm=geometry.spacing_mm, sa_slices="all", n_sa_slices=image.n_slices,
                       intensity_percentiles=tuple(geometry.intensity_percentiles), crop_center=crop_center)
    standard = standardize_cine(rolled, config, seg)
    native_mm2 = float(np.count_nonzero(labels)) * float(np.prod(image.spacing_mm[:2]))
    crop_mm2 = float(np.count_nonzero(standard.seg)) * geometry.spacing_mm**2
    return {"cine": np.roll(standard.frames, ed_phase, axis=1), "labels": np.roll(standard.seg, ed_phase, axis=1),
            "center_method": standard.center_method, "coverage": crop_mm2 / native_mm2}


VOLUME_KEYS = ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct")


def _volumes(labels: np.ndarray, voxel_mm: tuple[float, float, float], ed: int, es: int,
             mass_slices: list[int]) -> dict:
    """LV volumes and EF of (x, y, slices, frames) labels at frames ``ed`` and ``es`` (`function_indices`),
    and the LV mass at ED over ``mass_slices`` (NaN without LV blood pool, or without mass slices)."""
    voxel = np.diag([*voxel_mm, 1.0])
    try:
        indices = function_indices(CMRImage(labels, voxel, is_segmentation=True), ed_frame=ed, es_frame=es)
        out = {key: indices[key] for key in VOLUME_KEYS}
    except InputError:  # no LV blood pool at all (an untrained or failing segmenter)
        out = dict.fromkeys(VOLUME_KEYS, float("nan"))
    mass = float("nan")
    if mass_slices:
        mass = float((labels[:, :, mass_slices, ed] == MYO).sum()) * float(np.prod(voxel_mm)) / 1000.0 \
            * MYOCARDIAL_DENSITY_G_PER_ML
    return {**out, "lvm_g": mass}


def _dice_rows(predicted: np.ndarray, truth: np.ndarray, images: list[dict]) -> list[dict]:
    """Per contoured image: Dice of the LV blood pool, and of the myocardium where there is an epicardium."""
    rows = []
    for entry in images:
        if "ignored" in entry:
            continue
        scores = dice_scores(predicted[entry["slice"], entry["phase"]], truth[entry["slice"], entry["phase"]])
        rows.append({**entry, "dice_lv_cavity": scores["lv_cavity"],
                     "dice_lv_myocardium": scores["lv_myocardium"] if entry["epicardium"] else None})
    return rows


def _phase_dice(predicted: np.ndarray, truth: np.ndarray, slices: list[int], phase: int, myocardium: bool) -> dict:
    """3-D Dice over the compared slices at one phase."""
    scores = dice_scores(predicted[slices, phase], truth[slices, phase])
    return {"lv_cavity": scores["lv_cavity"], "lv_myocardium": scores["lv_myocardium"] if myocardium else None}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def evaluate_sunnybrook(segmenter: Segmenter, sunnybrook_dir: str | os.PathLike, geometry: CineGeometry | None = None,
                        cine: str = DEFAULT_CINE, contours: str = DEFAULT_CONTOURS, crop_center: str = "variance",
                        device: str = "cpu", bf16: bool = False) -> dict:
    """LV volumes, EF and Dice of the segmenter against the Sunnybrook expert contours of one patient.

    Args:
        segmenter: the loaded segmenter (`cardiacnets.evaluate.segmentation.load_segmenter`).
        sunnybrook_dir: the folder holding the cine folder and the contour folder.
        geometry: standard-cine geometry (default: the segmenter's recorded one); its pixel size,
            crop and intensity percentiles are used, with every slice and the cine's own phases.
        cine: the DICOM folder inside ``sunnybrook_dir``.
        contours: the contour folder inside ``sunnybrook_dir``.
        crop_center: ``variance`` (the heart centre from the images, as for any unlabelled scan) or
            ``auto`` (from the expert contours: a diagnostic that leaves out errors of the crop).
        device: torch device.
        bf16: bf16 autocast.

    Returns:
        A JSON-able dict: ``cine`` (file, shape, spacing), ``compared`` (which slices and phases,
        how ED and ES were chosen), ``expert`` and ``segmenter_same_slices`` (LV EDV, ESV, SV, EF,
        mass over the compared slices at the contoured ED and ES), ``ef_error_pct`` and
        ``volume_error_ml`` (segmenter - expert), ``segmenter_whole_stack`` (every slice, its own ED
        and ES over all phases), ``lv_volume_curve_ml`` (the segmenter's LV volume over the
        compared slices at every phase), ``dice`` (per phase over the compared slices, mean per
        image) and ``images`` (per contoured image), ``label_coverage``, ``notes``, ``seconds``.

    Raises:
        InputError: missing folders, unreadable cine or contours, contours of fewer than two phases,
            or no geometry to standardise to.
    """
    from cardiacnets.io.cmr import read_cmr

    geometry = geometry or segmenter.geometry
    if geometry is None:
        raise InputError(segmenter.folder, f"records no cine geometry ({GEOMETRY_FILE}); give it explicitly")
    if crop_center not in ("variance", "auto"):
        raise ValueError(f"crop_center must be 'variance' or 'auto', got {crop_center!r}")
    started = time.perf_counter()
    root = Path(sunnybrook_dir)
    if not root.is_dir():
        raise InputError(root, "no such Sunnybrook folder")
    # 1. The cine and the contours on its grid.
    image = read_cmr(root / cine, view="sa")
    labels, images = expert_labels(image, read_contours(root / contours))
    contoured = [e for e in images if "ignored" not in e]
    phases = sorted({e["phase"] for e in contoured})
    if len(phases) < 2:
        raise InputError(root / contours, f"endocardial contours on {len(phases)} phase(s); ED and ES need two")
    slices = sorted(set.intersection(*({e["slice"] for e in contoured if e["phase"] == p} for p in phases)))
    if not slices:
        raise InputError(root / contours, "no slice has an endocardial contour at every contoured phase")
    # 2. ED and ES: the contoured phases of largest and smallest expert LV volume over the compared slices.
    expert_lv = (labels[:, :, slices][..., phases] == LV).sum(axis=(0, 1, 2))
    ed, es = phases[int(np.argmax(expert_lv))], phases[int(np.argmin(expert_lv))]
    epicardium_phases = sorted({e["phase"] for e in contoured if e["epicardium"]})
    # 3. Segment every slice and phase on the segmenter's grid.
    case = _standardize(image, labels, geometry, ed, crop_center)
    predicted = segment_cines(segmenter.model, case["cine"][None], device=device, bf16=bf16)[0]
    truth = case["labels"]  # (slices, phases, crop, crop)
    slice_mm = image.spacing_mm[2]
    crop_voxel = (geometry.spacing_mm, geometry.spacing_mm, slice_mm)
    as_volume = lambda a: np.ascontiguousarray(rearrange(a, "s f x y -> x y s f"))  # noqa: E731
    # 4. Volumes over the compared slices at ED and ES, and the segmenter's own whole-stack figures.
    myo_slices = [s for s in slices if (labels[:, :, s, ed] == MYO).any()]
    mass_at = [slices.index(s) for s in myo_slices]
    expert = _volumes(labels[:, :, slices], image.spacing_mm, ed, es, mass_at)
    ours = _volumes(as_volume(predicted[slices]), crop_voxel, ed, es, mass_at)
    whole = cavity_measurements(predicted[None], geometry.spacing_mm, slice_mm).iloc[0].to_dict()
    curve = (predicted[slices] == LV).sum(axis=(0, 2, 3)) * geometry.spacing_mm**2 * slice_mm / 1000.0
    dice_rows = _dice_rows(predicted, truth, contoured)
    return {
        "cine": {"folder": str(root / cine), "contours": str(root / contours), "shape_xyzt": list(image.shape),
                 "spacing_mm": [round(v, 4) for v in image.spacing_mm], "n_slices": image.n_slices,
                 "n_phases": image.n_frames, "trigger_times_ms": image.metadata.get("trigger_times_ms")},
        "compared": {
            "slices": slices, "phases": phases, "ed_phase": ed, "es_phase": es,
            "slices_left_out": sorted({e["slice"] for e in contoured} - set(slices)),
            "epicardium_phases": epicardium_phases, "myocardium_slices": myo_slices,
            "ed_es_rule": "ED and ES are the contoured phases of largest and smallest expert LV blood-pool volume "
                          "summed over the compared slices (the slices with an endocardial contour at every "
                          "contoured phase); the segmenter's volumes are taken at the same phases and slices, "
                          "LV mass at ED over the slices with an epicardial contour there",
            "ed_matches_epicardium_phase": epicardium_phases == [ed],
        },
        "expert": expert,
        "segmenter_same_slices": ours,
        "volume_error_ml": {k: ours[k] - expert[k] for k in ("lvedv_ml", "lvesv_ml", "lvsv_ml")},
        "ef_error_pct": ours["lvef_pct"] - expert["lvef_pct"],
        "lvm_error_g": ours["lvm_g"] - expert["lvm_g"],
        "segmenter_whole_stack": {
            **{k: float(whole[k]) for k in (*VOLUME_KEYS, "lvm_g")},
            **{f"{phase}_phase": int(whole[f"{phase}_frame"]) if not whole["failure"] else None
               for phase in ("ed", "es")},
            "slices": list(range(image.n_slices)),
            "rule": "every slice; ED and ES at the segmenter's largest and smallest LV volume over all phases"},
        "lv_volume_curve_ml": [round(float(v), 2) for v in curve],
        "dice": {
            "ed": _phase_dice(predicted, truth, slices, ed, bool(myo_slices)),
            "es": _phase_dice(predicted, truth, slices, es, es in epicardium_phases),
            "mean_per_image": {"lv_cavity": _mean(r["dice_lv_cavity"] for r in dice_rows),
                               "lv_myocardium": _mean(r["dice_lv_myocardium"] for r in dice_rows)},
            "n_images": len(dice_rows), "n_images_myocardium": sum(r["epicardium"] for r in dice_rows),
        },
        "images": dice_rows,
        "label_coverage": case["coverage"],
        "center_method": case["center_method"],
        "geometry": asdict(geometry),
        "notes": [
            "volumes: blood-pool area x pixel area x slice spacing (from the DICOM geometry), summed over slices "
            "(Simpson's method, cardiacnets.cmr.indices); the expert's from the contours rasterised on the native "
            "grid, the segmenter's on its crop grid",
            "the EF over the compared slices leaves out the basal and apical slices the experts did not contour",
            "Dice on the crop grid, the contours carried through the crop with nearest-neighbour sampling; "
            "label_coverage is the share of the contoured area inside the crop",
            "one patient (heart failure with infarction): a check on real images, not an accuracy estimate",
        ],
        "seconds": round(time.perf_counter() - started, 2),
    }
