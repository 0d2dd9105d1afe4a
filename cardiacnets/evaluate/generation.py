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
from cardiacnets.evaluate.segmentation import (
    DEFAULT_SLICE_SPACING_MM, MEASUREMENTS, CineGeometry, Segmenter, agreement, cavity_measurements, load_segmenter,
    segment_cines,
)

#: A generator under evaluation: a collated batch of the split → (B, frames, H, W) or (B, slices, frames, H, W) cines.
GenerateFn = Callable[[dict], np.ndarray]

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
        measurements: `cavity_measurements` rows (one per cine).
        features: (N, dim) float64 feature-encoder outputs.
        seconds: time spent (segmentation and features).
    """

    cines: np.ndarray
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
    return Described(cines, measurements, np.concatenate(features), time.perf_counter() - started)


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

def pipeline_generator(pipe, num_inference_steps: int = 25, guidance_scale: float = 3.0, seed: int = 0,
                       scheduler: str = "dpm++", demographics: bool = False, n_samples: int = 1,
                       estimates: list | None = None) -> GenerateFn:
    """The trained pipeline as a `GenerateFn`.

    One ``torch.Generator`` seeded with `seed` is consumed batch after batch in split order,
    so results depend on the seed and the batch size (both reported).

    Args:
        pipe: an ``ECGToCMRPipeline``.
        num_inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        seed: seed of the sampling noise.
        scheduler: ``dpm++`` or ``ddim``.
        demographics: pass the batch's ``demographics`` and ``demographics_mask`` (standardised with
            the pipeline's own normaliser) to a pipeline conditioned on them.
        n_samples: cines per ECG (each ECG's samples consecutive).
        estimates: when given, each batch's read-out estimates (the CMR indices the pipeline
            generated the cines *for*, ``index_estimates`` of its output, in the indices' units) are
            appended to it as a DataFrame, one row per ECG (no columns without a read-out).

    Returns:
        ``generate_batch(batch) -> (B × n_samples, frames, H, W)``.
    """
    generator = torch.Generator().manual_seed(seed)

    def generate_batch(batch: dict) -> np.ndarray:
        extra = {"demographics_mask": batch["demographics_mask"]} if demographics else {}
        out = pipe(ecg=batch["ecg"], lead_mask=batch.get("ecg_lead_mask"),
                   demographics=batch["demographics"] if demographics else None,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scheduler=scheduler,
                   generator=generator, num_samples_per_ecg=n_samples, progress=False, **extra)
        if estimates is not None:
            estimates.append(pd.DataFrame({name: np.asarray(values, dtype=float)
                                           for name, values in out.index_estimates.items()},
                                          index=range(len(batch["ecg"]))))
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


def nearest_neighbour_generator(alignment_run, reference: ReferenceCines, query_dataset, batch_size: int = 64,
                                device: str = "cpu") -> tuple[GenerateFn, dict]:
    """The retrieval baseline: each query's closest reference subject by aligned ECG embedding, and its real cine.

    Args:
        alignment_run: an alignment run (``RUN/model``) or saved `CardiacCLIP` folder.
        reference: the reference subjects (training split) whose cines are returned.
        query_dataset: the evaluated split as a `TrainingSet` (rows are batch ``index`` values).
        batch_size: subjects per embedding pass.
        device: torch device.

    Returns:
        ``(generate_batch, info)``: ``info`` holds ``model`` (folder), ``embed_seconds`` and
        ``matches`` (filled as batches are generated: query row → reference subject id).
    """
    from cardiacnets.data.torch_data import CardiacTorchDataset
    from cardiacnets.evaluate.embeddings import embed_split, load_alignment_model
    from cardiacnets.evaluate.retrieval import _run_demographics, normalize_rows

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
            "reference_split": reference.split, "n_reference": len(reference), "matches": {}}

    def generate_batch(batch: dict) -> np.ndarray:
        rows = batch["index"].cpu().numpy()
        similarity = embedded["query"][rows] @ embedded["reference"].T  # (B, n_reference) cosine
        nearest = similarity.argmax(axis=1)
        info["matches"].update(zip(rows.tolist(), reference.subject_ids(nearest)))
        return reference.cines(nearest)

    return generate_batch, info


def random_generator(reference: ReferenceCines, seed: int = 0) -> GenerateFn:
    """Chance level: a uniformly drawn reference subject's real cine for each query (seeded)."""
    rng = np.random.default_rng(seed)

    def generate_batch(batch: dict) -> np.ndarray:
        return reference.cines(rng.integers(len(reference), size=len(batch["index"])))

    return generate_batch


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


def evaluate_generation(model_dir, data, split: str = "test", *, segmenter, feature_encoder=None, alignment=None,
                        generate_batch: GenerateFn | None = None, baselines: bool = True, limit: int | None = None,
                        steps: int = 25, guidance: float = 3.0, seed: int = 0, scheduler: str = "dpm++",
                        n_samples: int = 1, batch_size: int = 8, slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                        reference_split: str = "train", acdc_dir=None, out_dir=None, n_examples: int = 4,
                        device: str = "cpu", bf16: bool = False, progress: bool = False) -> dict:
    """Generate the split's cines from their ECGs and score them, with the baselines scored the same way.

    Steps: (1) check and load the inputs (pipeline, segmenter, feature encoder, alignment run,
    split); (2) run each generator over the split in batches, timing it; (3) describe the true
    cines once and score every generator with `score_cines`; (4) optionally the segmenter's
    ACDC Dice; (5) with `out_dir`, write ``metrics.json``, ``per_subject.csv`` and comparison
    PNG strips and GIFs of a few subjects.

    Args:
        model_dir: the pipeline folder (``ECGToCMRPipeline.from_pretrained``); ``None`` with
            `generate_batch` given or with ``baselines`` only.
        data: training set folder.
        split: evaluated split (held out from generator training).
        segmenter: a ``segment`` run or saved `CineSegmenter` folder (or a loaded `Segmenter`).
        feature_encoder: saved CMR encoder folder for the Fréchet features (default: the one the
            pipeline folder records as ``feature_encoder`` in ``provenance.json``, else an error).
        alignment: alignment run of the nearest-neighbour baseline (default: the one the pipeline
            folder records as ``alignment_run``); needed when ``baselines``.
        generate_batch: evaluate this function instead of a pipeline (tests, other generators).
        baselines: also score the nearest-neighbour and random baselines.
        limit: evaluate the first N subjects of the split only.
        steps, guidance, seed, scheduler: sampling settings of the pipeline.
        n_samples: cines the generator makes per ECG. The top-level scores are always those of
            the first sample (one cine per ECG, as the baselines); with more, ``samples`` adds
            the r and MAE of the mean of each subject's samples' measurements (an ensemble over
            the sampling noise), each sample's own r, and the spread between samples.
        batch_size: subjects per generation batch.
        slice_spacing_mm: slice spacing of the volume measurements (10 mm: UK Biobank).
        reference_split: split the baselines draw real cines from.
        acdc_dir: ACDC HDF5 folder: also report the segmenter's Dice there.
        out_dir: write results and comparison images here.
        n_examples: subjects drawn in the comparison images.
        device: torch device.
        bf16: bf16 autocast for the segmenter and the feature encoder.
        progress: show progress bars.

    Returns:
        The metrics dict: the generator's summary at the top level (``ssim``, ``psnr``, ``frechet``,
        ``lvedv_r``, ``lvef_r``, ``lvedv_mae_ml``, ...), ``nn_baseline`` and ``random_baseline``
        with the same keys, ``n``, ``settings``, ``timing``, ``segmenter`` (with ``acdc_dice``) and
        ``notes``.

    Raises:
        InputError: unusable folders, split or view; ConfigError: invalid numbers or a missing
            option (no feature encoder, no alignment run for the baseline).
    """
    from cardiacnets.data.store import TrainingSet
    from cardiacnets.data.torch_data import CardiacTorchDataset
    from cardiacnets.evaluate.embeddings import collate_samples

    # 1. Inputs.
    if batch_size < 1 or (limit is not None and limit < 1) or steps < 1 or n_samples < 1:
        raise ConfigError("--batch-size, --limit, --steps and --n-samples must be at least 1")
    if model_dir is None and generate_batch is None and not baselines:
        raise ConfigError("nothing to evaluate: give a pipeline folder (--model) or the baselines")
    started = time.perf_counter()
    notes: list[str] = []
    view, normalizer = "sa", None
    estimates: list[pd.DataFrame] = []  # the pipeline's read-out estimates, batch by batch (pipeline_generator)
    if model_dir is not None and generate_batch is None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(model_dir, "no such pipeline folder")
        from cardiacnets.generation import ECGToCMRPipeline

        pipe = ECGToCMRPipeline.from_pretrained(model_dir).to(device)
        view = pipe.view
        recorded = getattr(pipe.config, "demographics", None)  # the diffusion run's normaliser, when conditioned
        if recorded:
            from cardiacnets.data.torch_data import DemographicsNormalizer

            normalizer = DemographicsNormalizer(tuple(recorded["columns"]), tuple(recorded["mean"]),
                                                tuple(recorded["std"]))
        generate_batch = pipeline_generator(pipe, steps, guidance, seed, scheduler, demographics=bool(recorded),
                                            n_samples=n_samples, estimates=estimates)
    seg = segmenter if isinstance(segmenter, Segmenter) else load_segmenter(segmenter)
    if feature_encoder is None and model_dir is not None:
        feature_encoder = _recorded_path(Path(model_dir), ("feature_encoder",))
    if feature_encoder is None:
        raise ConfigError("no feature encoder for the Fréchet distance: pass --feature-encoder DIR "
                          "(an aligned CMR encoder, e.g. ALIGN_RUN/cmr_sa_encoder)")
    encoder = _load_feature_encoder(feature_encoder, view)
    if baselines and alignment is None and model_dir is not None:
        alignment = _recorded_path(Path(model_dir), ("alignment_run",))
    if baselines and alignment is None:
        raise ConfigError("the nearest-neighbour baseline needs the alignment run: pass --alignment RUN")
    geometry = CineGeometry.from_dataset(data)
    everyone = TrainingSet(data)
    splits = sorted(everyone.manifest["split"].dropna().astype(str).unique())
    if split not in splits:
        raise InputError(Path(data) / "manifest.csv", f"no split {split!r}; splits present: {', '.join(splits)}")
    if baselines and reference_split == split:
        raise ConfigError(f"the baselines' reference split must differ from the evaluated split ({split!r})")
    targets = tuple(c for c in GROUND_TRUTH.values() if c in everyone.manifest.columns)
    dataset = TrainingSet(data, split=split, require=("ecg", view), targets=targets)
    if len(dataset) == 0:
        raise InputError(data, f"split {split!r} has no subject with both an ECG and a {view} cine")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    tools = ScoringTools(seg, encoder, geometry.spacing_mm, slice_spacing_mm, device, bf16)

    methods: dict[str, GenerateFn] = {}
    if generate_batch is not None:
        methods["generator"] = generate_batch
    nn_info = None
    if baselines:
        reference = ReferenceCines(data, reference_split, view)
        methods["nn_baseline"], nn_info = nearest_neighbour_generator(alignment, reference, dataset, device=device)
        methods["random_baseline"] = random_generator(reference, seed)

    # 2. Generate.
    torch_dataset = CardiacTorchDataset(dataset, demographics=normalizer, views=[view])
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    true_cines = np.stack([dataset[i][f"cmr_{view}"] for i in range(n)])
    generated: dict[str, np.ndarray] = {}
    more_samples: list[np.ndarray] = []  # the generator's samples 2..M, each (n, slices, frames, H, W)
    timing: dict[str, float] = {}
    for name, method in methods.items():
        tick = time.perf_counter()
        per_ecg = n_samples if name == "generator" else 1
        chunks: list[list[np.ndarray]] = [[] for _ in range(per_ecg)]
        iterator = batches
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc=name, unit="batch")
        for rows in iterator:
            batch = collate_samples([torch_dataset[i] for i in rows])
            out = np.asarray(method(batch))
            if len(out) != len(rows) * per_ecg:
                raise InputError(model_dir or data, f"{name} made {len(out)} cines for {len(rows)} ECGs "
                                                    f"({per_ecg} per ECG expected)")
            for k in range(per_ecg):
                chunks[k].append(as_cines(out[k::per_ecg], true_cines.shape[1], f"{name} output"))
        samples = [np.concatenate(c) for c in chunks]
        generated[name] = samples[0]
        if name == "generator":
            more_samples = samples[1:]
        if generated[name].shape != true_cines.shape:
            raise InputError(model_dir or data, f"{name} made cines of shape {generated[name].shape[1:]}, "
                                                f"the true cines are {true_cines.shape[1:]}")
        timing[f"{name}_seconds"] = round(time.perf_counter() - tick, 2)
    if "generator" in methods:
        timing["generator_seconds_per_cine"] = round(timing["generator_seconds"] / (n * n_samples), 3)

    # 3. Score.
    tick = time.perf_counter()
    truth = describe_cines(true_cines, tools)
    ground_truth = dataset.manifest.loc[:n - 1, list(targets)]
    results: dict[str, dict] = {}
    per_subject = []
    for name, cines in generated.items():
        described = describe_cines(cines, tools)
        summary, per_cine = score_cines(described, truth, tools, ground_truth)
        condition = pd.concat(estimates, ignore_index=True) if name == "generator" and estimates else None
        if condition is not None and len(condition.columns):
            summary["condition"] = condition_following(described.measurements, condition, truth.measurements)
            for column in condition.columns:
                per_cine[f"condition_{column}"] = condition[column].to_numpy()
        if name == "generator" and more_samples:
            summary["samples"], means = score_samples([described, *(describe_cines(c, tools) for c in more_samples)],
                                                      truth, ground_truth)
            for column in MEASUREMENTS:
                per_cine[f"samples_mean_{column}"] = means[column].to_numpy()
            if condition is not None and len(condition.columns):
                summary["samples"]["mean_of_samples"]["generated_vs_condition"] = condition_following(
                    means, condition, truth.measurements)["generated_vs_condition"]
        results[name] = summary
        per_cine.insert(0, "method", name)
        per_cine.insert(0, "subject_id", dataset.manifest["subject_id"].iloc[:n].astype(str).to_numpy())
        if name == "nn_baseline":
            per_cine["nn_subject_id"] = [nn_info["matches"][i] for i in range(n)]
        per_subject.append(per_cine)
        if summary["n_unmeasured"]:
            notes.append(f"{name}: the segmenter found no LV cavity in {summary['n_unmeasured']} of {n} cines "
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

    result: dict = dict(results.get("generator", {}))
    for name in ("nn_baseline", "random_baseline"):
        if name in results:
            result[name] = results[name]
    if nn_info is not None:
        result["nn_baseline"]["alignment_model"] = nn_info["model"]
        timing["nn_embed_seconds"] = nn_info["embed_seconds"]
    result.update({
        "n": n,
        "split": split,
        "data": str(data),
        "view": view,
        "model": None if model_dir is None else str(model_dir),
        "settings": {"steps": steps, "guidance": guidance, "seed": seed, "scheduler": scheduler, "n_samples": n_samples,
                     "batch_size": batch_size, "limit": limit, "slice_spacing_mm": slice_spacing_mm,
                     "spacing_mm": geometry.spacing_mm, "reference_split": reference_split,
                     "feature_encoder": str(feature_encoder), "bf16": bf16, "device": device},
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
        written = write_comparisons(out_dir, true_cines, generated, dataset.manifest["subject_id"].iloc[:n].tolist(),
                                    n_examples)
        result["outputs"] = [str(p) for p in [out_dir / "metrics.json", out_dir / "per_subject.csv", *written]]
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- comparison images -------------------------------------------------------------------------------------------

def _to_uint8(frames: np.ndarray, scale: int) -> np.ndarray:
    """[0, 1] frames (..., H, W) → uint8, each pixel repeated `scale` times along both axes."""
    image = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image.repeat(scale, axis=-2).repeat(scale, axis=-1)


def write_comparisons(out_dir: Path, true_cines: np.ndarray, generated: dict[str, np.ndarray], subject_ids: list,
                      n_examples: int = 4, n_strip_frames: int = 8, scale: int = 2) -> list[Path]:
    """Side-by-side pictures of a few subjects: true cine, then each method's.

    For each of the first `n_examples` subjects: ``compare_<subject>.png``, rows true / method...,
    `n_strip_frames` evenly spaced frames (mid slice); and ``compare_<subject>.gif``, the cines
    side by side, animated over the cycle.

    Returns:
        The files written.
    """
    from einops import rearrange
    from PIL import Image

    written = []
    names = ["true", *generated]
    for i in range(min(n_examples, len(true_cines))):
        mid = true_cines.shape[1] // 2
        cines = [true_cines[i, mid], *(g[i, mid] for g in generated.values())]  # each (frames, H, W)
        n_frames = cines[0].shape[0]
        picks = np.linspace(0, n_frames - 1, min(n_strip_frames, n_frames)).round().astype(int)
        strip = rearrange(np.stack([c[picks] for c in cines]), "m k h w -> (m h) (k w)")
        png = out_dir / f"compare_{subject_ids[i]}.png"
        Image.fromarray(_to_uint8(strip, scale)).save(png)
        side_by_side = rearrange(np.stack(cines), "m f h w -> f h (m w)")
        gif = out_dir / f"compare_{subject_ids[i]}.gif"
        frames = [Image.fromarray(f) for f in _to_uint8(side_by_side, scale)]
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40, loop=0)
        written += [png, gif]
    if written:
        (out_dir / "compare_legend.txt").write_text(
            "rows (PNG) / panels left to right (GIF): " + ", ".join(names) + "\n")
        written.append(out_dir / "compare_legend.txt")
    return written
