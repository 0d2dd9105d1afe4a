"""The ``vae`` training stage of CardiacNets (arXiv 2411.13602): the frame autoencoder of the latent diffusion model.

Trains the frame autoencoder (diffusers ``AutoencoderKL``,
`cardiacnets.generation.vae`) on random frames of the training cines with an
L1 reconstruction loss and a small KL term; validation scores fixed frames of
every validation cine (L1, PSNR). At export the latent scaling factor is
measured on training frames (1 / standard deviation of their latents) and
stored in the autoencoder's config; exports ``RUN/vae``, which the
``diffusion`` stage (`cardiacnets.train.diffusion_task`) and the anatomy-first
generator's stages encode cines with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.vae import scaling_factor_of, vae_losses
from cardiacnets.train.generation_common import check_view, load_diffusers_weights
from cardiacnets.train.tasks import Task, register_task


@dataclass
class VAEOptions:
    """Options of the ``vae`` task.

    Attributes:
        view: the CMR view whose frames are encoded.
        frames_per_subject: random frames of each training cine per step (the optimiser sees
            ``batch_size × frames_per_subject`` frames).
        kl_weight: weight of the KL term per latent element (Stable Diffusion's autoencoder: 1e-6);
            it keeps the latents near N(0, I) without blurring the reconstructions.
        val_frame_stride: validation scores every this-many-th frame of each cine.
        scaling_subjects: training subjects whose frames measure the latent scaling factor at export.
    """

    view: str = "sa"
    frames_per_subject: int = 4
    kl_weight: float = 1e-6
    val_frame_stride: int = 6
    scaling_subjects: int = 256

    def validate(self) -> None:
        check_view(self.view)
        if self.frames_per_subject < 1 or self.val_frame_stride < 1 or self.scaling_subjects < 1:
            raise ConfigError("options.frames_per_subject, val_frame_stride and scaling_subjects must be at least 1")
        if self.kl_weight < 0:
            raise ConfigError(f"options.kl_weight must be non-negative, got {self.kl_weight}")


class AutoencoderTrainer(nn.Module):
    """The autoencoder with a ``forward`` that returns its loss terms (what the training loop calls).

    Args:
        vae: the ``AutoencoderKL``.
        kl_weight: weight of the KL term.
    """

    def __init__(self, vae: nn.Module, kl_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, frames: torch.Tensor, generator: torch.Generator | None = None,
                sample_posterior: bool = True, with_psnr: bool = False) -> dict[str, torch.Tensor]:
        """`cardiacnets.generation.vae.vae_losses` of (N, 1, H, W) frames."""
        return vae_losses(self.vae, frames, self.kl_weight, generator, sample_posterior, with_psnr)


@register_task
class VAETask(Task):
    """Train the frame autoencoder of the latent diffusion model (see the module docstring)."""

    name = "vae"
    options_class = VAEOptions
    default_model = "cmr_vae_demo"

    def views(self) -> list[str]:
        return [self.options.view]

    def required_modalities(self) -> list[str]:
        return [self.options.view]

    def build_model(self) -> nn.Module:
        from diffusers import AutoencoderKL

        from cardiacnets.models import create_model

        vae = create_model(self.model_name, **self.model_overrides())
        if not isinstance(vae, AutoencoderKL):
            raise ConfigError(f"task vae trains an AutoencoderKL; model {self.model_name!r} is a "
                              f"{type(vae).__name__}")
        if self.config.init.model is not None:
            load_diffusers_weights(vae, AutoencoderKL, self.config.init.model)
        self.init_encoders(vae)
        return AutoencoderTrainer(vae, self.options.kl_weight)

    def _frames(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        cines = batch[f"cmr_{self.options.view}"]  # (B, slices, frames, H, W)
        b, s, f = cines.shape[:3]
        if generator is None:  # validation: every val_frame_stride-th frame of every slice
            picks = cines[:, :, ::self.options.val_frame_stride]
            return rearrange(picks, "b s f h w -> (b s f) 1 h w")
        k = self.options.frames_per_subject
        slices = torch.randint(s, (b, k), generator=generator)
        frames = torch.randint(f, (b, k), generator=generator)
        subjects = torch.arange(b).repeat_interleave(k)
        picked = cines[subjects, slices.reshape(-1), frames.reshape(-1)]  # (B·k, H, W)
        return rearrange(picked, "n h w -> n 1 h w")

    def training_step(self, model, batch, generator):
        return model(self._frames(batch, generator), generator)

    def validation_step(self, model, batch):
        return model(self._frames(batch, None), sample_posterior=False, with_psnr=True)

    @torch.no_grad()
    def measure_scaling(self, vae) -> dict[str, float]:
        """Latent statistics of the first ``scaling_subjects`` training subjects' frames (all frames).

        Returns:
            ``scaling_factor`` (1 / latent standard deviation), ``latent_mean``, ``latent_std``
            and ``n_frames``.
        """
        c = self.config
        data = TrainingSet(c.data.path, split=c.data.train_split, require=(self.options.view,))
        n = min(len(data), self.options.scaling_subjects)
        if n == 0:
            raise InputError(c.data.path, f"no training subject with a {self.options.view} cine to measure the "
                                          "latent scaling factor")
        device = next(vae.parameters()).device
        was_training = vae.training
        vae.eval()
        latents = []
        for start in range(0, n, 16):
            cines = np.stack([data[i][f"cmr_{self.options.view}"] for i in range(start, min(n, start + 16))])
            frames = rearrange(torch.from_numpy(cines), "b s f h w -> (b s f) 1 h w").to(device)
            latents.append(vae.encode(frames).latent_dist.mode().float().cpu())
        vae.train(was_training)
        all_latents = torch.cat(latents)
        return {"scaling_factor": scaling_factor_of(all_latents), "latent_mean": float(all_latents.mean()),
                "latent_std": float(all_latents.std()), "n_frames": int(all_latents.shape[0])}

    def export(self, model, run_dir):
        vae = model.vae
        stats = self.measure_scaling(vae)
        vae.register_to_config(scaling_factor=stats["scaling_factor"])
        folder = run_dir / "vae"
        vae.save_pretrained(folder, safe_serialization=True)
        (run_dir / "vae_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        return {"vae": folder}
