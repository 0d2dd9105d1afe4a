"""A trained `HeadsModel` over a split: loading it, predictions, and the calibration stored with it.

`predict_split` runs a `HeadsModel` over one split of a training set (ECG
only, batch by batch from the memory maps) and returns the true and predicted
values of every target (`SplitPredictions`). `calibrate` turns validation
predictions into what the model keeps for prediction (`HeadsCalibration`):
each label's decision threshold at Youden's J and each index's split-conformal
prediction-interval half-width; the ``heads`` training stage calls it at
export. The scoring of predictions (metrics with bootstrap CIs, comparisons,
plots) is in `cardiacnets.evaluate.heads`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cardiacnets.config import to_dict
from cardiacnets.data.torch_data import CardiacTorchDataset, DemographicsNormalizer, make_loader, move_to_device, shard_batches
from cardiacnets.errors import InputError
from cardiacnets.heads.model import HeadsCalibration, HeadsModel
from cardiacnets.models.pretrained import resolve_model_dir
from cardiacnets.stats.metrics import youden_threshold

PRECISIONS = ("fp32", "bf16")


@dataclass
class SplitPredictions:
    """True and predicted values of every target over one split; row i is ``subject_ids[i]``.

    Attributes:
        subject_ids: subjects in row order.
        regression: target → (true, predicted) (n,) arrays in the target's unit (true NaN = missing).
        binary: label column → (true 0/1 with NaN = missing, probability) (n,) arrays.
        multiclass: target → (true class index with NaN = missing (n,), probabilities (n, classes)).
        seconds: wall-clock time of the forward passes.
    """

    subject_ids: list[str]
    regression: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    binary: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    multiclass: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is available, else ``"cpu"``; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast(device: str, precision: str):
    """bf16 autocast for ``precision="bf16"``, else a no-op context."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_heads_model(run: str | os.PathLike):
    """The `HeadsModel` of a heads run (``RUN/model/``) or a saved model folder.

    Raises:
        InputError: no saved model there, or it is not a `HeadsModel`.
    """
    return HeadsModel.from_pretrained(resolve_model_dir(run))


def demographics_normalizer(model):
    """The demographics normaliser saved in a FiLM model's provenance, or ``None`` when the encoder has no FiLM.

    Raises:
        InputError: a FiLM encoder whose provenance lacks the normaliser.
    """
    if not getattr(model.encoder.config, "film", False):
        return None
    saved = model.config.provenance.get("demographics")
    if not saved:
        raise InputError("<model>", "the encoder is conditioned on demographics (FiLM) but the model's "
                                    "provenance has no demographics normaliser")
    return DemographicsNormalizer(tuple(saved["columns"]), tuple(saved["mean"]), tuple(saved["std"]))


def predict_split(model, training_set, batch_size: int = 64, device: str = "cpu", precision: str = "fp32",
                  leads: str | None = None, num_workers: int = 0, progress: bool = False) -> SplitPredictions:
    """Run the model over every subject of a split.

    Args:
        model: a `HeadsModel` (put in eval mode and moved to `device` here).
        training_set: a `cardiacnets.heads.targets.restrict_training_set` view whose
            ``targets`` include the model's target columns.
        batch_size: subjects per forward pass.
        device: torch device.
        precision: ``"fp32"`` or ``"bf16"`` autocast.
        leads: a further lead subset to show the model (reduced-lead evaluation).
        num_workers: data loader workers.
        progress: show a progress bar.

    Returns:
        The `SplitPredictions`.
    """
    config = model.config
    dataset = CardiacTorchDataset(training_set, demographics_normalizer(model), None, 0, views=[])
    loader = make_loader(dataset, shard_batches(len(dataset), batch_size), num_workers)
    model.eval().to(device)
    parts: dict[str, list] = {"regression": [], "binary": [], "multiclass": []}
    truths: dict[str, list] = {c: [] for c in [*config.regression_targets, *config.binary_targets,
                                               *([config.multiclass_target] if config.multiclass_target else [])]}
    subject_ids: list[str] = []
    started = time.perf_counter()
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="heads", leave=False)
    with torch.inference_mode(), autocast(device, precision):
        for batch in loader:
            batch = move_to_device(batch, torch.device(device))
            predictions = model.predict(batch, leads)
            for key, value in predictions.items():
                parts[key].append(value.float().cpu().numpy())
            for column in truths:
                truths[column].append(batch["targets"][column].float().cpu().numpy())
            subject_ids.extend(batch["subject_id"])
    seconds = time.perf_counter() - started
    out = SplitPredictions(subject_ids, seconds=seconds)
    stacked = {k: np.concatenate(v) for k, v in parts.items() if v}
    for j, column in enumerate(config.regression_targets):
        out.regression[column] = (np.concatenate(truths[column]).astype(np.float64),
                                  stacked["regression"][:, j].astype(np.float64))
    for j, column in enumerate(config.binary_targets):
        out.binary[column] = (np.concatenate(truths[column]).astype(np.float64),
                              stacked["binary"][:, j].astype(np.float64))
    if config.multiclass_target:
        out.multiclass[config.multiclass_target] = (np.concatenate(truths[config.multiclass_target]).astype(np.float64),
                                                    stacked["multiclass"].astype(np.float64))
    return out


# --- calibration on validation -----------------------------------------------------------------------------------

def conformal_halfwidth(residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ⌈(n + 1) · coverage⌉-th smallest absolute residual.

    Args:
        residuals: (n,) prediction errors of held-out subjects (NaN ignored).
        coverage: nominal coverage in (0, 1).

    Returns:
        The half-width; ``inf`` when there are too few subjects for that coverage.
    """
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)[np.isfinite(residuals)]))
    rank = math.ceil((len(r) + 1) * coverage)
    return float(r[rank - 1]) if 0 < rank <= len(r) else math.inf


def calibrate(model, predictions: SplitPredictions, split: str, coverage: float) -> dict:
    """Youden thresholds and conformal interval widths from (validation) predictions, stored in the model.

    Args:
        model: the `HeadsModel`; its ``config.calibration`` is replaced.
        predictions: its predictions on held-out subjects.
        split: name of their split (recorded).
        coverage: nominal coverage of the prediction intervals.

    Returns:
        The new calibration as a dict (``notes`` lists labels without a threshold).
    """
    calibration = HeadsCalibration(split=split, n_subjects=len(predictions.subject_ids), interval_coverage=coverage)
    notes = []
    for column, (truth, probability) in predictions.binary.items():
        known = np.isfinite(truth)
        y = truth[known]
        if y.size and 0 < y.sum() < y.size:
            calibration.thresholds[column] = youden_threshold(y, probability[known])
        else:
            notes.append(f"{column}: no threshold (split {split!r} lacks cases or controls)")
    for column, (truth, predicted) in predictions.regression.items():
        calibration.interval_halfwidth[column] = conformal_halfwidth(predicted - truth, coverage)
    model.config.calibration = calibration
    return {**to_dict(calibration), "notes": notes}


def calibrate_thresholds_only(val: SplitPredictions) -> dict[str, float]:
    """Youden thresholds of each label of validation predictions that has cases and controls."""
    out = {}
    for column, (truth, probability) in val.binary.items():
        known = np.isfinite(truth)
        y = truth[known]
        if y.size and 0 < y.sum() < y.size:
            out[column] = youden_threshold(y, probability[known])
    return out


def model_columns(model) -> list[str]:
    """The manifest columns a `HeadsModel` predicts: regression targets, binary labels, the multi-class target."""
    c = model.config
    return [*c.regression_targets, *c.binary_targets, *([c.multiclass_target] if c.multiclass_target else [])]
