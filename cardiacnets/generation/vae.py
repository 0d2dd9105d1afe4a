"""The CMR autoencoder of the latent diffusion model: diffusers' ``AutoencoderKL`` on single cine frames.

Latent diffusion (Rombach et al., "High-resolution image synthesis with latent
diffusion models", CVPR 2022) denoises in the latent space of an autoencoder
instead of pixels; CardiacNets (arXiv 2411.13602) generates its cines that
way. Here the autoencoder is diffusers' ``AutoencoderKL`` with one input
channel, applied to every frame of a cine independently: a (frames, H, W)
cine becomes (latent_channels, frames, H / f, W / f) latents, f =
2^(levels - 1). It is trained by ``cardiacnets train`` (``task: vae``,
`cardiacnets.train.vae_task`) with an L1 reconstruction loss and a
small KL term, and the latent scaling factor (1 / standard deviation of the
training latents, so the diffusion model sees unit-variance latents) is
measured on training frames at export and stored in the model's own config
(``scaling_factor``), as in Stable Diffusion.

Registered models: ``cmr_vae_demo`` (64 × 64 frames → 4 × 8 × 8, 0.94 M
parameters, small enough to train on a 2-core CPU) and ``cmr_vae_paper``
(256 × 256 → 4 × 32 × 32, Stable Diffusion's layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange

from cardiacnets.errors import ConfigError
from cardiacnets.models.registry import register_model


@dataclass
class CMRVAEConfig:
    """Shape of the frame autoencoder (arguments of diffusers' ``AutoencoderKL``).

    Attributes:
        image_size: side of the square frames, pixels.
        block_out_channels: channels of each encoder level; each level after the first halves the size.
        layers_per_block: residual blocks per level (the decoder has one more).
        latent_channels: channels of the latent map.
        norm_num_groups: group-norm groups (must divide every channel count).
        mid_block_attention: self-attention in the middle block (costly on CPU, little gain on 16 × 16 maps).
        scaling_factor: latents are multiplied by this before diffusion (set from the training data
            by the ``vae`` task at export; 1 before).
    """

    image_size: int = 64
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    mid_block_attention: bool = False
    scaling_factor: float = 1.0

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def validate(self) -> None:
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ConfigError(f"CMRVAEConfig.block_out_channels must be positive, got {self.block_out_channels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"CMRVAEConfig.norm_num_groups {self.norm_num_groups} must divide every channel "
                              f"count {self.block_out_channels}")
        if self.image_size % self.downsample_factor:
            raise ConfigError(f"CMRVAEConfig.image_size {self.image_size} must be divisible by the downsampling "
                              f"factor {self.downsample_factor}")
        if self.layers_per_block < 1 or self.latent_channels < 1 or self.scaling_factor <= 0:
            raise ConfigError("CMRVAEConfig: layers_per_block and latent_channels must be at least 1 and "
                              "scaling_factor positive")


def build_cmr_vae(config: CMRVAEConfig):
    """A diffusers ``AutoencoderKL`` for single-channel frames, as `config` describes.

    Args:
        config: the `CMRVAEConfig`.

    Returns:
        The (untrained) ``AutoencoderKL``.
    """
    from diffusers import AutoencoderKL

    config.validate()
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups, sample_size=config.image_size,
        scaling_factor=config.scaling_factor, mid_block_add_attention=config.mid_block_attention)


register_model("cmr_vae_demo", CMRVAEConfig, build_cmr_vae,
               "demo frame autoencoder: 64x64 -> 4x8x8 (levels 16/32/64/64, no attention)")
register_model("cmr_vae_paper", CMRVAEConfig, build_cmr_vae,
               "paper-scale frame autoencoder: 256x256 -> 4x32x32 (Stable Diffusion's levels 128/256/512/512)",
               image_size=256, block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
               norm_num_groups=32, mid_block_attention=True)


def vae_losses(vae, frames: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None,
               sample_posterior: bool = True, with_psnr: bool = False) -> dict[str, torch.Tensor]:
    """Loss terms of one batch of frames: L1 reconstruction and the weighted KL to N(0, I).

    Args:
        vae: the ``AutoencoderKL``.
        frames: (N, 1, H, W) frames in [0, 1].
        kl_weight: weight of the KL term (per latent element, as the reconstruction is per pixel).
        generator: draws the posterior sample (CPU generator).
        sample_posterior: decode a posterior sample (training) instead of the mean (validation).
        with_psnr: also return ``psnr_db``, the mean PSNR of the reconstructions clipped to [0, 1]
            (peak 1; a metric, not a loss term).

    Returns:
        ``loss_recon_l1`` and ``loss_kl`` (weighted) scalars, and ``psnr_db`` when asked.
    """
    posterior = vae.encode(frames).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    reconstruction = vae.decode(latents).sample.float()
    recon = F.l1_loss(reconstruction, frames.float())
    kl = posterior.kl().float() / posterior.mean[0].numel()  # per latent element
    terms = {"loss_recon_l1": recon, "loss_kl": kl_weight * kl.mean()}
    if with_psnr:
        mse = (reconstruction.detach().clamp(0, 1) - frames.float()).pow(2).mean(dim=(1, 2, 3))
        terms["psnr_db"] = (-10.0 * torch.log10(mse.clamp_min(1e-10))).mean()
    return terms


def encode_cines(vae, cines: torch.Tensor, frames_per_chunk: int = 256) -> torch.Tensor:
    """Scaled latents of cines (the posterior means times ``vae.config.scaling_factor``).

    Args:
        vae: the ``AutoencoderKL``.
        cines: (B, frames, H, W) in [0, 1].
        frames_per_chunk: frames encoded per forward pass.

    Returns:
        (B, latent_channels, frames, H / f, W / f) float32 latents.
    """
    batch = cines.shape[0]
    frames = rearrange(cines, "b f h w -> (b f) 1 h w").to(vae.dtype)
    parts = [vae.encode(frames[i:i + frames_per_chunk]).latent_dist.mode() for i in range(0, len(frames),
                                                                                        frames_per_chunk)]
    latents = torch.cat(parts).float() * vae.config.scaling_factor
    return rearrange(latents, "(b f) c h w -> b c f h w", b=batch)


def decode_latents(vae, latents: torch.Tensor, frames_per_chunk: int = 256) -> torch.Tensor:
    """Cines from scaled latents (the inverse of `encode_cines` up to the autoencoder's error).

    Args:
        vae: the ``AutoencoderKL``.
        latents: (B, latent_channels, frames, h, w) scaled latents.
        frames_per_chunk: frames decoded per forward pass.

    Returns:
        (B, frames, H, W) float32 intensities (not clipped).
    """
    batch = latents.shape[0]
    flat = rearrange(latents, "b c f h w -> (b f) c h w") / vae.config.scaling_factor
    parts = [vae.decode(flat[i:i + frames_per_chunk].to(vae.dtype)).sample
             for i in range(0, len(flat), frames_per_chunk)]
    return rearrange(torch.cat(parts).float(), "(b f) 1 h w -> b f h w", b=batch)


def scaling_factor_of(latents: torch.Tensor) -> float:
    """1 / standard deviation of unscaled latents (Stable Diffusion's choice of ``scaling_factor``).

    Args:
        latents: unscaled latents of training frames, any shape.

    Returns:
        The factor that gives the latents unit standard deviation.

    Raises:
        ValueError: the latents are constant or not finite.
    """
    std = float(latents.float().std())
    if not std > 0 or not torch.isfinite(latents).all():
        raise ValueError(f"cannot measure a scaling factor: latent standard deviation {std}")
    return 1.0 / std
