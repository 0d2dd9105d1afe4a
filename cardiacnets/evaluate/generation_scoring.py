"""Scoring generated cines against the true cines of the same subjects (`cardiacnets.evaluate.generation`).

Every method of a generation evaluation, generator or baseline, is scored here
the same way: SSIM and PSNR against the true cine (MONAI metrics), the Fréchet
distance between feature distributions under an aligned CMR encoder (MONAI
``get_fid_score``), and physiological consistency: a segmenter labels every
frame, `cavity_measurements` turns the labels into cavity sizes, EF and LV
mass, and the generated and true cines' measurements are compared (Pearson r
and MAE). `statistics_distance` compares hand-made image statistics (contrast,
texture, noise, edges, surroundings) of generated and true cines, a space no
method was trained or selected in. `temporal_coherence` checks that the LV moves like one cardiac cycle,
`condition_following` splits a generator's error into its read-out's and its
image model's, and `anatomy_agreement` relates the anatomy an anatomy-first
generator drew to its cine and to the truth.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cardiacnets.cmr.frame_statistics import CINE_STATISTICS, cine_statistics
from cardiacnets.evaluate.segmentation import (
    DEFAULT_SLICE_SPACING_MM, MEASUREMENTS, Segmenter, agreement, cavity_measurements, segment_cines,
)
from cardiacnets.stats.separability import CV_FOLDS, cv_auroc

#: Manifest columns with the ground-truth indices the measurements are also compared with (context).
GROUND_TRUTH = {"lvedv_ml": "seg_lvedv_ml", "lvesv_ml": "seg_lvesv_ml", "lvef_pct": "seg_lvef_pct",
                "rvedv_ml": "seg_rvedv_ml", "rvef_pct": "seg_rvef_pct", "lvm_g": "seg_lvm_g"}
#: Measurements whose r and MAE are summarised at the top level (key prefixes: lvedv_r, lvedv_mae_ml, ...).
SUMMARISED = {"lvedv_ml": ("lvedv", "ml"), "lvesv_ml": ("lvesv", "ml"), "lvef_pct": ("lvef", "pct"),
              "rvedv_ml": ("rvedv", "ml"), "rvef_pct": ("rvef", "pct"), "lvm_g": ("lvm", "g")}



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
        statistics: (N, k) image statistics (`cardiacnets.cmr.frame_statistics.cine_statistics` on the
            segmenter's labels), NaN where undefined.
    """

    cines: np.ndarray
    labels: np.ndarray
    measurements: pd.DataFrame
    features: np.ndarray
    seconds: float
    statistics: np.ndarray | None = None


def describe_cines(cines: np.ndarray, tools: ScoringTools) -> Described:
    """Segment, measure and embed cines, and measure their image statistics.

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
    statistics, _ = cine_statistics(cines, labels)
    return Described(cines, labels, measurements, np.concatenate(features), time.perf_counter() - started,
                     statistics)


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


def statistics_distance(generated: np.ndarray, true: np.ndarray, seed: int = 0,
                        names: tuple[str, ...] | None = None, n_largest: int = 5) -> dict:
    """How far generated cines' image statistics are from the true cines': Fréchet distance and a classifier.

    Each statistic is standardised by the true cines' mean and SD; statistics measured on fewer than
    half of the true cines, or constant there, are left out; a missing value counts as the true mean.
    The features are hand-made (contrast, texture, noise, edge width, surroundings; `cine_statistics`),
    so no generator or baseline was trained or selected in this space, unlike the aligned encoder of
    ``frechet`` (whose retrieval picks the nearest-neighbour baseline's cines).

    Args:
        generated: (N, k) `Described.statistics` of the generated cines.
        true: (M, k) the same of the true cines.
        seed: the classifier's folds.
        names: the k statistics' names; with them, the result lists the `n_largest` differences.
        n_largest: how many differences to list.

    Returns:
        ``frechet`` (standardised units), ``auroc`` and ``auroc_sd`` (`cv_auroc` of generated vs true;
        0.5: a logistic regression cannot tell them apart), ``n_features`` used, ``unmeasured``
        (generated cines with no statistic at all, e.g. no LV found); with `names`,
        ``largest_differences``: the statistics whose generated mean is furthest from the true
        mean, as ``{name, d, sd_ratio}`` (``d``: the difference in true SDs; ``sd_ratio``:
        generated SD / true SD). The Fréchet distance is NaN with fewer than 2 cines a side, the
        AUROC with fewer than `CV_FOLDS`.
    """
    generated, true = np.asarray(generated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    unmeasured = int(np.isnan(generated).all(axis=1).sum())
    with warnings.catch_warnings():  # a statistic no true cine has is NaN here and left out below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, sd = np.nanmean(true, axis=0), np.nanstd(true, axis=0)
    keep = (np.isfinite(true).mean(axis=0) >= 0.5) & (sd > 0)
    out = {"frechet": float("nan"), "auroc": float("nan"), "auroc_sd": float("nan"),
           "n_features": int(keep.sum()), "unmeasured": unmeasured}
    if not keep.any():
        return out
    a, b = [np.nan_to_num((x[:, keep] - mean[keep]) / sd[keep], nan=0.0) for x in (generated, true)]
    out["frechet"] = frechet_distance(a, b)
    if names is not None:
        kept = [name for name, k in zip(names, keep) if k]
        d, ratio = a.mean(axis=0), a.std(axis=0)
        out["largest_differences"] = [
            {"name": kept[j], "d": round(float(d[j]), 3), "sd_ratio": round(float(ratio[j]), 3)}
            for j in np.argsort(-np.abs(d))[:n_largest]]
    if min(len(a), len(b)) < CV_FOLDS:
        return out
    classified = cv_auroc(np.vstack([a, b]), np.r_[np.ones(len(a)), np.zeros(len(b))], seed)
    out["auroc"], out["auroc_sd"] = classified["auroc"], classified["sd"]
    return out


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


def summarised(measured: dict) -> dict:
    """``<index>_r`` and ``<index>_mae_<unit>`` of the `SUMMARISED` measurements of an `agreement` result."""
    out = {}
    for column, (name, unit) in SUMMARISED.items():
        out[f"{name}_r"] = measured[column]["r"]
        out[f"{name}_mae_{unit}"] = measured[column]["mae"]
    return out


def r_against_ground_truth(measurements: pd.DataFrame, ground_truth: pd.DataFrame) -> dict[str, float]:
    """Pearson r of cines' measurements against the manifest's indices of the same subjects.

    Args:
        measurements: `cavity_measurements` rows.
        ground_truth: the manifest's `GROUND_TRUTH` columns (those present) for the same rows.

    Returns:
        ``{measurement: r}`` over the `GROUND_TRUTH` columns present.
    """
    truth = ground_truth.rename(columns={v: k for k, v in GROUND_TRUTH.items()}).reset_index(drop=True)
    columns = [c for c in GROUND_TRUTH if c in truth.columns]
    return {c: v["r"] for c, v in agreement(measurements, truth, columns).items()}


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
        ``statistics`` (`statistics_distance`) and its ``frechet_statistics``;
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
    summary.update(summarised(measured))
    summary["measured"] = measured
    summary["temporal"] = temporal_coherence(gen.labels, ref.labels)
    if gen.statistics is not None and ref.statistics is not None:
        summary["statistics"] = statistics_distance(gen.statistics, ref.statistics, names=CINE_STATISTICS)
        summary["frechet_statistics"] = summary["statistics"]["frechet"]
    summary["n_unmeasured"] = int((gen.measurements["failure"] != "").sum())
    if ground_truth is not None:
        summary["vs_ground_truth"] = {"generated": r_against_ground_truth(gen.measurements, ground_truth),
                                      "true_cine": r_against_ground_truth(ref.measurements, ground_truth)}
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
    summary_mean = summarised(agreement(means, true.measurements))
    if ground_truth is not None:
        summary_mean["vs_ground_truth"] = r_against_ground_truth(means, ground_truth)
    per_sample = {f"{name}_r": [agreement(s.measurements, true.measurements, [column])[column]["r"] for s in samples]
                  for column, (name, _) in SUMMARISED.items()}
    spread_summary = {f"{name}_sd_{unit}": float(np.nanmean(spread[:, j])) if np.isfinite(spread[:, j]).any()
                      else float("nan")
                      for j, column in enumerate(MEASUREMENTS) if column in SUMMARISED
                      for name, unit in [SUMMARISED[column]]}
    return {"n_samples": len(samples), "mean_of_samples": summary_mean, "per_sample": per_sample,
            "spread": spread_summary}, means


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
        out["predicted_function"]["vs_ground_truth"] = r_against_ground_truth(measured, ground_truth)
    return out

