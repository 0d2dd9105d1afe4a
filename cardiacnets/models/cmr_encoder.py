"""CMR cine encoders: a timm image backbone with the cine frames stacked as input channels.

CardiacNets (arXiv 2411.13602) encodes each cine view (short-axis,
4-chamber) with a Swin-B whose input channels are the 50 frames of the cardiac
cycle at 224². `CMREncoder` wraps any timm backbone the same way: the input
(B, slices, frames, H, W) becomes (B, slices × frames, H, W), is resized to
``img_size`` when it differs, goes through ``timm.create_model(backbone,
pretrained=False, in_chans=slices × frames, num_classes=0)``, and the pooled
features are projected to ``embed_dim``. Backbones with a fixed token grid
(ViT, Swin) are told the image size (``pass_img_size``); convolutional ones
take any size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class


@dataclass
class CMREncoderConfig:
    """A `CMREncoder`. Defaults: the small CPU demo encoder (1 slice × 25 frames at 64²).

    Attributes:
        backbone: timm model name (``timm.list_models()``), built without pretrained weights.
        slices: slices of the input cine (1 for a long-axis view or one short-axis slice).
        frames: frames per slice; ``slices × frames`` is the backbone's input channels.
        img_size: side of the square image the backbone sees (inputs are resized to it).
        pass_img_size: pass ``img_size`` to ``timm.create_model`` (needed by ViT/Swin-style
            backbones, whose position embeddings depend on it; convolutional nets do not take it).
        backbone_kwargs: further keyword arguments of ``timm.create_model`` (e.g. ``drop_path_rate``).
        embed_dim: size of the projected, pooled embedding.
    """

    backbone: str = "resnet10t"
    slices: int = 1
    frames: int = 25
    img_size: int = 64
    pass_img_size: bool = False
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    embed_dim: int = 256

    def validate(self) -> None:
        for name in ("slices", "frames", "img_size", "embed_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"CMREncoderConfig.{name} must be positive, got {getattr(self, name)}")
        reserved = {"pretrained", "in_chans", "num_classes", "img_size"} & set(self.backbone_kwargs)
        if reserved:
            raise ConfigError(f"CMREncoderConfig.backbone_kwargs may not set {sorted(reserved)}; "
                              "they follow from slices, frames, img_size and pass_img_size")

    @property
    def in_chans(self) -> int:
        return self.slices * self.frames


@pretrained_class
class CMREncoder(nn.Module, PretrainedMixin):
    """Encode a cine view (B, slices, frames, H, W) into (B, embed_dim).

    Args:
        config: the `CMREncoderConfig`.
    """

    config_class = CMREncoderConfig

    def __init__(self, config: CMREncoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        kwargs = dict(config.backbone_kwargs)
        if config.pass_img_size:
            kwargs["img_size"] = config.img_size
        try:
            self.backbone = timm.create_model(config.backbone, pretrained=False, in_chans=config.in_chans,
                                              num_classes=0, **kwargs)
        except RuntimeError as err:  # timm's "Unknown model"
            raise ConfigError(f"CMREncoderConfig.backbone {config.backbone!r}: {err}") from None
        except TypeError as err:
            raise ConfigError(f"CMREncoderConfig: timm model {config.backbone!r} does not take these arguments "
                              f"({err}); check pass_img_size and backbone_kwargs") from None
        grid_size = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
        if grid_size is not None and tuple(grid_size) != (config.img_size, config.img_size):
            raise ConfigError(f"CMREncoderConfig: backbone {config.backbone!r} is built for {tuple(grid_size)} images, "
                              f"not img_size {config.img_size}; set pass_img_size: true")
        self.width = self.backbone.num_features
        self.head = nn.Linear(self.width, config.embed_dim)

    def prepare_input(self, cine: torch.Tensor) -> torch.Tensor:
        """Stack frames as channels and resize: (B, slices, frames, H, W) → (B, slices × frames, img, img).

        Raises:
            ValueError: a cine whose slices or frames differ from the config.
        """
        c = self.config
        if cine.ndim != 5 or cine.shape[1] != c.slices or cine.shape[2] != c.frames:
            raise ValueError(f"CMREncoder expects (batch, {c.slices} slices, {c.frames} frames, H, W), got {tuple(cine.shape)}")
        x = rearrange(cine, "b s f h w -> b (s f) h w")
        if x.shape[-2:] != (c.img_size, c.img_size):
            x = F.interpolate(x, size=(c.img_size, c.img_size), mode="bilinear", align_corners=False,
                              antialias=bool(x.shape[-1] > c.img_size or x.shape[-2] > c.img_size))
        return x

    def forward_features(self, cine: torch.Tensor) -> torch.Tensor:
        """Backbone features of a cine (the backbone's own layout: (B, C, h, w), (B, h, w, C) or (B, N, C))."""
        return self.backbone.forward_features(self.prepare_input(cine))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pool the features (the backbone's own pooling) and project: → (B, embed_dim)."""
        return self.head(self.backbone.forward_head(features, pre_logits=True))

    def forward(self, cine: torch.Tensor) -> torch.Tensor:
        """`forward_features` then `forward_head`: (B, slices, frames, H, W) → (B, embed_dim)."""
        return self.forward_head(self.forward_features(cine))

    def feature_map(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features as a spatial map (B, C, h, w), whatever the backbone's layout.

        Convolutional backbones give (B, C, h, w); Swin gives (B, h, w, C)
        (``output_fmt`` "NHWC"); ViTs give (B, prefix + h·w, C) tokens.
        """
        if features.ndim == 4:
            if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
                return rearrange(features, "b h w c -> b c h w")
            return features
        if features.ndim == 3:
            prefix = getattr(self.backbone, "num_prefix_tokens", 0)
            grid_h, grid_w = self.backbone.patch_embed.grid_size
            return rearrange(features[:, prefix:], "b (h w) c -> b c h w", h=grid_h, w=grid_w)
        raise ValueError(f"cannot read backbone features of shape {tuple(features.shape)} as a spatial map")
