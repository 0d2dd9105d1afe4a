"""The ``heads`` training task: cardiac indices and disease screening from the ECG alone.

Trains a `cardiacnets.heads.model.HeadsModel` — an ECG encoder with a
multi-output regression head for the CMR indices, one logit per screening
label and a cardiomyopathy-subtype softmax — in one of three modes
(``options.mode``), the downstream experiments of CardiacNets (arXiv 2411.13602):

- ``linear_probe``: the encoder (``init.ecg_encoder``: the aligned encoder of an
  ``align`` run, or a ``pretrain_ecg`` run's MAE) is frozen; only the heads train.
  Its embeddings are computed once per subject and cached (``cache_features``).
- ``finetune``: the initialised encoder trains with the heads. With
  ``init.model`` set to a linear-probe run's model, the heads start from the
  probe's (LP-FT: Kumar et al., "Fine-tuning can distort pretrained features and
  underperform out-of-distribution", ICLR 2022), which keeps a small learning rate
  from destroying the pretrained features while the random heads settle.
- ``scratch``: the same encoder architecture (``model.name`` / ``model.overrides``)
  from random weights, trained on the ECG only (the paper's "not aligned" baseline).

Losses (each a mean over the targets present in the batch, missing labels
masked): mean squared error of the standardised indices, binary cross-entropy
of each label, cross-entropy of the subtype. Label fractions
(``options.label_fraction``) train on a seeded, stratified subset of the
training split's labelled subjects; ``options.balance`` keeps the cases of one
label with as many matched controls. Validation reports the loss terms plus
mean R² and mean AUROC; the export measures the decision thresholds (Youden)
and the conformal prediction intervals on the validation split and saves them
with the model (``RUN/model``) and the trained encoder (``RUN/ecg_encoder``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cardiacnets import __version__
from cardiacnets.config import from_dict, to_dict
from cardiacnets.data.store import DATASET_YAML, TrainingSet, read_dataset_info
from cardiacnets.data.torch_data import move_to_device
from cardiacnets.data.transforms import augment_ecg
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.heads.inference import calibrate, predict_split
from cardiacnets.heads.model import HeadsModel, HeadsModelConfig
from cardiacnets.heads.targets import (
    HeadTargets, TargetStandardizer, labelled_rows, match_case_control, open_heads_split, resolve_targets,
    restrict_training_set, select_label_fraction, target_matrix, with_derived_targets,
)
from cardiacnets.io.ecg_leads import resolve_lead_subset
from cardiacnets.models import get_model_config, list_models
from cardiacnets.models.clip import EncoderSpec
from cardiacnets.models.encoders import load_saved_encoder
from cardiacnets.stats.metrics import classification_metrics, regression_metrics
from cardiacnets.train.tasks import Task, register_task

MODES = ("linear_probe", "finetune", "scratch")


@dataclass
class HeadsOptions:
    """Options of the ``heads`` task.

    Attributes:
        mode: ``linear_probe`` (frozen initialised encoder), ``finetune`` (initialised
            encoder trained too) or ``scratch`` (random encoder of ``model.name``).
        regression: regression target columns (CMR indices); ``null`` = every UK Biobank
            CMR index the manifest has (`cardiacnets.data.ukb_fields`); ``[]`` = none.
        binary: binary label columns; ``null`` = every ``label_*`` column; ``[]`` = none.
        cardiomyopathy_subtype: predict the subtype (none / dilated / hypertrophic /
            restrictive) from the ``icd10`` column when the manifest has one.
        label_fraction: train on this fraction of the labelled training subjects (0, 1].
        fraction_seed: seed of the fraction's stratified draw.
        balance: a binary label column: keep its cases and one matched control each
            (same sex, nearest age); ``null`` = off.
        leads: lead subset the model sees in training and use (``"I"``, ``"II"``,
            ``"limb"``, ``"I,II,V1"``); ``null`` = every recorded lead.
        lead_drop_prob: training-time probability of dropping each lead (`random_lead_mask`).
        subset_prob: training-time probability of a reduced-lead view (lead I, lead II, limb leads).
        ecg_max_shift_samples: training-time random time shift of the ECG (zero-filled).
        hidden_dim: width of a shared hidden layer before the heads (0: linear heads).
        dropout: dropout on the embedding before the heads.
        regression_weight: weight of the regression loss.
        binary_weight: weight of the binary loss.
        multiclass_weight: weight of the subtype loss.
        cache_features: with a frozen encoder and no augmentation, compute each subject's
            embedding once and reuse it (the linear probe then costs almost nothing per epoch).
        interval_coverage: nominal coverage of the prediction intervals measured at export.
    """

    mode: Literal["linear_probe", "finetune", "scratch"] = "finetune"
    regression: list[str] | None = None
    binary: list[str] | None = None
    cardiomyopathy_subtype: bool = True
    label_fraction: float = 1.0
    fraction_seed: int = 0
    balance: str | None = None
    leads: str | None = None
    lead_drop_prob: float = 0.0
    subset_prob: float = 0.0
    ecg_max_shift_samples: int = 0
    hidden_dim: int = 0
    dropout: float = 0.0
    regression_weight: float = 1.0
    binary_weight: float = 1.0
    multiclass_weight: float = 1.0
    cache_features: bool = True
    interval_coverage: float = 0.95

    def validate(self) -> None:
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(f"options.label_fraction must be in (0, 1], got {self.label_fraction}")
        if not 0.0 <= self.lead_drop_prob <= 1.0 or not 0.0 <= self.subset_prob <= 1.0:
            raise ConfigError("options.lead_drop_prob and options.subset_prob must be in [0, 1]")
        if self.ecg_max_shift_samples < 0:
            raise ConfigError(f"options.ecg_max_shift_samples must be non-negative, got {self.ecg_max_shift_samples}")
        if min(self.regression_weight, self.binary_weight, self.multiclass_weight) < 0:
            raise ConfigError("options.*_weight must be non-negative")
        if not 0.0 < self.interval_coverage < 1.0:
            raise ConfigError(f"options.interval_coverage must be in (0, 1), got {self.interval_coverage}")
        if self.hidden_dim < 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("options.hidden_dim must be >= 0 and options.dropout in [0, 1)")
        if self.leads is not None:
            try:
                resolve_lead_subset(self.leads)
            except ValueError as err:
                raise ConfigError(f"options.leads: {err}") from None


@dataclass
class _SplitInfo:
    """What `HeadsTask.open_split` decided about the training split (recorded in the provenance)."""

    n_split: int = 0
    n_labelled: int = 0
    n_selected: int = 0
    dropped_targets: list[str] = field(default_factory=list)


@register_task
class HeadsTask(Task):
    """Downstream heads on the ECG encoder (see the module docstring)."""

    name = "heads"
    options_class = HeadsOptions
    default_model = "ecg_resnet1d"

    def __init__(self, config):
        super().__init__(config)
        o, init = self.options, config.init
        if init.cmr_encoders:
            raise ConfigError("task heads has no CMR encoders to initialise (init.cmr_encoders)")
        if o.mode == "scratch" and (init.ecg_encoder is not None or init.model is not None):
            raise ConfigError("options.mode scratch trains the encoder from random weights; "
                              "remove init.ecg_encoder / init.model (or choose mode finetune)")
        if o.mode == "linear_probe" and init.ecg_encoder is None and init.model is None:
            raise ConfigError("options.mode linear_probe needs a trained encoder: set init.ecg_encoder "
                              "(an align run's ecg_encoder, or a pretrain_ecg run's model)")
        if init.ecg_encoder is not None and init.model is not None:
            raise ConfigError("set init.ecg_encoder or init.model, not both (init.model holds its own encoder)")
        if init.model is not None and config.model.overrides:
            raise ConfigError("init.model brings its own encoder architecture; remove model.overrides")
        self.targets = None  # HeadTargets, decided on the training split
        self.standardizer = None
        self.split_info = _SplitInfo()
        self._init_model = None
        self._features: dict[str, torch.Tensor] = {}
        if init.model is not None:
            self._init_model = HeadsModel.from_pretrained(init.model)

    # --- data ------------------------------------------------------------------------------------------------
    def required_modalities(self) -> list[str]:
        return ["ecg"]

    def open_split(self, root, split, require):
        """The labelled subjects of a split, with their targets (the training split: the chosen fraction)."""
        training_set = TrainingSet(root, split=split, require=tuple(require))
        manifest = with_derived_targets(training_set.manifest)
        source = training_set.manifest_path
        is_train = split == self.config.data.train_split
        if self.targets is None:
            if not is_train:
                raise RuntimeError("the training split must be opened first")
            if self._init_model is not None:
                c = self._init_model.config
                self.targets = HeadTargets(list(c.regression_targets), list(c.regression_units),
                                           list(c.binary_targets), c.multiclass_target, list(c.multiclass_classes))
                self._check_init_targets(source)
            else:
                self.targets, self.split_info.dropped_targets = resolve_targets(
                    manifest, self.options.regression, self.options.binary, self.options.cardiomyopathy_subtype,
                    source)
        columns = self.targets.columns
        missing = [c for c in columns if c not in manifest.columns]
        if missing:
            raise InputError(source, f"split {split!r}: manifest has no target column(s) {missing}")
        keep = labelled_rows(manifest, self.targets)
        if is_train:
            self.split_info.n_split, self.split_info.n_labelled = len(manifest), int(keep.sum())
            if self.options.label_fraction < 1.0:  # the label budget first, then balancing within it
                keep &= select_label_fraction(manifest, self.targets, self.options.label_fraction,
                                              self.options.fraction_seed)
            if self.options.balance is not None:
                rows = np.flatnonzero(keep)
                matched = match_case_control(manifest.iloc[rows], self.options.balance, self.options.fraction_seed,
                                             source)
                keep = np.zeros(len(manifest), dtype=bool)
                keep[rows[matched]] = True
            self.split_info.n_selected = int(keep.sum())
            if not keep.any():
                raise InputError(source, f"no labelled training subject in split {split!r}")
            values = target_matrix(manifest[keep], self.targets.regression)
            if self._init_model is not None:
                c = self._init_model.config
                self.standardizer = TargetStandardizer(list(c.target_mean), list(c.target_std))
            elif self.targets.regression:
                self.standardizer = TargetStandardizer.fit(values)
            else:
                self.standardizer = TargetStandardizer([], [])
        return restrict_training_set(training_set, columns, keep)

    def _check_init_targets(self, source) -> None:
        o, t = self.options, self.targets
        for name, wanted, have in (("regression", o.regression, t.regression), ("binary", o.binary, t.binary)):
            if wanted is not None and list(wanted) != list(have):
                raise ConfigError(f"options.{name} {wanted} differs from init.model's targets {have}; "
                                  f"leave options.{name} null to keep them")

    # --- model -----------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The `HeadsModel`: encoder from ``init.*`` or ``model.*``, heads for the resolved targets."""
        init, o = self.config.init, self.options
        if self.targets is None:
            raise RuntimeError("build_model needs the training split opened first (open_split)")
        frozen = o.mode == "linear_probe"
        if self._init_model is not None:
            saved = self._init_model
            if o.leads != saved.config.leads:
                raise ConfigError(f"options.leads {o.leads!r} differs from init.model's {saved.config.leads!r}")
            config = from_dict(HeadsModelConfig, {**to_dict(saved.config), "freeze_encoder": frozen,
                                                  "dropout": o.dropout, "calibration": {}, "provenance": {}})
            if config.hidden_dim != o.hidden_dim:
                raise ConfigError(f"options.hidden_dim {o.hidden_dim} differs from init.model's {config.hidden_dim}")
            model = HeadsModel(config)
            model.load_state_dict(saved.state_dict())
            return model
        encoder, spec = None, EncoderSpec(self.model_name, dict(self.config.model.overrides))
        if init.ecg_encoder is not None:
            encoder, spec = _saved_encoder_spec(init.ecg_encoder, self.config.model.name,
                                                dict(self.config.model.overrides))
        t = self.targets
        config = HeadsModelConfig(
            encoder=spec, regression_targets=list(t.regression), regression_units=list(t.units),
            target_mean=list(self.standardizer.mean), target_std=list(self.standardizer.std),
            binary_targets=list(t.binary), multiclass_target=t.multiclass, multiclass_classes=list(t.classes),
            hidden_dim=o.hidden_dim, dropout=o.dropout, freeze_encoder=frozen, leads=o.leads)
        try:
            model = HeadsModel(config)
        except ConfigError as err:
            raise ConfigError(f"task heads: {err}") from None
        if encoder is not None:
            model.encoder.load_state_dict(encoder.state_dict())
        return model

    # --- steps -----------------------------------------------------------------------------------------------
    def _augmented(self) -> bool:
        o = self.options
        return (o.ecg_max_shift_samples > 0 or o.lead_drop_prob > 0 or o.subset_prob > 0
                or self.config.data.augment.enabled)

    def _cached(self, model: nn.Module) -> bool:
        unwrapped = getattr(model, "module", model)
        return self.options.cache_features and unwrapped.config.freeze_encoder and not self._augmented()

    def _with_features(self, model: nn.Module, batch: dict) -> dict:
        """The batch with the frozen encoder's embeddings, computed once per subject."""
        unwrapped = getattr(model, "module", model)
        missing = [i for i, s in enumerate(batch["subject_id"]) if s not in self._features]
        if missing:
            rows = torch.tensor(missing, device=batch["ecg"].device)
            part = {k: batch[k][rows] for k in ("ecg", "ecg_lead_mask", "demographics") if k in batch}
            with torch.no_grad():
                features = unwrapped.encode(part)
            for i, f in zip(missing, features):
                self._features[batch["subject_id"][i]] = f.detach()
        return {**batch, "features": torch.stack([self._features[s] for s in batch["subject_id"]])}

    def training_step(self, model, batch, generator):
        o = self.options
        batch = augment_ecg(batch, generator, o.ecg_max_shift_samples, o.lead_drop_prob, o.subset_prob)
        if self._cached(model):
            batch = self._with_features(model, batch)
        return self.losses(model(batch), batch)

    def validation_step(self, model, batch):
        if self._cached(model):
            batch = self._with_features(model, batch)
        return self.losses(model(batch), batch)

    def _target_tensors(self, batch: dict, device) -> dict[str, torch.Tensor]:
        t = self.targets
        out = {}
        if t.regression:
            y = torch.stack([batch["targets"][c] for c in t.regression], dim=1).float()
            mean = torch.tensor(self.standardizer.mean, device=device)
            std = torch.tensor(self.standardizer.std, device=device)
            out["regression"] = (y.to(device) - mean) / std
        if t.binary:
            out["binary"] = torch.stack([batch["targets"][c] for c in t.binary], dim=1).float().to(device)
        if t.multiclass:
            y = batch["targets"][t.multiclass].float().to(device)
            out["multiclass"] = torch.where(torch.isfinite(y), y, torch.full_like(y, -1)).long()
        return out

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """Masked loss terms of a batch: ``loss_regression``, ``loss_binary``, ``loss_multiclass``."""
        o = self.options
        anchor = next(iter(outputs.values()))
        truth = self._target_tensors(batch, anchor.device)
        terms = {}
        if "regression" in outputs:
            terms["loss_regression"] = o.regression_weight * _masked_mean_per_target(
                (outputs["regression"] - torch.nan_to_num(truth["regression"])) ** 2,
                torch.isfinite(truth["regression"]))
        if "binary" in outputs:
            y = truth["binary"]
            known = torch.isfinite(y)
            bce = F.binary_cross_entropy_with_logits(outputs["binary"], torch.nan_to_num(y), reduction="none")
            terms["loss_binary"] = o.binary_weight * _masked_mean_per_target(bce, known)
        if "multiclass" in outputs:
            y = truth["multiclass"]
            known = y >= 0
            ce = F.cross_entropy(outputs["multiclass"], y.clamp(min=0), reduction="none")
            terms["loss_multiclass"] = o.multiclass_weight * (
                (ce * known).sum() / known.sum() if known.any() else ce.sum() * 0.0)
        return terms

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Loss terms over the whole validation split, plus mean R² of the indices and mean AUROC of the labels.

        Returns:
            ``loss_*`` (as in training, over all validation subjects), ``r2_mean`` and ``auroc_mean``
            (means over the targets with enough labels; NaN when none).
        """
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            batch = move_to_device(batch, accelerator.device)
            if self._cached(model):
                batch = self._with_features(model, batch)
            with accelerator.autocast():
                outputs = model(batch)
            parts.setdefault("index", []).append(batch["index"])
            for key, value in outputs.items():
                parts.setdefault(f"out_{key}", []).append(value.float())
            for key, value in self._target_tensors(batch, accelerator.device).items():
                parts.setdefault(f"y_{key}", []).append(value.float())
        if not parts:
            raise InputError(self.config.data.path, "validation split is empty on this process")
        gathered = {}
        for key, chunks in parts.items():
            local = torch.cat(chunks)
            padded = accelerator.pad_across_processes(local, dim=0, pad_index=-1 if key == "index" else 0)
            gathered[key] = accelerator.gather(padded)
        keep = gathered["index"] >= 0
        order = torch.argsort(gathered["index"][keep])
        data = {k: v[keep][order] for k, v in gathered.items()}
        outputs = {k[len("out_"):]: v for k, v in data.items() if k.startswith("out_")}
        truth = {k[len("y_"):]: v for k, v in data.items() if k.startswith("y_")}
        if "multiclass" in truth:
            truth["multiclass"] = truth["multiclass"].long()
        terms = {k: float(v) for k, v in self._losses_from(outputs, truth).items()}
        r2, auroc = [], []
        for j in range(outputs["regression"].shape[1] if "regression" in outputs else 0):
            y, p = truth["regression"][:, j].cpu().numpy(), outputs["regression"][:, j].cpu().numpy()
            rows = np.isfinite(y)
            if rows.sum() >= 3:
                r2.append(regression_metrics(y[rows], p[rows])["r2"])
        for j in range(outputs["binary"].shape[1] if "binary" in outputs else 0):
            y = truth["binary"][:, j].cpu().numpy()
            p = torch.sigmoid(outputs["binary"][:, j]).cpu().numpy()
            rows = np.isfinite(y)
            if rows.sum() and 0 < y[rows].sum() < rows.sum():
                auroc.append(classification_metrics(y[rows], p[rows], threshold=0.5)["auroc"])
        terms["r2_mean"] = float(np.mean(r2)) if r2 else math.nan
        terms["auroc_mean"] = float(np.mean(auroc)) if auroc else math.nan
        return terms

    def _losses_from(self, outputs: dict, truth: dict) -> dict[str, torch.Tensor]:
        """`losses` on already-converted targets (standardised regression, class indices)."""
        fake_batch_targets = {}
        t = self.targets
        # Rebuild a batch whose targets convert back to `truth` (regression de-standardised).
        if "regression" in truth:
            mean = torch.tensor(self.standardizer.mean, device=truth["regression"].device)
            std = torch.tensor(self.standardizer.std, device=truth["regression"].device)
            values = truth["regression"] * std + mean
            fake_batch_targets.update({c: values[:, j] for j, c in enumerate(t.regression)})
        if "binary" in truth:
            fake_batch_targets.update({c: truth["binary"][:, j] for j, c in enumerate(t.binary)})
        if "multiclass" in truth:
            y = truth["multiclass"].float()
            fake_batch_targets[t.multiclass] = torch.where(y >= 0, y, torch.full_like(y, math.nan))
        return self.losses(outputs, {"targets": fake_batch_targets})

    # --- export ----------------------------------------------------------------------------------------------
    def export(self, model, run_dir):
        """Calibrate on the validation split, record the provenance, save ``RUN/model`` and ``RUN/ecg_encoder``."""
        c, o = self.config, self.options
        model.config.provenance = self.provenance(run_dir, model)
        if c.data.val_split is not None:
            device = str(next(model.parameters()).device)
            val_set = open_heads_split(c.data.path, c.data.val_split, self.targets.columns)
            predictions = predict_split(model, val_set, batch_size=c.data.val_batch_size or c.data.batch_size,
                                        device=device, precision="bf16" if c.mixed_precision == "bf16" else "fp32")
            calibrate(model, predictions, c.data.val_split, o.interval_coverage)
        return {"model": model.save_pretrained(run_dir / "model"),
                "ecg_encoder": model.encoder.save_pretrained(run_dir / "ecg_encoder")}

    def provenance(self, run_dir: Path, model) -> dict:
        """How the model was made: mode, initialisation, data, subjects, ECG preprocessing, demographics."""
        c, o, info = self.config, self.options, self.split_info
        has_info = (Path(c.data.path) / DATASET_YAML).is_file()
        dataset_info = read_dataset_info(c.data.path) if has_info else {}
        provenance = {
            "task": "heads", "mode": o.mode, "run": str(run_dir), "data": str(c.data.path),
            "train_split": c.data.train_split, "val_split": c.data.val_split,
            "label_fraction": o.label_fraction, "fraction_seed": o.fraction_seed, "balance": o.balance,
            "n_train_split": info.n_split, "n_train_labelled": info.n_labelled, "n_train_used": info.n_selected,
            "init_ecg_encoder": c.init.ecg_encoder, "init_model": c.init.model,
            "encoder": type(model.encoder).__name__, "dropped_targets": list(info.dropped_targets),
            "ecg_preprocessing": (dataset_info.get("config") or {}).get("ecg"),
            "seed": c.seed, "cardiacnets_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if getattr(model.encoder.config, "film", False) and self.demographics is not None:
            # The normaliser of the run (RUN/demographics.json), as predict_record standardises with it.
            provenance["demographics"] = self.demographics.to_config()
        return provenance


def _masked_mean_per_target(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean over targets of each target's mean over its known entries; (B, k) → scalar (0 with a graph if none)."""
    counts = known.sum(dim=0)
    sums = (values * known).sum(dim=0)
    present = counts > 0
    if not present.any():
        return values.sum() * 0.0
    return (sums[present] / counts[present]).mean()


def _saved_encoder_spec(folder: str, model_name: str, overrides: dict):
    """The encoder of a saved folder and an `EncoderSpec` that rebuilds its architecture.

    Args:
        folder: an ``ecg_encoder`` export, an `ECGViT`/`ResNet1D`, or a saved `ECGMAE`.
        model_name: ``model.name`` of the config when set explicitly (must build the same class).
        overrides: ``model.overrides`` of the config: each must equal the saved encoder's value
            (so one config describes the architecture of both the initialised and the scratch runs).

    Returns:
        ``(encoder, spec)``: the spec names a registered model of the encoder's config class
        with the saved config as overrides.
    """
    encoder = load_saved_encoder(folder, "ecg")
    config_class = type(encoder.config)
    saved = to_dict(encoder.config)
    for key, value in overrides.items():
        if key not in saved or saved[key] != to_dict(value):
            raise InputError(folder, f"the saved encoder has {key}={saved.get(key)!r} but model.overrides sets "
                                     f"{key}={value!r}")
    if model_name:
        if type(get_model_config(model_name)) is not config_class:
            raise InputError(folder, f"holds a {type(encoder).__name__} but model.name {model_name!r} builds "
                                     f"another kind of encoder")
        name = model_name
    else:
        names = [n for n in list_models() if type(get_model_config(n)) is config_class]
        if not names:
            raise InputError(folder, f"no registered model builds a {type(encoder).__name__}")
        name = names[0]
    return encoder, EncoderSpec(name, saved)
