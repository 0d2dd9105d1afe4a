"""bSSFP-like rendering of UK Biobank-style cines of the simulator's heart (`cardiacnets.simulate.heart_model`).

Bright blood, dark myocardium, bright fat, dark lung, liver, spine
and aorta from a simple 3-D body model, a smooth coil bias field and Rician noise
(the magnitude of complex Gaussian noise), written as int16 like UK Biobank. The
short-axis affine is oblique (columns: in-plane axes times the pixel spacing, the
long axis times the slice spacing); the 4-chamber plane contains the long axis
and the septal-lateral direction.

`render_cmr` draws the short-axis stack with its segmentation and the
4-chamber cine of one subject from the solved `HeartModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange

from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.simulate.cmr_body import Acquisition, BodyCanvas, body_background_v2, sample_acquisition, soft_inside
from cardiacnets.simulate.cmr_texture import blur_in_plane, paint_blood_structure
from cardiacnets.simulate.heart_model import D_THETA, N_THETA, THETA, HeartModel, smooth_bump

# Tissue signal of a bSSFP cine, relative to LV blood.
SIGNAL = dict(blood=1.0, rv_blood=0.95, atrial_blood=0.93, myocardium=0.27, fat=0.85, fluid=1.15,
              lung=0.04, liver=0.36, muscle=0.30, mediastinum=0.7, spine=0.42, csf=0.8, aorta=0.95)

#: Slices whose position along the LV (0 mitral plane, 1 apex) lies in this range give the heart's
#: mid-ventricular size, to which version 3 scales its thorax atlas.
MID_VENTRICLE = (0.2, 0.7)
#: Side of the window version 3 draws the heart in (mm; centred on the short-axis image, which is centred
#: between the ventricles): the whole field of view of versions 1 and 2 (80 pixels of 1.8 mm).
HEART_WINDOW_MM = 144.0


@dataclass
class SimulatedCMR:
    """The rendered cines of one subject.

    Attributes:
        sa: short-axis cine, int16 (x, y, slices, frames).
        seg_sa: its segmentation, uint8, UK Biobank labels.
        la_4ch: 4-chamber long-axis cine, int16 (x, y, 1, frames).
        model: the solved `HeartModel` (targets, per-frame scales).
    """

    sa: CMRImage
    seg_sa: CMRImage
    la_4ch: CMRImage
    model: HeartModel


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass
class _Pose:
    """Where the heart sits in the body (world RAS mm) and how the planes cut it."""

    base_centre: np.ndarray
    long_axis: np.ndarray  # base -> apex
    lateral: np.ndarray
    anterior: np.ndarray
    sa_rotation_rad: float
    sa_offset_mm: np.ndarray  # image centre relative to the LV axis, heart frame (lateral, anterior)
    la_rotation_rad: float
    la_centre_mm: np.ndarray  # (u, septal) of the LA image centre


def _sample_pose(phys, rng: np.random.Generator) -> _Pose:
    azimuth = np.radians(rng.normal(42.0, 6.0))  # from anterior toward the left
    elevation = np.radians(rng.normal(25.0, 6.0))  # downward tilt of the apex
    long_axis = np.array([-np.sin(azimuth) * np.cos(elevation), np.cos(azimuth) * np.cos(elevation),
                          -np.sin(elevation)])
    up = np.array([0.0, 0.5, 1.0])
    anterior = _unit(up - up.dot(long_axis) * long_axis)
    septal = np.cross(long_axis, anterior)
    if septal[0] < 0:  # the RV lies to the patient's right (+x in RAS)
        septal = -septal
    mid = np.array([-22.0, 28.0, -10.0]) + rng.normal(0.0, 4.0, 3)
    base = mid - 0.5 * phys.lv_long_axis_mm * long_axis
    return _Pose(
        base_centre=base, long_axis=long_axis, lateral=-septal, anterior=anterior,
        sa_rotation_rad=float(np.radians(rng.normal(0.0, 12.0))),
        sa_offset_mm=np.array([-20.0, 0.0]) + rng.normal(0.0, 3.0, 2),  # toward the RV
        la_rotation_rad=float(np.radians(rng.normal(0.0, 10.0))),
        la_centre_mm=np.array([0.45 * phys.lv_long_axis_mm - 12.0, 8.0]) + rng.normal(0.0, 4.0, 2),
    )


def _body_background(xyz: np.ndarray, phys, pixel_mm: float) -> np.ndarray:
    """Version 1's bSSFP signal of the static body (no heart) at world points (..., 3): one grey mediastinum."""
    body = BodyCanvas(xyz, phys, pixel_mm)
    thorax = body.chest_wall(SIGNAL)
    body.paint(SIGNAL["mediastinum"], thorax)
    body.paint(SIGNAL["liver"], body.below_diaphragm() * thorax)
    x, y, z = body.x, body.y, body.z

    def ellipsoid_distance(c, axes):
        r = np.sqrt(sum(((v - cv) / av) ** 2 for v, cv, av in zip((x, y, z), c, axes)))
        return (r - 1.0) * min(axes)

    body.paint(SIGNAL["lung"], soft_inside(ellipsoid_distance((-88.0, -8.0, 25.0), (58.0, 72.0, 120.0)), pixel_mm))
    body.paint(SIGNAL["lung"], soft_inside(ellipsoid_distance((82.0, -8.0, 35.0), (62.0, 78.0, 120.0)), pixel_mm))
    body.posterior(SIGNAL)
    return body.out


def _background(xyz: np.ndarray, phys, model: HeartModel, pose: _Pose, pixel_mm: float, acq,
                rng: np.random.Generator) -> np.ndarray:
    """The static body: version 2's (`cmr_body`) when the subject has an acquisition draw, else version 1's."""
    if acq is not None:
        return body_background_v2(xyz, phys, model, pose, pixel_mm, acq, rng)
    return _body_background(xyz, phys, pixel_mm)


def _bias_field(shape_xy: tuple[int, int], n_slices: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative coil sensitivity (slices, x, y), mean about 1."""
    xs = np.linspace(-1.0, 1.0, shape_xy[0])[:, None]
    ys = np.linspace(-1.0, 1.0, shape_xy[1])[None, :]
    c = rng.normal(0.0, 1.0, 6)
    field2d = c[0] * xs + c[1] * ys + 0.5 * c[2] * xs * ys + 0.4 * c[3] * xs**2 + 0.4 * c[4] * ys**2
    field2d = field2d / max(1e-6, np.abs(field2d).max())
    ks = np.linspace(-1.0, 1.0, n_slices)[:, None, None]
    return np.exp(strength * (field2d[None] + 0.3 * c[5] * ks)).astype(np.float32)


def _rician_int16(clean: np.ndarray, sigma: float, rng: np.random.Generator,
                  relative_sd: float = 0.0) -> np.ndarray:
    """Magnitude of the clean signal plus complex Gaussian noise (Rician), rounded to int16.

    With ``relative_sd`` > 0 the complex noise's SD is ``sqrt(sigma^2 + (relative_sd s)^2)``
    per voxel: thermal noise plus noise proportional to the signal (reconstruction, flow,
    ghosting), which real cines show as more noise in tissue than in air. It costs no extra
    draws (the same two uniforms per voxel).

    The complex noise is drawn in polar form (Box-Muller: radius
    ``sigma * sqrt(-2 ln u1)``, phase ``2 pi u2``), so the magnitude is
    ``sqrt(s^2 + (sigma r)^2 + 2 s sigma r cos(phase))`` -- exactly Rician, from two
    uniforms instead of two normals: 50-75 ms against 95-105 ms for a default
    short-axis cine (3.2 M voxels) on the project's 2-core machine. Works in place
    on `clean` (float32).
    """
    radius2 = rng.random(clean.shape, dtype=np.float32)
    np.subtract(np.float32(1.0), radius2, out=radius2)  # (0, 1]: log stays finite
    np.log(radius2, out=radius2)
    if relative_sd > 0:
        variance = clean * clean
        variance *= np.float32(relative_sd * relative_sd)
        variance += np.float32(sigma * sigma)
        radius2 *= np.float32(-2.0)
        radius2 *= variance  # (sigma r)^2, sigma per voxel
        del variance
    else:
        radius2 *= np.float32(-2.0 * sigma * sigma)  # (sigma r)^2
    cross = rng.random(clean.shape, dtype=np.float32)
    cross *= np.float32(2.0 * np.pi)
    np.cos(cross, out=cross)
    cross *= np.sqrt(radius2)
    cross *= clean
    cross *= np.float32(2.0)  # 2 s sigma r cos(phase)
    np.multiply(clean, clean, out=clean)
    clean += radius2
    clean += cross
    np.maximum(clean, 0.0, out=clean)  # rounding can leave -0.0001 where s ~ sigma r
    np.sqrt(clean, out=clean)
    clean += np.float32(0.5)  # round half up: values are non-negative
    return clean.astype(np.int16)


class _Compositor:
    """Paints nested heart layers over a background with partial-volume edges.

    Radii arrive in pixel units (float32). A layer covers ``clip(r - rho + 0.5,
    0, 1)`` of a pixel (a pixel-wide ramp across the boundary), so the hard
    segmentation (coverage > 0.5) is exactly ``rho < r``. `weight` returns the
    *uncovered* fraction ``beta`` so that `paint` can blend in place without
    temporaries: ``image = value + beta * (image - value)``.
    """

    def __init__(self, image: np.ndarray, rho_px: np.ndarray, seg: np.ndarray | None = None):
        self.image = image
        self.neg_rho = (0.5 - rho_px).astype(np.float32)  # coverage = clip(r + neg_rho, 0, 1)
        self.seg = seg

    def weight(self, radius_px: np.ndarray, static_px: np.ndarray | None = None, *,
               inplace: bool = False) -> np.ndarray:
        """Uncovered fraction ``1 - clip(r + static, 0, 1)`` (static defaults to ``0.5 - rho``)."""
        complement = np.float32(1.0) - (self.neg_rho if static_px is None else static_px)
        beta = np.subtract(complement, radius_px, out=radius_px if inplace else None)
        return np.clip(beta, 0.0, 1.0, out=beta)

    def paint(self, beta: np.ndarray, value: float, label: int = 0) -> None:
        if label and self.seg is not None:
            self.seg[beta < 0.5] = label
        value = np.float32(value)
        self.image -= value
        self.image *= beta
        self.image += value


def _heart_layers(comp: _Compositor, r_px: dict[str, np.ndarray], effusion_px: float, fat_px: np.ndarray,
                  signal: dict = SIGNAL) -> None:
    """Paint fat, effusion, RV wall, RV blood, LV wall and LV blood, outside in (consumes `r_px`)."""
    outer = r_px["rv_wall"]
    if effusion_px > 0:
        fluid = comp.neg_rho + np.float32(effusion_px)
        comp.paint(comp.weight(outer, fluid + np.float32(1.0) + fat_px), signal["fat"])
        comp.paint(comp.weight(outer, fluid + np.float32(1.0)), signal["myocardium"] * 0.4)  # pericardium
        comp.paint(comp.weight(outer, fluid), signal["fluid"])
    else:
        comp.paint(comp.weight(outer, comp.neg_rho + fat_px), signal["fat"])
    comp.paint(comp.weight(outer, inplace=True), signal["myocardium"])
    comp.paint(comp.weight(r_px["rv"], inplace=True), signal["rv_blood"], label=3)
    comp.paint(comp.weight(r_px["epi"], inplace=True), signal["myocardium"], label=2)
    comp.paint(comp.weight(r_px["endo"], inplace=True), signal["blood"], label=1)


def _paint_atria(comp: _Compositor, model: HeartModel, lateral_px: np.ndarray, anterior_px: np.ndarray,
                 along_px: np.ndarray, px: float, frames: np.ndarray | None = None, signal: dict = SIGNAL) -> None:
    """Paint both atria (wall, then blood; the LA over the RA) above the valve plane.

    Args:
        lateral_px, anterior_px: heart-frame coordinates of the pixels across the long axis, in pixels.
        along_px: long-axis position of the pixels, in pixels; broadcastable with the image.
        frames: the frames the image holds (default all).
    """
    frames = np.arange(model.t.size) if frames is None else frames
    atria = {name: {k: np.broadcast_to(v, model.t.shape)[frames] for k, v in a.items()}
             for name, a in model.atria().items()}
    base_px = (model.base_mm[frames] / px).astype(np.float32)[:, None, None]
    valve = np.clip(base_px - along_px + 0.5, 0.0, 1.0)  # above the mitral / tricuspid plane
    for name in ("ra", "la"):
        a = atria[name]
        hl = (a["half_length"] / px)[:, None, None]
        rad = (a["radius"] / px)[:, None, None]
        du = (along_px - (a["u"] / px)[:, None, None]) / hl
        dl = (lateral_px - (a["lateral_mm"] / px)[:, None, None]) / rad
        dist = (np.sqrt(du**2 + dl**2 + (anterior_px / rad) ** 2) - 1.0) * rad  # ~ distance outside, pixels
        for extra, value in ((2.0 / px, signal["myocardium"]), (0.0, signal["atrial_blood"])):
            coverage = np.clip(0.5 - dist + np.float32(extra), 0.0, 1.0) * valve
            comp.paint((1.0 - coverage).astype(np.float32), value)


def render_cmr(phys, rng: np.random.Generator, config) -> SimulatedCMR:
    """Render the short-axis cine, its segmentation and the 4-chamber cine.

    Args:
        phys: the subject's `Physiology` (from `sample_physiology`).
        rng: random generator for the nuisance (pose, anatomy, bias, noise).
        config: `SynthConfig` (matrix sizes, spacing, slices, frames, noise).

    Returns:
        `SimulatedCMR` with UK Biobank-like int16 cines and uint8 segmentation.
    """
    model = HeartModel(phys, config)
    pose = _sample_pose(phys, rng)
    px = config.pixel_spacing_mm
    n = config.setting("image_size")
    # Version 3 draws the heart in a window around the image centre and fills the rest of a larger field of
    # view with the real surroundings of the thorax atlas; earlier versions draw everything on the whole grid.
    w = n - 2 * max((n - int(np.ceil(HEART_WINDOW_MM / px))) // 2, 0) if config.version >= 3 else n
    win = np.s_[(n - w) // 2:(n + w) // 2]
    n_frames = config.n_frames
    frame_ms = 60000.0 / phys.heart_rate_bpm / n_frames
    signal_scale = float(rng.uniform(280.0, 480.0))
    sigma = config.setting("noise_sigma") * float(rng.uniform(0.8, 1.25)) * signal_scale
    fat_harmonics = rng.normal(0.0, 1.0, 2)
    acq = sample_acquisition(SIGNAL, rng, config.version) if config.version >= 2 else None
    signal = acq.signal if acq else SIGNAL
    psf_px = config.setting("psf_sigma_px") * (acq.psf if acq else 1.0)
    signal_noise = config.setting("signal_noise") * (acq.signal_noise if acq else 1.0)
    sigma *= acq.thermal_noise if acq else 1.0
    fat_theta_px = np.clip(3.0 + 2.0 * (fat_harmonics[0] * np.cos(THETA) + fat_harmonics[1] * np.sin(2 * THETA))
                           + 3.0 * smooth_bump(120.0, 40.0), 0.5, 9.0) / px
    meta = dict(simulated=True, eid=phys.eid, heart_rate_bpm=phys.heart_rate_bpm,
                slice_thickness_mm=config.slice_thickness_mm)

    # 1. Short-axis grid: in-plane axes rotated from (lateral, anterior); the
    # field of view is centred between the ventricles.
    c, s_ = np.cos(pose.sa_rotation_rad), np.sin(pose.sa_rotation_rad)
    axis_i = c * pose.lateral + s_ * pose.anterior
    axis_j = -s_ * pose.lateral + c * pose.anterior
    centre = (n - 1) / 2.0
    offset_world = pose.sa_offset_mm[0] * pose.lateral + pose.sa_offset_mm[1] * pose.anterior
    origin = pose.base_centre + model.slice_u_mm[0] * pose.long_axis + offset_world - centre * px * (axis_i + axis_j)
    sa_affine = np.eye(4)
    sa_affine[:3, 0] = axis_i * px
    sa_affine[:3, 1] = axis_j * px
    sa_affine[:3, 2] = pose.long_axis * config.slice_spacing_mm
    sa_affine[:3, 3] = origin
    ii, jj = np.meshgrid(np.arange(n)[win], np.arange(n)[win], indexing="ij")  # the heart window's pixels
    rel = (ii[..., None] * px) * axis_i + (jj[..., None] * px) * axis_j \
        + (offset_world - centre * px * (axis_i + axis_j))  # pixel positions relative to the LV axis
    x_h, y_h = rel @ pose.lateral, rel @ pose.anterior
    rho_px = (np.hypot(x_h, y_h) / px).astype(np.float32)
    theta_idx = (np.mod(np.arctan2(y_h, x_h), 2 * np.pi) / D_THETA).astype(np.intp) % N_THETA

    # 2. Static body background, coil bias and signal scale.
    r = model.radii(model.slice_u_mm)  # wall radii, each (K, T, N_THETA) in mm
    if config.version >= 3:  # real surroundings (`thorax_atlas`), the heart painted over them
        surroundings = _real_surroundings(n, n_frames, model, r["epi"][:, 0], pose, offset_world, axis_i, axis_j,
                                          centre, px, rng, acq)
        image = surroundings[:, :, win, win].copy()
    else:
        world = origin + ii[None, ..., None] * sa_affine[:3, 0] + jj[None, ..., None] * sa_affine[:3, 1] \
            + np.arange(config.n_slices)[:, None, None, None] * sa_affine[:3, 2]
        image = np.repeat(_background(world, phys, model, pose, px, acq, rng)[:, None], n_frames, axis=1)
    gain = _bias_field((n, n), config.n_slices, config.bias_field, rng) * np.float32(signal_scale)

    # 3. Heart: wall radii per slice, frame and angle, gathered onto the pixels.
    r_px = {k: np.take((v / px).astype(np.float32), theta_idx, axis=-1) for k, v in r.items()}  # (K, T, x, y)
    seg = np.zeros(image.shape, np.uint8)
    comp = _Compositor(image, rho_px, seg)
    above = model.slice_u_mm[:, None] + px < model.base_mm[None, :]  # (K, T): slice above the mitral plane
    for k in np.flatnonzero(above.any(axis=1)):  # slices that catch the atria above the descending base
        frames = np.flatnonzero(above[k])
        sub = _Compositor(image[k, frames], rho_px)
        _paint_atria(sub, model, (x_h / px).astype(np.float32), (y_h / px).astype(np.float32),
                     np.float32(model.slice_u_mm[k] / px), px, frames, signal)
        image[k, frames] = sub.image
    _heart_layers(comp, r_px, phys.effusion_mm / px, np.take(fat_theta_px.astype(np.float32), theta_idx), signal)
    if config.setting("cmr_texture"):
        xi = model.long_axis_fraction(model.slice_u_mm[:, None] * np.ones((1, n_frames)))
        paint_blood_structure(image, seg, r["endo"], xi, (x_h / px).astype(np.float32), (y_h / px).astype(np.float32),
                              theta_idx, rho_px, (phys.lvedv_ml / model.lv_volume_ml) ** (1.0 / 3.0), px,
                              signal["myocardium"], rng,
                              **({} if acq is None or acq.trabecular_depth is None
                                 else {"trabecular_depth": acq.trabecular_depth}))
    if config.version >= 3:  # blur what was painted (the real surroundings carry their own blur) and put the
        image -= surroundings[:, :, win, win]  # heart window into the whole field of view
        blur_in_plane(image, psf_px)
        surroundings[:, :, win, win] += image
        image = surroundings
        seg = np.pad(seg, [(0, 0), (0, 0), ((n - w) // 2,) * 2, ((n - w) // 2,) * 2])
    else:
        blur_in_plane(image, psf_px)
    if acq is not None and acq.dark_floor > 0.0:  # version 4: the site's dark level (blood stays 1)
        image *= np.float32(1.0 - acq.dark_floor)
        image += np.float32(acq.dark_floor)
    image *= gain[:, None]
    sa_int = _rician_int16(image, sigma, rng, signal_noise)

    sa_img = CMRImage(rearrange(sa_int, "k t x y -> x y k t"), sa_affine, format="nifti", view="sa",
                      frame_interval_ms=frame_ms, metadata=dict(meta))
    seg_img = CMRImage(rearrange(seg, "k t x y -> x y k t"), sa_affine.copy(), format="nifti", view="sa",
                       frame_interval_ms=frame_ms, is_segmentation=True, metadata=dict(meta))
    la_img = _render_la(phys, model, pose, config, rng, signal_scale, sigma, fat_theta_px, frame_ms, meta, acq,
                        signal, psf_px, signal_noise)
    return SimulatedCMR(sa=sa_img, seg_sa=seg_img, la_4ch=la_img, model=model)


def _real_surroundings(n: int, n_frames: int, model: HeartModel, epi: np.ndarray, pose: _Pose,
                       offset_world: np.ndarray, axis_i: np.ndarray, axis_j: np.ndarray, centre: float, px: float,
                       rng: np.random.Generator, acq: Acquisition) -> np.ndarray:
    """Version 3: the thorax atlas warped onto the n x n short-axis grid (centre pixel ``centre``), (K, T, n, n);
    ``epi`` is the end-diastolic epicardial radius per slice and angle (K, N_THETA), mm. Version 4's acquisition
    (``acq``) sets the atlas's gamma, a blur (its reconstruction filter) and a gain (its brightness relative to
    the blood pool); earlier versions leave them at the draw, 0 and 1."""
    from cardiacnets.simulate.thorax_atlas import committed_atlas, real_surroundings

    lv_centre = np.array([centre - offset_world @ axis_i / px, centre - offset_world @ axis_j / px])
    septal = -pose.lateral
    anterior = np.array([axis_i[1], axis_j[1]])  # world anterior (RAS +y) on the grid's axes
    fractions = model.long_axis_fraction(model.slice_u_mm[:, None])[:, 0]
    mid = (fractions > MID_VENTRICLE[0]) & (fractions < MID_VENTRICLE[1]) & np.all(epi > 0, axis=1)
    heart_radius = float(np.mean(epi[mid])) if mid.any() else float(np.max(epi))
    return real_surroundings(committed_atlas(), n=n, pixel_mm=px, lv_centre_px=lv_centre,
                             rv_direction=np.array([septal @ axis_i, septal @ axis_j]), anterior=anterior,
                             slice_fractions=fractions, n_frames=n_frames, heart_radius_mm=heart_radius, rng=rng,
                             gamma=acq.atlas_gamma, blur_px=acq.surround_blur_px, gain=acq.atlas_gain)


def _render_la(phys, model: HeartModel, pose: _Pose, config, rng, signal_scale, sigma, fat_theta_px, frame_ms,
               meta, acq, signal: dict, psf_px: float, signal_noise: float) -> CMRImage:
    """The 4-chamber cine: the plane through the long axis and the septal-lateral direction."""
    px = config.pixel_spacing_mm
    n = config.la_image_size
    n_frames = config.n_frames
    septal = -pose.lateral
    # Image axes: apex toward the top-right, rotated a little per subject.
    angle = np.radians(-35.0) + pose.la_rotation_rad
    axis_i = np.cos(angle) * pose.long_axis + np.sin(angle) * septal
    axis_j = -np.sin(angle) * pose.long_axis + np.cos(angle) * septal
    centre = (n - 1) / 2.0
    centre_world = pose.base_centre + pose.la_centre_mm[0] * pose.long_axis + pose.la_centre_mm[1] * septal
    origin = centre_world - centre * px * (axis_i + axis_j)
    affine = np.eye(4)
    affine[:3, 0] = axis_i * px
    affine[:3, 1] = axis_j * px
    affine[:3, 2] = pose.anterior * config.la_slice_thickness_mm
    affine[:3, 3] = origin
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    world = origin + ii[..., None] * affine[:3, 0] + jj[..., None] * affine[:3, 1]
    rel = world - pose.base_centre
    u = rel @ pose.long_axis
    b = rel @ septal  # > 0 toward the RV
    step = 0.5
    u_bins = np.arange(u.min() - step, u.max() + 2 * step, step)
    r = model.radii(u_bins, np.array([0, N_THETA // 2]))  # lateral and septal bins: (Nu, T, 2)
    ubin = np.clip(np.rint((u - u_bins[0]) / step).astype(np.intp), 0, u_bins.size - 1)
    side = (b > 0).astype(np.intp)
    r_px = {k: (rearrange(v, "u t s -> t u s")[:, ubin, side] / px).astype(np.float32)  # (T, x, y)
            for k, v in r.items()}
    background = _background(world, phys, model, pose, px, acq, rng)
    image = np.repeat(background[None], n_frames, axis=0)
    comp = _Compositor(image, (np.abs(b) / px).astype(np.float32))
    lateral_px, along_px = (-b / px).astype(np.float32)[None], (u / px).astype(np.float32)[None]
    _paint_atria(comp, model, lateral_px, np.float32(0.0), along_px, px, signal=signal)
    fat_px = np.where(side > 0, fat_theta_px[N_THETA // 2], fat_theta_px[0]).astype(np.float32)
    _heart_layers(comp, r_px, phys.effusion_mm / px, fat_px, signal)
    blur_in_plane(image, psf_px)
    image *= _bias_field((n, n), 1, config.bias_field, rng) * np.float32(signal_scale)
    la_int = _rician_int16(image, sigma, rng, signal_noise)
    return CMRImage(rearrange(la_int, "t x y -> x y 1 t"), affine, format="nifti", view="la_4ch",
                    frame_interval_ms=frame_ms, metadata=dict(meta))
