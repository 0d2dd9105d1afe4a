"""Masked-autoencoder pretraining of the ECG ViT, with an optional contrastive term.

CardiacNets (arXiv 2411.13602) pretrains its ECG encoder as a masked
autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners",
2022) with a mask ratio of 0.8: the encoder sees a random 20 % of the lead ×
time patch tokens, a light transformer decoder fills in mask tokens at the
other positions and predicts their samples; the loss is the mean squared
error on masked patches, against per-patch normalised targets.

The hybrid objective adds InfoNCE between the class-token embeddings of two
augmented views of the same ECG (random time shift, amplitude scale, Gaussian
noise, lead masking — `cardiacnets.data.transforms.augment_ecg_view`), weighted by
``contrastive_weight``; 0 gives the plain MAE. Both views go through the
encoder and decoder as one batch. Patches of absent leads and of samples
outside the recording (``ecg_sample_mask``) are never targets; absent leads'
tokens are the encoder's mask token, so they carry no signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from timm.layers import trunc_normal_
from torch import nn

from cardiacnets.data.transforms import ECGAugmentConfig, augment_ecg_view
from cardiacnets.errors import ConfigError
from cardiacnets.models.ecg_vit import ECGViT, ECGViTConfig
from cardiacnets.models.layers import info_nce, init_weights, transformer_blocks
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class


@dataclass
class ECGMAEConfig:
    """An `ECGMAE`: the encoder to pretrain and the decoder and objective around it.

    Attributes:
        encoder: the `ECGViTConfig` of the encoder being pretrained.
        mask_ratio: fraction of patch tokens hidden from the encoder.
        decoder_width: token width of the decoder.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        norm_target: predict each patch normalised to zero mean and unit variance.
        contrastive_weight: weight of the two-view InfoNCE term (0 = plain MAE).
        contrastive_temperature: temperature of that term.
        augment: the view augmentations (used when ``contrastive_weight`` > 0).
    """

    encoder: ECGViTConfig = field(default_factory=ECGViTConfig)
    mask_ratio: float = 0.8
    decoder_width: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 2
    norm_target: bool = True
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    augment: ECGAugmentConfig = field(default_factory=ECGAugmentConfig)

    def validate(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"ECGMAEConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.decoder_width % self.decoder_heads:
            raise ConfigError(f"ECGMAEConfig: decoder_width {self.decoder_width} is not divisible by decoder_heads {self.decoder_heads}")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ConfigError("ECGMAEConfig: contrastive_weight must be >= 0 and contrastive_temperature > 0")
        self.encoder.validate()
        self.augment.validate()


# --- the model ---------------------------------------------------------------------------------------------------

def random_patch_masking(present: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose ``n_keep`` visible patches per row, uniformly among present ones first.

    Args:
        present: (B, N) bool, patches of recorded leads; absent ones are only kept
            when a row has fewer than ``n_keep`` present patches.
        n_keep: visible patches per row.

    Returns:
        ``ids_keep`` (B, n_keep) indices of the visible patches, ``ids_restore``
        (B, N) the inverse permutation, ``masked`` (B, N) bool, True = hidden.
    """
    noise = torch.rand(present.shape, device=present.device) + (~present).float()  # absent patches sort last
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    masked = torch.ones(present.shape, dtype=torch.bool, device=present.device)
    masked[:, :n_keep] = False
    return ids_shuffle[:, :n_keep], ids_restore, masked.gather(1, ids_restore)


@pretrained_class
class ECGMAE(nn.Module, PretrainedMixin):
    """Masked autoencoder (plus optional two-view InfoNCE) around an `ECGViT`.

    ``forward(batch)`` reads ``ecg`` (B, 12, T) and, when present,
    ``ecg_lead_mask`` (B, 12), ``ecg_sample_mask`` (B, T) and ``demographics``
    (B, n) (used only when the encoder has FiLM). ``.encoder`` is the
    `ECGViT` to export after pretraining.

    Args:
        config: the `ECGMAEConfig`.
    """

    config_class = ECGMAEConfig

    def __init__(self, config: ECGMAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        enc = config.encoder
        self.encoder = ECGViT(enc)
        self.n_keep = max(1, round(enc.n_tokens * (1.0 - config.mask_ratio)))
        self.decoder_embed = nn.Linear(enc.width, config.decoder_width)
        self.decoder_mask_token = nn.Parameter(torch.zeros(config.decoder_width))
        self.decoder_lead_embed = nn.Parameter(torch.zeros(enc.n_leads, config.decoder_width))
        self.decoder_time_embed = nn.Parameter(torch.zeros(enc.n_time_patches, config.decoder_width))
        self.decoder_blocks = transformer_blocks(config.decoder_width, config.decoder_depth, config.decoder_heads,
                                                 attention=enc.attention)
        self.decoder_norm = nn.LayerNorm(config.decoder_width)
        self.decoder_pred = nn.Linear(config.decoder_width, enc.patch_size)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_weights)
        for p in (self.decoder_mask_token, self.decoder_lead_embed, self.decoder_time_embed):
            trunc_normal_(p, std=0.02)

    def patchify(self, ecg: torch.Tensor) -> torch.Tensor:
        """(B, leads, samples) → (B, leads × time patches, patch_size), lead-major like the tokens."""
        return rearrange(ecg, "b l (p s) -> b (l p) s", s=self.config.encoder.patch_size)

    def patch_weights(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None,
                      sample_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, N) bool: patches of present leads whose samples are all valid (the possible targets)."""
        batch, n_leads, n_samples = ecg.shape
        n_time = n_samples // self.config.encoder.patch_size
        ok = torch.ones(batch, n_leads, n_time, dtype=torch.bool, device=ecg.device)
        if lead_mask is not None:
            ok = ok & rearrange(lead_mask.to(torch.bool), "b l -> b l 1")
        if sample_mask is not None:
            ok = ok & rearrange(sample_mask.to(torch.bool), "b (p s) -> b 1 p s", s=self.config.encoder.patch_size).all(-1)
        return rearrange(ok, "b l p -> b (l p)")

    def encode_masked(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None,
                      demographics: torch.Tensor | None, present: torch.Tensor):
        """Encode a random visible subset of patch tokens.

        Returns:
            ``latent`` (B, 1 + n_keep, width), ``ids_restore`` (B, N), ``masked`` (B, N) bool.
        """
        enc = self.encoder
        if ecg.shape[-1] != enc.config.n_samples:
            raise ValueError(f"ECGMAE expects {enc.config.n_samples} samples per lead, got {ecg.shape[-1]}")
        enc.check_input(ecg, lead_mask, demographics)
        tokens = enc.embed_patches(ecg, lead_mask)  # (B, N, width)
        ids_keep, ids_restore, masked = random_patch_masking(present, self.n_keep)
        visible = tokens.gather(1, repeat(ids_keep, "b n -> b n c", c=tokens.shape[-1]))
        return enc.run_blocks(visible, demographics), ids_restore, masked

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch from the visible latent tokens.

        Args:
            latent: (B, 1 + n_keep, width) from `encode_masked`.
            ids_restore: (B, N) inverse shuffle.

        Returns:
            (B, N, patch_size) predicted patches (normalised ones when ``norm_target``).
        """
        x = self.decoder_embed(latent)
        batch, n_tokens = ids_restore.shape
        fill = repeat(self.decoder_mask_token, "c -> b n c", b=batch, n=n_tokens - self.n_keep).to(x.dtype)
        patches = torch.cat([x[:, 1:], fill], dim=1)  # shuffled order: visible first
        patches = patches.gather(1, repeat(ids_restore, "b n -> b n c", c=x.shape[-1]))
        position = rearrange(rearrange(self.decoder_lead_embed, "l c -> l 1 c") + self.decoder_time_embed, "l p c -> (l p) c")
        x = torch.cat([x[:, :1], patches + position], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def reconstruction_loss(self, ecg: torch.Tensor, prediction: torch.Tensor, masked: torch.Tensor,
                            present: torch.Tensor) -> torch.Tensor:
        """Mean squared error over hidden, present patches (per-patch normalised targets if set)."""
        target = self.patchify(ecg).float()
        if self.config.norm_target:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True, unbiased=False)
            target = (target - mean) / torch.sqrt(var + 1e-6)
        per_patch = (prediction.float() - target).pow(2).mean(dim=-1)  # (B, N)
        weight = (masked & present).float()
        return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Pretraining losses for a batch.

        Args:
            batch: dict with ``ecg`` (B, 12, T) and optionally ``ecg_lead_mask``,
                ``ecg_sample_mask`` and ``demographics``.

        Returns:
            ``{"loss_mae": ...}`` plus ``"loss_contrastive"`` (already weighted) when
            ``contrastive_weight`` > 0; the objective is their sum.
        """
        ecg = batch["ecg"]
        lead_mask, sample_mask = batch.get("ecg_lead_mask"), batch.get("ecg_sample_mask")
        demographics = batch.get("demographics") if self.config.encoder.film else None
        hybrid = self.config.contrastive_weight > 0
        if hybrid:
            # Two augmented views, encoded and decoded as one batch of 2B.
            a = augment_ecg_view(ecg, lead_mask, sample_mask, self.config.augment)
            b = augment_ecg_view(ecg, lead_mask, sample_mask, self.config.augment)
            ecg = torch.cat([a["ecg"], b["ecg"]])
            lead_mask = torch.cat([a["ecg_lead_mask"], b["ecg_lead_mask"]])
            sample_mask = torch.cat([a["ecg_sample_mask"], b["ecg_sample_mask"]])
            if demographics is not None:
                demographics = torch.cat([demographics, demographics])
        present = self.patch_weights(ecg, lead_mask, sample_mask)
        latent, ids_restore, masked = self.encode_masked(ecg, lead_mask, demographics, present)
        prediction = self.decode(latent, ids_restore)
        losses = {"loss_mae": self.reconstruction_loss(ecg, prediction, masked, present)}
        if hybrid:
            z = F.normalize(self.encoder.forward_head(latent).float(), dim=-1)
            z_a, z_b = z.chunk(2)
            nce = info_nce(z_a, z_b, 1.0 / self.config.contrastive_temperature)
            losses["loss_contrastive"] = self.config.contrastive_weight * nce
        return losses
