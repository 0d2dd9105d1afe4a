"""The ECG condition of the generator: the frozen, aligned ECG encoder as a diffusers model.

CardiacNets (arXiv 2411.13602) conditions its cine generator on the ECG
encoder aligned with the CMR encoders (the ``align`` stage). `ECGConditionEncoder`
holds that encoder — any cardiacnets ECG encoder (`ECGViT`, `ResNet1D`), built
by class name from the package's allow-list of model classes, never from
pickled code — and, when it comes from a `CardiacCLIP`, the CLIP model's ECG
projection. For a batch of standard ECGs it returns an `ECGCondition`: the
encoder's tokens (``forward_features``: (B, T', width)) for cross-attention,
and the pooled embedding in the aligned space (``forward_head``, then the
CLIP projection, L2-normalised: the vector that carries the alignment).

It is a diffusers ``ModelMixin`` / ``ConfigMixin`` so that it is saved and
loaded as a component of `ECGToCMRPipeline` like the autoencoder and the
denoiser (``condition_encoder/config.json`` + safetensors). It is never
trained by the generation stages (``requires_grad`` is off and it stays in
evaluation mode, so batch-norm statistics are fixed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin found here by the pipeline loader)
from diffusers.configuration_utils import register_to_config
from torch import nn

from cardiacnets.config import from_dict, to_dict
from cardiacnets.errors import InputError
from cardiacnets.models.clip import CardiacCLIP, _projection
from cardiacnets.models.ecg_mae import ECGMAE
from cardiacnets.models.encoders import ECG_ENCODERS, is_ecg_encoder
from cardiacnets.models.pretrained import load_pretrained


@dataclass
class ECGCondition:
    """What the denoiser is conditioned on.

    Attributes:
        tokens: (B, T', width) ECG encoder tokens.
        embedding: (B, embed_dim) pooled embedding in the aligned space (unit norm when normalised).
        demographics: (B, n) standardised demographics, or ``None``.
        demographics_mask: (B, n) bool, False where a value is missing, or ``None``.
    """

    tokens: torch.Tensor
    embedding: torch.Tensor
    demographics: torch.Tensor | None = None
    demographics_mask: torch.Tensor | None = None

    def repeat_interleave(self, n: int) -> ECGCondition:
        """Each subject's condition `n` times in a row (several samples per ECG)."""
        def rep(x):
            return None if x is None else x.repeat_interleave(n, dim=0)

        return ECGCondition(rep(self.tokens), rep(self.embedding), rep(self.demographics),
                            rep(self.demographics_mask))


def _build_encoder(encoder_class: str, encoder_config: dict) -> nn.Module:
    """A cardiacnets ECG encoder by class name (`ECG_ENCODERS` only) and config."""
    cls = {encoder.__name__: encoder for encoder in ECG_ENCODERS}.get(encoder_class)
    if cls is None:
        raise ValueError(f"{encoder_class!r} is not a cardiacnets ECG encoder class")
    return cls(from_dict(cls.config_class, dict(encoder_config), where=encoder_class))


class ECGConditionEncoder(ModelMixin, ConfigMixin):
    """A frozen ECG encoder (plus optional CLIP projection) that turns ECGs into an `ECGCondition`.

    Args:
        encoder_class: cardiacnets class name (``ResNet1D``, ``ECGViT``).
        encoder_config: the encoder's config as a dict (``to_dict(encoder.config)``).
        projection: the CLIP projection after the encoder's head: ``linear``, ``mlp`` or ``none``.
        projection_dim: output size of the projection (the aligned space).
        normalize: L2-normalise the pooled embedding (as CLIP does).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, encoder_class: str = "ResNet1D", encoder_config: dict[str, Any] | None = None,
                 projection: str = "none", projection_dim: int | None = None, normalize: bool = True):
        super().__init__()
        self.encoder = _build_encoder(encoder_class, encoder_config or {})
        head_dim = self.encoder.config.embed_dim
        self.ecg_projection = _projection(projection, head_dim, projection_dim or head_dim)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ECGConditionEncoder:
        """Always evaluation mode: the encoder is frozen (fixed batch-norm statistics, no dropout)."""
        return super().train(False)

    @property
    def token_dim(self) -> int:
        """Width of the tokens."""
        return int(self.encoder.width)

    @property
    def embed_dim(self) -> int:
        """Size of the pooled embedding."""
        return int(self.config.projection_dim or self.encoder.config.embed_dim)

    @property
    def n_samples(self) -> int:
        """ECG length the encoder was trained on (samples per lead)."""
        return int(self.encoder.config.n_samples)

    @property
    def uses_demographics(self) -> bool:
        """The encoder itself needs demographics (FiLM)."""
        return bool(getattr(self.encoder.config, "film", False))

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                demographics: torch.Tensor | None = None) -> ECGCondition:
        """Encode standard ECGs.

        Args:
            ecg: (B, 12, T) standard ECGs in mV.
            lead_mask: (B, 12) bool, False where a lead is absent.
            demographics: (B, n) standardised demographics; passed to the encoder only when it
                uses FiLM, and kept in the condition either way.

        Returns:
            The `ECGCondition` (float32 tokens and embedding).
        """
        film = demographics if self.uses_demographics else None
        tokens = self.encoder.forward_features(ecg, lead_mask, film)
        embedding = self.ecg_projection(self.encoder.forward_head(tokens)).float()
        if self.config.normalize:
            embedding = F.normalize(embedding, dim=-1)
        return ECGCondition(tokens.float(), embedding, demographics)

    @classmethod
    def from_saved(cls, folder: str | os.PathLike) -> ECGConditionEncoder:
        """The condition encoder of a saved alignment model or ECG encoder (``save_pretrained`` folder).

        A `CardiacCLIP` folder (``ALIGN_RUN/model``) gives its ECG encoder and ECG projection
        (embeddings in the aligned space); an encoder folder (``ALIGN_RUN/ecg_encoder``) or a
        saved `ECGMAE` gives the encoder with its own head. An alignment run folder
        (holding ``model/``) is read as its ``model``.

        Args:
            folder: the saved folder.

        Returns:
            The encoder with the saved weights, frozen.

        Raises:
            InputError: not a saved model, or not one holding an ECG encoder.
        """
        folder = Path(folder)
        if (folder / "model" / "config.json").is_file() and not (folder / "config.json").is_file():
            folder = folder / "model"
        saved = load_pretrained(folder)
        if isinstance(saved, CardiacCLIP):
            encoder, projection = saved.ecg_encoder, saved.ecg_projection
            kind, dim = saved.config.projection, saved.config.embed_dim
        else:
            encoder = saved.encoder if isinstance(saved, ECGMAE) else saved
            projection, kind, dim = None, "none", None
        if not is_ecg_encoder(encoder):
            raise InputError(folder, f"holds a {type(saved).__name__}, not an ECG encoder or alignment model")
        model = cls(encoder_class=type(encoder).__name__, encoder_config=to_dict(encoder.config), projection=kind,
                    projection_dim=dim)
        model.encoder.load_state_dict(encoder.state_dict())
        if projection is not None:
            model.ecg_projection.load_state_dict(projection.state_dict())
        return model.eval()
