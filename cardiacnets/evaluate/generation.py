"""Evaluation of ECG→CMR generation on held-out pairs, against a nearest-neighbour retrieval baseline.

CardiacNets (arXiv 2411.13602) generates a subject's short-axis cine from
the ECG and judges it by image similarity to the true cine and by the cardiac
function measured on it. `evaluate_generation` runs that protocol on a
training-set split of paired ECG and cine:

1. **Generators.** Each is a function ``generate_batch(batch) -> cines`` over
   the split's collated batches (``index`` is the row in the split):
   `pipeline_generator` wraps the trained ``ECGToCMRPipeline``;
   `nearest_neighbour_generator` is the baseline a generator must beat — the
   training subject whose aligned ECG embedding (``CardiacCLIP.encode_ecg``)
   is closest in cosine similarity, and that subject's real cine;
   `random_generator` (a random training subject's real cine) marks chance.
2. **Scoring** (`score_cines`, the same for every generator), against the
   true cine: SSIM (MONAI ``SSIMMetric``, 2-D per frame, data range 1) and
   PSNR (MONAI ``PSNRMetric``, max 1, per cine), both on cines clipped to
   [0, 1] (the training set's range); the Fréchet distance (MONAI
   ``get_fid_score``) between the feature distributions of generated and true
   cines under our own aligned CMR encoder (no hub weights); and physiological
   consistency: a `CineSegmenter` labels every frame of generated and true
   cines, `cavity_measurements` turns the labels into LV/RV cavity sizes, EF
   and LV mass, and the Pearson r and mean absolute error between generated
   and true cines' measurements are reported (``lvedv_r``, ``lvedv_mae_ml``,
   ...). Each side's r against the manifest's ground-truth indices
   (``seg_lvedv_ml``, ``seg_lvef_pct``, ...) is reported for context.

Honest names: the demo training sets hold one mid-ventricular slice, so
"lvedv" is a mid-slice proxy — the LV cavity area at ED (the frame of largest
LV cavity) × the slice spacing (default 10 mm) in ml — and "lvef" the
area-based ejection fraction of that slice; with several slices the
measurements are Simpson sums over slices (`cardiacnets.cmr.indices`).

With an output folder, `write_comparisons` adds pictures of a few subjects
(true cine beside each method's); their generated panels carry the burned-in
SYNTHETIC label and the files are marked synthetic in their metadata
(`cardiacnets.io.previews`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.generation_baselines import (  # noqa: F401  (ReferenceCines, random_generator: public here too)
    GenerateFn, ReferenceCines, RenderedReadout, neighbour_generators, random_generator, raw_condition_table,
)
from cardiacnets.evaluate.segmentation import (
    DEFAULT_SLICE_SPACING_MM, MEASUREMENTS, CineGeometry, Segmenter, agreement, cavity_measurements, load_segmenter,
    segment_cines,
)

#: Manifest columns with the ground-truth indices the measurements are also compared with (context).
GROUND_TRUTH = {"lvedv_ml": "seg_lvedv_ml", "lvesv_ml": "seg_lvesv_ml", "lvef_pct": "seg_lvef_pct",
                "rvedv_ml": "seg_rvedv_ml", "rvef_pct": "seg_rvef_pct", "lvm_g": "seg_lvm_g"}
#: Measurements whose r and MAE are summarised at the top level (key prefixes: lvedv_r, lvedv_mae_ml, ...).
SUMMARISED = {"lvedv_ml": ("lvedv", "ml"), "lvesv_ml": ("lvesv", "ml"), "lvef_pct": ("lvef", "pct"),
              "rvedv_ml": ("rvedv", "ml"), "rvef_pct": ("rvef", "pct"), "lvm_g": ("lvm", "g")}


# --- scoring -----------------------------------------------------------------------------------------------------

def as_cines(array, n_slices: int, where: str = "generated cines") -> np.ndarray:
    """Generated cines as a (N, slices, frames, H, W) float32 array.

    Args:
        array: (N, frames, H, W) (one slice) or (N, slices, frames, H, W).
        n_slices: slices of the true cines.
        where: named in errors.

    Raises:
        ValueError: another shape.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4 and n_slices == 1:
        return array[:, None]
    if array.ndim == 5 and array.shape[1] == n_slices:
        return array
    raise ValueError(f"{where} have shape {array.shape}; expected (N, frames, H, W) or (N, {n_slices}, frames, H, W)")


@dataclass
class ScoringTools:
    """What scoring needs besides the cines.

    Attributes:
        segmenter: the loaded `Segmenter`.
        feature_encoder: a `CMREncoder` of the evaluated view (Fréchet features), in eval mode.
        spacing_mm: in-plane pixel size of the cines.
        slice_spacing_mm: slice spacing of the volume measurements.
        device: torch device.
        bf16: bf16 autocast for the segmenter and the encoder.
        batch_size: cines per forward pass.
    """

    segmenter: Segmenter
    feature_encoder: torch.nn.Module
    spacing_mm: float
    slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM
    device: str = "cpu"
    bf16: bool = False
    batch_size: int = 32


@dataclass
class Described:
    """Per-cine descriptions of a set of cines, computed once and reused (the true cines' especially).

    Attributes:
        cines: (N, slices, frames, H, W) float32, clipped to [0, 1].
        labels: (N, slices, frames, H, W) uint8, the segmenter's labels.
        measurements: `cavity_measurements` rows (one per cine).
        features: (N, dim) float64 feature-encoder outputs.
        seconds: time spent (segmentation and features).
    """

    cines: np.ndarray
    labels: np.ndarray
    measurements: pd.DataFrame
    features: np.ndarray
    seconds: float


def describe_cines(cines: np.ndarray, tools: ScoringTools) -> Described:
    """Segment, measure and embed cines.

    Args:
        cines: (N, slices, frames, H, W).
        tools: segmenter, feature encoder and geometry.

    Returns:
        The `Described` cines (clipped to [0, 1]).
    """
    started = time.perf_counter()
    cines = np.clip(np.asarray(cines, dtype=np.float32), 0.0, 1.0)
    labels = segment_cines(tools.segmenter.model, cines, device=tools.device, bf16=tools.bf16)
    measurements = cavity_measurements(labels, tools.spacing_mm, tools.slice_spacing_mm)
    encoder = tools.feature_encoder.to(tools.device).eval()
    features = []
    with torch.inference_mode(), torch.autocast(torch.device(tools.device).type, dtype=torch.bfloat16,
                                                enabled=tools.bf16):
        for start in range(0, len(cines), tools.batch_size):
            chunk = torch.from_numpy(cines[start:start + tools.batch_size]).to(tools.device)
            features.append(encoder(chunk).double().cpu().numpy())
    return Described(cines, labels, measurements, np.concatenate(features), time.perf_counter() - started)


def image_similarity(generated: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and PSNR of each generated cine against its true cine (MONAI metrics).

    Args:
        generated: (N, slices, frames, H, W) in [0, 1].
        true: the same shape.

    Returns:
        ``(ssim, psnr)``: (N,) arrays; SSIM is the mean over the cine's frames of the 2-D SSIM
        (Gaussian window 11, sigma 1.5, data range 1), PSNR is over all the cine's pixels (max 1), dB.
    """
    from einops import rearrange
    from monai.metrics import PSNRMetric, SSIMMetric

    if generated.shape != true.shape:
        raise ValueError(f"generated cines {generated.shape} and true cines {true.shape} differ in shape")
    n = len(true)
    frames_g = torch.from_numpy(rearrange(generated, "n s f h w -> (n s f) 1 h w"))
    frames_t = torch.from_numpy(rearrange(true, "n s f h w -> (n s f) 1 h w"))
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(frames_g, frames_t)
    ssim = rearrange(ssim.reshape(-1), "(n k) -> n k", n=n).mean(dim=1)
    cines_g = torch.from_numpy(rearrange(generated, "n s f h w -> n (s f) h w"))
    cines_t = torch.from_numpy(rearrange(true, "n s f h w -> n (s f) h w"))
    psnr = PSNRMetric(max_val=1.0, reduction="none")(cines_g, cines_t).reshape(-1)
    return ssim.double().numpy(), psnr.double().numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (MONAI ``get_fid_score``).

    Returns NaN with fewer than 2 rows on either side. With fewer rows than feature
    dimensions the covariances are singular and the distance is biased upwards; compare
    methods on the same subjects only.
    """
    from monai.metrics.fid import get_fid_score

    if len(features_a) < 2 or len(features_b) < 2:
        return float("nan")
    return float(get_fid_score(torch.as_tensor(features_a, dtype=torch.float64),
                               torch.as_tensor(features_b, dtype=torch.float64)))


def temporal_coherence(generated: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """How much the segmented cines' LV cavity moves like one cardiac cycle.

    Args:
        generated, true: (N, slices, frames, H, W) labels of generated and true cines.

    Returns:
        ``one_cycle``: fraction of generated cines whose LV blood-pool area over the frames shows
        exactly one contraction (`cardiacnets.generation.shape_model.contraction_count`);
        ``true_one_cycle``: the same for the true cines; ``lv_curve_r``: the mean over subjects of
        the Pearson r between the generated and the true cine's LV area curves (the cines are
        ECG-gated, so the same frame is the same phase); ``frame_change``: the mean absolute change
        of the LV area from frame to frame relative to its range, generated over true (1: as jerky
        as the real cycle).
    """
    from cardiacnets.generation.shape_model import contraction_count

    def curves(labels):
        return (labels == 1).sum(axis=(1, 3, 4)).astype(np.float64)  # (N, frames)

    g, t = curves(generated), curves(true)

    def one_cycle(c):
        return float(np.mean([contraction_count(row) == 1 for row in c])) if len(c) else float("nan")

    rs = [np.corrcoef(a, b)[0, 1] for a, b in zip(g, t) if a.std() > 0 and b.std() > 0]

    def jerk(c):
        span = np.ptp(c, axis=1)
        ok = span > 0
        return np.abs(np.diff(c[ok], axis=1)).mean(axis=1) / span[ok] if ok.any() else np.array([np.nan])

    return {"one_cycle": one_cycle(g), "true_one_cycle": one_cycle(t),
            "lv_curve_r": float(np.mean(rs)) if rs else float("nan"),
            "frame_change": float(np.nanmean(jerk(g)) / np.nanmean(jerk(t)))}


def score_cines(generated: np.ndarray | Described, true: np.ndarray | Described, tools: ScoringTools,
                ground_truth: pd.DataFrame | None = None) -> tuple[dict, pd.DataFrame]:
    """Score generated cines against the true cines of the same subjects (row i with row i).

    Args:
        generated: (N, slices, frames, H, W) cines, or their `describe_cines`.
        true: the true cines, or their `describe_cines` (describe once, score several generators).
        tools: segmenter, feature encoder, geometry.
        ground_truth: optional manifest columns of `GROUND_TRUTH` for the same N subjects.

    Returns:
        ``(summary, per_cine)``. ``summary``: ``n``, ``ssim``, ``psnr`` (means), ``frechet``;
        ``<index>_r`` and ``<index>_mae_<unit>`` for lvedv, lvesv, lvef, rvedv, rvef, lvm
        (generated vs true measurements); ``measured`` (r, MAE, n per measurement);
        ``n_unmeasured`` (cines the segmenter found no LV cavity in, left out of r/MAE);
        ``vs_ground_truth`` (r of the generated and of the true cines' measurements against the
        manifest's indices). ``per_cine``: SSIM, PSNR and both sides' measurements per row.
    """
    gen = generated if isinstance(generated, Described) else describe_cines(generated, tools)
    ref = true if isinstance(true, Described) else describe_cines(true, tools)
    if gen.cines.shape != ref.cines.shape:
        raise ValueError(f"generated cines {gen.cines.shape} and true cines {ref.cines.shape} differ in shape")
    ssim, psnr = image_similarity(gen.cines, ref.cines)
    measured = agreement(gen.measurements, ref.measurements)
    summary: dict = {"n": len(ref.cines), "ssim": float(ssim.mean()), "psnr": float(psnr.mean()),
                     "frechet": frechet_distance(gen.features, ref.features)}
    for column, (name, unit) in SUMMARISED.items():
        summary[f"{name}_r"] = measured[column]["r"]
        summary[f"{name}_mae_{unit}"] = measured[column]["mae"]
    summary["measured"] = measured
    summary["temporal"] = temporal_coherence(gen.labels, ref.labels)
    summary["n_unmeasured"] = int((gen.measurements["failure"] != "").sum())
    if ground_truth is not None:
        truth = ground_truth.rename(columns={v: k for k, v in GROUND_TRUTH.items()}).reset_index(drop=True)
        columns = [c for c in GROUND_TRUTH if c in truth.columns]
        summary["vs_ground_truth"] = {
            "generated": {c: v["r"] for c, v in agreement(gen.measurements, truth, columns).items()},
            "true_cine": {c: v["r"] for c, v in agreement(ref.measurements, truth, columns).items()},
        }
    per_cine = pd.DataFrame({"ssim": ssim, "psnr": psnr})
    for column in MEASUREMENTS:
        per_cine[f"generated_{column}"] = gen.measurements[column].to_numpy()
        per_cine[f"true_{column}"] = ref.measurements[column].to_numpy()
    per_cine["generated_failure"] = gen.measurements["failure"].to_numpy()
    return summary, per_cine


def score_samples(samples: list[Described], true: Described,
                  ground_truth: pd.DataFrame | None = None) -> tuple[dict, pd.DataFrame]:
    """Scores of M generated cines per subject, taken together.

    Args:
        samples: M (>= 2) `describe_cines` of the same N subjects (sample k of every subject).
        true: the true cines' description.
        ground_truth: optional manifest columns of `GROUND_TRUTH` for the same N subjects.

    Returns:
        ``(summary, means)``. ``means``: each subject's mean over its samples of each measurement
        (over the samples the segmenter could measure; NaN where none). ``summary``: ``n_samples``;
        ``mean_of_samples`` with ``<index>_r`` / ``<index>_mae_<unit>`` of those means against the
        true cines (and ``vs_ground_truth``); ``per_sample`` with each sample's own ``<index>_r``;
        ``spread``: the mean over subjects of the between-sample standard deviation of each
        measurement.
    """
    if len(samples) < 2:
        raise ValueError(f"score_samples needs at least 2 samples per subject, got {len(samples)}")
    stack = np.stack([s.measurements[list(MEASUREMENTS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
                      for s in samples])  # (M, N, k)
    present = np.isfinite(stack)
    counts = present.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)
        spread = np.sqrt(np.nansum((stack - mean) ** 2, axis=0) / np.maximum(counts - 1, 1))
    spread[counts < 2] = np.nan
    means = pd.DataFrame(mean, columns=list(MEASUREMENTS))
    together = agreement(means, true.measurements)
    summary_mean: dict = {}
    for column, (name, unit) in SUMMARISED.items():
        summary_mean[f"{name}_r"] = together[column]["r"]
        summary_mean[f"{name}_mae_{unit}"] = together[column]["mae"]
    if ground_truth is not None:
        truth = ground_truth.rename(columns={v: k for k, v in GROUND_TRUTH.items()}).reset_index(drop=True)
        columns = [c for c in GROUND_TRUTH if c in truth.columns]
        summary_mean["vs_ground_truth"] = {c: v["r"] for c, v in agreement(means, truth, columns).items()}
    per_sample = {f"{name}_r": [agreement(s.measurements, true.measurements, [column])[column]["r"] for s in samples]
                  for column, (name, _) in SUMMARISED.items()}
    spread_summary = {f"{name}_sd_{unit}": float(np.nanmean(spread[:, j])) if np.isfinite(spread[:, j]).any()
                      else float("nan")
                      for j, column in enumerate(MEASUREMENTS) if column in SUMMARISED
                      for name, unit in [SUMMARISED[column]]}
    return {"n_samples": len(samples), "mean_of_samples": summary_mean, "per_sample": per_sample,
            "spread": spread_summary}, means


# --- generators --------------------------------------------------------------------------------------------------

def pipeline_generator(pipe, num_inference_steps: int = 25, guidance_scale: float | None = 3.0, seed: int = 0,
                       scheduler: str = "dpm++", n_samples: int = 1, estimates: list | None = None,
                       inputs: Callable[[dict], dict] | None = None, labels: list | None = None,
                       temperature: float | None = None) -> GenerateFn:
    """A trained pipeline (either generator) as a `GenerateFn`.

    One ``torch.Generator`` seeded with `seed` is consumed batch after batch in split order,
    so results depend on the seed and the batch size (both reported).

    Args:
        pipe: an ``ECGToCMRPipeline`` or ``AnatomyFirstPipeline``.
        num_inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale (None: the pipeline's default).
        seed: seed of the sampling noise.
        scheduler: ``dpm++`` or ``ddim``.
        n_samples: cines per ECG (each ECG's samples consecutive).
        estimates: when given, each batch's read-out estimates (the CMR indices the pipeline
            generated the cines *for*, ``index_estimates`` of its output, in the indices' units) are
            appended to it as a DataFrame, one row per ECG (no columns without a read-out).
        inputs: ``batch -> the pipeline's keyword inputs`` (ECG, lead mask, demographics, measurements;
            `cardiacnets.generation.request.pipeline_inputs`); default: the batch's ECG and lead mask only.
        labels: when given and the pipeline returns the anatomy it drew, each batch's label cines
            (B × n_samples, frames, H, W) are appended to it.
        temperature: the anatomy's sampling temperature (anatomy-first pipelines; None: their default).

    Returns:
        ``generate_batch(batch) -> (B × n_samples, frames, H, W)``.
    """
    generator = torch.Generator().manual_seed(seed)
    settings = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "scheduler": scheduler, "num_samples_per_ecg": n_samples, "progress": False}
    if temperature is not None:
        settings["temperature"] = temperature

    def generate_batch(batch: dict) -> np.ndarray:
        given = inputs(batch) if inputs is not None else {"ecg": batch["ecg"], "lead_mask": batch.get("ecg_lead_mask"),
                                                         "demographics": None}
        out = pipe(**given, generator=generator, **settings)
        if estimates is not None:
            estimates.append(pd.DataFrame({name: np.asarray(values, dtype=float)
                                           for name, values in out.index_estimates.items()},
                                          index=range(len(batch["ecg"]))))
        if labels is not None and getattr(out, "labels", None) is not None:
            labels.append(out.labels)
        return out.cines

    return generate_batch


def condition_following(generated: pd.DataFrame, condition: pd.DataFrame, true: pd.DataFrame) -> dict:
    """How far the generated cines follow the indices they were generated for, and how good those are.

    Splits the generator's error on each index into the read-out's (estimate vs true cine) and the
    image model's (generated cine vs estimate).

    Args:
        generated: measurements of the generated cines.
        condition: the read-out's estimates (`pipeline_generator`'s ``estimates``) for the same rows.
        true: measurements of the true cines.

    Returns:
        ``{"generated_vs_condition": {column: r}, "condition_vs_true_cine": {column: r}}`` over the
        columns both `condition` and the measurements have.
    """
    columns = [c for c in condition.columns if c in MEASUREMENTS]
    condition = condition.reset_index(drop=True)
    return {"generated_vs_condition": {c: v["r"] for c, v in agreement(generated, condition, columns).items()},
            "condition_vs_true_cine": {c: v["r"] for c, v in agreement(condition, true, columns).items()}}


def nearest_neighbour_generator(alignment_run, reference: ReferenceCines, query_dataset, batch_size: int = 64,
                                device: str = "cpu") -> tuple[GenerateFn, dict]:
    """The nearest-neighbour retrieval baseline alone (`neighbour_generators`' first)."""
    nearest, _, info = neighbour_generators(alignment_run, reference, query_dataset, 1, batch_size, device)
    return nearest, info


# --- the evaluation ----------------------------------------------------------------------------------------------

def _recorded_path(model_dir: Path, keys: tuple[str, ...]) -> Path | None:
    """A folder the pipeline's ``provenance.json`` (written by the diffusion task) records under one of `keys`.

    Returns None when the file, the key or the folder is missing.
    """
    path = model_dir / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable provenance record ({err})") from None
    for key in keys:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and Path(value).is_dir():
            return Path(value)
    return None


def _load_feature_encoder(folder, view: str) -> torch.nn.Module:
    from cardiacnets.train.tasks import load_saved_encoder

    return load_saved_encoder(str(folder), "cmr", view).eval()


@dataclass
class Method:
    """One method under evaluation: its generate function and what it records while generating.

    Attributes:
        name: key in the results (``generator``, ``direct``, ``anatomy``, ``nn_baseline``, ...).
        generate: the `GenerateFn`.
        per_ecg: cines it makes per ECG.
        estimates: the read-out's estimates per batch (pipelines with a read-out).
        labels: the anatomy it drew per batch (anatomy-first pipelines, the rendered read-out).
        info: anything else reported with its scores.
    """

    name: str
    generate: GenerateFn
    per_ecg: int = 1
    estimates: list | None = None
    labels: list | None = None
    info: dict | None = None


def _pipeline_method(name: str, model_dir: Path, dataset, steps: int, guidance: float | None,
                     temperature: float | None, seed: int, scheduler: str, n_samples: int, device: str) -> Method:
    """A trained pipeline folder as a `Method` (raw demographics and measurements from the split's manifest)."""
    from cardiacnets.generation.request import demographics_normaliser, generator_kind, load_pipeline, pipeline_inputs

    if not Path(model_dir).is_dir():
        raise InputError(model_dir, "no such pipeline folder")
    pipe = load_pipeline(model_dir).to(device)
    normaliser = demographics_normaliser(pipe)
    measurements = []
    if generator_kind(pipe) == "anatomy" and pipe.readout.config.measurements:
        measurements = list(pipe.readout.config.measurements["columns"])
    lookup = raw_condition_table(dataset.manifest, list(normaliser["columns"]) if normaliser else [], measurements)

    def inputs(batch: dict) -> dict:
        demographics, measured = lookup(batch["index"].cpu().numpy())
        return pipeline_inputs(pipe, batch["ecg"], batch.get("ecg_lead_mask"), demographics, measured)

    if generator_kind(pipe) == "direct":
        guidance = 3.0 if guidance is None else guidance
        if temperature is not None:
            raise ConfigError("--temperature applies to anatomy-first pipelines only")
    estimates, labels = [], []
    generate = pipeline_generator(pipe, steps, guidance, seed, scheduler, n_samples, estimates, inputs, labels,
                                  temperature)
    settings = {"model": str(model_dir), "generator": generator_kind(pipe), "guidance": guidance,
                "view": pipe.view}
    if generator_kind(pipe) == "anatomy":
        settings.update(guidance=pipe.config.default_guidance if guidance is None else guidance,
                        temperature=pipe.config.default_temperature if temperature is None else temperature)
    return Method(name, generate, n_samples, estimates, labels, settings)


def _baseline_methods(data, reference_split: str, split: str, dataset, alignment, geometry, slice_spacing_mm: float,
                      seed: int, knn: int, view: str, device: str) -> list[Method]:
    """The nearest-neighbour, k-nearest mean, random and rendered read-out baselines (`generation_baselines`)."""
    if reference_split == split:
        raise ConfigError(f"the baselines' reference split must differ from the evaluated split ({split!r})")
    reference = ReferenceCines(data, reference_split, view)
    nearest, k_mean, nn_info = neighbour_generators(alignment, reference, dataset, k=knn, device=device)
    methods = [Method("nn_baseline", nearest, info=nn_info),
               Method(f"knn{knn}_baseline", k_mean, info={"k": knn, "model": nn_info["model"]}),
               Method("random_baseline", random_generator(reference, seed))]
    rendered = RenderedReadout(reference, geometry.spacing_mm, slice_spacing_mm)
    drawn: list = []
    methods.append(Method("rendered_readout", rendered.generator(dataset.manifest, drawn), labels=drawn,
                          info=rendered.info))
    return methods


def _generate_all(methods: list[Method], torch_dataset, n: int, batch_size: int, n_slices: int, where,
                  progress: bool) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """Run every method over the first `n` subjects in batches: ``({name: [sample 1, ...]}, timing)``."""
    from cardiacnets.evaluate.embeddings import collate_samples

    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    outputs, timing = {}, {}
    for method in methods:
        tick = time.perf_counter()
        chunks: list[list[np.ndarray]] = [[] for _ in range(method.per_ecg)]
        iterator = batches
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc=method.name, unit="batch")
        for rows in iterator:
            batch = collate_samples([torch_dataset[i] for i in rows])
            out = np.asarray(method.generate(batch))
            if len(out) != len(rows) * method.per_ecg:
                raise InputError(where, f"{method.name} made {len(out)} cines for {len(rows)} ECGs "
                                        f"({method.per_ecg} per ECG expected)")
            for k in range(method.per_ecg):
                chunks[k].append(as_cines(out[k::method.per_ecg], n_slices, f"{method.name} output"))
        outputs[method.name] = [np.concatenate(c) for c in chunks]
        timing[f"{method.name}_seconds"] = round(time.perf_counter() - tick, 2)
        if method.name not in BASELINES and not method.name.startswith("knn"):
            timing[f"{method.name}_seconds_per_cine"] = round(timing[f"{method.name}_seconds"] / (n * method.per_ecg), 3)
    return outputs, timing


def anatomy_agreement(anatomy: np.ndarray, described: Described, truth: Described, ground_truth: pd.DataFrame | None,
                      spacing_mm: float, slice_spacing_mm: float) -> dict:
    """How the anatomy a method drew relates to its cines and to the truth.

    Args:
        anatomy: (N, slices, frames, H, W) the label cines the method generated its images from.
        described: the generated cines' description (the segmenter's labels and measurements).
        truth: the true cines' description.
        ground_truth: optional manifest indices (`GROUND_TRUTH` columns) of the same subjects.
        spacing_mm, slice_spacing_mm: geometry of the measurements.

    Returns:
        ``dice_vs_segmented_cine`` (per class, mean over cines: does the image follow the anatomy?),
        ``predicted_function`` (r and MAE of the anatomy's own indices against the true cine's, and r
        against the ground truth: the generator's predicted function), ``cine_vs_anatomy`` (r of the
        segmented cine's indices against the anatomy's: nothing lost between anatomy and image), and
        ``validity`` of the anatomies.
    """
    from cardiacnets.cmr.indices import cavity_measurements
    from cardiacnets.generation.shape_model import anatomy_validity, label_dice

    measured = cavity_measurements(anatomy, spacing_mm, slice_spacing_mm)
    dice = label_dice(described.labels, anatomy)
    predicted = agreement(measured, truth.measurements)
    out = {"dice_vs_segmented_cine": {k: float(np.nanmean(v)) for k, v in dice.items()},
           "predicted_function": {f"{SUMMARISED[c][0]}_r": v["r"] for c, v in predicted.items() if c in SUMMARISED},
           "cine_vs_anatomy": {f"{SUMMARISED[c][0]}_r": v["r"]
                               for c, v in agreement(described.measurements, measured).items() if c in SUMMARISED},
           "validity": anatomy_validity(anatomy)}
    out["predicted_function"].update({f"{SUMMARISED[c][0]}_mae_{SUMMARISED[c][1]}": v["mae"]
                                      for c, v in predicted.items() if c in SUMMARISED})
    if ground_truth is not None:
        truth_table = ground_truth.rename(columns={v: k for k, v in GROUND_TRUTH.items()}).reset_index(drop=True)
        columns = [c for c in GROUND_TRUTH if c in truth_table.columns]
        out["predicted_function"]["vs_ground_truth"] = {c: v["r"] for c, v in
                                                        agreement(measured, truth_table, columns).items()}
    return out


def evaluate_generation(model_dir, data, split: str = "test", *, segmenter, feature_encoder=None, alignment=None,
                        generate_batch: GenerateFn | None = None, baselines: bool = True, limit: int | None = None,
                        steps: int = 25, guidance: float | None = None, seed: int = 0, scheduler: str = "dpm++",
                        n_samples: int = 1, batch_size: int = 8, slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                        reference_split: str = "train", acdc_dir=None, out_dir=None, n_examples: int = 4,
                        device: str = "cpu", bf16: bool = False, progress: bool = False,
                        temperature: float | None = None, knn: int = 5) -> dict:
    """Generate the split's cines from their ECGs with one or more generators, and score them with the baselines.

    Steps: (1) check and load the inputs (pipelines, segmenter, feature encoder, alignment run,
    split); (2) run each method over the split in batches, timing it; (3) describe the true cines
    once and score every method with `score_cines` (and the anatomy a method drew with
    `anatomy_agreement`); (4) optionally the segmenter's ACDC Dice; (5) with `out_dir`, write
    ``metrics.json``, ``per_subject.csv`` and comparison PNG strips and GIFs of a few subjects.

    Args:
        model_dir: a pipeline folder (either generator), a list of them (scored side by side, named by
            their generator: ``direct``, ``anatomy``), or ``None`` with `generate_batch` given or
            with ``baselines`` only.
        data: training set folder.
        split: evaluated split (held out from generator training).
        segmenter: a ``segment`` run or saved `CineSegmenter` folder (or a loaded `Segmenter`).
        feature_encoder: saved CMR encoder folder for the Fréchet features (default: the one the
            first pipeline folder records as ``feature_encoder``).
        alignment: alignment run of the neighbour baselines (default: the one the first pipeline
            records as ``alignment_run``); needed when ``baselines``.
        generate_batch: evaluate this function instead of a pipeline (tests, other generators).
        baselines: also score the nearest-neighbour, k-nearest mean, random and rendered read-out baselines.
        limit: evaluate the first N subjects of the split only.
        steps, guidance, seed, scheduler: sampling settings of the pipelines (guidance None: 3 for
            the direct generator, the anatomy-first pipeline's validation-chosen value).
        temperature: the anatomy-first pipelines' sampling temperature (None: their default).
        n_samples: cines the generators make per ECG. The scores of each generator are those of its
            first sample (one cine per ECG, as the baselines); with more, ``samples`` adds the r and MAE
            of the mean of each subject's samples' measurements, each sample's own r, and the spread.
        batch_size: subjects per generation batch.
        slice_spacing_mm: slice spacing of the volume measurements (10 mm: UK Biobank).
        reference_split: split the baselines draw real cines from and fit on.
        acdc_dir: ACDC HDF5 folder: also report the segmenter's Dice there.
        out_dir: write results and comparison images here.
        n_examples: subjects drawn in the comparison images.
        device: torch device.
        bf16: bf16 autocast for the segmenter and the feature encoder.
        progress: show progress bars.
        knn: neighbours averaged by the k-nearest baseline.

    Returns:
        The metrics dict: the first generator's summary at the top level (``ssim``, ``psnr``,
        ``frechet``, ``lvedv_r``, ``lvef_r``, ``lvedv_mae_ml``, ``temporal``, ...; with an anatomy,
        ``anatomy``), ``generators`` (every generator's summary by name), ``nn_baseline``,
        ``knn<k>_baseline``, ``random_baseline`` and ``rendered_readout`` with the same keys, ``n``,
        ``settings``, ``timing``, ``segmenter`` (with ``acdc_dice``) and ``notes``.

    Raises:
        InputError: unusable folders, split or view; ConfigError: invalid numbers or a missing
            option (no feature encoder, no alignment run for the baselines).
    """
    from cardiacnets.data.store import TrainingSet
    from cardiacnets.data.torch_data import CardiacTorchDataset

    # 1. Inputs.
    if batch_size < 1 or (limit is not None and limit < 1) or steps < 1 or n_samples < 1 or knn < 1:
        raise ConfigError("--batch-size, --limit, --steps, --n-samples and --knn must be at least 1")
    model_dirs = [] if model_dir is None else [Path(m) for m in (model_dir if isinstance(model_dir, (list, tuple))
                                                                  else [model_dir])]
    if not model_dirs and generate_batch is None and not baselines:
        raise ConfigError("nothing to evaluate: give a pipeline folder (--model) or the baselines")
    started = time.perf_counter()
    notes: list[str] = []
    geometry = CineGeometry.from_dataset(data)
    everyone = TrainingSet(data)
    splits = sorted(everyone.manifest["split"].dropna().astype(str).unique())
    if split not in splits:
        raise InputError(Path(data) / "manifest.csv", f"no split {split!r}; splits present: {', '.join(splits)}")
    targets = tuple(c for c in GROUND_TRUTH.values() if c in everyone.manifest.columns)
    methods: list[Method] = []
    view = "sa"
    if generate_batch is not None:
        methods.append(Method("generator", generate_batch, n_samples))
    dataset = None
    for i, folder in enumerate(model_dirs):
        if dataset is None:
            dataset = TrainingSet(data, split=split, require=("ecg", view), targets=targets)
        method = _pipeline_method("", folder, dataset, steps, guidance, temperature, seed, scheduler, n_samples, device)
        method.name = method.info["generator"] if len(model_dirs) > 1 else "generator"
        if method.name in {m.name for m in methods}:
            method.name = f"{method.name}_{i}"
        view = method.info["view"]
        methods.append(method)
    seg = segmenter if isinstance(segmenter, Segmenter) else load_segmenter(segmenter)
    if feature_encoder is None and model_dirs:
        feature_encoder = _recorded_path(model_dirs[0], ("feature_encoder",))
    if feature_encoder is None:
        raise ConfigError("no feature encoder for the Fréchet distance: pass --feature-encoder DIR "
                          "(an aligned CMR encoder, e.g. ALIGN_RUN/cmr_sa_encoder)")
    encoder = _load_feature_encoder(feature_encoder, view)
    if baselines and alignment is None and model_dirs:
        alignment = _recorded_path(model_dirs[0], ("alignment_run",))
    if baselines and alignment is None:
        raise ConfigError("the nearest-neighbour baseline needs the alignment run: pass --alignment RUN")
    dataset = TrainingSet(data, split=split, require=("ecg", view), targets=targets)
    if len(dataset) == 0:
        raise InputError(data, f"split {split!r} has no subject with both an ECG and a {view} cine")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    tools = ScoringTools(seg, encoder, geometry.spacing_mm, slice_spacing_mm, device, bf16)
    if baselines:
        methods += _baseline_methods(data, reference_split, split, dataset, alignment, geometry, slice_spacing_mm,
                                     seed, knn, view, device)

    # 2. Generate.
    torch_dataset = CardiacTorchDataset(dataset, views=[view])
    true_cines = np.stack([dataset[i][f"cmr_{view}"] for i in range(n)])
    outputs, timing = _generate_all(methods, torch_dataset, n, batch_size, true_cines.shape[1],
                                    model_dirs[0] if model_dirs else data, progress)
    for method in methods:
        if outputs[method.name][0].shape != true_cines.shape:
            raise InputError(model_dirs[0] if model_dirs else data,
                             f"{method.name} made cines of shape {outputs[method.name][0].shape[1:]}, the true cines "
                             f"are {true_cines.shape[1:]}")

    # 3. Score.
    tick = time.perf_counter()
    truth = describe_cines(true_cines, tools)
    ground_truth = dataset.manifest.loc[:n - 1, list(targets)]
    results: dict[str, dict] = {}
    per_subject = []
    for method in methods:
        samples = outputs[method.name]
        described = describe_cines(samples[0], tools)
        summary, per_cine = score_cines(described, truth, tools, ground_truth)
        condition = pd.concat(method.estimates, ignore_index=True) if method.estimates else None
        if condition is not None and len(condition.columns):
            summary["condition"] = condition_following(described.measurements, condition, truth.measurements)
            for column in condition.columns:
                per_cine[f"condition_{column}"] = condition[column].to_numpy()
        if method.labels:
            anatomy = as_cines(np.concatenate(method.labels)[::method.per_ecg], true_cines.shape[1], "anatomy")
            summary["anatomy"] = anatomy_agreement(anatomy, described, truth, ground_truth, geometry.spacing_mm,
                                                   slice_spacing_mm)
        if len(samples) > 1:
            summary["samples"], means = score_samples([described, *(describe_cines(c, tools) for c in samples[1:])],
                                                      truth, ground_truth)
            for column in MEASUREMENTS:
                per_cine[f"samples_mean_{column}"] = means[column].to_numpy()
            if condition is not None and len(condition.columns):
                summary["samples"]["mean_of_samples"]["generated_vs_condition"] = condition_following(
                    means, condition, truth.measurements)["generated_vs_condition"]
        if method.info:
            summary["method"] = {k: v for k, v in method.info.items() if k != "matches"}
        results[method.name] = summary
        per_cine.insert(0, "method", method.name)
        per_cine.insert(0, "subject_id", dataset.manifest["subject_id"].iloc[:n].astype(str).to_numpy())
        if method.name == "nn_baseline":
            per_cine["nn_subject_id"] = [method.info["matches"][i] for i in range(n)]
            timing["nn_embed_seconds"] = method.info["embed_seconds"]
            summary["alignment_model"] = method.info["model"]
        per_subject.append(per_cine)
        if summary["n_unmeasured"]:
            notes.append(f"{method.name}: the segmenter found no LV cavity in {summary['n_unmeasured']} of {n} cines "
                         "(left out of r and MAE)")
    if n <= truth.features.shape[1]:
        notes.append(f"frechet: {n} subjects for {truth.features.shape[1]}-dimensional features, so the covariances "
                     "are rank-deficient and the distance is biased upwards; compare methods on the same subjects only")
    true_failures = int((truth.measurements["failure"] != "").sum())
    if true_failures:
        notes.append(f"the segmenter found no LV cavity in {true_failures} of {n} true cines (left out of r and MAE)")
    timing["scoring_seconds"] = round(time.perf_counter() - tick, 2)

    # 4. The segmenter's check on real scans.
    segmenter_info: dict = {"model": str(seg.folder), "acdc_dice": None}
    if acdc_dir is not None:
        from cardiacnets.evaluate.segmentation import evaluate_acdc

        acdc = evaluate_acdc(seg, acdc_dir, geometry, device=device, bf16=bf16)
        segmenter_info["acdc_dice"] = acdc["dice_volume"]
        segmenter_info["acdc"] = acdc
        timing["acdc_seconds"] = acdc["seconds"]
    else:
        notes.append("segmenter ACDC Dice not measured here (pass --acdc DIR, or run 'cardiacnets evaluate "
                     "segmentation')")
    timing["total_seconds"] = round(time.perf_counter() - started, 2)

    generators = [m.name for m in methods if m.name not in BASELINES and not m.name.startswith("knn")]
    result: dict = dict(results[generators[0]]) if generators else {}
    if len(generators) > 1:
        result["generators"] = {name: results[name] for name in generators}
    for method in methods:
        if method.name not in generators:
            result[method.name] = results[method.name]
    result.update({
        "n": n, "split": split, "data": str(data), "view": view,
        "model": None if not model_dirs else (str(model_dirs[0]) if len(model_dirs) == 1
                                              else [str(m) for m in model_dirs]),
        "settings": {"steps": steps, "guidance": guidance, "temperature": temperature, "seed": seed,
                     "scheduler": scheduler, "n_samples": n_samples, "batch_size": batch_size, "limit": limit,
                     "slice_spacing_mm": slice_spacing_mm, "spacing_mm": geometry.spacing_mm,
                     "reference_split": reference_split, "knn": knn, "feature_encoder": str(feature_encoder),
                     "bf16": bf16, "device": device},
        "segmenter": segmenter_info,
        "timing": timing,
        "measurement_note": ("one mid-ventricular slice: lvedv/lvesv are the LV cavity area at ED/ES x slice "
                             f"spacing ({slice_spacing_mm} mm), in ml; lvef is the area-based EF of that slice"
                             if true_cines.shape[1] == 1 else "Simpson sums over the stored slices"),
        "notes": notes,
    })

    # 5. Files.
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pd.concat(per_subject, ignore_index=True).to_csv(out_dir / "per_subject.csv", index=False)
        shown = {m.name: outputs[m.name][0] for m in methods
                 if m.name in generators or m.name in ("nn_baseline", "rendered_readout")}
        written = write_comparisons(out_dir, true_cines, shown, dataset.manifest["subject_id"].iloc[:n].tolist(),
                                    n_examples)
        result["outputs"] = [str(p) for p in [out_dir / "metrics.json", out_dir / "per_subject.csv", *written]]
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return result


#: Method names of the baselines (plus ``knn<k>_baseline``).
BASELINES = ("nn_baseline", "random_baseline", "rendered_readout")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- comparison images -------------------------------------------------------------------------------------------

#: Methods whose cines are real acquisitions (of another subject): their comparison panels are not stamped.
RETRIEVED_METHODS = ("nn_baseline", "random_baseline")


def write_comparisons(out_dir: Path, true_cines: np.ndarray, generated: dict[str, np.ndarray], subject_ids: list,
                      n_examples: int = 4, n_strip_frames: int = 8, scale: int = 2,
                      retrieved: tuple[str, ...] = RETRIEVED_METHODS) -> list[Path]:
    """Side-by-side pictures of a few subjects: true cine, then each method's.

    For each of the first `n_examples` subjects: ``compare_<subject>.png``, rows true / method...,
    `n_strip_frames` evenly spaced frames (mid slice); and ``compare_<subject>.gif``, the cines
    side by side, animated over the cycle. Pixels are repeated `scale` times (no interpolation).
    Every frame of a generated panel (any method but the true cine and the `retrieved` ones)
    carries the burned-in SYNTHETIC label, and a file with such panels is marked synthetic in
    its metadata (PNG text chunks, GIF comment; `cardiacnets.io.previews`).

    Args:
        out_dir: the folder written into.
        true_cines: (N, slices, frames, H, W) in [0, 1].
        generated: method name → (N, slices, frames, H, W) cines, in the order shown.
        subject_ids: the subjects' ids (file names).
        n_examples: subjects drawn.
        n_strip_frames: frames per row of the PNG.
        scale: pixel repetition of both axes.
        retrieved: methods whose cines are real acquisitions of other subjects (not stamped).

    Returns:
        The files written.
    """
    from einops import rearrange

    from cardiacnets.io.previews import frames_to_uint8, gif_bytes, png_bytes, stamp_frames

    written = []
    names = ["true", *generated]
    stamped = [name != "true" and name not in retrieved for name in names]
    for i in range(min(n_examples, len(true_cines))):
        mid = true_cines.shape[1] // 2
        cines = [true_cines[i, mid], *(g[i, mid] for g in generated.values())]  # each (frames, H, W)
        panels = [frames_to_uint8(c, scale=scale) for c in cines]  # each (frames, H * scale, W * scale) uint8
        panels = [stamp_frames(p) if synthetic else p for p, synthetic in zip(panels, stamped)]
        n_frames = cines[0].shape[0]
        picks = np.linspace(0, n_frames - 1, min(n_strip_frames, n_frames)).round().astype(int)
        strip = rearrange(np.stack([p[picks] for p in panels]), "m k h w -> (m h) (k w)")
        png = out_dir / f"compare_{subject_ids[i]}.png"
        png.write_bytes(png_bytes(strip, synthetic=any(stamped)))
        side_by_side = rearrange(np.stack(panels), "m f h w -> f h (m w)")
        gif = out_dir / f"compare_{subject_ids[i]}.gif"
        gif.write_bytes(gif_bytes(side_by_side, frame_ms=40.0, synthetic=any(stamped)))
        written += [png, gif]
    if written:
        (out_dir / "compare_legend.txt").write_text(
            "rows (PNG) / panels left to right (GIF): " + ", ".join(names) + "\n"
            "panels labelled SYNTHETIC are generated; the true cine and retrieved neighbours are real\n")
        written.append(out_dir / "compare_legend.txt")
    return written
