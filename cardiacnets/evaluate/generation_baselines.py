"""The baselines a generator must beat, scored by `cardiacnets.evaluate.generation` like the generators themselves.

Each baseline is a `GenerateFn` (a collated batch of the evaluated split →
cines) so that every method goes through the same segmentation, measurement and
image scores:

- **nearest neighbour** (`neighbour_generators`): the training subject whose
  aligned ECG embedding is closest in cosine similarity, and that subject's
  real cine (retrieval, CardiacNets' own baseline);
- **mean of the k nearest neighbours**: the pixel-wise mean of the k closest
  training subjects' real cines (a regression to the neighbours' mean heart);
- **random**: a random training subject's real cine (chance);
- **rendered read-out** (`RenderedReadout`): the best simple estimate of each
  index from what a 12SL device reports in the ECG file (intervals, axes, rate,
  Sokolow index) and the demographics — a ridge regression fitted on the
  training split onto the indices measured on its segmentations, with the
  anatomy-first read-out's small nonlinear correction on top (on the 0.1.4
  build's version-3 cohort, a ridge on these inputs reached held-out LVEDV r
  0.56 and the corrected fit 0.69: a linear baseline would be a weak one) — drawn as a
  plain anatomy of that size (concentric LV blood pool and myocardium and an RV
  crescent around the septum, following the training set's mean cavity-area
  curves over the cycle), painted with the training cines' mean intensity of
  each tissue, a thin RV free wall and noise of the training cines' level,
  and then measured the same way as every generated cine. A generator that does
  not beat it adds nothing over a simple model of the device's measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from cardiacnets.errors import InputError
from cardiacnets.io.ukb_xml import SUMMARY_MEASUREMENTS

#: A generator under evaluation: a collated batch of the split → (B, frames, H, W) or (B, slices, frames, H, W) cines.
GenerateFn = Callable[[dict], np.ndarray]

#: Device measurements of a UK Biobank ECG XML the rendered read-out uses (manifest ``ecg_<name>``).
DEVICE_MEASUREMENTS = SUMMARY_MEASUREMENTS
#: Demographics the rendered read-out uses.
READOUT_DEMOGRAPHICS = ("sex_male", "age_years", "height_cm", "weight_kg")
#: Indices the rendered read-out estimates and draws.
DRAWN_INDICES = ("lvedv_ml", "lvesv_ml", "lvm_g", "rvedv_ml", "rvesv_ml")


class ReferenceCines:
    """Real cines of a reference split (the training split), read by row from the memory map.

    Args:
        data: training set folder.
        split: the reference split.
        view: CMR view.
    """

    def __init__(self, data, split: str, view: str):
        from cardiacnets.data.store import TrainingSet

        self.dataset = TrainingSet(data, split=split, require=("ecg", view))
        if len(self.dataset) == 0:
            raise InputError(data, f"no subject of split {split!r} has an ECG and a {view} cine")
        self.view = view
        self.split = split

    def __len__(self) -> int:
        return len(self.dataset)

    def cines(self, rows) -> np.ndarray:
        """(len(rows), slices, frames, H, W) float32 cines of the given reference rows."""
        return np.stack([self.dataset[int(r)][f"cmr_{self.view}"] for r in rows])

    def subject_ids(self, rows) -> list[str]:
        return [str(self.dataset.manifest.iloc[int(r)]["subject_id"]) for r in rows]

    def segmentations(self) -> np.ndarray:
        """(N, slices, frames, H, W) stored labels of every reference subject.

        Raises:
            InputError: the training set stores no segmentations of the view.
        """
        key = f"seg_{self.view}"
        if key not in self.dataset.arrays:
            raise InputError(self.dataset.root, f"stores no segmentations ({key}.npy) for the rendered read-out")
        rows = self.dataset.manifest["row"].to_numpy().astype(int)
        return np.asarray(self.dataset.arrays[key][rows])


def neighbour_generators(alignment_run, reference: ReferenceCines, query_dataset, k: int = 5, batch_size: int = 64,
                         device: str = "cpu") -> tuple[GenerateFn, GenerateFn, dict]:
    """The retrieval baselines: each query's closest reference subject by aligned ECG embedding (its real cine),
    and the pixel-wise mean of the `k` closest subjects' real cines.

    Args:
        alignment_run: an alignment run (``RUN/model``) or saved `CardiacCLIP` folder.
        reference: the reference subjects (training split) whose cines are returned.
        query_dataset: the evaluated split as a `TrainingSet` (rows are batch ``index`` values).
        k: neighbours averaged by the second baseline.
        batch_size: subjects per embedding pass.
        device: torch device.

    Returns:
        ``(nearest, k_nearest_mean, info)``: ``info`` holds ``model`` (folder), ``embed_seconds``, ``k`` and
        ``matches`` (filled as batches are generated: query row → nearest reference subject id).
    """
    from cardiacnets.data.torch_data import CardiacTorchDataset
    from cardiacnets.evaluate.embeddings import embed_split, load_alignment_model
    from cardiacnets.evaluate.retrieval import _run_demographics, normalize_rows

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    model, model_dir = load_alignment_model(alignment_run)
    normalizer = _run_demographics(alignment_run, model_dir, model)
    started = time.perf_counter()
    embedded = {}
    for name, dataset in (("reference", reference.dataset), ("query", query_dataset)):
        try:
            embedded[name] = normalize_rows(embed_split(
                model, CardiacTorchDataset(dataset, demographics=normalizer, views=[]), (), batch_size=batch_size,
                device=device).ecg)
        except ValueError as err:
            raise InputError(dataset.root, f"does not fit the alignment model in {model_dir}: {err}") from err
    info = {"model": str(model_dir), "embed_seconds": round(time.perf_counter() - started, 2),
            "reference_split": reference.split, "n_reference": len(reference), "k": k, "matches": {}}

    def ranked(batch: dict) -> tuple[np.ndarray, np.ndarray]:
        rows = batch["index"].cpu().numpy()
        similarity = embedded["query"][rows] @ embedded["reference"].T  # (B, n_reference) cosine
        return rows, np.argsort(-similarity, axis=1, kind="stable")

    def nearest(batch: dict) -> np.ndarray:
        rows, order = ranked(batch)
        info["matches"].update(zip(rows.tolist(), reference.subject_ids(order[:, 0])))
        return reference.cines(order[:, 0])

    def k_nearest_mean(batch: dict) -> np.ndarray:
        _, order = ranked(batch)
        return np.stack([reference.cines(neighbours).mean(axis=0) for neighbours in order[:, :k]])

    return nearest, k_nearest_mean, info


def random_generator(reference: ReferenceCines, seed: int = 0) -> GenerateFn:
    """Chance level: a uniformly drawn reference subject's real cine for each query (seeded)."""
    rng = np.random.default_rng(seed)

    def generate_batch(batch: dict) -> np.ndarray:
        return reference.cines(rng.integers(len(reference), size=len(batch["index"])))

    return generate_batch


def _numeric(manifest: pd.DataFrame, columns) -> np.ndarray:
    return np.stack([pd.to_numeric(manifest[c], errors="coerce").to_numpy(np.float64) if c in manifest.columns
                     else np.full(len(manifest), np.nan) for c in columns], axis=1)


def mean_area_curve(labels: np.ndarray, label: int = 1) -> np.ndarray:
    """The mean normalised cavity-area curve of label cines: 1 at the largest area, 0 at the smallest.

    Args:
        labels: (N, slices, frames, H, W).
        label: the cavity's label.

    Returns:
        (frames,) mean over the cines with a cavity of (area - min) / (max - min).
    """
    areas = (labels == label).sum(axis=(1, 3, 4)).astype(np.float64)  # (N, frames)
    low, high = areas.min(axis=1, keepdims=True), areas.max(axis=1, keepdims=True)
    ok = (high > low)[:, 0]
    return ((areas[ok] - low[ok]) / (high[ok] - low[ok])).mean(axis=0)


def draw_anatomy(lv_area_px: np.ndarray, myocardium_area_px: float, rv_area_px: np.ndarray, size: int,
                 rv_angle_rad: float) -> np.ndarray:
    """A plain biventricular label cine: an LV blood-pool disc, a myocardial ring of constant area, and an RV
    crescent wrapped around the septum.

    Args:
        lv_area_px: (frames,) LV blood-pool area per frame, pixels.
        myocardium_area_px: myocardial area (conserved through the cycle), pixels.
        rv_area_px: (frames,) RV cavity area per frame, pixels.
        size: image side.
        rv_angle_rad: direction of the RV's centre from the LV's (image axes: rows, columns).

    Returns:
        (frames, size, size) uint8 labels (1 LV blood pool, 2 myocardium, 3 RV), centred on the LV. The RV
        is a disc overlapping the epicardium, minus the LV: its radius is found by bisection so that the
        crescent has the wanted area (to a pixel).
    """
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    radius = np.hypot(y, x)
    direction = np.array([np.sin(rv_angle_rad), np.cos(rv_angle_rad)])
    frames = []
    for lv, rv in zip(np.clip(lv_area_px, 0, None), np.clip(rv_area_px, 0, None)):
        r_pool = np.sqrt(lv / np.pi)
        r_epi = np.sqrt((lv + max(myocardium_area_px, 0.0)) / np.pi)
        epi = radius <= r_epi

        def crescent(r_rv):
            centre = (0.6 * r_epi + 0.3 * r_rv) * direction  # deep enough that the crescent wraps the septum
            return (np.hypot(y - centre[0], x - centre[1]) <= r_rv) & ~epi

        low, high = 0.0, float(size)
        for _ in range(12):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if crescent(mid).sum() < rv else (low, mid)
        labels = np.zeros((size, size), np.uint8)
        labels[crescent(high) if rv > 0 else np.zeros_like(epi)] = 3
        labels[epi] = 2
        labels[radius <= r_pool] = 1
        frames.append(labels)
    return np.stack(frames)


def paint_anatomy(labels: np.ndarray, intensity: dict[str, float], noise_sd: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Labels painted with each tissue's mean intensity, a one-pixel dark RV free wall, and Gaussian noise.

    Args:
        labels: (..., H, W) labels.
        intensity: mean intensity of ``background``, ``lv_cavity``, ``lv_myocardium``, ``rv_cavity``.
        noise_sd: standard deviation of the added noise (the training cines' pixel noise, `image_noise_sd`).
        rng: draws the noise.

    Returns:
        float32 images of the labels' shape, clipped to [0, 1].
    """
    from scipy import ndimage

    paint = np.array([intensity[k] for k in ("background", "lv_cavity", "lv_myocardium", "rv_cavity")],
                     dtype=np.float32)
    images = paint[labels]
    rv = labels == 3
    in_plane = ndimage.generate_binary_structure(labels.ndim, 1) & _plane(labels.ndim)
    wall = ndimage.binary_dilation(rv, structure=in_plane)
    wall &= labels == 0
    images[wall] = intensity["lv_myocardium"]
    images += rng.normal(scale=noise_sd, size=images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0)


def _plane(ndim: int) -> np.ndarray:
    """A structuring-element mask keeping only the last two (in-plane) axes."""
    mask = np.zeros((3,) * ndim, dtype=bool)
    index = (1,) * (ndim - 2)
    mask[index] = True
    return mask


class RenderedReadout:
    """The rendered read-out baseline (see the module docstring).

    Args:
        reference: the training split (fits the ridge, the mean cycle, the RV direction, the tissue
            intensities).
        spacing_mm: in-plane pixel size; slice_spacing_mm: the slice spacing of the volume proxy.
        penalties: ridge penalties searched (leave-one-out) per subject.
        hidden: width of the nonlinear correction of the ridge (`cardiacnets.generation.readout.fit_correction`,
            early-stopped on a held-out share of the training rows); 0: the ridge alone.
    """

    def __init__(self, reference: ReferenceCines, spacing_mm: float, slice_spacing_mm: float,
                 penalties=(1e-3, 0.01, 0.1, 1.0, 10.0, 100.0), hidden: int = 32):
        from cardiacnets.cmr.indices import cavity_measurements
        from cardiacnets.generation.readout import correction_mlp, fit_correction, fit_ridge

        started = time.perf_counter()
        labels = reference.segmentations()
        manifest = reference.dataset.manifest
        self.columns = [f"ecg_{m}" for m in DEVICE_MEASUREMENTS] + list(READOUT_DEMOGRAPHICS)
        x = _numeric(manifest, self.columns)
        present = np.isfinite(x)
        counts = present.sum(axis=0)
        self.fill = np.where(counts > 0, np.where(present, x, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        usable = counts > 1
        if not usable.any():
            raise InputError(reference.dataset.root, "has none of the device measurements or demographics the "
                                                     f"rendered read-out uses ({', '.join(self.columns)})")
        self.columns = [c for c, ok in zip(self.columns, usable) if ok]
        self.fill = self.fill[usable]
        measured = cavity_measurements(labels, spacing_mm, slice_spacing_mm)
        targets = measured[list(DRAWN_INDICES)].to_numpy(np.float64)
        x = self._features(manifest)
        self.weight, self.bias, penalties_chosen, r2 = fit_ridge(x, targets, penalties)
        self.x_mean, self.x_std = x.mean(axis=0), np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
        self.y_mean, self.y_std = np.nanmean(targets, axis=0), np.nanstd(targets, axis=0)
        self.correction = None
        if hidden:
            self.correction = fit_correction(correction_mlp(x.shape[1] + targets.shape[1], hidden, targets.shape[1]),
                                             self._correction_inputs(x), (targets - self._linear(x)) / self.y_std)
        self.size = labels.shape[-1]
        self.n_slices = labels.shape[1]
        self.ml_per_px = spacing_mm**2 * slice_spacing_mm / 1000.0
        self.lv_curve = mean_area_curve(labels, 1)
        self.rv_curve = mean_area_curve(labels, 3)
        ed = labels[:, labels.shape[1] // 2, 0]
        self.rv_angle = _rv_direction(ed)
        cines = reference.cines(range(min(len(reference), 256)))
        self.intensity = _tissue_intensities(cines, labels[:len(cines)])
        self.noise_sd = image_noise_sd(cines, labels[:len(cines)])
        self.rng = np.random.default_rng(0)
        self.info = {"features": self.columns, "n_reference": len(reference), "indices": list(DRAWN_INDICES),
                     "loo_r2": {n: round(v, 4) for n, v in zip(DRAWN_INDICES, r2)}, "correction_hidden": hidden,
                     "penalties": dict(zip(DRAWN_INDICES, penalties_chosen)),
                     "rv_angle_deg": round(float(np.degrees(self.rv_angle)), 1),
                     "tissue_intensity": {k: round(v, 4) for k, v in self.intensity.items()},
                     "noise_sd": round(self.noise_sd, 4),
                     "fit_seconds": round(time.perf_counter() - started, 2)}

    def _features(self, manifest: pd.DataFrame) -> np.ndarray:
        x = _numeric(manifest, self.columns)
        return np.where(np.isfinite(x), x, self.fill)

    def _linear(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def _correction_inputs(self, x: np.ndarray) -> np.ndarray:
        """The correction's inputs: the standardised features and the standardised ridge estimates."""
        return np.concatenate([(x - self.x_mean) / self.x_std, (self._linear(x) - self.y_mean) / self.y_std], axis=1)

    def estimate(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """The read-out's index estimates (`DRAWN_INDICES`, in their units) for manifest rows."""
        import torch

        x = self._features(manifest)
        values = self._linear(x)
        if self.correction is not None:
            with torch.no_grad():
                inputs = torch.as_tensor(self._correction_inputs(x), dtype=torch.float32)
                values = values + self.correction(inputs).double().numpy() * self.y_std
        return pd.DataFrame(values, columns=list(DRAWN_INDICES), index=manifest.index)

    def draw(self, estimates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Label cines and painted cines, (N, slices, frames, H, W), of estimated indices (all slices alike)."""
        px = {name: np.clip(estimates[name].to_numpy(np.float64), 0, None) / self.ml_per_px / self.n_slices
              for name in DRAWN_INDICES}
        labels = []
        for i in range(len(estimates)):
            lv_es = min(px["lvesv_ml"][i], px["lvedv_ml"][i])
            rv_es = min(px["rvesv_ml"][i], px["rvedv_ml"][i])
            lv = lv_es + (px["lvedv_ml"][i] - lv_es) * self.lv_curve
            rv = rv_es + (px["rvedv_ml"][i] - rv_es) * self.rv_curve
            cine = draw_anatomy(lv, px["lvm_g"][i] / 1.05, rv, self.size, self.rv_angle)
            labels.append(np.repeat(cine[None], self.n_slices, axis=0))
        labels = np.stack(labels)
        return labels, paint_anatomy(labels, self.intensity, self.noise_sd, self.rng)

    def generator(self, query_manifest: pd.DataFrame, drawn: list | None = None) -> GenerateFn:
        """The baseline as a `GenerateFn` over the evaluated split (rows of `query_manifest` by batch ``index``).

        Args:
            query_manifest: the evaluated split's manifest.
            drawn: when given, each batch's drawn label cines are appended to it.
        """
        def generate_batch(batch: dict) -> np.ndarray:
            rows = batch["index"].cpu().numpy()
            labels, cines = self.draw(self.estimate(query_manifest.iloc[rows]))
            if drawn is not None:
                drawn.append(labels)
            return cines

        return generate_batch


def _rv_direction(ed_labels: np.ndarray) -> float:
    """Mean direction (radians, rows/columns) from the LV blood pool's centroid to the RV's at end-diastole."""
    angles = []
    for frame in ed_labels:
        lv, rv = np.argwhere(frame == 1), np.argwhere(frame == 3)
        if len(lv) and len(rv):
            d = rv.mean(axis=0) - lv.mean(axis=0)
            angles.append(np.exp(1j * np.arctan2(d[0], d[1])))
    return float(np.angle(np.mean(angles))) if angles else np.pi


#: Immerkær's noise-estimation mask (Immerkær 1996): the difference of two Laplacians; flat and linear
#: intensity cancel, iid Gaussian noise of SD σ leaves a residual of SD 6σ.
_NOISE_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def image_noise_sd(cines: np.ndarray, labels: np.ndarray) -> float:
    """The SD of the images' pixel noise, from the high-frequency residual inside the LV blood pool.

    Immerkær's estimator, σ = √(π/2) · mean|I ∗ M| / 6, over the pixels whose 3 × 3 neighbourhood lies in
    the blood pool (so no tissue edge enters), pooled over frames and cines. The pool's plain spread would
    also count its slow texture (papillary muscles, trabeculae, shading) as noise, several times too much.

    Args:
        cines: (..., H, W) intensities; labels: the same shape, LV blood pool = 1.

    Returns:
        The noise SD in the cines' intensity units (0.0 without a blood pool of at least 3 × 3 pixels).
    """
    from scipy import ndimage

    images = np.asarray(cines, dtype=np.float64).reshape(-1, *cines.shape[-2:])
    pool = np.asarray(labels).reshape(-1, *labels.shape[-2:]) == 1
    residuals = []
    for image, inside in zip(images, pool):
        inside = ndimage.binary_erosion(inside, structure=np.ones((3, 3), bool))
        if inside.any():
            residuals.append(np.abs(ndimage.convolve(image, _NOISE_MASK, mode="nearest")[inside]))
    if not residuals:
        return 0.0
    return float(np.sqrt(np.pi / 2.0) * np.concatenate(residuals).mean() / 6.0)


def _tissue_intensities(cines: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean intensity of each labelled tissue over reference cines, and of the surroundings of the heart.

    The ``background`` is the mean of the pixels 1 to 4 pixels outside the heart (what borders the
    epicardium and the RV in the images: fat, lung, liver), not of the whole field of view.
    """
    from scipy import ndimage

    names = {1: "lv_cavity", 2: "lv_myocardium", 3: "rv_cavity"}
    out = {name: float(cines[labels == label].mean()) if (labels == label).any() else 0.0
           for label, name in names.items()}
    heart = labels > 0
    in_plane = ndimage.generate_binary_structure(labels.ndim, 1) & _plane(labels.ndim)
    near = ndimage.binary_dilation(heart, structure=in_plane, iterations=4)
    near &= ~ndimage.binary_dilation(heart, structure=in_plane, iterations=1)
    out["background"] = float(cines[near].mean()) if near.any() else float(cines[~heart].mean())
    return out


def raw_condition_table(manifest: pd.DataFrame, demographics: list[str], measurements: list[str]):
    """A lookup of raw demographics and device measurements by split row, for pipelines that read them.

    Returns:
        ``rows -> (demographics {column: (B,)}, measurements {name: (B,)})`` (NaN where missing; the
        manifest's ``ecg_<name>`` columns for the measurements).
    """
    d = _numeric(manifest, demographics) if demographics else np.zeros((len(manifest), 0))
    m = _numeric(manifest, [f"ecg_{name}" for name in measurements]) if measurements else np.zeros((len(manifest), 0))

    def lookup(rows) -> tuple[dict | None, dict | None]:
        rows = np.asarray(rows, dtype=int)
        return ({c: d[rows, j] for j, c in enumerate(demographics)} or None,
                {c: m[rows, j] for j, c in enumerate(measurements)} or None)

    return lookup

