"""Real surroundings for the simulated short-axis cines (simulator version 3).

Version 2 draws the body around the heart procedurally (`cmr_body`): lungs,
mediastinum, liver, chest wall as smooth shapes with texture. Beside real
frames it is still told apart (`cardiacnets bench realism --modality cmr`): real
surroundings hold structure of every size (chest-wall layers, bowel, stomach,
vessels, fat septa) that shapes drawn from ellipses lack. Version 3 takes them
from a real cine instead, the CC0 Sunnybrook Cardiac Data short-axis cine of
one patient (SCD0000101, Radau et al., MIDAS Journal 2009), and keeps the heart
simulated:

* ``preprocessing/build_thorax_atlas.py`` reads the cine and its expert LV contours once and keeps,
  per slice and phase, the frame divided by that slice's end-diastolic LV blood
  median (so blood is 1, as in the simulator's signal scale), cropped around the
  LV, with the real heart (the epicardium plus a margin, and an ellipse on the
  right-ventricular side) removed and inpainted from around it. The atlas ships
  with the package (`ATLAS_FILE`, ~6 MB; `cardiacnets/simulate/assets/README.md`).
* `real_surroundings` warps the atlas onto a simulated short-axis grid: the
  real LV centre onto the simulated LV axis, the real RV direction onto the
  simulated septal direction, with the anatomical handedness kept (the in-plane
  anterior direction decides which side is which), slices matched by position
  along the LV (base to apex) and phases by the fraction of the cardiac cycle.
  The atlas is scaled so its heart has the simulated heart's size (the atlas
  patient's LV is dilated), so the simulated heart, painted over the
  surroundings, covers the inpainted region; per subject it draws a scale
  jitter, a small rotation and an intensity gamma. Segmentations and indices do
  not depend on the surroundings.

One patient's thorax is little variety: every version-3 subject shares it,
scaled, rotated and re-contrasted, so a reader who sees many subjects will
notice, and a realism comparison against Sunnybrook itself is not a test (the
benchmark reports version 3 against ACDC and says so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cardiacnets.simulate.cmr_texture import blur_in_plane

#: The committed atlas (built from ``../shared/data/sunnybrook`` by ``preprocessing/build_thorax_atlas.py``).
ATLAS_FILE = Path(__file__).parent / "assets" / "sunnybrook_thorax.npz"
#: Stored intensities: uint8 of (intensity / blood) * STEP, so 0-2.55 of the blood pool.
INTENSITY_STEP = 100.0
#: Per-subject draws: a factor on the scale that matches the atlas's heart to the simulated one, an
#: in-plane rotation (degrees) and a gamma.
SCALE_JITTER = (0.92, 1.08)
ROTATION_SD_DEG = 8.0
GAMMA_RANGE = (0.8, 1.25)
#: Per-subject elastic deformation of the atlas: a sum of `ELASTIC_MODES` plane waves of random direction,
#: wavelength (mm) and phase, each displacing by a random vector of SD `ELASTIC_MM` / sqrt(modes) (mm);
#: and a per-subject shift of the atlas slice, as a fraction of the LV's length. One patient's thorax,
#: otherwise only scaled and turned, is the same picture in every subject.
ELASTIC_MODES = 3
ELASTIC_MM = 5.0
ELASTIC_WAVELENGTH_MM = (80.0, 200.0)
SLICE_JITTER = 0.08
#: Every this many of the atlas's phases are used (the surroundings move little; halves the warping).
PHASE_STEP = 2


@dataclass
class ThoraxAtlas:
    """A real short-axis cine prepared as surroundings (see the module docstring).

    Attributes:
        frames: (S, P, H, W) uint8, intensity / end-diastolic blood median * `INTENSITY_STEP`.
        heart_mask: (S, H, W) bool, the real heart's region (inpainted in ``frames``).
        lv_centre_px: (S, 2) LV centre per slice, pixels of the crop (row, column).
        epi_radius_px: (S,) equivalent radius of the end-diastolic epicardium per slice.
        rv_direction: (2,) unit vector from the LV centre toward the RV, image axes.
        anterior: (2,) unit in-plane projection of the patient's anterior direction, image axes.
        lv_slices: (first, last) slices with an LV contour (base, apex side).
        ed_phase: the end-diastolic phase.
        pixel_mm: in-plane pixel size.
    """

    frames: np.ndarray
    heart_mask: np.ndarray
    lv_centre_px: np.ndarray
    epi_radius_px: np.ndarray
    rv_direction: np.ndarray
    anterior: np.ndarray
    lv_slices: tuple[int, int]
    ed_phase: int
    pixel_mm: float

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(path, frames=self.frames, heart_mask=self.heart_mask, lv_centre_px=self.lv_centre_px,
                            epi_radius_px=self.epi_radius_px, rv_direction=self.rv_direction,
                            anterior=self.anterior, lv_slices=np.array(self.lv_slices),
                            ed_phase=np.array(self.ed_phase), pixel_mm=np.array(self.pixel_mm),
                            source=np.array("Sunnybrook Cardiac Data SCD0000101 (CC0 1.0), Radau et al. 2009"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ThoraxAtlas":
        with np.load(path) as z:
            return cls(frames=z["frames"], heart_mask=z["heart_mask"], lv_centre_px=z["lv_centre_px"],
                       epi_radius_px=z["epi_radius_px"], rv_direction=z["rv_direction"], anterior=z["anterior"],
                       lv_slices=tuple(int(v) for v in z["lv_slices"]), ed_phase=int(z["ed_phase"]),
                       pixel_mm=float(z["pixel_mm"]))

    @property
    def n_slices(self) -> int:
        return self.frames.shape[0]

    @property
    def n_phases(self) -> int:
        return self.frames.shape[1]

    @property
    def epi_radius_mm(self) -> float:
        """Median end-diastolic epicardial radius over the contoured slices, mm."""
        first, last = self.lv_slices
        return float(np.median(self.epi_radius_px[first:last + 1])) * self.pixel_mm

    def slice_for(self, fraction: float) -> int:
        """The atlas slice at a position along the LV (0 mitral plane, 1 apex; outside extrapolates)."""
        first, last = self.lv_slices
        position = first - 0.5 + fraction * (last - first + 1)
        return int(np.clip(np.rint(position), 0, self.n_slices - 1))


@lru_cache(maxsize=1)
def committed_atlas() -> ThoraxAtlas:
    """The atlas shipped with the package (`ATLAS_FILE`)."""
    if not ATLAS_FILE.is_file():
        raise FileNotFoundError(f"{ATLAS_FILE}: the thorax atlas of simulator version 3 is missing; "
                                "rebuild it with preprocessing/build_thorax_atlas.py")
    return ThoraxAtlas.load(ATLAS_FILE)


def _frame_basis(direction: np.ndarray, anterior: np.ndarray) -> np.ndarray:
    """Columns: the RV direction and its perpendicular on the anterior side (keeps handedness)."""
    u = direction / np.linalg.norm(direction)
    perp = np.array([-u[1], u[0]])
    if perp @ anterior < 0:
        perp = -perp
    return np.stack([u, perp], axis=1)


def real_surroundings(atlas: ThoraxAtlas, *, n: int, pixel_mm: float, lv_centre_px: np.ndarray,
                      rv_direction: np.ndarray, anterior: np.ndarray, slice_fractions: np.ndarray, n_frames: int,
                      heart_radius_mm: float, rng: np.random.Generator, gamma: float | None = None,
                      blur_px: float = 0.0, gain: float = 1.0) -> np.ndarray:
    """The atlas warped onto a simulated short-axis grid (see the module docstring).

    Args:
        atlas: the `ThoraxAtlas`.
        n, pixel_mm: the simulated grid (n x n pixels of ``pixel_mm``).
        lv_centre_px: (row, column) of the simulated LV axis on the grid.
        rv_direction, anterior: the simulated septal (RV) and anterior directions on the grid's axes.
        slice_fractions: (K,) position of each simulated slice along the LV at end-diastole.
        n_frames: frames over the cycle, frame 0 at end-diastole.
        heart_radius_mm: the simulated end-diastolic epicardial radius (mid-ventricle): the atlas is scaled
            so its heart has this size (within `SCALE_JITTER`), so the simulated heart, painted over the
            surroundings, covers the real heart's inpainted region.
        rng: random generator (scale jitter, rotation, gamma, slice shift, elastic deformation).
        gamma: the intensity gamma (None: drawn from `GAMMA_RANGE`; the draw is made either way, so the
            generator's later draws do not depend on it).
        blur_px, gain: an in-plane Gaussian blur (pixels; 0: none) and then a factor on the warped
            surroundings (simulator version 4's acquisition), applied once per distinct atlas phase before
            the phases are repeated over the ``n_frames`` frames.

    Returns:
        (K, T, n, n) float32 intensities (blood pool = 1).
    """
    scale = heart_radius_mm / atlas.epi_radius_mm * float(rng.uniform(*SCALE_JITTER))
    angle = np.radians(float(rng.normal(0.0, ROTATION_SD_DEG)))
    drawn_gamma = float(rng.uniform(*GAMMA_RANGE))
    gamma = drawn_gamma if gamma is None else float(gamma)
    slice_shift = float(rng.uniform(-SLICE_JITTER, SLICE_JITTER))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    sim_basis = _frame_basis(np.asarray(rv_direction, float), np.asarray(anterior, float))
    atlas_basis = _frame_basis(atlas.rv_direction, atlas.anterior)
    # Simulated pixel offset -> atlas pixel offset: into anatomical coordinates, rotate, rescale.
    linear = atlas_basis @ rotation @ sim_basis.T * (pixel_mm / (atlas.pixel_mm * scale))
    ii, jj = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij")
    offsets_px = np.stack([ii.ravel() - lv_centre_px[0], jj.ravel() - lv_centre_px[1]])
    mapped = linear @ offsets_px + _elastic_mm(offsets_px * pixel_mm, rng) / atlas.pixel_mm
    steps = np.rint(np.arange(n_frames) / n_frames * atlas.n_phases / PHASE_STEP).astype(int) * PHASE_STEP
    phases = (atlas.ed_phase + steps) % atlas.n_phases
    lut = ((np.arange(256) / INTENSITY_STEP) ** gamma).astype(np.float32)
    used, which = np.unique(phases, return_inverse=True)
    out = np.empty((len(slice_fractions), n_frames, n, n), np.float32)
    for k, fraction in enumerate(slice_fractions):
        s = atlas.slice_for(float(fraction) + slice_shift)
        index, weight = _bilinear(mapped + atlas.lv_centre_px[s][:, None], atlas.frames.shape[-2:])
        values = lut[atlas.frames[s, used].reshape(len(used), -1)[:, index]]  # (phases, 4, pixels)
        warped = np.einsum("pcn,cn->pn", values, weight).reshape(len(used), n, n)
        blur_in_plane(warped, blur_px)
        if gain != 1.0:
            warped *= np.float32(gain)
        out[k] = warped[which]
    return out


def _elastic_mm(points_mm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2, N) smooth random displacement (mm) at (2, N) points (mm): `ELASTIC_MODES` plane waves."""
    out = np.zeros_like(points_mm)
    for _ in range(ELASTIC_MODES):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        wavenumber = 2.0 * np.pi / rng.uniform(*ELASTIC_WAVELENGTH_MM)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        amplitude = rng.normal(0.0, ELASTIC_MM / np.sqrt(ELASTIC_MODES), 2)
        out += amplitude[:, None] * np.sin(wavenumber * (np.cos(angle) * points_mm[0] + np.sin(angle) * points_mm[1])
                                            + phase)
    return out


def _bilinear(coords: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (4, N) of the pixels around each (row, column) of ``coords`` (2, N) and their bilinear
    weights (4, N); corners outside the image weigh 0 (black beyond the atlas, as `map_coordinates` with
    ``cval=0``). Computed once per slice and applied to every phase at once."""
    rows, cols = shape
    r0, c0 = np.floor(coords[0]), np.floor(coords[1])
    fr, fc = (coords[0] - r0).astype(np.float32), (coords[1] - c0).astype(np.float32)
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    index, weight = [], []
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        index.append(np.where(inside, r * cols + c, 0))
        weight.append(np.where(inside, w, np.float32(0.0)))
    return np.stack(index), np.stack(weight)
