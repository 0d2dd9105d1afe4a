"""`HeadsModel`: an ECG encoder with heads for the cardiac indices and the disease labels.

The downstream stage of CardiacNets (arXiv 2411.13602): the ECG encoder —
aligned with the CMR encoders, MAE-pretrained, or trained from scratch — is
followed by a regression head for the CMR indices (multi-output, on
standardised targets), one logit per binary screening label and one softmax
head for the cardiomyopathy subtype. The heads are linear on the encoder's
embedding by default (``hidden_dim`` adds one shared GELU layer); with
``freeze_encoder`` only the heads train (a linear probe) and the encoder stays
in evaluation mode.

The model describes itself completely in its config (``config.json`` of
``save_pretrained``): the encoder spec, the targets with their units, the
training split's target standardisation, the lead subset it was trained on,
and — written after training — the decision thresholds and prediction-interval
widths measured on the validation split (`HeadsCalibration`) and its
provenance (mode, initialisation, data, ECG preprocessing), so that
`cardiacnets.heads.predict.predict_record` needs nothing but the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.io.ecg_leads import lead_mask, resolve_lead_subset
from cardiacnets.models.clip import EncoderSpec
from cardiacnets.models.encoders import is_ecg_encoder
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class
from cardiacnets.models.registry import create_model


@dataclass
class HeadsCalibration:
    """Decision thresholds and prediction intervals measured on held-out (validation) subjects.

    Attributes:
        split: the split they were measured on (empty until measured).
        n_subjects: subjects of that split.
        thresholds: binary column → probability threshold maximising sensitivity + specificity
            (Youden's J) on that split.
        interval_coverage: nominal coverage of the prediction intervals.
        interval_halfwidth: regression column → half-width of the split-conformal prediction
            interval in the target's unit: the ⌈(n + 1) · coverage⌉-th smallest absolute
            residual of the n validation subjects (Lei et al., JASA 2018), so
            ``prediction ± halfwidth`` covers a new subject's value with probability
            ≥ coverage when subjects are exchangeable.
    """

    split: str = ""
    n_subjects: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    interval_coverage: float = 0.95
    interval_halfwidth: dict[str, float] = field(default_factory=dict)


@dataclass
class HeadsModelConfig:
    """A `HeadsModel`.

    Attributes:
        encoder: the ECG encoder (registry name + overrides; an initialised encoder's
            full saved config is recorded as the overrides).
        regression_targets: regression columns (CMR indices), in output order.
        regression_units: unit of each.
        target_mean: training mean of each regression target (its unit).
        target_std: training standard deviation of each regression target.
        binary_targets: binary label columns, in output order.
        multiclass_target: name of the multiclass target, or ``None``.
        multiclass_classes: its classes, in output order.
        hidden_dim: width of a shared hidden layer before the heads (0: linear heads).
        dropout: dropout on the embedding before the heads.
        freeze_encoder: keep the encoder fixed (linear probe): no gradients, evaluation mode.
        leads: lead subset the model sees (``"I"``, ``"II"``, ``"limb"``, ``"I,II,V1"``;
            ``None`` = every recorded lead); other leads are masked out before the encoder.
        calibration: thresholds and interval widths from the validation split.
        provenance: how the model was made (mode, initialisation, data, ECG preprocessing, ...).
    """

    encoder: EncoderSpec = field(default_factory=lambda: EncoderSpec("ecg_resnet1d"))
    regression_targets: list[str] = field(default_factory=list)
    regression_units: list[str] = field(default_factory=list)
    target_mean: list[float] = field(default_factory=list)
    target_std: list[float] = field(default_factory=list)
    binary_targets: list[str] = field(default_factory=list)
    multiclass_target: str | None = None
    multiclass_classes: list[str] = field(default_factory=list)
    hidden_dim: int = 0
    dropout: float = 0.0
    freeze_encoder: bool = False
    leads: str | None = None
    calibration: HeadsCalibration = field(default_factory=HeadsCalibration)
    provenance: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        k = len(self.regression_targets)
        if not (len(self.regression_units) == len(self.target_mean) == len(self.target_std) == k):
            raise ConfigError("HeadsModelConfig: regression_targets, regression_units, target_mean and target_std "
                              "must have equal lengths")
        if any(s <= 0 for s in self.target_std):
            raise ConfigError("HeadsModelConfig.target_std must be positive")
        if (self.multiclass_target is None) != (not self.multiclass_classes):
            raise ConfigError("HeadsModelConfig: multiclass_target and multiclass_classes go together")
        if self.multiclass_classes and len(self.multiclass_classes) < 2:
            raise ConfigError("HeadsModelConfig.multiclass_classes needs at least two classes")
        if not (k or self.binary_targets or self.multiclass_target):
            raise ConfigError("HeadsModelConfig: no target (regression, binary or multiclass)")
        if self.hidden_dim < 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("HeadsModelConfig: hidden_dim must be >= 0 and dropout in [0, 1)")
        if self.leads is not None:
            try:
                resolve_lead_subset(self.leads)
            except ValueError as err:
                raise ConfigError(f"HeadsModelConfig.leads: {err}") from None


@pretrained_class
class HeadsModel(nn.Module, PretrainedMixin):
    """ECG encoder + regression, binary and multiclass heads.

    Batches are dicts with ``ecg`` (B, 12, T) in mV, optional ``ecg_lead_mask`` (B, 12)
    and ``demographics`` (B, n) (used when the encoder has FiLM), or precomputed
    ``features`` (B, embed_dim) from `encode` (a frozen encoder's cached embeddings).

    Args:
        config: the `HeadsModelConfig`.
    """

    config_class = HeadsModelConfig

    def __init__(self, config: HeadsModelConfig):
        super().__init__()

        config.validate()
        self.config = config
        try:
            self.encoder = create_model(config.encoder.model, **config.encoder.overrides)
        except ConfigError as err:
            raise ConfigError(f"HeadsModelConfig.encoder: {err}") from None
        if not is_ecg_encoder(self.encoder):
            raise ConfigError(f"HeadsModelConfig.encoder.model {config.encoder.model!r} is not an ECG encoder")
        width = self.encoder.config.embed_dim
        self.dropout = nn.Dropout(config.dropout)
        self.hidden = nn.Identity()
        if config.hidden_dim:
            self.hidden = nn.Sequential(nn.Linear(width, config.hidden_dim), nn.GELU(), nn.Dropout(config.dropout))
            width = config.hidden_dim
        self.regression_head = nn.Linear(width, len(config.regression_targets)) if config.regression_targets else None
        self.binary_head = nn.Linear(width, len(config.binary_targets)) if config.binary_targets else None
        self.multiclass_head = nn.Linear(width, len(config.multiclass_classes)) if config.multiclass_classes else None
        # Derived from the config (not saved twice in the weights).
        self.register_buffer("target_mean", torch.tensor(config.target_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("target_std", torch.tensor(config.target_std, dtype=torch.float32), persistent=False)
        lead_keep = torch.ones(self.encoder.config.n_leads, dtype=torch.bool)
        if config.leads is not None:
            lead_keep = torch.from_numpy(lead_mask(config.leads))
        self.register_buffer("lead_keep", lead_keep, persistent=False)
        self.set_encoder_frozen(config.freeze_encoder)

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (linear probe) or unfreeze (fine-tuning) the encoder."""
        self.config.freeze_encoder = frozen
        self.encoder.requires_grad_(not frozen)
        if frozen:
            self.encoder.eval()

    def train(self, mode: bool = True) -> HeadsModel:
        """Set training mode; a frozen encoder stays in evaluation mode (fixed batch-norm statistics)."""
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def encode(self, batch: dict, leads: str | None = None) -> torch.Tensor:
        """The encoder's embedding of the ECGs, seen through the model's lead subset.

        Args:
            batch: ``ecg`` (B, 12, T), optional ``ecg_lead_mask`` (B, 12) and ``demographics``.
            leads: a further lead subset to show (reduced-lead evaluation); ``None`` = no further reduction.

        Returns:
            (B, embed_dim) float32 embeddings.
        """
        ecg = batch["ecg"]
        present = batch.get("ecg_lead_mask")
        present = torch.ones(ecg.shape[:2], dtype=torch.bool, device=ecg.device) if present is None else present.bool()
        keep = self.lead_keep
        if leads is not None:
            keep = keep & torch.from_numpy(lead_mask(leads)).to(keep.device)
        lead_mask_ = present & keep
        ecg = ecg * lead_mask_.unsqueeze(-1).to(ecg.dtype)
        demographics = batch.get("demographics") if getattr(self.encoder.config, "film", False) else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            return self.encoder(ecg, lead_mask_, demographics).float()

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on (B, embed_dim) features.

        Returns:
            ``regression`` (B, k) standardised predictions, ``binary`` (B, b) logits,
            ``multiclass`` (B, c) logits; only the heads the model has.
        """
        h = self.hidden(self.dropout(features))
        out = {}
        if self.regression_head is not None:
            out["regression"] = self.regression_head(h).float()
        if self.binary_head is not None:
            out["binary"] = self.binary_head(h).float()
        if self.multiclass_head is not None:
            out["multiclass"] = self.multiclass_head(h).float()
        return out

    def forward(self, batch: dict, leads: str | None = None) -> dict[str, torch.Tensor]:
        """`encode` (or the batch's precomputed ``features``) then `forward_heads`."""
        features = batch["features"] if "features" in batch else self.encode(batch, leads)
        return self.forward_heads(features)

    def to_units(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model outputs → predictions: indices in their units, probabilities.

        Returns:
            ``regression`` (B, k) in the targets' units, ``binary`` (B, b) probabilities,
            ``multiclass`` (B, c) class probabilities; only the heads the model has.
        """
        out = {}
        if "regression" in outputs:
            out["regression"] = outputs["regression"] * self.target_std + self.target_mean
        if "binary" in outputs:
            out["binary"] = torch.sigmoid(outputs["binary"])
        if "multiclass" in outputs:
            out["multiclass"] = torch.softmax(outputs["multiclass"], dim=-1)
        return out

    @torch.no_grad()
    def predict(self, batch: dict, leads: str | None = None) -> dict[str, torch.Tensor]:
        """`forward` then `to_units` without gradients (call ``eval()`` first)."""
        return self.to_units(self.forward(batch, leads))
