"""The body around the heart in the simulated cines, simulator version 2 (``SynthConfig.version``).

Version 1 filled the thorax around the heart with one grey "mediastinum" value:
beside real short-axis frames (ACDC, Sunnybrook) its surroundings were too
bright and too flat (`cardiacnets bench realism --modality cmr`: the ring 1-3 LV
radii outside the cavity had median 0.50 of the blood pool vs 0.27 real, dark
fraction 0.16 vs 0.41, CV 0.54 vs 0.88). Version 2 draws what a short-axis
plane through the heart actually crosses:

* the lungs fill the thorax wherever the mediastinum is not, so they wrap the
  heart laterally and posteriorly, nearly black in bSSFP with bright pulmonary
  vessels cut across (dots of flowing blood);
* the mediastinum is the heart's own envelope (its end-diastolic outer wall,
  from the solved `HeartModel`, plus a few millimetres of pericardial fat and
  vessels), continued above the base as the great-vessel column, and a
  posterior strip (oesophagus, descending aorta) to the spine;
* liver under the right dome of the diaphragm, chest-wall muscle and
  subcutaneous fat as in version 1;
* every tissue but the lung carries a smooth multiplicative texture (a few
  per cent, correlation of a few millimetres), as real tissue and coil
  profiles do.

The geometry is in world millimetres (RAS), so the short-axis stack and the
4-chamber plane cut the same body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardiacnets.simulate.heart_model import D_THETA, N_THETA

#: Relative bSSFP signal (blood pool = 1) of the version-2 tissues; the rest as `cmr_model.SIGNAL`.
VESSEL_SIGNAL = (0.4, 1.3)    # pulmonary vessels cut across (flowing blood: inflow-bright, partial volume)
#: Pericardial fat and vessels beyond the end-diastolic outer wall, mm (uniform per subject).
ENVELOPE_MARGIN_MM = (3.0, 14.0)
#: Angular sampling of the envelope: every this many of the heart model's `N_THETA` angles.
ENVELOPE_THETA_STRIDE = 6
#: How far above the mitral plane the mediastinal column (atria, great vessels) reaches, mm.
GREAT_VESSEL_COLUMN_MM = 35.0
#: Pulmonary vessels per cm² of lung in one plane, and their radius, mm.
VESSEL_DENSITY_PER_CM2 = 0.6
VESSEL_RADIUS_MM = (0.8, 2.2)
#: Tissue texture: correlation length of the log signal, mm (its SD is per subject, `TEXTURE_SD_RANGE`).
TEXTURE_CORRELATION_MM = 3.0
#: A fine-grained part of the texture (fibres, fat septa, small vessels): its scale in pixels and its
#: SD relative to the coarse part's.
FINE_TEXTURE_PX = 0.6
FINE_TEXTURE_SHARE = 0.6


#: Per-subject spread of the acquisition (scanner, coil, protocol, body habitus), as uniform ranges:
#: ACDC and Sunnybrook frames differ far more from one another than one simulated protocol did
#: (e.g. myocardium / blood 0.31-0.47 interquartile vs 0.35-0.39, dark-pixel noise 0.003-0.012 vs one level).
TISSUE_SIGNAL_RANGE = dict(myocardium=(0.18, 0.36), fat=(0.72, 1.1), rv_blood=(0.85, 1.05),
                           liver=(0.26, 0.46), muscle=(0.22, 0.38))
#: Version 3: the RV blood pool is darker than the LV's in real frames (slower flow, trabeculation, farther
#: from the posterior coil): its median over the LV blood median in ACDC's mid-ventricular frames is 0.80
#: (10th-90th percentile 0.66-1.04), where version 2's range gave 0.99 (0.91-1.20).
TISSUE_SIGNAL_RANGE_V3 = {**TISSUE_SIGNAL_RANGE, "rv_blood": (0.6, 0.92)}
MEDIASTINUM_RANGE = (0.3, 0.6)
LUNG_RANGE = (0.025, 0.11)
THERMAL_NOISE_FACTOR = (0.35, 2.0)    # log-uniform factor on `SynthConfig.noise_sigma`
SIGNAL_NOISE_FACTOR = (0.5, 1.5)      # uniform factor on `SynthConfig.signal_noise`
PSF_FACTOR = (0.6, 1.7)               # uniform factor on `SynthConfig.psf_sigma_px`
TEXTURE_SD_RANGE = (0.06, 0.22)
#: Version 4: a wider acquisition, as uniform ranges per subject, replacing version 3's where named. Version
#: 3's short-axis frames carry one site's look (the Sunnybrook thorax: its dark level, its noise, its
#: contrast) and one blur; ACDC's frames (two scanners, 1.5 and 3 T) spread far wider (`cardiacnets bench
#: realism --modality cmr`: the darkest 5 % of the field at 0.02-0.16 of the blood signal against the
#: simulator's 0.01-0.05). The ranges were fitted to ACDC's odd-numbered patients, first on the features'
#: quantiles, then on the distance between the feature means a linear classifier uses
#: (`preprocessing/calibrate_cmr_acquisition.py`, `cardiacnets.bench.calibration`); the even-numbered
#: patients stay held out.
#:
#: * ``psf``: factor on ``psf_sigma_px`` (version 3: `PSF_FACTOR`);
#: * ``thermal_noise``: log-uniform factor on ``noise_sigma`` (version 3: `THERMAL_NOISE_FACTOR`);
#: * ``signal_noise``: factor on ``signal_noise`` (version 3: `SIGNAL_NOISE_FACTOR`);
#: * ``myocardium``, ``fat``, ``rv_blood``: tissue signal / blood (version 3: `TISSUE_SIGNAL_RANGE_V3`);
#: * ``dark_floor``: ``f`` of the signal lift ``f + (1 - f) x`` over the whole frame (blood stays 1): lung and
#:   air signal, partial volume and the reconstruction's baseline differ between sites;
#: * ``surround_blur_px``: in-plane Gaussian on the real surroundings before the heart is painted (the
#:   atlas's own fine noise and texture, which a site's reconstruction filter smooths);
#: * ``atlas_gamma``, ``atlas_gain``: the surroundings' re-contrast and brightness relative to the blood pool
#:   (version 3: `thorax_atlas.GAMMA_RANGE`, 1);
#: * ``trabecular_depth``: the trabeculae's largest pull towards myocardial signal (version 3:
#:   `cmr_texture.TRABECULAR_DEPTH`).
ACQUISITION_V4 = dict(psf=(0.3, 1.2), thermal_noise=(0.1, 0.75), signal_noise=(0.25, 2.75), myocardium=(0.12, 0.36),
                      fat=(0.52, 1.6), rv_blood=(0.6, 0.92), dark_floor=(0.0, 0.08), surround_blur_px=(0.0, 0.25),
                      atlas_gamma=(0.55, 1.65), atlas_gain=(0.65, 1.15), trabecular_depth=(1.0, 1.0))


@dataclass
class Acquisition:
    """One subject's acquisition (versions 2+): tissue signals and the factors on the config's noise and
    blur; version 4's extra draws (`ACQUISITION_V4`) keep their no-op values in earlier versions."""

    signal: dict
    mediastinum: float
    lung: float
    thermal_noise: float
    signal_noise: float
    psf: float
    texture_sd: float
    dark_floor: float = 0.0
    surround_blur_px: float = 0.0
    atlas_gamma: float | None = None  # None: `thorax_atlas.real_surroundings` draws version 3's gamma
    atlas_gain: float = 1.0
    trabecular_depth: float | None = None  # None: `cmr_texture.TRABECULAR_DEPTH`


def sample_acquisition(base_signal: dict, rng: np.random.Generator, version: int = 2) -> Acquisition:
    """Draw one subject's acquisition (`TISSUE_SIGNAL_RANGE`, version 3 `TISSUE_SIGNAL_RANGE_V3`, and the
    factor ranges above; the same draws for versions 2 and 3; version 4 replaces some ranges by
    `ACQUISITION_V4`'s and draws its extras after them)."""
    ranges = TISSUE_SIGNAL_RANGE_V3 if version >= 3 else TISSUE_SIGNAL_RANGE
    factors = dict(thermal_noise=THERMAL_NOISE_FACTOR, signal_noise=SIGNAL_NOISE_FACTOR, psf=PSF_FACTOR)
    if version >= 4:
        ranges = {**ranges, **{k: ACQUISITION_V4[k] for k in ("myocardium", "fat", "rv_blood")}}
        factors = {k: ACQUISITION_V4[k] for k in factors}
    signal = dict(base_signal)
    for name, (lo, hi) in ranges.items():
        signal[name] = float(rng.uniform(lo, hi))
    lo, hi = factors["thermal_noise"]
    acq = Acquisition(signal=signal, mediastinum=float(rng.uniform(*MEDIASTINUM_RANGE)),
                      lung=float(rng.uniform(*LUNG_RANGE)),
                      thermal_noise=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                      signal_noise=float(rng.uniform(*factors["signal_noise"])),
                      psf=float(rng.uniform(*factors["psf"])),
                      texture_sd=float(rng.uniform(*TEXTURE_SD_RANGE)))
    if version >= 4:
        for name in ("dark_floor", "surround_blur_px", "atlas_gamma", "trabecular_depth", "atlas_gain"):
            setattr(acq, name, float(rng.uniform(*ACQUISITION_V4[name])))
    return acq


def soft_inside(distance_outside_mm: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Partial-volume weight of being inside, from a signed distance (negative inside)."""
    return np.clip(0.5 - distance_outside_mm / pixel_mm, 0.0, 1.0).astype(np.float32)


class BodyCanvas:
    """The static body at world points (..., 3), painted layer by layer (each layer over the ones before).

    Holds what every simulator version shares: the body outline from the subject's size (subcutaneous
    fat, chest-wall muscle, the thoracic cavity), the diaphragm and the posterior structures.
    """

    def __init__(self, xyz: np.ndarray, phys, pixel_mm: float):
        self.x, self.y, self.z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        self.pixel_mm = pixel_mm
        bmi = phys.bmi
        self.half_w = 150.0 + 3.0 * (bmi - 25.0) + 8.0 * phys.is_male
        self.half_d = 105.0 + 3.0 * (bmi - 25.0)
        self.fat_mm = float(np.clip(6.0 + 1.3 * (bmi - 20.0), 4.0, 35.0))
        self.out = np.zeros(self.x.shape, np.float32)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        """Approximate signed distance (mm) from an axial ellipse, a cylinder along z."""
        r = np.sqrt(((self.x - cx) / ax) ** 2 + ((self.y - cy) / ay) ** 2)
        return (r - 1.0) * min(ax, ay)

    def inside(self, distance_outside_mm: np.ndarray) -> np.ndarray:
        return soft_inside(distance_outside_mm, self.pixel_mm)

    def paint(self, value: float, alpha: np.ndarray) -> None:
        self.out = self.out + alpha * (np.float32(value) - self.out)

    def chest_wall(self, signal: dict) -> np.ndarray:
        """Paint subcutaneous fat and chest-wall muscle; return the thoracic cavity's weight."""
        w, d, fat = self.half_w, self.half_d, self.fat_mm
        self.paint(signal["fat"], self.inside(self.ellipse(0.0, 0.0, w, d)))
        self.paint(signal["muscle"], self.inside(self.ellipse(0.0, 0.0, w - fat, d - fat)))
        return self.inside(self.ellipse(0.0, 0.0, w - fat - 12, d - fat - 12))

    def below_diaphragm(self) -> np.ndarray:
        """Weight of being under the diaphragm's dome (higher on the right)."""
        x, y = self.x, self.y
        return self.inside(self.z - (-45.0 + 0.3 * x - 0.002 * (x**2 + y**2)))

    def posterior(self, signal: dict) -> None:
        """Paint the spine, its canal and the descending aorta."""
        self.paint(signal["spine"], self.inside(self.ellipse(0.0, -78.0, 18.0, 16.0)))
        self.paint(signal["csf"], self.inside(self.ellipse(0.0, -102.0, 7.0, 7.0)))
        self.paint(signal["aorta"], self.inside(self.ellipse(-22.0, -58.0, 12.0, 12.0)))


def heart_envelope_mm(model, pose, xyz: np.ndarray, margin_mm: float) -> np.ndarray:
    """Signed distance (mm, negative inside) of world points from the heart's end-diastolic envelope.

    The envelope is the outermost wall (`HeartModel.radii`'s ``rv_wall``, the largest
    over the cycle) plus ``margin_mm``, per long-axis position and angle; above the
    base it continues as a column of the basal outline (atria, great vessels), below the
    apex it ends.

    Args:
        model: the subject's `HeartModel`.
        pose: its placement (``base_centre``, ``long_axis``, ``lateral``, ``anterior``).
        xyz: (..., 3) world points, mm.
        margin_mm: fat and vessels around the wall.
    """
    rel = xyz - pose.base_centre
    u = rel @ pose.long_axis
    x_h, y_h = rel @ pose.lateral, rel @ pose.anterior
    rho = np.hypot(x_h, y_h)
    # On a coarse grid (3 mm along the axis, every `ENVELOPE_THETA_STRIDE`-th angle): the envelope is
    # smooth and this is most of the body's cost.
    theta_bin = (np.mod(np.arctan2(y_h, x_h), 2 * np.pi) / (D_THETA * ENVELOPE_THETA_STRIDE)).astype(np.intp)
    angles = np.arange(0, N_THETA, ENVELOPE_THETA_STRIDE)
    theta_bin %= angles.size
    step = 3.0
    u_bins = np.arange(0.0, max(float(u.max()), 0.0) + 2 * step, step)
    outer = model.radii(u_bins, angles)["rv_wall"].max(axis=1)  # (Nu, angles), ABSENT (< 0) past the apex
    outer = np.where(outer > 0.0, outer + margin_mm, 0.0)
    ubin = np.clip(np.rint(u / step).astype(np.intp), 0, u_bins.size - 1)
    distance = rho - outer[ubin, theta_bin]
    return np.maximum(distance, -(u + GREAT_VESSEL_COLUMN_MM))  # the column ends above the atria


def body_background_v2(xyz: np.ndarray, phys, model, pose, pixel_mm: float, acquisition: Acquisition,
                       rng: np.random.Generator) -> np.ndarray:
    """Static bSSFP signal of the body without the heart at world points (..., H, W, 3).

    Args:
        xyz: (..., H, W, 3) world points (RAS mm) of the image planes.
        phys: the subject's `Physiology` (body size).
        model, pose: the heart (`HeartModel`) and its placement, for the mediastinum.
        pixel_mm: in-plane pixel size (partial-volume edges, vessel and texture sizes).
        acquisition: the subject's tissue signals and texture strength (`sample_acquisition`).
        rng: draws the margin, the vessels and the texture.

    Returns:
        (..., H, W) float32 signal relative to the blood pool.
    """
    signal = acquisition.signal
    body = BodyCanvas(xyz, phys, pixel_mm)
    thorax = body.chest_wall(signal)
    body.paint(acquisition.lung, thorax)
    margin = float(rng.uniform(*ENVELOPE_MARGIN_MM))
    mediastinum = body.inside(heart_envelope_mm(model, pose, xyz, margin))
    strip = body.inside(body.ellipse(-8.0, -45.0, 22.0, 40.0))  # oesophagus, descending aorta, azygos
    mediastinum = np.maximum(mediastinum, strip) * thorax
    body.paint(acquisition.mediastinum, mediastinum)
    liver = body.below_diaphragm() * thorax
    body.paint(signal["liver"], liver)
    body.posterior(signal)
    lung = thorax * (1.0 - mediastinum) * (1.0 - liver)
    out = body.out

    # Texture (not in the lung), then vessels cut across in the lung.
    planes = out.reshape(-1, *out.shape[-2:])
    lung_planes = lung.reshape(planes.shape)
    sigma_px = TEXTURE_CORRELATION_MM / pixel_mm
    for k in range(planes.shape[0]):
        field = ndimage.gaussian_filter(rng.standard_normal(planes.shape[1:]).astype(np.float32), sigma_px)
        field *= np.float32(acquisition.texture_sd) / max(float(field.std()), 1e-6)
        fine = ndimage.gaussian_filter(rng.standard_normal(planes.shape[1:]).astype(np.float32), FINE_TEXTURE_PX)
        field += fine * np.float32(FINE_TEXTURE_SHARE * acquisition.texture_sd / max(float(fine.std()), 1e-6))
        planes[k] *= np.exp(field * (1.0 - lung_planes[k]))
        _paint_vessels(planes[k], lung_planes[k], pixel_mm, rng)
    return planes.reshape(out.shape)


def _paint_vessels(plane: np.ndarray, lung: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> None:
    """Bright dots of pulmonary vessels cut across, inside the lung (in place)."""
    h, w = plane.shape
    area_cm2 = float(lung.sum()) * (pixel_mm / 10.0) ** 2
    count = int(rng.poisson(VESSEL_DENSITY_PER_CM2 * area_cm2))
    if count == 0:
        return
    ci, cj = rng.uniform(0, h, count), rng.uniform(0, w, count)
    radius = rng.uniform(*VESSEL_RADIUS_MM, count) / pixel_mm
    value = rng.uniform(*VESSEL_SIGNAL, count).astype(np.float32)
    for a, b, r, v in zip(ci, cj, radius, value):
        i0, i1 = max(int(a - r - 2), 0), min(int(a + r + 3), h)
        j0, j1 = max(int(b - r - 2), 0), min(int(b + r + 3), w)
        if i0 >= i1 or j0 >= j1:
            continue
        ii, jj = np.mgrid[i0:i1, j0:j1]
        cover = np.clip(r + 0.5 - np.hypot(ii - a, jj - b), 0.0, 1.0).astype(np.float32) * lung[i0:i1, j0:j1]
        plane[i0:i1, j0:j1] += cover * (v - plane[i0:i1, j0:j1])
