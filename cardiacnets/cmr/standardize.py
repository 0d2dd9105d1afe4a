"""The standard cine representation: heart-centred, resampled, normalised crops.

CardiacNets (arXiv 2411.13602) feeds its CMR encoder fixed-size stacks of
frames: a few short-axis slices (or one long-axis slice), resampled to a
common pixel size, cropped around the heart (80 x 80 at ~1.8 mm) and
resampled to 50 frames over one cardiac cycle. `standardize_cine` builds this
from any `CMRImage` with MONAI transforms: ``Orientation`` (in-plane axes to a
canonical order, the slice axis left in place), ``Spacing`` (in-plane
resampling, slice spacing kept), ``ScaleIntensityRange`` at the cine's
percentiles (robust 0-1 normalisation, as ``ScaleIntensityRangePercentiles``
does), ``BorderPad`` + ``SpatialCrop`` (the heart-centred crop).
Two steps MONAI has no transform for are written here: locating the heart
(the segmentation's centroid, else the peak of the cine's temporal-variance
map, since the beating heart is what changes most over the cycle) and
periodic temporal resampling (a cine covers one cycle, so its last frame is
followed by its first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
from einops import rearrange
from monai.data import MetaTensor
from monai.transforms import BorderPad, Orientation, ScaleIntensityRange, Spacing, SpatialCrop
from scipy import ndimage

from cardiacnets.cmr.config import CMRConfig
from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import SEG_LABELS, CMRImage

# Gaussian smoothing of the temporal-variance map, wide enough for the moving
# borders of both ventricles to merge into one blob. On the 30 ACDC patients of
# shared/data, taken as two-frame cines (ED, ES), 16 mm put the centre a median
# 5.9 px from the LV-cavity centroid (8 mm: 7.1 px) and the whole LV cavity
# inside an 80-px crop for 29 of 30 patients (8 mm: 27).
VARIANCE_SMOOTHING_MM = 16.0
# The heart region is the connected part of the smoothed map above this
# fraction of its peak that contains the peak.
VARIANCE_REGION_FRACTION = 0.5
# Without a segmentation, the slices whose temporal variance around the heart
# reaches this fraction of the largest make up the heart's extent. On the 30
# ACDC (ED, ES) pairs, the middle of that run was a median 0 slices (max 2)
# from the segmentation's mid-ventricular slice; the single most dynamic slice
# was a median 3 (max 8) away, often basal.
DYNAMIC_SLICE_FRACTION = 0.2
_WORLD_AXES = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class StandardCine:
    """A cine in the standard representation, and how it was made.

    Attributes:
        frames: (slices_out, frames_out, crop, crop) float32 in [0, 1]; the last
            two axes are the reoriented in-plane axes (x, y). ``frames_out`` is
            ``config.n_frames``, or 1 for a single-phase input.
        slice_indices: input slice of each output slice; -1 marks padding.
        center_xy: crop centre in input voxel coordinates (x, y).
        center_method: ``"segmentation"`` or ``"temporal_variance"``.
        spacing_mm: in-plane pixel size of `frames`; None when the input's
            spacing is unknown (then the native pixels are kept).
        frame_interval_ms: time between output frames, when the input's is known.
        orientation: axis codes of the reoriented grid (e.g. ``("R", "A", "I")``).
        intensity_range: the input values mapped to 0 and 1.
        view: the input's view.
        source: the input's file.
        steps: what was done, in order, in words.
        seg: (slices_out, seg_frames, crop, crop) uint8 labels cropped the same
            way (nearest neighbour) when a segmentation was given, else None;
            ``seg_frames`` is ``frames_out`` or 1 for a single-phase segmentation.
    """

    frames: np.ndarray
    slice_indices: list[int]
    center_xy: tuple[float, float]
    center_method: str
    spacing_mm: float | None
    frame_interval_ms: float | None
    orientation: tuple[str, str, str]
    intensity_range: tuple[float, float]
    view: str
    source: str
    steps: list[str] = field(default_factory=list)
    seg: np.ndarray | None = None


def _check_inputs(image: CMRImage, seg: CMRImage | None) -> None:
    if image.is_segmentation:
        raise InputError(image.source, "standardize_cine needs an intensity image, got a segmentation")
    if image.data.ndim != 4 or 0 in image.data.shape:
        raise InputError(image.source, f"image must be non-empty (x, y, slices, frames), got shape {image.data.shape}")
    if seg is None:
        return
    if not seg.is_segmentation:
        raise InputError(seg.source, "seg must be a segmentation (is_segmentation=True)")
    if seg.data.shape[:3] != image.data.shape[:3]:
        raise InputError(
            seg.source, f"segmentation grid {seg.data.shape[:3]} differs from image grid {image.data.shape[:3]}"
        )
    if seg.n_frames not in (1, image.n_frames):
        raise InputError(
            seg.source, f"segmentation has {seg.n_frames} frames; expected 1 or {image.n_frames} like the image"
        )
    if not np.allclose(seg.affine, image.affine, atol=1e-3):
        raise InputError(seg.source, "segmentation affine differs from the image affine")


def _spacing_known(image: CMRImage) -> bool:
    return bool(image.metadata.get("spacing_known", True))


# --------------------------------------------------------------------------- crop centre


def temporal_variance_map(image: CMRImage) -> np.ndarray:
    """Per-pixel variance over frames, averaged over slices.

    Args:
        image: a cine with more than one frame.

    Returns:
        (x, y) float64 map.
    """
    data = image.data.astype(np.float64)
    return data.var(axis=3).mean(axis=2)


def find_crop_center(
    image: CMRImage, seg: CMRImage | None = None, *, method: str = "auto"
) -> tuple[tuple[float, float], str]:
    """Locate the heart in-plane, in input voxel coordinates.

    With a segmentation (and ``method="auto"``) the centre is the centroid of
    all heart labels (LV cavity, LV myocardium, RV cavity) over slices and
    frames. Otherwise it comes from the temporal-variance map: smoothed with a
    Gaussian of `VARIANCE_SMOOTHING_MM`, the connected region above
    `VARIANCE_REGION_FRACTION` of the peak that contains the peak, and that
    region's variance-weighted centroid.

    Args:
        image: the cine.
        seg: its segmentation, or None.
        method: ``"auto"`` or ``"variance"`` (ignore the segmentation).

    Returns:
        ((x, y), method used): the centre and ``"segmentation"`` or ``"temporal_variance"``.

    Raises:
        InputError: an empty segmentation, or a single-frame image without one.
    """
    if seg is not None and method == "auto":
        heart = seg.data > 0
        if not heart.any():
            raise InputError(seg.source, "segmentation is empty; cannot centre the crop on the heart")
        cx, cy = ndimage.center_of_mass(heart.sum(axis=(2, 3)))
        return (float(cx), float(cy)), "segmentation"
    if image.n_frames < 2:
        raise InputError(
            image.source, "cannot locate the heart: the image has a single frame and no segmentation was given"
        )
    variance = temporal_variance_map(image)
    spacing_x, spacing_y = image.spacing_mm[:2] if _spacing_known(image) else (1.0, 1.0)
    sigma_voxels = (VARIANCE_SMOOTHING_MM / spacing_x, VARIANCE_SMOOTHING_MM / spacing_y)
    smooth = ndimage.gaussian_filter(variance, sigma=sigma_voxels)
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    if smooth[peak] <= 0:
        raise InputError(image.source, "cannot locate the heart: the cine does not change over time")
    regions, _ = ndimage.label(smooth >= VARIANCE_REGION_FRACTION * smooth[peak])
    weights = np.where(regions == regions[peak], smooth, 0.0)
    cx, cy = ndimage.center_of_mass(weights)
    return (float(cx), float(cy)), "temporal_variance"


# --------------------------------------------------------------------------- slice selection


def _lv_cavity_slices(seg: CMRImage) -> tuple[np.ndarray, np.ndarray]:
    """Slices with LV cavity at end-diastole (the segmentation's first frame), and the per-slice areas."""
    areas = (seg.data[:, :, :, 0] == SEG_LABELS["lv_cavity"]).sum(axis=(0, 1))
    slices = np.flatnonzero(areas)
    if slices.size == 0:
        raise InputError(seg.source, "segmentation has no LV cavity (label 1) at end-diastole; cannot choose slices")
    return slices, areas


def _thirds(first: int, last: int) -> list[int]:
    """Centres of the basal, mid and apical thirds of slices first..last (inclusive), in stack order."""
    count = last - first + 1
    return [first + (2 * j + 1) * count // 6 for j in range(3)]


def _dynamic_slices(
    image: CMRImage, config: CMRConfig, center_xy: tuple[float, float] | None
) -> tuple[int, int] | None:
    """First and last slice whose temporal variance around the heart reaches `DYNAMIC_SLICE_FRACTION` of the peak.

    Stands in for the LV extent when there is no segmentation; None for a
    single-frame image or without a centre.
    """
    if image.n_frames < 2 or center_xy is None:
        return None
    half_x, half_y = _crop_half_width_voxels(image, config)
    cx, cy = center_xy
    x0, x1 = max(0, int(cx - half_x)), int(cx + half_x) + 1
    y0, y1 = max(0, int(cy - half_y)), int(cy + half_y) + 1
    per_slice = image.data[x0:x1, y0:y1].astype(np.float64).var(axis=3).mean(axis=(0, 1))
    if not per_slice.max() > 0:
        return None
    dynamic = np.flatnonzero(per_slice >= DYNAMIC_SLICE_FRACTION * per_slice.max())
    return int(dynamic[0]), int(dynamic[-1])


def select_slices(
    image: CMRImage, config: CMRConfig, seg: CMRImage | None = None, center_xy: tuple[float, float] | None = None
) -> tuple[list[int], str]:
    """Choose the input slices of the standard representation.

    Long-axis views and single-slice images give ``[0]``. Short-axis stacks follow
    ``config.sa_slices``:

    The heart's extent along the stack is the run of slices holding LV cavity
    at end-diastole when a segmentation is given; otherwise the run of slices
    whose temporal variance within the crop window around `center_xy` reaches
    `DYNAMIC_SLICE_FRACTION` of the largest (the beating ventricles); for a
    single-frame image without segmentation, the whole stack.

    - ``"mid"``: the middle of that extent, ``(first + last) // 2``.
    - ``"basal_mid_apical"``: the centre slices of its three thirds. With a
      segmentation they are ordered base first (the larger LV cavity at ED);
      without, in stack order. Short extents may repeat a slice.
    - ``"all"``: ``config.n_sa_slices`` consecutive slices centred on the
      extent, or every slice followed by -1 (padding) entries when the stack
      is shorter.

    Args:
        image: the cine.
        config: the representation's settings.
        seg: its segmentation, or None.
        center_xy: heart centre in voxels (for the variance-based ``"mid"`` choice).

    Returns:
        (slice indices, a sentence saying how they were chosen).
    """
    n_slices = image.n_slices
    if image.view.startswith("la"):
        if n_slices != 1:
            raise InputError(image.source, f"long-axis view {image.view} should have one slice, has {n_slices}")
        return [0], "long-axis view: its single slice"
    if n_slices == 1:
        return [0], "single-slice image: slice 0"

    lv_areas = None
    if seg is not None:
        lv_slices, lv_areas = _lv_cavity_slices(seg)
        first, last = int(lv_slices[0]), int(lv_slices[-1])
        extent = f"LV cavity slices {first}-{last} at ED"
    elif (dynamic := _dynamic_slices(image, config, center_xy)) is not None:
        first, last = dynamic
        extent = f"beating slices {first}-{last} (temporal variance, no segmentation)"
    else:
        first, last = 0, n_slices - 1
        extent = "the whole stack (single frame, no segmentation)"

    mode = config.sa_slices
    if mode == "mid":
        return [(first + last) // 2], f"mid-ventricular: middle of {extent}"
    if mode == "basal_mid_apical":
        chosen = _thirds(first, last)
        if lv_areas is None:
            return chosen, f"basal/mid/apical thirds of {extent}, stack order"
        if lv_areas[chosen[0]] < lv_areas[chosen[-1]]:
            chosen = chosen[::-1]
        return chosen, f"basal/mid/apical thirds of {extent}, base (larger LV cavity) first"
    if mode == "all":
        wanted = config.n_sa_slices
        if n_slices <= wanted:
            padding = wanted - n_slices
            note = f"all {n_slices} slices" + (f", then {padding} empty padding slices" if padding else "")
            return list(range(n_slices)) + [-1] * padding, note
        middle = (first + last) / 2
        start = int(np.clip(np.floor(middle - (wanted - 1) / 2 + 0.5), 0, n_slices - wanted))
        return list(range(start, start + wanted)), f"{wanted} consecutive slices from {start}, centred on {extent}"
    raise ValueError(f"unknown sa_slices {mode!r}")


def _crop_half_width_voxels(image: CMRImage, config: CMRConfig) -> tuple[float, float]:
    """Half the crop's side in input voxels along x and y."""
    if not _spacing_known(image):
        return config.crop_size / 2, config.crop_size / 2
    spacing_x, spacing_y = image.spacing_mm[:2]
    half_mm = config.crop_size * config.spacing_mm / 2
    return half_mm / spacing_x, half_mm / spacing_y


# --------------------------------------------------------------------------- spatial and temporal resampling


def canonical_inplane_axcodes(affine: np.ndarray) -> str:
    """Target axis codes that order the in-plane axes canonically and keep the slice axis.

    The slice axis keeps its code (reorienting it would mix slices into the
    plane). The two in-plane axes become the positive directions (R, A or S)
    of the remaining world axes, in the order L-R, P-A, I-S.

    Args:
        affine: (4, 4) voxel-to-RAS affine.

    Returns:
        Three axis codes for MONAI's ``Orientation``, e.g. ``"RAI"``.
    """
    codes = nib.aff2axcodes(affine)
    slice_code = codes[2]
    inplane = [positive for negative, positive in _WORLD_AXES if slice_code not in (negative, positive)]
    return f"{inplane[0]}{inplane[1]}{slice_code}"


def resample_cycle(frames: np.ndarray, n_out: int, *, axis: int = 0, nearest: bool = False) -> np.ndarray:
    """Resample one cardiac cycle to `n_out` evenly spaced frames.

    The cycle is periodic (frame ``n_in`` would be frame 0 again), so output
    frame k sits at input position ``k * n_in / n_out`` and interpolates
    between its neighbours, wrapping from the last frame to the first. MONAI's
    resizing treats the time axis as an open interval, which would stretch the
    last frame instead of closing the cycle.

    Args:
        frames: array with the frames along `axis`.
        n_out: number of output frames.
        axis: the frame axis.
        nearest: take the nearest frame instead of interpolating linearly (labels).

    Returns:
        Array with `n_out` frames along `axis`, float32 (or the input dtype when `nearest`).
    """
    n_in = frames.shape[axis]
    position = np.arange(n_out) * (n_in / n_out)
    if nearest:
        return np.take(frames, np.floor(position + 0.5).astype(int) % n_in, axis=axis)
    before = np.floor(position).astype(int)
    weight = (position - before).astype(np.float32)
    shape = [1] * frames.ndim
    shape[axis] = n_out
    weight = weight.reshape(shape)
    low = np.take(frames, before % n_in, axis=axis).astype(np.float32)
    high = np.take(frames, (before + 1) % n_in, axis=axis).astype(np.float32)
    return (1 - weight) * low + weight * high


def _reorient_resample(
    volume: np.ndarray, affine: np.ndarray, axcodes: str, spacing_mm: float | None, mode: str
) -> MetaTensor:
    """MONAI Orientation then in-plane Spacing of a (channels, x, y, 1) volume."""
    tensor = MetaTensor(torch.tensor(volume), affine=torch.as_tensor(affine, dtype=torch.float64))
    tensor = Orientation(axcodes=axcodes, labels=_WORLD_AXES)(tensor)
    if spacing_mm is not None:
        # A non-positive pixdim keeps that axis' spacing: the slice axis is not resampled.
        tensor = Spacing(pixdim=(spacing_mm, spacing_mm, 0.0), mode=mode, padding_mode="border", dtype=torch.float32)(
            tensor
        )
    return tensor


def _crop_at(tensor: MetaTensor, center_world: np.ndarray, crop_size: int) -> np.ndarray:
    """Pad with zeros where needed and crop crop_size x crop_size around a world point."""
    voxel = np.linalg.solve(np.asarray(tensor.affine, dtype=np.float64), np.append(center_world, 1.0))
    start = np.floor(voxel[:2] + 0.5).astype(int) - crop_size // 2
    size = np.array(tensor.shape[1:3])
    pad_before = np.maximum(0, -start)
    pad_after = np.maximum(0, start + crop_size - size)
    if pad_before.any() or pad_after.any():
        border = [int(pad_before[0]), int(pad_after[0]), int(pad_before[1]), int(pad_after[1]), 0, 0]
        tensor = BorderPad(spatial_border=border, mode="constant")(tensor)
    start = start + pad_before
    x0, y0 = int(start[0]), int(start[1])
    out = SpatialCrop(roi_start=[x0, y0, 0], roi_end=[x0 + crop_size, y0 + crop_size, 1])(tensor)
    assert tuple(out.shape[1:]) == (crop_size, crop_size, 1), out.shape
    return np.asarray(out.numpy()[..., 0])


# --------------------------------------------------------------------------- the representation


def standardize_cine(image: CMRImage, config: CMRConfig, seg: CMRImage | None = None) -> StandardCine:
    """Turn a cine into the standard (slices, frames, crop, crop) representation.

    Steps: (1) find the heart centre in the input (`find_crop_center`);
    (2) choose the slices (`select_slices`); (3) reorient the in-plane axes to
    the canonical order and resample them to ``config.spacing_mm`` (MONAI
    Orientation, Spacing; skipped when the input spacing is unknown, e.g.
    ACDC); (4) map the ``config.intensity_percentiles`` of the selected slices
    to 0 and 1, clipping (MONAI ScaleIntensityRange); (5) crop
    ``config.crop_size`` pixels around the centre, zero-padding outside the
    field of view (MONAI BorderPad, SpatialCrop); (6) resample the cycle to
    ``config.n_frames`` frames (`resample_cycle`; single-phase inputs keep
    their one frame). The segmentation, when given, follows steps 3, 5 and 6
    with nearest-neighbour sampling. The inputs are not modified.

    Args:
        image: the cine (x, y, slices, frames) intensity image.
        config: representation settings (`CMRConfig`).
        seg: its segmentation on the same grid (1 frame, or as many as the image).

    Returns:
        A `StandardCine`.

    Raises:
        InputError: a segmentation on another grid, an empty segmentation, a
            long-axis view with several slices, constant intensities, or a
            single-frame image without segmentation (the heart cannot be found).
    """
    config.validate()
    _check_inputs(image, seg)
    steps: list[str] = []

    center_xy, center_method = find_crop_center(image, seg, method=config.crop_center)
    where = f"({center_xy[0]:.1f}, {center_xy[1]:.1f})"
    steps.append(f"crop centre {where} voxels from the {center_method.replace('_', ' ')}")
    slice_indices, how = select_slices(image, config, seg, center_xy)
    steps.append(how)
    used = sorted({k for k in slice_indices if k >= 0})

    # Every selected slice shares the in-plane grid, so they travel together as
    # channels of a one-slice volume placed at the first selected slice.
    slice_affine = np.asarray(image.affine, dtype=np.float64).copy()
    slice_affine[:3, 3] += used[0] * slice_affine[:3, 2]
    center_world = (slice_affine @ np.array([center_xy[0], center_xy[1], 0.0, 1.0]))[:3]
    axcodes = canonical_inplane_axcodes(image.affine)
    spacing_mm = config.spacing_mm if _spacing_known(image) else None
    steps.append(f"in-plane axes reoriented to {axcodes} (MONAI Orientation)")
    steps.append(
        f"in-plane resampled to {spacing_mm} mm (MONAI Spacing, bilinear)"
        if spacing_mm is not None
        else "in-plane resampling skipped: input voxel spacing unknown, native pixels kept"
    )

    volume = rearrange(image.data[:, :, used, :].astype(np.float32), "x y s t -> (s t) x y 1")
    tensor = _reorient_resample(volume, slice_affine, axcodes, spacing_mm, mode="bilinear")
    # ScaleIntensityRangePercentiles is percentile + ScaleIntensityRange; the
    # percentiles are taken once here with numpy (4-5x faster than the
    # torch.quantile it uses: 8 vs 39 ms on a 166k-voxel ACDC stack) and recorded.
    lower, upper = config.intensity_percentiles
    low_value, high_value = (float(v) for v in np.percentile(tensor.numpy(), [lower, upper]))
    if not high_value > low_value:
        raise InputError(
            image.source, f"intensities are constant ({low_value}) over the selected slices; cannot normalise"
        )
    tensor = ScaleIntensityRange(a_min=low_value, a_max=high_value, b_min=0.0, b_max=1.0, clip=True)(tensor)
    steps.append(
        f"intensities: percentile {lower} ({low_value:.4g}) -> 0, percentile {upper} ({high_value:.4g}) -> 1, clipped"
    )
    cropped = _crop_at(tensor, center_world, config.crop_size)
    steps.append(f"{config.crop_size} x {config.crop_size} crop around the centre (MONAI SpatialCrop, zero padding)")
    frames = rearrange(cropped, "(s t) x y -> s t x y", s=len(used))

    frame_interval_ms = None
    if image.n_frames > 1:
        frames = resample_cycle(frames, config.n_frames, axis=1)
        steps.append(f"{image.n_frames} frames resampled linearly over the cycle to {config.n_frames}")
        if image.frame_interval_ms:
            frame_interval_ms = image.frame_interval_ms * image.n_frames / config.n_frames
    else:
        steps.append("single-phase image: one frame kept")

    standard_seg = None
    if seg is not None:
        labels = rearrange(seg.data[:, :, used, :].astype(np.float32), "x y s t -> (s t) x y 1")
        label_tensor = _reorient_resample(labels, slice_affine, axcodes, spacing_mm, mode="nearest")
        label_crop = _crop_at(label_tensor, center_world, config.crop_size)
        seg_frames = rearrange(label_crop, "(s t) x y -> s t x y", s=len(used))
        seg_frames = np.rint(seg_frames).astype(np.uint8)
        if seg.n_frames > 1:
            seg_frames = resample_cycle(seg_frames, frames.shape[1], axis=1, nearest=True)
        standard_seg = _place_slices(seg_frames, used, slice_indices, np.uint8)
        steps.append("segmentation cropped the same way (nearest neighbour)")

    return StandardCine(
        frames=_place_slices(frames.astype(np.float32), used, slice_indices, np.float32),
        slice_indices=list(slice_indices),
        center_xy=center_xy,
        center_method=center_method,
        spacing_mm=spacing_mm,
        frame_interval_ms=frame_interval_ms,
        orientation=tuple(nib.aff2axcodes(np.asarray(tensor.affine))),
        intensity_range=(low_value, high_value),
        view=image.view,
        source=image.source,
        steps=steps,
        seg=standard_seg,
    )


def _place_slices(per_used: np.ndarray, used: list[int], slice_indices: list[int], dtype) -> np.ndarray:
    """Arrange processed slices in the requested order, zeros for padding (-1)."""
    out = np.zeros((len(slice_indices), *per_used.shape[1:]), dtype=dtype)
    for i, k in enumerate(slice_indices):
        if k >= 0:
            out[i] = per_used[used.index(k)]
    return out
