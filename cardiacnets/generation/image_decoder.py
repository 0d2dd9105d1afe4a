"""Anatomy → image: a latent denoiser of cine frames conditioned on their label maps.

The third part of the anatomy-first generator. Given a label cine (from the
shape model), it generates the cine frame by frame in the latent space of the
frame autoencoder (`cardiacnets.generation.vae`). The condition is the label
map itself at full resolution, folded into channels at the latent grid
("pixel unshuffle": a one-hot map of the three foreground labels, H × W,
becomes 3·f² channels of h × w = H/f × W/f), concatenated with the noisy
latents at the denoiser's input. The folding is lossless, so the denoiser
sees every boundary pixel of the anatomy (SPADE, Park et al. 2019, and
ControlNet, Zhang et al. 2023, feed label maps at the generator's
resolution for the same reason), while the UNet runs at the small latent
grid, which keeps it cheap on a CPU.

Frames are denoised independently as a batch, but a cine's frames share the
same initial noise and a deterministic sampler (DDIM / DPM-Solver++), so the
only thing that differs between frames is the anatomy: the texture,
background and contrast stay put while the heart moves, and temporal
coherence follows from the shape model's coherent cycle. The network is
diffusers' ``UNet2DModel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin found here by the pipeline loader)
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from cardiacnets.models.registry import register_model

#: Foreground labels folded into the condition channels (UK Biobank convention).
FOREGROUND_LABELS = (1, 2, 3)


def label_channels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """One-hot foreground labels folded to the latent grid.

    Args:
        labels: (N, H, W) integer labels.
        factor: the autoencoder's downsampling factor f.

    Returns:
        (N, 3·f², H/f, W/f) float32 (``pixel_unshuffle`` of the one-hot maps of labels 1, 2, 3).
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N, H, W), got shape {tuple(labels.shape)}")
    onehot = torch.stack([labels == value for value in FOREGROUND_LABELS], dim=1).float()
    return F.pixel_unshuffle(onehot, factor) if factor > 1 else onehot


class LabelConditionedDenoiser(ModelMixin, ConfigMixin):
    """Denoiser of frame latents conditioned on the frame's label map (see the module docstring).

    Args:
        latent_channels: channels of the autoencoder's latents.
        latent_size: side of the latent grid.
        downsample_factor: the autoencoder's downsampling factor (image size / latent size).
        block_out_channels: channels of the UNet levels.
        attention_levels: whether each level has self-attention.
        layers_per_block: residual layers per level.
        norm_num_groups: group-norm groups.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_size: int = 16, downsample_factor: int = 4,
                 block_out_channels: Sequence[int] = (64, 128, 128),
                 attention_levels: Sequence[bool] = (False, False, True), layers_per_block: int = 1,
                 norm_num_groups: int = 16):
        super().__init__()
        from diffusers import UNet2DModel

        if len(block_out_channels) != len(attention_levels):
            raise ValueError("block_out_channels and attention_levels must have the same length")
        if latent_size % 2 ** (len(block_out_channels) - 1):
            raise ValueError(f"latent_size {latent_size} must be divisible by 2^(levels - 1)")
        condition = len(FOREGROUND_LABELS) * downsample_factor**2
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
        self.unet = UNet2DModel(sample_size=latent_size, in_channels=latent_channels + condition,
                                out_channels=latent_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                                norm_num_groups=norm_num_groups,
                                attention_head_dim=min(32, int(block_out_channels[-1])))

    @property
    def image_size(self) -> int:
        return int(self.config.latent_size * self.config.downsample_factor)

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random inputs of the right shapes (tests, benchmarks): noisy latents, timesteps, label maps."""
        c = self.config
        return {"sample": torch.randn(batch_size, c.latent_channels, c.latent_size, c.latent_size, generator=generator),
                "timestep": torch.randint(0, 1000, (batch_size,), generator=generator),
                "labels": torch.randint(0, 4, (batch_size, self.image_size, self.image_size), generator=generator)}

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, labels: torch.Tensor,
                return_dict: bool = True):
        """Predict the noise (or velocity) of noisy frame latents.

        Args:
            sample: (N, latent_channels, h, w) noisy latents of N frames.
            timestep: (N,) or scalar diffusion step.
            labels: (N, H, W) integer label maps of the same frames (H = h · downsample_factor).
            return_dict: return diffusers' ``UNet2DOutput`` instead of a tuple.
        """
        c = self.config
        if sample.ndim != 4 or tuple(sample.shape[1:]) != (c.latent_channels, c.latent_size, c.latent_size):
            raise ValueError(f"sample must be (N, {c.latent_channels}, {c.latent_size}, {c.latent_size}), "
                             f"got {tuple(sample.shape)}")
        if tuple(labels.shape) != (sample.shape[0], self.image_size, self.image_size):
            raise ValueError(f"labels must be ({sample.shape[0]}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(labels.shape)}")
        condition = label_channels(labels.to(sample.device), c.downsample_factor).to(sample.dtype)
        out = self.unet(torch.cat([sample, condition], dim=1), timestep).sample
        return UNet2DOutput(sample=out) if return_dict else (out,)


@dataclass
class LabelDenoiserConfig:
    """Registry config of `LabelConditionedDenoiser` (latent sizes are set by the ``anatomy_image`` task)."""

    latent_channels: int = 4
    latent_size: int = 16
    downsample_factor: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    layers_per_block: int = 1
    norm_num_groups: int = 16


def build_label_denoiser(config: LabelDenoiserConfig) -> LabelConditionedDenoiser:
    return LabelConditionedDenoiser(
        latent_channels=config.latent_channels, latent_size=config.latent_size,
        downsample_factor=config.downsample_factor, block_out_channels=tuple(config.block_out_channels),
        attention_levels=tuple(config.attention_levels), layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups)


register_model("anatomy_image_unet_demo", LabelDenoiserConfig, build_label_denoiser,
               "label-conditioned frame denoiser: UNet2D 32/64/128 over 4 x 16 x 16 latents (2.8 M parameters)")
register_model("anatomy_image_unet_paper", LabelDenoiserConfig, build_label_denoiser,
               "label-conditioned frame denoiser for 256 x 256 frames: UNet2D 128/256/512/512 over 4 x 32 x 32 "
               "latents, the labels folded 8 x 8",
               latent_size=32, downsample_factor=8, block_out_channels=[128, 256, 512, 512],
               attention_levels=[False, False, True, True], layers_per_block=2, norm_num_groups=32)
