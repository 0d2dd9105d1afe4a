"""Spacing-free image statistics of short-axis frames and cines: how an MRI frame looks, in numbers.

Two uses share one definition: the simulator's realism benchmark
(`cardiacnets.bench.realism_cmr`, simulated frames against ACDC and Sunnybrook)
and the generation evaluation (`cardiacnets.evaluate.generation_scoring`,
generated cines against the true cines of the same subjects, in a feature space
that no generator or baseline was trained or selected in).

`cmr_features` measures one frame, without pixel spacing (ACDC stores
none): intensities are divided by the LV blood pool's median, lengths by the LV
cavity's equivalent radius ``r = sqrt(area / pi)`` or kept in pixels.

* blood pool (LV cavity eroded by 1 px): coefficient of variation, robust noise
  (1.4826 MAD of the 5-point Laplacian / sqrt(20), the SD of white noise),
  Laplacian SD (texture: noise plus structure such as papillary muscles);
* myocardium: median / blood median, CV;
* endocardial border: contrast (1 - median of the shell 2-3 px outside the
  cavity) and edge width = contrast / 90th percentile of the gradient magnitude
  (central differences) in the 3 px band on the border, in px and in LV radii
  (a perfect step is 2 px wide);
* surroundings, the ring 1-3 LV radii outside the cavity (2r to 4r from its
  centre, labels ignored, so every set counts RV and tissue alike): mean,
  median, CV, dark (< 0.2) and bright (> 0.7) fractions, median 5 x 5 local SD,
  robust Laplacian noise; noise of the frame's dark pixels (3 x 3 neighbourhood
  below 0.15 and without exact zeros, which are masked or zero-filled background);
* histogram: the 5th-95th percentiles and the share above 1.1 of the field
  within 4 LV radii of the centre (not the whole frame: the field of view is a
  protocol choice, about 144 mm in the simulator and up to 400 mm in ACDC).

`cine_statistics` measures a cine: the mid-ventricular slice (`mid_ventricular_slice`)
at end-diastole (frame 0) and at end-systole (the frame of smallest LV cavity),
from labels given with it (expert labels, or a segmenter's for generated cines).
"""

from __future__ import annotations

import math

import numpy as np

from cardiacnets.cmr.indices import mid_ventricular_slice
from cardiacnets.io.cmr_image import SEG_LABELS

LV, MYO = SEG_LABELS["lv_cavity"], SEG_LABELS["lv_myocardium"]
#: Smallest LV cavity (pixels) a frame is measured on.
MIN_LV_PIXELS = 12
#: 5-point Laplacian of white noise of SD 1 has SD sqrt(1 + 1 + 1 + 1 + 16).
LAPLACE_NOISE_GAIN = math.sqrt(20.0)
MAD_TO_SD = 1.4826
#: Surroundings ring, in LV radii from the cavity's centre, and the histogram field.
RING_RADII = (2.0, 4.0)
FIELD_RADII = 4.0
PERCENTILES = (5, 25, 50, 75, 95)
#: Keys of `cmr_features` that are bookkeeping, not features.
BOOKKEEPING = ("lv_radius_px",)


def _disc(radius: int):
    from scipy import ndimage

    return ndimage.generate_binary_structure(2, 1) if radius <= 1 else \
        np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius


def robust_sd(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation (the SD of Gaussian values, robust to outliers); NaN under 10 values."""
    if values.size < 10:
        return math.nan
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


def _cv(values: np.ndarray) -> float:
    return float(np.std(values) / np.mean(values)) if values.size >= 2 and np.mean(values) > 0 else math.nan


def cmr_features(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Spacing-free realism features of one short-axis frame (see the module docstring).

    Args:
        image: (H, W) intensities in any scale (non-negative).
        labels: (H, W) labels in the `SEG_LABELS` convention (1 LV cavity, 2 LV myocardium).

    Returns:
        Feature name -> value (NaN where undefined, e.g. myocardium features without a myocardium
        label), plus ``lv_radius_px`` (bookkeeping, not a feature: it depends on the pixel size).

    Raises:
        ValueError: an LV cavity under `MIN_LV_PIXELS` pixels or a blood pool of non-positive median.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    lv = labels == LV
    if lv.sum() < MIN_LV_PIXELS:
        raise ValueError(f"LV cavity of {int(lv.sum())} pixels (< {MIN_LV_PIXELS})")
    core = ndimage.binary_erosion(lv, _disc(1))
    core = core if core.sum() >= 4 else lv
    blood_median = float(np.median(image[core]))
    if not blood_median > 0:
        raise ValueError(f"blood-pool median {blood_median} is not positive")
    x = image / blood_median
    radius = math.sqrt(lv.sum() / math.pi)
    cy, cx = ndimage.center_of_mass(lv)
    rows, cols = np.indices(x.shape)
    dist_r = np.hypot(rows - cy, cols - cx) / radius  # distance from the LV centre in LV radii
    lap = ndimage.laplace(x)
    inner = ndimage.binary_erosion(lv, _disc(2))  # the Laplacian's 3 x 3 support stays inside the cavity
    inner = inner if inner.sum() >= 10 else core
    out = {"blood_cv": _cv(x[core]), "blood_noise_sd": robust_sd(lap[inner]) / LAPLACE_NOISE_GAIN,
           "blood_laplacian_sd": float(np.std(lap[inner]))}
    myo = labels == MYO
    out["myo_blood_ratio"] = float(np.median(x[myo])) if myo.sum() >= 4 else math.nan
    out["myo_cv"] = _cv(x[myo]) if myo.sum() >= 4 else math.nan
    out.update(_edge_features(x, lv, radius))
    out.update(_surroundings(x, lap, dist_r))
    field = x[dist_r <= FIELD_RADII]
    for q, value in zip(PERCENTILES, np.percentile(field, PERCENTILES)):
        out[f"field_p{q:02d}"] = float(value)
    out["field_bright_fraction"] = float(np.mean(field > 1.1))
    out["lv_radius_px"] = radius
    return out


def _edge_features(x: np.ndarray, lv: np.ndarray, radius: float) -> dict[str, float]:
    """Endocardial contrast and edge width (px and LV radii) of a blood-normalised frame."""
    from scipy import ndimage

    shell = ndimage.binary_dilation(lv, _disc(3)) & ~ndimage.binary_dilation(lv, _disc(1))
    band = ndimage.binary_dilation(lv, _disc(1)) & ~ndimage.binary_erosion(lv, _disc(1))
    contrast = 1.0 - float(np.median(x[shell])) if shell.any() else math.nan
    gy, gx = np.gradient(x)
    slope = float(np.percentile(np.hypot(gy, gx)[band], 90))
    width = contrast / slope if slope > 0 and contrast > 0 else math.nan
    return {"endo_contrast": contrast, "edge_width_px": width, "edge_width_lv_radii": width / radius}


def _surroundings(x: np.ndarray, lap: np.ndarray, dist_r: np.ndarray) -> dict[str, float]:
    """The ring 1-3 LV radii outside the cavity, and the noise of the frame's dark pixels."""
    from scipy import ndimage

    ring = (dist_r >= RING_RADII[0]) & (dist_r <= RING_RADII[1])
    values = x[ring]
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(x * x, 5) - ndimage.uniform_filter(x, 5) ** 2, 0.0))
    # Exact zeros are masked or zero-filled background (Sunnybrook's scanner zeroes about half of each
    # frame), not measured signal: a dark neighbourhood counts only without them.
    dark = (ndimage.maximum_filter(x, 3) < 0.15) & (ndimage.minimum_filter(x, 3) > 0.0)
    return {
        "ring_mean": float(values.mean()), "ring_median": float(np.median(values)), "ring_cv": _cv(values),
        "ring_dark_fraction": float(np.mean(values < 0.2)), "ring_bright_fraction": float(np.mean(values > 0.7)),
        "ring_local_sd": float(np.median(local_sd[ring])),
        "ring_noise_sd": robust_sd(lap[ring]) / LAPLACE_NOISE_GAIN,
        "dark_noise_sd": robust_sd(lap[dark]) / LAPLACE_NOISE_GAIN if dark.sum() >= 20 else math.nan,
    }


#: The features of `cmr_features`, in its order (`BOOKKEEPING` left out).
FEATURES = ("blood_cv", "blood_noise_sd", "blood_laplacian_sd", "myo_blood_ratio", "myo_cv", "endo_contrast",
            "edge_width_px", "edge_width_lv_radii", "ring_mean", "ring_median", "ring_cv", "ring_dark_fraction",
            "ring_bright_fraction", "ring_local_sd", "ring_noise_sd", "dark_noise_sd",
            *(f"field_p{q:02d}" for q in PERCENTILES), "field_bright_fraction")
#: The phases `cine_statistics` measures, as column-name prefixes.
PHASES = ("ed", "es")
#: The columns of `cine_statistics`.
CINE_STATISTICS = tuple(f"{phase}_{name}" for phase in PHASES for name in FEATURES)


def cine_statistics(cines: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """`cmr_features` of each cine's mid-ventricular slice at end-diastole and end-systole.

    End-diastole is frame 0 (the UK Biobank convention); end-systole is the frame whose LV cavity is
    smallest on that slice (of the frames with at least `MIN_LV_PIXELS` cavity pixels).

    Args:
        cines: (N, slices, frames, H, W) intensities.
        labels: (N, slices, frames, H, W) labels of the same cines (`SEG_LABELS`).

    Returns:
        ``(values, names)``: (N, 2 * len(FEATURES)) float64, NaN where a feature is undefined or the
        phase could not be measured (no LV cavity, or one under `MIN_LV_PIXELS` pixels); names
        ``ed_<feature>`` then ``es_<feature>``.

    Raises:
        ValueError: cines and labels of different shapes, or not 5-D.
    """
    cines, labels = np.asarray(cines), np.asarray(labels)
    if cines.ndim != 5 or cines.shape != labels.shape:
        raise ValueError(f"cine_statistics needs (N, slices, frames, H, W) cines and labels of one shape, "
                         f"got {cines.shape} and {labels.shape}")
    names = CINE_STATISTICS
    values = np.full((len(cines), len(names)), np.nan)
    for i, (cine, label) in enumerate(zip(cines, labels)):
        mid = mid_ventricular_slice(label[:, 0], slice_axis=0)
        if mid is None:
            continue
        areas = (label[mid] == LV).sum(axis=(1, 2)).astype(float)
        es = int(np.argmin(np.where(areas >= MIN_LV_PIXELS, areas, np.inf)))
        for j, frame in enumerate((0, es)):
            try:
                measured = cmr_features(cine[mid, frame], label[mid, frame])
            except ValueError:  # a cavity too small to measure: the phase stays NaN
                continue
            values[i, j * len(FEATURES):(j + 1) * len(FEATURES)] = [measured[name] for name in FEATURES]
    return values, names
