"""The simulator's biventricular heart: its geometry and motion, solved to match the physiology's volumes.

Geometry (heart frame: long axis ``u`` in mm from the end-diastolic mitral plane
toward the apex; angle ``theta`` with 0 lateral, 90 anterior, 180 septal, 270
inferior degrees):

* LV cavity: a truncated prolate ellipsoid, radius ``a * sqrt(f(xi)) * shape(theta)``
  with ``xi`` the normalised long-axis position (0 mitral plane, 1 apex) and ``f``
  the ellipsoid profile. The apex stays fixed while the mitral plane descends by
  the MAPSE in systole (longitudinal shortening); the remaining volume change is
  radial. Akinetic AHA segments keep their end-diastolic radius and thickness.
* LV myocardium: a shell of thickness ``H * (1 - 0.3 xi)`` (septal hypertrophy and
  scar thinning modulate it with angle) closed by an apical cap. Its cross-section
  area scales with one factor per frame so that the myocardial volume is conserved
  (walls thicken in systole).
* RV cavity: a crescent wrapped around the septal side of the LV epicardium,
  shorter than the LV; its width per frame is solved from the RV volume.
* Atria above the mitral plane (ellipsoids) with volumes from the physiology;
  pericardial effusion is a fluid ring outside the epicardium.

Ground truth agrees with segmentation-based measurement by construction: every
free scale (cavity radius, remote contraction, myocardial scale, RV width) is
solved per frame from Simpson's sum over the actual slice positions, i.e. from
the same quantity `cardiacnets.cmr.indices.function_indices` measures (areas are
exact on a 1.5-degree polar grid; rasterisation leaves typically 0.2-0.4 % and at
most about 2 % volume error, EF within half a point).

The shapes are drawn into images by `cardiacnets.simulate.cmr_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

N_THETA = 240
THETA = ((np.arange(N_THETA) + 0.5) * (2.0 * np.pi / N_THETA)).astype(np.float64)
D_THETA = 2.0 * np.pi / N_THETA
XI_EQUATOR = 0.2  # cavity ellipsoid's widest point, as a fraction of the long axis below the mitral plane
# The cavity narrows smoothly to the mitral plane over this fraction of the long axis (about 10 mm). Without the
# taper a basal slice lost its whole cavity at once when the descending base passed it in systole, and the
# per-frame volume solve made every other slice's cavity jump to compensate (a glitch in a quarter of the
# simulated mid-slice volume curves).
XI_BASE_TAPER = 0.12
APICAL_THINNING = 0.3  # wall thickness falls by this fraction from base to apex
SCAR_THINNING = 0.4  # chronic infarct scar is this much thinner
XI_RV_APEX = 0.85  # the RV ends short of the LV apex
RV_WALL_MM = 3.5
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
RING_EDGES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 0.9)  # basal | mid | apical | apex (segment 17)
RING_RAMP = 0.04
ABSENT = -1.0e4  # radius of a structure missing at a position (stays negative after adding offsets)

# AHA segment centres (degrees, heart frame) and half-widths.
_SEGMENT_SECTORS: dict[int, tuple[float, float]] = {}
for _ring, _first in ((0, 1), (1, 7)):
    for _i, _centre in enumerate((90.0, 150.0, 210.0, 270.0, 330.0, 30.0)):
        _SEGMENT_SECTORS[_first + _i] = (_centre, 30.0)
for _i, _centre in enumerate((90.0, 180.0, 270.0, 0.0)):
    _SEGMENT_SECTORS[13 + _i] = (_centre, 45.0)


def segment_ring(segment: int) -> int:
    """Ring of an AHA segment: 0 basal (1-6), 1 mid (7-12), 2 apical (13-16), 3 apex (17)."""
    return 0 if segment <= 6 else 1 if segment <= 12 else 2 if segment <= 16 else 3


def _angular_distance_deg(theta_rad: np.ndarray, centre_deg: float) -> np.ndarray:
    return np.abs((np.degrees(theta_rad) - centre_deg + 180.0) % 360.0 - 180.0)


def _sector_window(centre_deg: float, half_deg: float, edge_deg: float = 8.0) -> np.ndarray:
    """Smooth membership (N_THETA,) of an angular sector."""
    d = _angular_distance_deg(THETA, centre_deg)
    return np.clip((half_deg - d) / edge_deg + 0.5, 0.0, 1.0)


def smooth_bump(centre_deg: float, half_deg: float) -> np.ndarray:
    """cos^2 bump (N_THETA,) of the given half-width, 1 at the centre."""
    d = np.clip(_angular_distance_deg(THETA, centre_deg) / half_deg, 0.0, 1.0)
    return np.cos(0.5 * np.pi * d) ** 2


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.clip(x / RING_RAMP + 0.5, 0.0, 1.0)


def ring_weights(xi: np.ndarray) -> np.ndarray:
    """Smooth membership of the four AHA rings at normalised positions ``xi``: (..., 4), summing to 1 in the LV."""
    edges = (*RING_EDGES, np.inf)
    out = [
        _ramp(xi - edges[r]) - (_ramp(xi - edges[r + 1]) if np.isfinite(edges[r + 1]) else 0.0) for r in range(4)
    ]
    return np.stack(out, axis=-1)


def akinetic_sector_table(akinetic_segments: list[int]) -> np.ndarray:
    """Per ring, the angular akinetic weight: (4, N_THETA) in [0, 1]."""
    table = np.zeros((4, N_THETA))
    for seg in akinetic_segments:
        ring = segment_ring(seg)
        if ring == 3:
            table[3] = 1.0
        else:
            table[ring] += _sector_window(*_SEGMENT_SECTORS[seg])
    return np.clip(table, 0.0, 1.0)


def cavity_profile(xi: np.ndarray) -> np.ndarray:
    """Squared-radius profile of the cavity ellipsoid: 0 outside the LV (xi < 0 or > 1)."""
    f = 1.0 - ((xi - XI_EQUATOR) / (1.0 - XI_EQUATOR)) ** 2
    ramp = np.clip(xi / XI_BASE_TAPER, 0.0, 1.0)
    f = f * ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep taper at the base
    return np.where((xi >= 0.0) & (xi <= 1.0), np.clip(f, 0.0, None), 0.0)


def volume_waveform(t: np.ndarray, t_es: float, e_fill: float, heart_rate_bpm: float) -> np.ndarray:
    """Fraction of the stroke volume above end-systole through the cycle.

    Args:
        t: times as fractions of the cycle in [0, 1), 0 = end-diastole.
        t_es: end-systole (the waveform's minimum, 0).
        e_fill: share of filling in early diastole; the rest is the atrial kick.
        heart_rate_bpm: sets the isovolumic relaxation and filling durations.

    Returns:
        Values in [0, 1]: 1 at end-diastole, a cosine ejection to 0 at ``t_es``,
        isovolumic relaxation, rapid early filling, diastasis and atrial filling.
    """
    cycle_s = 60.0 / heart_rate_bpm
    ivr = 0.07 / cycle_s
    a_start = 1.0 - 0.17 / cycle_s
    e_start = t_es + ivr
    e_dur = float(np.clip(min(0.18 / cycle_s, a_start - e_start), 0.04, None))

    def smoothstep(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)

    systole = 0.5 * (1.0 + np.cos(np.pi * np.clip(t / t_es, 0.0, 1.0)))
    diastole = e_fill * smoothstep((t - e_start) / e_dur) + (1.0 - e_fill) * smoothstep((t - a_start) / (1.0 - a_start))
    return np.where(t <= t_es, systole, diastole)


def _endo_shape(phys) -> np.ndarray:
    """Angular shape of the cavity (N_THETA,): ellipticity and septal flattening."""
    shape = 1.0 + phys.lv_ellipticity * np.cos(2.0 * (THETA - np.radians(30.0)))
    return shape * (1.0 - phys.septal_flattening * smooth_bump(180.0, 55.0))


def _wall_angle_factor(phys) -> np.ndarray:
    """Angular wall-thickness factor (N_THETA,): asymmetric septal hypertrophy."""
    return 1.0 + (phys.septal_hypertrophy_ratio - 1.0) * smooth_bump(180.0, 70.0)


@dataclass
class LVWall:
    """End-diastolic LV wall solution for a subject (see `solve_lv_wall`)."""

    cavity_scale_mm2: float  # a^2
    wall_scale_mm: float  # H
    mass_g: float
    mean_thickness_mm: float
    max_thickness_mm: float
    akinetic_fraction: float


def _slice_positions(phys, config) -> np.ndarray:
    return phys.sa_base_offset_mm + config.slice_spacing_mm * np.arange(config.n_slices)


def _myocardial_area_terms(u, xi, cavity_scale, wall_scale, shape, wall_factor, akinetic_w, phys):
    """End-diastolic (r_epi^2 - r_endo^2) at material positions: (..., N_THETA)."""
    thickness = (
        wall_scale * (1.0 - APICAL_THINNING * np.clip(xi, 0.0, 1.0))[..., None]
        * wall_factor * (1.0 - SCAR_THINNING * akinetic_w)
    )
    r_endo = np.sqrt(cavity_scale * cavity_profile(xi))[..., None] * shape
    inside = ((xi >= 0.0) & (xi <= 1.0))[..., None]
    shell = (r_endo + thickness) ** 2 - r_endo**2
    beyond = np.clip(thickness**2 - ((u - phys.lv_long_axis_mm) ** 2)[..., None], 0.0, None)
    return np.where(inside, shell, np.where((u > phys.lv_long_axis_mm)[..., None], beyond, 0.0)), thickness


def solve_lv_wall(phys, config, *, max_thickness_mm: float | None = None) -> LVWall:
    """Solve the end-diastolic LV geometry on the short-axis slices.

    The cavity scale makes Simpson's sum over the slices equal ``phys.lvedv_ml``;
    the wall scale makes the myocardial volume equal ``phys.lv_mass_g / 1.05``,
    or, when ``max_thickness_mm`` is given (HCM), makes the maximal wall that
    thick and returns the resulting mass.

    Args:
        phys: `Physiology` (volumes, long axis, slice offset, shape, akinetic segments).
        config: `SynthConfig` (slice count and spacing).
        max_thickness_mm: target maximal wall thickness instead of the mass.

    Returns:
        `LVWall` with the scales, mass, mean/maximal thickness over the 16
        segments and the akinetic share of the cavity.
    """
    s = config.slice_spacing_mm
    u = _slice_positions(phys, config)
    xi = u / phys.lv_long_axis_mm
    f = cavity_profile(xi)
    shape = _endo_shape(phys)
    wall_factor = _wall_angle_factor(phys)
    w = ring_weights(xi) @ akinetic_sector_table(phys.akinetic_segments)  # (K, N_THETA)
    cavity_area = 0.5 * D_THETA * (f[:, None] * shape**2)  # per unit a^2
    cavity_scale = phys.lvedv_ml * 1000.0 / (s * cavity_area.sum())
    akinetic_fraction = float((cavity_area * w).sum() / cavity_area.sum())
    lv16 = (xi >= 0.0) & (xi < RING_EDGES[3])

    def myocardial_volume_ml(wall_scale):
        q, _ = _myocardial_area_terms(u, xi, cavity_scale, wall_scale, shape, wall_factor, w, phys)
        return s * 0.5 * D_THETA * q.sum() / 1000.0

    if max_thickness_mm is not None:
        _, unit = _myocardial_area_terms(u, xi, cavity_scale, 1.0, shape, wall_factor, w, phys)
        wall_scale = max_thickness_mm / unit[lv16].max()
    else:
        target_ml = phys.lv_mass_g / MYOCARDIAL_DENSITY_G_PER_ML
        wall_scale = brentq(lambda h: myocardial_volume_ml(h) - target_ml, 0.3, 60.0, xtol=1e-4)
    _, thickness = _myocardial_area_terms(u, xi, cavity_scale, wall_scale, shape, wall_factor, w, phys)
    return LVWall(
        cavity_scale_mm2=float(cavity_scale),
        wall_scale_mm=float(wall_scale),
        mass_g=float(myocardial_volume_ml(wall_scale) * MYOCARDIAL_DENSITY_G_PER_ML),
        mean_thickness_mm=float(thickness[lv16].mean()),
        max_thickness_mm=float(thickness[lv16].max()),
        akinetic_fraction=akinetic_fraction,
    )


class HeartModel:
    """The solved, moving heart of one subject.

    Args:
        phys: the subject's `Physiology`.
        config: `SynthConfig` (slices, frames).

    After construction the per-frame scales are solved so that Simpson's sums
    over the short-axis slices reproduce the LV and RV volume curves and a
    constant myocardial volume; `radii` evaluates the walls anywhere.
    """

    def __init__(self, phys, config):
        self.phys = phys
        self.config = config
        n_frames = config.n_frames
        s = config.slice_spacing_mm
        self.t = np.arange(n_frames) / n_frames
        self.es_frame = int(np.clip(round(phys.es_fraction * n_frames), 1, n_frames - 2))
        self.g = volume_waveform(self.t, self.es_frame / n_frames, phys.e_fill_fraction, phys.heart_rate_bpm)
        self.base_mm = phys.mapse_mm * (1.0 - self.g)  # mitral plane position (T,)
        self.lv_volume_ml = phys.lvesv_ml + (phys.lvedv_ml - phys.lvesv_ml) * self.g
        self.rv_volume_ml = phys.rvesv_ml + (phys.rvedv_ml - phys.rvesv_ml) * self.g
        self.la_volume_ml = phys.la_min_ml + (phys.la_max_ml - phys.la_min_ml) * (1.0 - self.g)
        self.ra_volume_ml = phys.ra_min_ml + (phys.ra_max_ml - phys.ra_min_ml) * (1.0 - self.g)
        self.shape = _endo_shape(phys)
        self.wall_factor = _wall_angle_factor(phys)
        self.akinetic_table = akinetic_sector_table(phys.akinetic_segments)
        rv_angle = np.clip(_angular_distance_deg(THETA, 180.0) / phys.rv_sector_deg, 0.0, 1.0)
        self.rv_profile = np.cos(0.5 * np.pi * rv_angle) ** 0.7  # crescent width around the septum
        self.rv_wall_profile = _sector_window(180.0, phys.rv_sector_deg + 6.0, 12.0)
        wall = solve_lv_wall(phys, config)
        self.cavity_scale = wall.cavity_scale_mm2
        self.wall_scale = wall.wall_scale_mm
        self.slice_u_mm = _slice_positions(phys, config)

        # Solve the per-frame scales on the short-axis slices (K, T).
        u = self.slice_u_mm[:, None] * np.ones((1, n_frames))
        xi = self._xi(u)
        f = cavity_profile(xi)
        w = ring_weights(xi) @ self.akinetic_table  # (K, T, N_THETA)
        sh2 = self.shape**2
        fixed = (f[..., None] * sh2 * w).sum(axis=(0, 2)) * 0.5 * D_THETA
        moving = (f[..., None] * sh2 * (1.0 - w)).sum(axis=(0, 2)) * 0.5 * D_THETA
        target = self.lv_volume_ml * 1000.0 / (s * self.cavity_scale)
        self.remote_area_scale = (target - fixed) / moving  # m^2 per frame
        if np.any(self.remote_area_scale <= 0.02):
            raise AssertionError(f"eid {phys.eid}: infeasible LV contraction {self.remote_area_scale.min():.3f}")
        r_endo2 = self._endo2(f, w)
        q_ed, _ = _myocardial_area_terms(u, xi, self.cavity_scale, self.wall_scale, self.shape,
                                         self.wall_factor, w, phys)
        myo_ml = wall.mass_g / MYOCARDIAL_DENSITY_G_PER_ML
        q_fixed = (q_ed * w).sum(axis=(0, 2)) * 0.5 * D_THETA
        q_moving = (q_ed * (1.0 - w)).sum(axis=(0, 2)) * 0.5 * D_THETA
        self.myo_scale = (myo_ml * 1000.0 / s - q_fixed) / q_moving  # (T,)
        r_epi = np.sqrt(r_endo2 + q_ed * (w + (1.0 - w) * self.myo_scale[None, :, None]))
        p_rv = self._rv_long(xi)
        lin = (p_rv[..., None] * r_epi * self.rv_profile).sum(axis=(0, 2)) * D_THETA
        quad = (p_rv[..., None] ** 2 * self.rv_profile**2).sum(axis=(0, 2)) * 0.5 * D_THETA
        rv_target = self.rv_volume_ml * 1000.0 / s
        self.rv_width_mm = (-lin + np.sqrt(lin**2 + 4.0 * quad * rv_target)) / (2.0 * quad)
        self.mass_g = wall.mass_g

    def long_axis_fraction(self, u_mm: np.ndarray) -> np.ndarray:
        """Position along the LV per frame: 0 at the mitral plane, 1 at the apex (``u_mm`` broadcast with frames)."""
        return self._xi(u_mm)

    def _xi(self, u: np.ndarray) -> np.ndarray:
        return (u - self.base_mm) / (self.phys.lv_long_axis_mm - self.base_mm)

    def _rv_long(self, xi: np.ndarray) -> np.ndarray:
        return np.where(xi >= 0.0, np.sqrt(np.clip(1.0 - (xi / XI_RV_APEX) ** 2, 0.0, 1.0)), 0.0)

    def _endo2(self, f: np.ndarray, w: np.ndarray) -> np.ndarray:
        m2 = self.remote_area_scale[None, :, None]
        return self.cavity_scale * f[..., None] * self.shape**2 * (w + (1.0 - w) * m2)

    def radii(self, u_mm: np.ndarray, theta_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Wall radii (mm from the long axis) at long-axis positions, all frames.

        Args:
            u_mm: (N,) positions along the long axis from the end-diastolic mitral plane.
            theta_index: indices into `THETA` to evaluate (default all).

        Returns:
            ``endo``, ``epi``, ``rv`` (RV cavity outer), ``rv_wall`` (RV free wall
            outer), each (N, frames, angles); `ABSENT` where the structure is absent.
        """
        idx = np.arange(N_THETA) if theta_index is None else np.asarray(theta_index)
        u = np.asarray(u_mm, dtype=np.float64)[:, None] * np.ones((1, self.t.size))
        xi = self._xi(u)
        f = cavity_profile(xi)
        w = ring_weights(xi) @ self.akinetic_table[:, idx]
        sh = self.shape[idx]
        m2 = self.remote_area_scale[None, :, None]
        r_endo2 = self.cavity_scale * f[..., None] * sh**2 * (w + (1.0 - w) * m2)
        q_ed, _ = _myocardial_area_terms(u, xi, self.cavity_scale, self.wall_scale, sh, self.wall_factor[idx], w,
                                         self.phys)
        q = q_ed * (w + (1.0 - w) * self.myo_scale[None, :, None])
        endo = np.sqrt(r_endo2)
        epi = np.sqrt(r_endo2 + q)
        present = epi > 0.0
        width = (self.rv_width_mm[None, :] * self._rv_long(xi))[..., None]
        rv = epi + width * self.rv_profile[idx]
        rv_wall = rv + RV_WALL_MM * self.rv_wall_profile[idx] * np.clip(width / 4.0, 0.0, 1.0)
        absent = ABSENT
        return {
            "endo": np.where(endo > 0.0, endo, absent),
            "epi": np.where(present, epi, absent),
            "rv": np.where(present, rv, absent),
            "rv_wall": np.where(present, rv_wall, absent),
        }

    def atria(self) -> dict[str, dict[str, np.ndarray]]:
        """Atrial ellipsoids per frame, from the atrial volume curves.

        The atria sit above the mitral plane (negative ``u``), the left atrium on
        the axis' lateral side and the right atrium on the septal side beyond the RV.

        Returns:
            ``{"la": ..., "ra": ...}``, each with (frames,) arrays ``u`` (centre along
            the long axis), ``half_length``, ``radius`` and ``lateral_mm`` (centre's
            offset from the LV axis toward the lateral wall), all in mm.
        """
        out = {}
        for name, volume in (("la", self.la_volume_ml), ("ra", self.ra_volume_ml)):
            radius = (3.0 * volume * 1000.0 / (4.0 * np.pi * 1.3)) ** (1.0 / 3.0)
            half_length = 1.3 * radius
            out[name] = dict(u=self.base_mm - 0.6 * half_length, half_length=half_length, radius=radius)
        lv_radius = np.sqrt(self.cavity_scale)
        out["la"]["lateral_mm"] = np.full(self.t.size, 0.15 * lv_radius)
        out["ra"]["lateral_mm"] = -(lv_radius + self.wall_scale + 0.5 * self.rv_width_mm + 6.0)
        return out
