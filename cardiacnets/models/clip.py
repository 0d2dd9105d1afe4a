"""CardiacCLIP: the ECG encoder aligned with one CMR encoder per cine view.

CardiacNets (arXiv 2411.13602) aligns its ECG encoder with short-axis and
4-chamber CMR encoders CLIP-style (Radford et al., 2021): each encoder's
embedding is projected into a shared space (256-d in the paper) and
L2-normalised; a symmetric InfoNCE between the ECG embedding and each view's
embedding, summed over views (``cardiacnets.losses.ClipLoss``), pulls a
subject's ECG towards its own cines. The temperature is fixed (0.1) or
learned (``logit_scale`` stored as log(1 / temperature), as in CLIP); the CMR
encoders are frozen in the paper or trained.

Encoders are named by registry entry plus overrides (`EncoderSpec`), so any
registered ECG encoder (`ECGViT`, `ResNet1D`) or `CMREncoder` can be aligned.
`build_cardiac_clip` (what ``create_model("cardiac_clip_*")`` runs) also
initialises encoders from saved folders (``init_from``): an `ECGViT`/`ResNet1D`
or the encoder inside a saved `ECGMAE`; a `CMREncoder` or the view's encoder
inside a saved `CMRMaskedModel`. The saved encoder's config then becomes the
spec's overrides, so the CLIP model's own config describes it completely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cardiacnets.config import to_dict
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.models.cmr_encoder import CMREncoder
from cardiacnets.models.encoders import is_ecg_encoder, load_saved_encoder
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class
from cardiacnets.models.registry import create_model, get_model_config

#: Largest logit scale (CLIP's clamp): temperature never below 0.01.
MAX_LOGIT_SCALE = 100.0


@dataclass
class EncoderSpec:
    """An encoder by registry name.

    Attributes:
        model: registered model name (``cardiacnets.models.list_models()``).
        overrides: config fields changed from the registered defaults.
        init_from: folder of a saved model (``save_pretrained``) to initialise from, or ``None``.
    """

    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass
class CardiacCLIPConfig:
    """A `CardiacCLIP`. Defaults: the demo model (tiny ECG ViT, small CMR encoders).

    Attributes:
        ecg: the ECG encoder.
        cmr: the CMR encoder of each view (specs of views not in ``views`` are ignored).
        views: the cine views aligned with the ECG (batch keys ``cmr_<view>``).
        embed_dim: size of the shared embedding space.
        projection: ``linear`` (no bias, as CLIP), ``mlp`` (Linear-GELU-Linear) or ``none``
            (the encoders' embeddings are used as they are; their sizes must equal ``embed_dim``).
        temperature: initial (or fixed) softmax temperature.
        learnable_temperature: learn the temperature (else it stays fixed).
        freeze_cmr: freeze the CMR encoders (no gradients, batch-norm statistics fixed); their
            projections still train.
    """

    ecg: EncoderSpec = field(default_factory=lambda: EncoderSpec("ecg_vit_tiny"))
    cmr: dict[str, EncoderSpec] = field(default_factory=lambda: {
        "sa": EncoderSpec("cmr_encoder_demo"), "la_4ch": EncoderSpec("cmr_encoder_demo")})
    views: list[str] = field(default_factory=lambda: ["sa", "la_4ch"])
    embed_dim: int = 256
    projection: Literal["linear", "mlp", "none"] = "linear"
    temperature: float = 0.1
    learnable_temperature: bool = False
    freeze_cmr: bool = False

    def validate(self) -> None:
        if not self.views:
            raise ConfigError("CardiacCLIPConfig.views is empty")
        missing = [v for v in self.views if v not in self.cmr]
        if missing:
            raise ConfigError(f"CardiacCLIPConfig: no cmr encoder spec for view(s) {missing}")
        if not 0.0 < self.temperature or 1.0 / self.temperature > MAX_LOGIT_SCALE:
            raise ConfigError(f"CardiacCLIPConfig.temperature must be in [{1 / MAX_LOGIT_SCALE}, inf), got {self.temperature}")
        if self.embed_dim <= 0:
            raise ConfigError(f"CardiacCLIPConfig.embed_dim must be positive, got {self.embed_dim}")


def _projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    if in_dim != out_dim:
        raise ConfigError(f"CardiacCLIPConfig.projection 'none' needs encoder embeddings of size embed_dim "
                          f"{out_dim}, got {in_dim}")
    return nn.Identity()


def _build_encoder(spec: EncoderSpec, where: str) -> nn.Module:
    try:
        return create_model(spec.model, **spec.overrides)
    except ConfigError as err:
        raise ConfigError(f"CardiacCLIPConfig.{where}: {err}") from None


@pretrained_class
class CardiacCLIP(nn.Module, PretrainedMixin):
    """ECG encoder + per-view CMR encoders with projections into one embedding space.

    Batches are dicts: ``ecg`` (B, 12, T), optional ``ecg_lead_mask`` (B, 12)
    and ``demographics`` (B, n) (used when the ECG encoder has FiLM), and
    ``cmr_<view>`` (B, slices, frames, H, W) per view.

    Args:
        config: the `CardiacCLIPConfig` (encoders are built from their specs; ``init_from``
            is not read here — see `build_cardiac_clip`).
    """

    config_class = CardiacCLIPConfig

    def __init__(self, config: CardiacCLIPConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.ecg_encoder = _build_encoder(config.ecg, "ecg")
        if not is_ecg_encoder(self.ecg_encoder):
            raise ConfigError(f"CardiacCLIPConfig.ecg.model {config.ecg.model!r} is not an ECG encoder")
        self.cmr_encoders = nn.ModuleDict()
        for view in config.views:
            encoder = _build_encoder(config.cmr[view], f"cmr.{view}")
            if not isinstance(encoder, CMREncoder):
                raise ConfigError(f"CardiacCLIPConfig.cmr.{view}.model {config.cmr[view].model!r} is not a CMR encoder")
            self.cmr_encoders[view] = encoder
        self.ecg_projection = _projection(config.projection, self.ecg_encoder.config.embed_dim, config.embed_dim)
        self.cmr_projections = nn.ModuleDict({
            v: _projection(config.projection, self.cmr_encoders[v].config.embed_dim, config.embed_dim)
            for v in config.views})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)),
                                        requires_grad=config.learnable_temperature)
        if config.freeze_cmr:
            self.cmr_encoders.requires_grad_(False)
            self.cmr_encoders.eval()

    def train(self, mode: bool = True) -> "CardiacCLIP":
        """Set training mode; frozen CMR encoders stay in eval mode (fixed batch-norm statistics)."""
        super().train(mode)
        if self.config.freeze_cmr:
            self.cmr_encoders.eval()
        return self

    def encode_ecg(self, batch: dict) -> torch.Tensor:
        """L2-normalised ECG embeddings.

        Args:
            batch: dict with ``ecg`` and optionally ``ecg_lead_mask`` and ``demographics``.

        Returns:
            (B, embed_dim) float32, unit norm.
        """
        demographics = batch.get("demographics") if self.ecg_encoder.config.film else None
        z = self.ecg_encoder(batch["ecg"], batch.get("ecg_lead_mask"), demographics)
        return F.normalize(self.ecg_projection(z).float(), dim=-1)

    def encode_cmr(self, batch: dict, view: str) -> torch.Tensor:
        """L2-normalised embeddings of one cine view.

        Args:
            batch: dict with ``cmr_<view>`` (B, slices, frames, H, W).
            view: a configured view.

        Returns:
            (B, embed_dim) float32, unit norm.
        """
        if view not in self.cmr_encoders:
            raise ValueError(f"view {view!r} is not aligned by this model (views: {', '.join(self.cmr_encoders)})")
        encoder = self.cmr_encoders[view]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_cmr):
            z = encoder(batch[f"cmr_{view}"])
        return F.normalize(self.cmr_projections[view](z).float(), dim=-1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Embed the ECG and every view.

        Returns:
            ``{"ecg": (B, D), "cmr_<view>": (B, D) per view, "logit_scale": scalar}``; embeddings are
            unit-norm float32, ``logit_scale`` is the multiplier 1 / temperature (exp of the stored
            log value, clamped at 100).
        """
        out = {"ecg": self.encode_ecg(batch)}
        for view in self.config.views:
            out[f"cmr_{view}"] = self.encode_cmr(batch, view)
        out["logit_scale"] = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return out


def _resolve_init(spec: EncoderSpec, where: str, view: str | None) -> tuple[EncoderSpec, nn.Module | None]:
    """Load ``spec.init_from`` and turn the saved config into the spec's overrides."""
    if spec.init_from is None:
        return spec, None
    saved = load_saved_encoder(spec.init_from, "ecg" if view is None else "cmr", view, where)
    saved_config = to_dict(saved.config)
    registered = get_model_config(spec.model)
    if type(registered) is not type(saved.config):
        raise InputError(spec.init_from, f"holds a {type(saved).__name__} encoder but {where}.model "
                                         f"{spec.model!r} is a {type(registered).__name__}")
    for key, value in spec.overrides.items():
        if key in saved_config and saved_config[key] != to_dict(value):
            raise InputError(spec.init_from, f"the saved encoder has {key}={saved_config[key]!r} but "
                                             f"{where}.overrides sets {key}={value!r}")
    return EncoderSpec(spec.model, saved_config, spec.init_from), saved


def build_cardiac_clip(config: CardiacCLIPConfig) -> CardiacCLIP:
    """Build a `CardiacCLIP`, initialising encoders from their ``init_from`` folders.

    Args:
        config: the model config; specs with ``init_from`` get the saved encoder's
            config as overrides (the returned model's ``config`` records it).

    Returns:
        The model, with the saved encoders' weights copied in.

    Raises:
        InputError: a folder that is not a saved model, holds the wrong kind of encoder,
            or contradicts the spec's overrides.
    """
    config.validate()
    ecg_spec, ecg_saved = _resolve_init(config.ecg, "ecg", None)
    cmr_specs, cmr_saved = dict(config.cmr), {}
    for view in config.views:
        cmr_specs[view], cmr_saved[view] = _resolve_init(config.cmr[view], f"cmr.{view}", view)
    resolved = CardiacCLIPConfig(**{**vars(config), "ecg": ecg_spec, "cmr": cmr_specs})
    model = CardiacCLIP(resolved)
    if ecg_saved is not None:
        model.ecg_encoder.load_state_dict(ecg_saved.state_dict())
    for view, saved in cmr_saved.items():
        if saved is not None:
            model.cmr_encoders[view].load_state_dict(saved.state_dict())
    return model
