"""Blood-pool structure and acquisition blur for the short-axis cine (``SynthConfig.cmr_texture``).

The procedural renderer (`cardiacnets.simulate.cmr_model`) paints a uniform LV
blood pool with pixel-sharp edges; real bSSFP cines show papillary muscles and
trabeculae inside the cavity (blood-pool coefficient of variation about 0.3 in
ACDC and Sunnybrook against 0.05 simulated, `cardiacnets bench realism
--modality cmr`) and edges blurred by the finite k-space extent. With
``cmr_texture`` on, `paint_blood_structure` adds, before the coil gain and the
noise:

* two papillary muscles (anterolateral near 45 degrees, posteromedial near
  -120 degrees in the heart frame, lateral = 0, anterior = 90), discs of
  myocardial signal (radius 4.5-7 mm) centred at 62 % of the mean endocardial
  radius between 25 % and 85 % of the LV's length, thickening as the cavity
  empties (radius times (EDV / V)^(1/3));
* trabeculae: a band in the outer 30 % of the cavity radius pulled towards
  myocardial signal by a random angular pattern (7-15 lobes a slice);
* slow flow-related signal variation (a smooth +-6 % field over the blood).

As in UK Biobank's segmentations, papillary muscles and trabeculae belong to
the LV cavity label: the segmentation and every ground-truth index are
unchanged. `blur_in_plane` then applies a Gaussian point-spread function
(``psf_sigma_px``) in-plane.
"""

from __future__ import annotations

import numpy as np

PAPILLARY_ANGLES_DEG = (45.0, -120.0)
PAPILLARY_XI = (0.25, 0.85)  # long-axis extent, 0 = mitral plane, 1 = apex
PAPILLARY_OFFSET = 0.62  # centre at this fraction of the endocardial radius
PAPILLARY_RADIUS_MM = (4.5, 7.0)  # at end-diastole
TRABECULAR_BAND = (0.7, 0.95)  # fraction of the local endocardial radius where trabeculae start / are full
TRABECULAR_DEPTH = 0.75  # largest pull towards myocardial signal
FLOW_AMPLITUDE = 0.06


def paint_blood_structure(image: np.ndarray, seg: np.ndarray, endo_mm: np.ndarray, xi: np.ndarray,
                          x_px: np.ndarray, y_px: np.ndarray, theta_idx: np.ndarray, rho_px: np.ndarray,
                          lv_scale: np.ndarray, px: float, myocardium: float, rng: np.random.Generator,
                          trabecular_depth: float = TRABECULAR_DEPTH) -> None:
    """Paint papillary muscles, trabeculae and flow variation into the LV/RV blood, in place.

    Args:
        image: (K, T, x, y) signal relative to LV blood, before the coil gain and noise.
        seg: (K, T, x, y) labels (1 LV cavity, 3 RV cavity); not changed.
        endo_mm: (K, T, angles) endocardial radius per slice, frame and angle (<= 0 where absent).
        xi: (K, T) normalised long-axis position of each slice (0 mitral plane, 1 apex).
        x_px, y_px: (x, y) heart-frame lateral / anterior coordinates of the pixels, in pixels.
        theta_idx: (x, y) angle index of each pixel; rho_px: (x, y) its distance from the LV axis, pixels.
        lv_scale: (T,) (EDV / V(t))^(1/3), the papillary muscles' thickening.
        px: pixel size, mm.
        myocardium: myocardial signal relative to LV blood.
        rng: the subject's image generator.
        trabecular_depth: the trabeculae's largest pull towards myocardial signal.
    """
    endo_px = np.where(endo_mm > 0.0, endo_mm / px, np.nan).astype(np.float32)  # (K, T, angles)
    present = np.isfinite(endo_px).any(axis=-1)
    mean_r = np.zeros(present.shape, np.float32)
    mean_r[present] = np.nanmean(endo_px[present], axis=-1)  # (K, T); 0 where the slice has no cavity
    # Work inside the box that holds the LV cavity in every slice and frame (about a third of the frame).
    reach = np.flatnonzero((rho_px <= np.nanmax(endo_px) + 2.0).any(axis=1))
    cols = np.flatnonzero((rho_px <= np.nanmax(endo_px) + 2.0).any(axis=0))
    box = (slice(reach[0], reach[-1] + 1), slice(cols[0], cols[-1] + 1))
    sub, lv = image[..., box[0], box[1]], seg[..., box[0], box[1]] == 1
    xb, yb, rho_b, theta_b = x_px[box], y_px[box], rho_px[box], theta_idx[box]
    myo = np.float32(myocardium)
    # Papillary muscles: discs moving with the wall, attached to the trabecular zone.
    low, high = PAPILLARY_XI
    extent = np.clip(np.minimum(xi - low, high - xi) / 0.08, 0.0, 1.0).astype(np.float32)  # (K, T), soft ends
    for angle_deg in PAPILLARY_ANGLES_DEG:
        angle = np.radians(angle_deg + rng.normal(0.0, 12.0))
        size_mm = rng.uniform(*PAPILLARY_RADIUS_MM)
        centre = PAPILLARY_OFFSET * mean_r  # (K, T) pixels from the axis
        cx = (centre * np.cos(angle))[..., None, None]
        cy = (centre * np.sin(angle))[..., None, None]
        radius = (size_mm / px * extent * lv_scale[None, :].astype(np.float32))[..., None, None]
        coverage = np.clip(radius - np.hypot(xb - cx, yb - cy) + np.float32(0.5), 0.0, 1.0) * lv
        sub += coverage * (myo - sub)
    # Trabeculae: the outer band of the cavity, modulated around the circumference.
    n_angles = endo_mm.shape[-1]
    theta = np.linspace(0.0, 2.0 * np.pi, n_angles, endpoint=False)
    k_slices = image.shape[0]
    pattern = np.zeros((k_slices, n_angles), np.float32)
    for k in range(k_slices):
        lobes = rng.integers(7, 16, 3)
        phases = rng.uniform(0.0, 2.0 * np.pi, 3)
        wave = sum(np.cos(m * theta + p) for m, p in zip(lobes, phases)) / 3.0
        pattern[k] = np.clip(0.5 + wave, 0.0, 1.0)
    local_r = np.take(np.nan_to_num(endo_px, nan=np.inf), theta_b, axis=-1)  # (K, T, bx, by)
    band = np.clip((rho_b / local_r - TRABECULAR_BAND[0]) / (TRABECULAR_BAND[1] - TRABECULAR_BAND[0]), 0.0, 1.0)
    pull = np.float32(trabecular_depth) * band * pattern[:, None][..., theta_b] * lv
    sub += pull * (myo - sub)
    # Flow: a smooth multiplicative field over both cavities, one per slice.
    blood = (seg == 1) | (seg == 3)
    scale = max(float(np.abs(x_px).max()), 1.0)
    xn, yn = x_px / scale, y_px / scale
    c = rng.normal(0.0, 1.0, (k_slices, 3))
    field = c[:, 0, None, None] * xn + c[:, 1, None, None] * yn + c[:, 2, None, None] * (xn**2 - yn**2)
    field = (FLOW_AMPLITUDE * field / np.maximum(np.abs(field).max(axis=(1, 2), keepdims=True), 1e-6))
    image *= np.float32(1.0) + field.astype(np.float32)[:, None] * blood


def blur_in_plane(image: np.ndarray, sigma_px: float) -> None:
    """Gaussian point-spread function over the last two axes, in place (no-op at sigma 0)."""
    if sigma_px <= 0.0:
        return
    from scipy import ndimage

    image[...] = ndimage.gaussian_filter(image, sigma=(0.0,) * (image.ndim - 2) + (sigma_px, sigma_px))
