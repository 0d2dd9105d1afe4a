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

Appearance. The label map fixes where each tissue is, not how bright it is,
and cines differ in contrast (blood against myocardium, the surroundings'
brightness) from subject to subject. Left to the shared initial noise, a
small denoiser draws too little of that variety. With ``appearance_dim`` > 0
the denoiser also takes an appearance code, `appearance_codes` (six
intensities: the medians of the LV blood pool, myocardium and RV blood pool,
and the 10th, 50th and 90th percentiles of the rest, measured on the cine's
mid-ventricular end-diastolic frame), standardised and embedded by a small
MLP into diffusers' class-embedding slot (added to the timestep embedding,
as class conditioning is). A row of NaN means "no code" (a zero embedding:
trained by dropping codes, so the denoiser also runs without one). At
generation `draw_appearance` takes the codes of random training subjects
from a bank stored with the weights, so the contrast of the generated cines
varies between subjects as the training cines' does.
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
#: The entries of an appearance code (`appearance_codes`).
APPEARANCE_NAMES = ("lv_blood_median", "myocardium_median", "rv_blood_median",
                    "background_p10", "background_p50", "background_p90")
#: Fewest pixels a region needs for its intensity to enter the code (fewer: NaN).
MIN_REGION_PIXELS = 4


def appearance_codes(frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Appearance codes of frames: tissue intensities measured under their labels.

    Args:
        frames: (N, H, W) intensities.
        labels: (N, H, W) integer labels (1 LV blood pool, 2 myocardium, 3 RV blood pool, 0 the rest).

    Returns:
        (N, len(APPEARANCE_NAMES)) float32: the medians of labels 1, 2, 3 and the 10th, 50th and 90th
        percentiles of label 0 (``torch.quantile``, linear interpolation); NaN for a region of fewer than
        `MIN_REGION_PIXELS` pixels.
    """
    if frames.ndim != 3 or frames.shape != labels.shape:
        raise ValueError(f"frames and labels must both be (N, H, W), got {tuple(frames.shape)} and "
                         f"{tuple(labels.shape)}")
    codes = torch.full((frames.shape[0], len(APPEARANCE_NAMES)), float("nan"))
    levels = torch.tensor([0.1, 0.5, 0.9])
    for i, (frame, label) in enumerate(zip(frames.float().cpu(), labels.cpu())):
        for j, value in enumerate(FOREGROUND_LABELS):
            region = frame[label == value]
            if region.numel() >= MIN_REGION_PIXELS:
                codes[i, j] = torch.quantile(region, 0.5)
        rest = frame[label == 0]
        if rest.numel() >= MIN_REGION_PIXELS:
            codes[i, 3:] = torch.quantile(rest, levels)
    return codes


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
        appearance_dim: entries of the appearance code (0: no appearance input; otherwise
            ``len(APPEARANCE_NAMES)``).
        appearance_bank_size: training codes stored for `draw_appearance` (set by `set_appearance`).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_size: int = 16, downsample_factor: int = 4,
                 block_out_channels: Sequence[int] = (64, 128, 128),
                 attention_levels: Sequence[bool] = (False, False, True), layers_per_block: int = 1,
                 norm_num_groups: int = 16, appearance_dim: int = 0, appearance_bank_size: int = 0):
        super().__init__()
        from diffusers import UNet2DModel

        if len(block_out_channels) != len(attention_levels):
            raise ValueError("block_out_channels and attention_levels must have the same length")
        if latent_size % 2 ** (len(block_out_channels) - 1):
            raise ValueError(f"latent_size {latent_size} must be divisible by 2^(levels - 1)")
        condition = len(FOREGROUND_LABELS) * downsample_factor**2
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
        if appearance_dim not in (0, len(APPEARANCE_NAMES)):
            raise ValueError(f"appearance_dim must be 0 or {len(APPEARANCE_NAMES)}, got {appearance_dim}")
        if appearance_bank_size < 0 or (appearance_bank_size and not appearance_dim):
            raise ValueError("appearance_bank_size must be non-negative and needs appearance_dim")
        self.unet = UNet2DModel(sample_size=latent_size, in_channels=latent_channels + condition,
                                out_channels=latent_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                                norm_num_groups=norm_num_groups,
                                attention_head_dim=min(32, int(block_out_channels[-1])),
                                class_embed_type="identity" if appearance_dim else None)
        if appearance_dim:
            width = 4 * int(block_out_channels[0])  # UNet2DModel's timestep-embedding width
            self.appearance_embedding = torch.nn.Sequential(
                torch.nn.Linear(appearance_dim, width), torch.nn.SiLU(), torch.nn.Linear(width, width))
            self.register_buffer("appearance_mean", torch.zeros(appearance_dim))
            self.register_buffer("appearance_std", torch.ones(appearance_dim))
            self.register_buffer("appearance_bank", torch.full((appearance_bank_size, appearance_dim), float("nan")))

    @torch.no_grad()
    def set_appearance(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Standardise by, and keep a bank of, the training split's appearance codes.

        Args:
            codes: (M, appearance_dim) codes of training cines (`appearance_codes`; rows with NaN are left out).
            generator: draws the `appearance_bank_size` rows kept (all when fewer).
        """
        if not self.config.appearance_dim:
            raise ValueError("this denoiser has no appearance input (appearance_dim 0)")
        codes = torch.as_tensor(codes, dtype=torch.float32)
        codes = codes[torch.isfinite(codes).all(dim=1)]
        if len(codes) < 2:
            raise ValueError(f"set_appearance needs at least 2 complete codes, got {len(codes)}")
        self.appearance_mean.copy_(codes.mean(dim=0))
        self.appearance_std.copy_(codes.std(dim=0).clamp_min(1e-6))
        size = self.config.appearance_bank_size
        rows = torch.randperm(len(codes), generator=generator)[:size]
        self.appearance_bank.copy_(codes[rows[torch.arange(size) % len(rows)]])  # cycled when fewer than size

    def draw_appearance(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, appearance_dim) codes of random training cines from the bank (`set_appearance`)."""
        if not self.config.appearance_bank_size:
            raise ValueError("this denoiser has no appearance bank (appearance_bank_size 0)")
        rows = torch.randint(self.config.appearance_bank_size, (n,), generator=generator,
                             device=generator.device if generator is not None else "cpu")
        return self.appearance_bank[rows.to(self.appearance_bank.device)].clone()

    def _appearance_embedding(self, appearance: torch.Tensor | None, n: int, dtype) -> torch.Tensor:
        """(n, width) class embedding of codes: zeros for no code (None or a row of NaN)."""
        width = self.appearance_embedding[-1].out_features
        if appearance is None:
            return torch.zeros(n, width, device=self.device, dtype=dtype)
        if tuple(appearance.shape) != (n, self.config.appearance_dim):
            raise ValueError(f"appearance must be ({n}, {self.config.appearance_dim}), got {tuple(appearance.shape)}")
        appearance = appearance.to(self.device, torch.float32)
        given = ~torch.isnan(appearance).all(dim=1, keepdim=True)
        z = torch.nan_to_num((appearance - self.appearance_mean) / self.appearance_std, nan=0.0)
        return (self.appearance_embedding(z.to(dtype)) * given.to(dtype)).to(dtype)

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
                appearance: torch.Tensor | None = None, return_dict: bool = True):
        """Predict the noise (or velocity) of noisy frame latents.

        Args:
            sample: (N, latent_channels, h, w) noisy latents of N frames.
            timestep: (N,) or scalar diffusion step.
            labels: (N, H, W) integer label maps of the same frames (H = h · downsample_factor).
            appearance: (N, appearance_dim) raw appearance codes (`appearance_codes`; a row of NaN: none);
                None: none for any frame. Only for a denoiser with ``appearance_dim`` > 0.
            return_dict: return diffusers' ``UNet2DOutput`` instead of a tuple.
        """
        c = self.config
        if sample.ndim != 4 or tuple(sample.shape[1:]) != (c.latent_channels, c.latent_size, c.latent_size):
            raise ValueError(f"sample must be (N, {c.latent_channels}, {c.latent_size}, {c.latent_size}), "
                             f"got {tuple(sample.shape)}")
        if tuple(labels.shape) != (sample.shape[0], self.image_size, self.image_size):
            raise ValueError(f"labels must be ({sample.shape[0]}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(labels.shape)}")
        if appearance is not None and not c.appearance_dim:
            raise ValueError("this denoiser has no appearance input (appearance_dim 0); pass appearance=None")
        condition = label_channels(labels.to(sample.device), c.downsample_factor).to(sample.dtype)
        class_labels = self._appearance_embedding(appearance, sample.shape[0], sample.dtype) if c.appearance_dim \
            else None
        out = self.unet(torch.cat([sample, condition], dim=1), timestep, class_labels=class_labels).sample
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
    appearance_dim: int = 0
    appearance_bank_size: int = 0


def build_label_denoiser(config: LabelDenoiserConfig) -> LabelConditionedDenoiser:
    return LabelConditionedDenoiser(
        latent_channels=config.latent_channels, latent_size=config.latent_size,
        downsample_factor=config.downsample_factor, block_out_channels=tuple(config.block_out_channels),
        attention_levels=tuple(config.attention_levels), layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups, appearance_dim=config.appearance_dim,
        appearance_bank_size=config.appearance_bank_size)


register_model("anatomy_image_unet_demo", LabelDenoiserConfig, build_label_denoiser,
               "label-conditioned frame denoiser: UNet2D 32/64/128 over 4 x 16 x 16 latents (2.8 M parameters)")
register_model("anatomy_image_unet_paper", LabelDenoiserConfig, build_label_denoiser,
               "label-conditioned frame denoiser for 256 x 256 frames: UNet2D 128/256/512/512 over 4 x 32 x 32 "
               "latents, the labels folded 8 x 8",
               latent_size=32, downsample_factor=8, block_out_channels=[128, 256, 512, 512],
               attention_levels=[False, False, True, True], layers_per_block=2, norm_num_groups=32)
