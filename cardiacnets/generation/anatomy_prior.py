"""ECG → anatomy: a conditional diffusion model over the shape-and-motion code of the heart.

The second part of the anatomy-first generator. Its condition is built by a
frozen read-out (`cardiacnets.generation.readout.ConditionReadout`) from what
an ECG file gives:

- the aligned ECG encoder's pooled embedding and mean token (the waveform),
- the demographics (sex, age, height, weight; standardised, with presence
  flags so that "missing" differs from "average"),
- optionally the device's measurements in the ECG file (12SL intervals, axes,
  rate; presence-flagged too, since a WFDB record has none),

fitted by ridge regression onto standardised CMR indices (LV/RV volumes,
mass, EF, measured on the training segmentations). The condition vector of
the denoiser is those index estimates plus the demographics and the
measurement flags: a dozen well-scaled numbers rather than hundreds of raw
features, which a denoiser trained on ~1,600 hearts can use without
overfitting (unCLIP's prior, Ramesh et al. 2022, conditions on CLIP
embeddings the same way: a compact summary of the condition).

`AnatomyDenoiser` is a residual MLP over the whitened code (`ShapeModel`),
with the timestep and the condition entering every block through adaptive
layer norm (scale and shift, as in DiT, Peebles & Xie 2023), and a learned
null condition for classifier-free guidance (Ho & Salimans 2022). Sampling
(in `cardiacnets.generation.anatomy_pipeline`) uses a diffusers scheduler;
its ``temperature`` scales the initial noise of a deterministic sampler:
1 draws from the learned conditional distribution (several draws show the
uncertainty), 0 gives its most typical anatomy for the ECG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin found here by the pipeline loader)
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.utils import BaseOutput
from torch import nn

from cardiacnets.models.registry import register_model


@dataclass
class AnatomyDenoiserOutput(BaseOutput):
    """Output of `AnatomyDenoiser`.

    Attributes:
        sample: (B, code_dim) prediction (noise or velocity, per the scheduler).
    """

    sample: torch.Tensor


class _Block(nn.Module):
    """Pre-norm residual MLP block modulated by the timestep-and-condition vector (adaptive layer norm)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Dropout(dropout), nn.Linear(2 * width, width))

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(context).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class AnatomyDenoiser(ModelMixin, ConfigMixin):
    """Residual MLP denoiser of shape codes, conditioned on a `ConditionReadout` vector (see the module docstring).

    Args:
        code_dim: size of the shape code.
        condition_dim: size of the condition vector.
        width: hidden width.
        depth: residual blocks.
        dropout: dropout inside the blocks.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, code_dim: int = 32, condition_dim: int = 8, width: int = 256, depth: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width)
        self.condition_mlp = nn.Sequential(nn.Linear(condition_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.null_condition = nn.Parameter(torch.zeros(width))
        self.input_proj = nn.Linear(code_dim, width)
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(depth))
        self.output_norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, code_dim)
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random inputs of the right shapes (tests, benchmarks)."""
        c = self.config
        return {"sample": torch.randn(batch_size, c.code_dim, generator=generator),
                "timestep": torch.randint(0, 1000, (batch_size,), generator=generator),
                "condition": torch.randn(batch_size, c.condition_dim, generator=generator)}

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, condition: torch.Tensor,
                drop_condition: torch.Tensor | None = None, return_dict: bool = True):
        """Predict the noise (or velocity) of noisy codes.

        Args:
            sample: (B, code_dim) noisy codes.
            timestep: (B,) or scalar diffusion step.
            condition: (B, condition_dim) condition vectors.
            drop_condition: (B,) bool: use the learned null condition there (classifier-free guidance).
            return_dict: return an `AnatomyDenoiserOutput` instead of a tuple.
        """
        c = self.config
        batch = sample.shape[0]
        if sample.ndim != 2 or sample.shape[1] != c.code_dim:
            raise ValueError(f"sample must be (batch, {c.code_dim}), got {tuple(sample.shape)}")
        if condition.shape != (batch, c.condition_dim):
            raise ValueError(f"condition must be ({batch}, {c.condition_dim}), got {tuple(condition.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        dtype = self.input_proj.weight.dtype
        emb = self.time_embedding(self.time_proj(timestep).to(dtype))
        cond = self.condition_mlp(condition.to(dtype))
        if drop_condition is not None:
            cond = torch.where(drop_condition.to(sample.device)[:, None], self.null_condition.to(cond.dtype), cond)
        context = nn.functional.silu(emb + cond)
        h = self.input_proj(sample.to(dtype))
        for block in self.blocks:
            h = block(h, context)
        out = self.output_proj(self.output_norm(h))
        return AnatomyDenoiserOutput(sample=out) if return_dict else (out,)


@dataclass
class AnatomyDenoiserConfig:
    """Registry config of `AnatomyDenoiser` (``code_dim`` and ``condition_dim`` are set by the ``anatomy`` task)."""

    code_dim: int = 32
    condition_dim: int = 8
    width: int = 256
    depth: int = 4
    dropout: float = 0.0


def build_anatomy_denoiser(config: AnatomyDenoiserConfig) -> AnatomyDenoiser:
    return AnatomyDenoiser(code_dim=config.code_dim, condition_dim=config.condition_dim, width=config.width,
                           depth=config.depth, dropout=config.dropout)


register_model("anatomy_prior_demo", AnatomyDenoiserConfig, build_anatomy_denoiser,
               "anatomy prior: residual MLP (width 256, 4 blocks, adaptive layer norm) over 32-number shape codes")
register_model("anatomy_prior_paper", AnatomyDenoiserConfig, build_anatomy_denoiser,
               "anatomy prior for UK Biobank-size cohorts: width 1024, 8 blocks, 64-number codes",
               code_dim=64, width=1024, depth=8, dropout=0.1)
