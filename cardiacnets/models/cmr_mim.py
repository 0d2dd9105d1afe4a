"""Masked-image-modelling pretraining of the CMR encoders, with a short-axis ↔ long-axis term.

Following SimMIM (Xie et al., "SimMIM: a Simple Framework for Masked Image
Modeling", CVPR 2022), square patches of the input are hidden — the same
patches in every frame and slice, so a hidden region cannot be copied from a
neighbouring frame — by replacing them with a learned value per input
channel; the encoder runs on the masked cine and a light convolutional
decoder predicts the hidden pixels from its feature map (L1 loss on hidden
pixels only). Working in input space makes this valid for any timm backbone
(convolutional, ViT or Swin). One encoder per view; an optional InfoNCE term
pulls together the embeddings of the short-axis and 4-chamber cines of the
same subject (a CMR-only form of the CardiacNets alignment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.models.cmr_encoder import CMREncoder, CMREncoderConfig
from cardiacnets.models.layers import info_nce
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class


@dataclass
class CMRMaskedModelConfig:
    """A `CMRMaskedModel`.

    Attributes:
        views: cine views to pretrain (batch keys ``cmr_<view>``, ``has_<view>``).
        encoders: the `CMREncoderConfig` of each view's encoder.
        mask_patch_size: side in pixels (at ``img_size``) of the square masked patches.
        mask_ratio: fraction of patches hidden.
        decoder_width: channels of the convolutional decoder.
        contrastive_weight: weight of the short-axis ↔ long-axis InfoNCE (0 = off; needs two views).
        contrastive_temperature: its temperature.
    """

    views: list[str] = field(default_factory=lambda: ["sa", "la_4ch"])
    encoders: dict[str, CMREncoderConfig] = field(
        default_factory=lambda: {"sa": CMREncoderConfig(), "la_4ch": CMREncoderConfig()})
    mask_patch_size: int = 8
    mask_ratio: float = 0.6
    decoder_width: int = 128
    contrastive_weight: float = 0.1
    contrastive_temperature: float = 0.1

    def validate(self) -> None:
        if not self.views:
            raise ConfigError("CMRMaskedModelConfig.views is empty")
        missing = [v for v in self.views if v not in self.encoders]
        if missing:
            raise ConfigError(f"CMRMaskedModelConfig: no encoder config for view(s) {missing}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"CMRMaskedModelConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for view in self.views:
            enc = self.encoders[view]
            enc.validate()
            if enc.img_size % self.mask_patch_size:
                raise ConfigError(f"CMRMaskedModelConfig: img_size {enc.img_size} of view {view!r} is not a "
                                  f"multiple of mask_patch_size {self.mask_patch_size}")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ConfigError("CMRMaskedModelConfig: contrastive_weight must be >= 0 and contrastive_temperature > 0")


class MIMDecoder(nn.Module):
    """Predict the pixels of every mask patch from an encoder feature map.

    Args:
        in_channels: channels of the feature map.
        width: decoder channels.
        out_channels: image channels (slices × frames).
        patch_size: mask patch side; one output position predicts one patch.
        grid: mask patches per image side.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, patch_size: int, grid: int):
        super().__init__()
        self.grid, self.patch_size = grid, patch_size
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.GELU())
        self.refine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.predict = nn.Conv2d(width, out_channels * patch_size * patch_size, 1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features → (B, out_channels, grid × patch, grid × patch) image."""
        x = self.reduce(feature_map)
        x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        x = self.predict(self.refine(x))
        return rearrange(x, "b (c p q) gh gw -> b c (gh p) (gw q)", p=self.patch_size, q=self.patch_size)


@pretrained_class
class CMRMaskedModel(nn.Module, PretrainedMixin):
    """Masked image modelling of each cine view plus a short-axis ↔ long-axis contrastive term.

    ``forward(batch)`` reads ``cmr_<view>`` (B, slices, frames, H, W) in [0, 1] and
    ``has_<view>`` (B,) bool (samples without the view add no loss). ``.encoders[view]``
    are the `CMREncoder`s to export.

    Args:
        config: the `CMRMaskedModelConfig`.
    """

    config_class = CMRMaskedModelConfig

    def __init__(self, config: CMRMaskedModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoders = nn.ModuleDict({v: CMREncoder(config.encoders[v]) for v in config.views})
        self.decoders = nn.ModuleDict()
        self.mask_values = nn.ParameterDict()
        for view in config.views:
            enc = config.encoders[view]
            self.decoders[view] = MIMDecoder(self.encoders[view].width, config.decoder_width, enc.in_chans,
                                             config.mask_patch_size, enc.img_size // config.mask_patch_size)
            self.mask_values[view] = nn.Parameter(torch.zeros(enc.in_chans))

    def random_mask(self, batch_size: int, img_size: int, device: torch.device) -> torch.Tensor:
        """(B, 1, img, img) bool pixel mask, True = hidden; exactly round(ratio × patches) patches per image."""
        grid = img_size // self.config.mask_patch_size
        n_patches = grid * grid
        n_hide = max(1, round(self.config.mask_ratio * n_patches))
        ranks = torch.argsort(torch.argsort(torch.rand(batch_size, n_patches, device=device), dim=1), dim=1)
        hidden = rearrange(ranks < n_hide, "b (gh gw) -> b 1 gh gw", gh=grid)
        p = self.config.mask_patch_size
        return repeat(hidden, "b 1 gh gw -> b 1 (gh p) (gw q)", p=p, q=p)

    def forward_view(self, view: str, cine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked reconstruction of one view.

        Args:
            view: view name.
            cine: (B, slices, frames, H, W).

        Returns:
            (per-sample L1 loss on hidden pixels (B,), pooled embedding (B, embed_dim) of the masked cine).
        """
        encoder = self.encoders[view]
        image = encoder.prepare_input(cine)  # (B, channels, img, img)
        hidden = self.random_mask(image.shape[0], image.shape[-1], image.device)
        fill = rearrange(self.mask_values[view], "c -> 1 c 1 1").to(image.dtype)
        features = encoder.backbone.forward_features(torch.where(hidden, fill, image))
        prediction = self.decoders[view](encoder.feature_map(features))
        error = (prediction.float() - image.float()).abs() * hidden
        per_sample = error.sum(dim=(1, 2, 3)) / (hidden.sum(dim=(1, 2, 3)) * image.shape[1])
        return per_sample, encoder.forward_head(features)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Pretraining losses for a batch.

        Args:
            batch: dict with ``cmr_<view>`` and ``has_<view>`` for every configured view.

        Returns:
            ``loss_mim_<view>`` per view (mean over samples that have the view) and, when
            ``contrastive_weight`` > 0 and two views are configured,
            ``loss_contrastive_<view1>_<view2>`` (e.g. ``loss_contrastive_sa_la_4ch``: weighted
            InfoNCE between the first two views over samples having both).
        """
        losses, embeddings, available = {}, {}, {}
        for view in self.config.views:
            cine = batch[f"cmr_{view}"]
            has = batch.get(f"has_{view}")
            has = torch.ones(cine.shape[0], dtype=torch.bool, device=cine.device) if has is None else has.to(torch.bool)
            per_sample, embeddings[view] = self.forward_view(view, cine)
            weight = has.float()
            losses[f"loss_mim_{view}"] = (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
            available[view] = has
        if self.config.contrastive_weight > 0 and len(self.config.views) >= 2:
            first, second = self.config.views[:2]
            both = available[first] & available[second]
            if int(both.sum()) >= 2:
                z_a = F.normalize(embeddings[first][both].float(), dim=-1)
                z_b = F.normalize(embeddings[second][both].float(), dim=-1)
                nce = info_nce(z_a, z_b, 1.0 / self.config.contrastive_temperature)
            else:  # fewer than two pairs: no negatives, no term (kept in the graph for a stable loss dict)
                nce = embeddings[first].sum() * 0.0
            losses[f"loss_contrastive_{first}_{second}"] = self.config.contrastive_weight * nce
        return losses
