"""The cine denoiser: diffusers' spatio-temporal ``UNet3DConditionModel`` conditioned on the ECG.

CardiacNets (arXiv 2411.13602) generates a cine from the ECG with a latent
diffusion model whose denoiser cross-attends to the aligned ECG encoder's
tokens. `CineDenoiser` is that denoiser over the latents of a cine
(latent_channels × frames × h × w, from `cardiacnets.generation.vae`):

- the network is diffusers' ``UNet3DConditionModel`` (ModelScope's
  text-to-video UNet: per-frame 2-D residual blocks and spatial transformers,
  temporal convolutions and temporal self-attention across frames,
  cross-attention to the condition tokens);
- the condition tokens are the ECG encoder's tokens (projected to the
  cross-attention width, layer-normalised) followed by one token for the
  pooled aligned embedding and, optionally, one for the demographics;
- the pooled embedding (layer-normalised; and demographics) also enters as a
  global vector through the UNet's ``timestep_cond`` input, which adds it to
  the timestep embedding that modulates every residual block;
- optionally, a frozen linear read-out of the embedding onto standardised CMR
  indices (LV/RV volumes, mass: a ridge regression fitted on the training
  split by the diffusion task) joins that global vector. Its inputs
  (``index_features``, see `index_features`) are the pooled embedding and,
  optionally, the mean ECG token, the demographics, their pairwise products
  and the embedding × demographics products (a linear map of these is a
  read-out whose ECG weights depend on body size and sex). The model still sees
  the ECG only; the read-out points the condition at the directions of the
  embedding that carry cardiac size and function, which a denoiser trained for
  minutes on a CPU otherwise barely picks up (the size signal is ~1 % of the
  denoising loss);
- classifier-free guidance (Ho & Salimans, 2022) with a learned null
  condition: where ``drop_condition`` is set, every token is replaced by one
  learned null token and the global vector by a learned null vector (the
  training stage drops the condition at random; the pipeline runs the
  conditional and the null branch together);
- optional patching (as in DiT, Peebles & Xie 2023): ``spatial_patch`` ×
  ``spatial_patch`` latent pixels and ``temporal_patch`` frames are folded
  into channels before the UNet and unfolded after it, which divides the
  positions the UNet processes (its cost) by their product. A frame count
  that ``temporal_patch`` does not divide is padded cyclically (the cine is
  one cardiac cycle, so the frame after the last is the first) and cropped.

Registered models: ``cine_unet3d_demo`` (25 frames of 4 × 8 × 8 latents,
5 frames folded into channels, levels 64/128, about 5 M parameters; sized for a
2-core CPU)
and ``cine_unet3d_paper`` (50 frames of 4 × 32 × 32 latents, levels
256/512/1024/1024, cross-attending to ECG ViT-L tokens of width 1024).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin found here by the pipeline loader)
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.models.registry import register_model


#: Inputs the frozen index read-out can take, concatenated in this order (see `index_features`).
INDEX_FEATURES = ("embedding", "token_mean", "demographics", "demographic_products", "embedding_x_demographics")
_NEEDS_DEMOGRAPHICS = ("demographics", "demographic_products", "embedding_x_demographics")


def default_index_features(n_demographics: int) -> tuple[str, ...]:
    """The read-out's inputs when none are configured: the embedding (and the demographics, if any)."""
    return ("embedding", "demographics") if n_demographics else ("embedding",)


def check_index_features(names, n_demographics: int) -> tuple[str, ...]:
    """`names` as a tuple in `INDEX_FEATURES` order; ``ConfigError`` for unknown or impossible ones."""
    names = tuple(names)
    unknown = [n for n in names if n not in INDEX_FEATURES]
    if unknown or len(set(names)) != len(names) or not names:
        raise ConfigError(f"index_features must be distinct names among {list(INDEX_FEATURES)}, got {list(names)}")
    if not n_demographics and any(n in _NEEDS_DEMOGRAPHICS for n in names):
        raise ConfigError(f"index_features {[n for n in names if n in _NEEDS_DEMOGRAPHICS]} need demographics "
                          "(n_demographics is 0)")
    return tuple(n for n in INDEX_FEATURES if n in names)


def index_feature_dim(names, embed_dim: int, token_dim: int, n_demographics: int) -> int:
    """Width of `index_features` for these sizes."""
    sizes = {"embedding": embed_dim, "token_mean": token_dim, "demographics": n_demographics,
             "demographic_products": n_demographics * (n_demographics + 1) // 2,
             "embedding_x_demographics": embed_dim * n_demographics}
    return sum(sizes[n] for n in names)


def index_features(names, ecg_tokens: torch.Tensor | None, ecg_embedding: torch.Tensor,
                   demographics: torch.Tensor | None) -> torch.Tensor:
    """The index read-out's input: the named features concatenated in `INDEX_FEATURES` order.

    Args:
        names: feature names (`check_index_features`).
        ecg_tokens: (B, T', token_dim), needed for ``token_mean``.
        ecg_embedding: (B, embed_dim) pooled embedding.
        demographics: (B, n) standardised demographics with missing values at 0 (the training mean).

    Returns:
        (B, `index_feature_dim`) in the embedding's dtype. ``demographic_products`` are the
        products of each pair of demographics, squares included (upper triangle, row-major).
    """
    parts = []
    for name in names:
        if name == "embedding":
            parts.append(ecg_embedding)
        elif name == "token_mean":
            if ecg_tokens is None:
                raise ValueError("the index read-out uses the mean ECG token: pass ecg_tokens")
            parts.append(ecg_tokens.to(ecg_embedding.dtype).mean(dim=1))
        else:
            if demographics is None:
                raise ValueError(f"the index read-out uses {name!r}: pass demographics")
            d = demographics.to(ecg_embedding.dtype)
            if name == "demographics":
                parts.append(d)
            elif name == "demographic_products":
                rows, cols = torch.triu_indices(d.shape[1], d.shape[1], device=d.device)
                parts.append(d[:, rows] * d[:, cols])
            else:
                parts.append(rearrange(ecg_embedding[:, :, None] * d[:, None, :], "b e n -> b (e n)"))
    return torch.cat(parts, dim=-1)


@dataclass
class CineDenoiserOutput(BaseOutput):
    """Output of `CineDenoiser`.

    Attributes:
        sample: (B, latent_channels, frames, h, w) prediction (noise or velocity, per the scheduler).
    """

    sample: torch.Tensor


class CineDenoiser(ModelMixin, ConfigMixin):
    """ECG-conditioned spatio-temporal UNet over cine latents (see the module docstring).

    Args:
        latent_channels: channels of the autoencoder's latents.
        num_frames: frames of a cine.
        latent_size: side of the latent maps (image size / autoencoder downsampling).
        spatial_patch: latent pixels folded into channels along each axis (1: none).
        temporal_patch: frames folded into channels (1: none).
        block_out_channels: channels of the UNet levels.
        cross_attention_levels: whether each level has (spatial, temporal and cross) attention.
        layers_per_block: residual layers per level.
        attention_head_dim: diffusers' UNet3D uses this as the number of attention heads of each
            level (and as the head size of its input temporal transformer, which has 8 heads).
        norm_num_groups: group-norm groups.
        cross_attention_dim: width of the condition tokens.
        condition_dim: width of the global condition vector (``timestep_cond``).
        ecg_token_dim: width of the ECG encoder's tokens.
        ecg_embed_dim: size of the pooled ECG embedding.
        n_demographics: length of the demographics vector (0: not conditioned on demographics).
        n_condition_indices: CMR indices read out of the pooled embedding by a frozen linear map
            (fitted by the diffusion task) and added to the global condition (0: none).
        index_features: that read-out's inputs (names of `INDEX_FEATURES`; default the embedding,
            and the demographics when there are any).
        attention: ``math`` (matmul-softmax attention: on a CPU its bf16 backward pass is several
            times faster than PyTorch's fused kernel) or ``sdpa`` (``scaled_dot_product_attention``,
            the choice on GPUs).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, latent_channels: int = 4, num_frames: int = 25, latent_size: int = 16,
                 spatial_patch: int = 2, temporal_patch: int = 1, block_out_channels: tuple[int, ...] = (64, 128),
                 cross_attention_levels: tuple[bool, ...] = (True, False), layers_per_block: int = 1,
                 attention_head_dim: int = 8, norm_num_groups: int = 16, cross_attention_dim: int = 128,
                 condition_dim: int = 128, ecg_token_dim: int = 128, ecg_embed_dim: int = 128,
                 n_demographics: int = 0, n_condition_indices: int = 0, attention: str = "math",
                 index_features: tuple[str, ...] | None = None):
        super().__init__()
        from diffusers import UNet3DConditionModel

        _validate(latent_size, spatial_patch, temporal_patch, block_out_channels, cross_attention_levels,
                  norm_num_groups, attention)
        d = cross_attention_dim
        self.token_proj = nn.Linear(ecg_token_dim, d)
        self.embed_proj = nn.Linear(ecg_embed_dim, d)
        # Demographics enter as values and presence flags, so "missing" differs from "average".
        self.demographics_proj = nn.Linear(2 * n_demographics, d) if n_demographics else None
        self.context_norm = nn.LayerNorm(d)
        # The pooled embedding is unit-norm (components ~ 1/sqrt(dim)) while the timestep features it is added
        # to are ~1: normalising it first lets the condition steer the network from the first steps.
        self.embed_norm = nn.LayerNorm(ecg_embed_dim)
        # Frozen linear read-out of the embedding onto standardised CMR indices (set by the diffusion task
        # from a ridge fit on the training split; see `set_index_projection`).
        self.index_feature_names = check_index_features(
            index_features or default_index_features(n_demographics), n_demographics)
        width = index_feature_dim(self.index_feature_names, ecg_embed_dim, ecg_token_dim, n_demographics)
        self.index_proj = nn.Linear(width, n_condition_indices) if n_condition_indices else None
        if self.index_proj is not None:
            self.index_proj.requires_grad_(False)
        global_in = ecg_embed_dim + n_condition_indices + 2 * n_demographics
        self.global_mlp = nn.Sequential(nn.Linear(global_in, condition_dim), nn.SiLU(),
                                        nn.Linear(condition_dim, condition_dim))
        self.null_token = nn.Parameter(torch.randn(d) * 0.02)
        self.null_global = nn.Parameter(torch.zeros(condition_dim))
        channels = latent_channels * spatial_patch**2 * temporal_patch
        down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in cross_attention_levels)
        up = tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(cross_attention_levels))
        self.unet = UNet3DConditionModel(
            sample_size=latent_size // spatial_patch, in_channels=channels, out_channels=channels,
            down_block_types=down, up_block_types=up, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, norm_num_groups=norm_num_groups, cross_attention_dim=d,
            attention_head_dim=attention_head_dim, time_cond_proj_dim=condition_dim)
        self.set_attention(attention)

    def set_attention(self, attention: Literal["math", "sdpa"]) -> None:
        """Choose the attention implementation (see the class docstring); the weights are unchanged."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        if attention not in ("math", "sdpa"):
            raise ValueError(f"attention must be 'math' or 'sdpa', got {attention!r}")
        self.unet.set_attn_processor(AttnProcessor() if attention == "math" else AttnProcessor2_0())

    @torch.no_grad()
    def set_index_projection(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the frozen read-out onto standardised CMR indices.

        Args:
            weight: (n_condition_indices, width of `index_features`).
            bias: (n_condition_indices,).
        """
        if self.index_proj is None:
            raise ValueError("this denoiser has no index projection (n_condition_indices is 0)")
        if weight.shape != self.index_proj.weight.shape or bias.shape != self.index_proj.bias.shape:
            raise ValueError(f"index projection must be {tuple(self.index_proj.weight.shape)} and "
                             f"{tuple(self.index_proj.bias.shape)}, got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.index_proj.weight.copy_(weight)
        self.index_proj.bias.copy_(bias)

    def predict_indices(self, ecg_embedding: torch.Tensor, demographics: torch.Tensor | None = None,
                        demographics_mask: torch.Tensor | None = None,
                        ecg_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen read-out's standardised CMR indices, (B, n_condition_indices).

        Its inputs are the `index_features` named in the config; demographics enter standardised
        with missing values at 0 (the training mean); ``token_mean`` needs `ecg_tokens`.
        """
        if self.index_proj is None:
            raise ValueError("this denoiser has no index projection (n_condition_indices is 0)")
        dtype = self.index_proj.weight.dtype
        values = None
        if self.config.n_demographics:
            values, present = self._demographics(demographics, demographics_mask, ecg_embedding.shape[0],
                                                 ecg_embedding.device)
            values = values * present
        features = index_features(self.index_feature_names, ecg_tokens, ecg_embedding.to(dtype), values)
        return self.index_proj(features)

    # --- condition ---------------------------------------------------------------------------------------------
    def embed_condition(self, ecg_tokens: torch.Tensor, ecg_embedding: torch.Tensor,
                        demographics: torch.Tensor | None = None, demographics_mask: torch.Tensor | None = None,
                        drop_condition: torch.Tensor | None = None,
                        index_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention tokens and global vector of a condition (null where dropped).

        Args:
            ecg_tokens: (B, T', ecg_token_dim).
            ecg_embedding: (B, ecg_embed_dim).
            demographics: (B, n_demographics) standardised values (ignored without demographics).
            demographics_mask: (B, n_demographics) bool, False where missing (default: all present
                when `demographics` is given, all missing otherwise).
            drop_condition: (B,) bool, True = use the null condition for that sample.
            index_values: (B, n_condition_indices) standardised CMR indices that replace the
                read-out where finite (training on a cine's own indices; NaN keeps the read-out).

        Returns:
            ``(context, global_condition)``: (B, T' + 1 [+ 1], cross_attention_dim) and (B, condition_dim).
        """
        c = self.config
        batch = ecg_tokens.shape[0]
        if ecg_tokens.ndim != 3 or ecg_tokens.shape[-1] != c.ecg_token_dim:
            raise ValueError(f"ecg_tokens must be (batch, tokens, {c.ecg_token_dim}), got {tuple(ecg_tokens.shape)}")
        if ecg_embedding.shape != (batch, c.ecg_embed_dim):
            raise ValueError(f"ecg_embedding must be ({batch}, {c.ecg_embed_dim}), got {tuple(ecg_embedding.shape)}")
        dtype = self.token_proj.weight.dtype
        parts = [self.token_proj(ecg_tokens.to(dtype)), rearrange(self.embed_proj(ecg_embedding.to(dtype)),
                                                                  "b d -> b 1 d")]
        global_in = [self.embed_norm(ecg_embedding.to(dtype))]
        if c.n_demographics:
            values, present = self._demographics(demographics, demographics_mask, batch, ecg_tokens.device)
            flags = torch.cat([values * present, present], dim=-1).to(dtype)
            parts.append(rearrange(self.demographics_proj(flags), "b d -> b 1 d"))
        if self.index_proj is not None:
            indices = self.predict_indices(ecg_embedding, demographics, demographics_mask, ecg_tokens).to(dtype)
            if index_values is not None:
                if index_values.shape != indices.shape:
                    raise ValueError(f"index_values must be {tuple(indices.shape)}, got {tuple(index_values.shape)}")
                indices = torch.where(torch.isfinite(index_values), index_values.to(dtype), indices)
            global_in.append(indices)
        elif index_values is not None:
            raise ValueError("index_values given, but this denoiser has no condition indices")
        if c.n_demographics:
            global_in.append(flags)
        context = self.context_norm(torch.cat(parts, dim=1))
        global_condition = self.global_mlp(torch.cat(global_in, dim=-1))
        if drop_condition is not None:
            if drop_condition.shape != (batch,):
                raise ValueError(f"drop_condition must be ({batch},), got {tuple(drop_condition.shape)}")
            drop = drop_condition.to(torch.bool)
            null_token = self.null_token.to(context.dtype).expand_as(context)
            context = torch.where(rearrange(drop, "b -> b 1 1"), null_token, context)
            global_condition = torch.where(rearrange(drop, "b -> b 1"),
                                           self.null_global.to(global_condition.dtype), global_condition)
        return context, global_condition

    def _demographics(self, demographics, mask, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.n_demographics
        if demographics is None:
            return torch.zeros(batch, n, device=device), torch.zeros(batch, n, device=device)
        if demographics.shape != (batch, n):
            raise ValueError(f"demographics must be ({batch}, {n}), got {tuple(demographics.shape)}")
        present = torch.ones_like(demographics) if mask is None else mask.to(demographics.dtype)
        return torch.nan_to_num(demographics.float()), present.float()

    # --- patching ----------------------------------------------------------------------------------------------
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, h, w) latents → (B, C·pt·p·p, ⌈F/pt⌉, h/p, w/p) UNet input (cyclic frame padding)."""
        c = self.config
        pad = -latents.shape[2] % c.temporal_patch
        if pad:
            latents = torch.cat([latents, latents[:, :, :pad]], dim=2)
        return rearrange(latents, "b c (f pt) (h ph) (w pw) -> b (c pt ph pw) f h w", pt=c.temporal_patch,
                         ph=c.spatial_patch, pw=c.spatial_patch)

    def unpatchify(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The inverse of `patchify`, cropped to `num_frames` frames."""
        c = self.config
        out = rearrange(x, "b (c pt ph pw) f h w -> b c (f pt) (h ph) (w pw)", pt=c.temporal_patch,
                        ph=c.spatial_patch, pw=c.spatial_patch)
        return out[:, :, :num_frames]

    # --- forward -----------------------------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int, ecg_tokens: torch.Tensor,
                ecg_embedding: torch.Tensor, demographics: torch.Tensor | None = None,
                demographics_mask: torch.Tensor | None = None, drop_condition: torch.Tensor | None = None,
                index_values: torch.Tensor | None = None,
                return_dict: bool = True) -> CineDenoiserOutput | tuple[torch.Tensor]:
        """Predict the noise (or velocity) of noisy cine latents.

        Args:
            sample: (B, latent_channels, frames, h, w) noisy latents.
            timestep: diffusion step, scalar or (B,).
            ecg_tokens, ecg_embedding, demographics, demographics_mask, drop_condition, index_values:
                the condition (see `embed_condition`).
            return_dict: return a `CineDenoiserOutput` instead of a tuple.

        Returns:
            The prediction, shaped like `sample`.
        """
        c = self.config
        expected = (c.latent_channels, c.latent_size, c.latent_size)
        if sample.ndim != 5 or (sample.shape[1], *sample.shape[3:]) != expected:
            raise ValueError(f"sample must be (batch, {c.latent_channels}, frames, {c.latent_size}, "
                             f"{c.latent_size}), got {tuple(sample.shape)}")
        context, global_condition = self.embed_condition(ecg_tokens, ecg_embedding, demographics, demographics_mask,
                                                         drop_condition, index_values)
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.to(sample.device).reshape(-1).expand(sample.shape[0])
        x = self.patchify(sample)
        x = self.unet(x, timestep, encoder_hidden_states=context, timestep_cond=global_condition).sample
        out = self.unpatchify(x, sample.shape[2]).to(sample.dtype)
        return CineDenoiserOutput(sample=out) if return_dict else (out,)

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None,
                       n_tokens: int = 5) -> dict[str, torch.Tensor]:
        """Random inputs of the right shapes (tests and benchmarks)."""
        c = self.config
        inputs = {
            "sample": torch.randn(batch_size, c.latent_channels, c.num_frames, c.latent_size, c.latent_size,
                                  generator=generator),
            "timestep": torch.randint(0, 1000, (batch_size,), generator=generator),
            "ecg_tokens": torch.randn(batch_size, n_tokens, c.ecg_token_dim, generator=generator),
            "ecg_embedding": torch.randn(batch_size, c.ecg_embed_dim, generator=generator),
        }
        if c.n_demographics:
            inputs["demographics"] = torch.randn(batch_size, c.n_demographics, generator=generator)
        return inputs


def _validate(latent_size, spatial_patch, temporal_patch, block_out_channels, cross_attention_levels,
              norm_num_groups, attention) -> None:
    if spatial_patch < 1 or temporal_patch < 1:
        raise ConfigError("CineDenoiser: spatial_patch and temporal_patch must be at least 1")
    levels = len(block_out_channels)
    if levels < 1 or len(cross_attention_levels) != levels:
        raise ConfigError(f"CineDenoiser: cross_attention_levels {list(cross_attention_levels)} needs one entry per "
                          f"level of block_out_channels {list(block_out_channels)}")
    grid = latent_size // spatial_patch if latent_size % spatial_patch == 0 else 0
    if not grid or grid % 2 ** (levels - 1):
        raise ConfigError(f"CineDenoiser: latent_size {latent_size} / spatial_patch {spatial_patch} must be a "
                          f"whole multiple of 2^(levels - 1) = {2 ** (levels - 1)}")
    if any(ch % norm_num_groups for ch in block_out_channels):
        raise ConfigError(f"CineDenoiser: norm_num_groups {norm_num_groups} must divide {list(block_out_channels)}")
    if attention not in ("math", "sdpa"):
        raise ConfigError(f"CineDenoiser: attention must be 'math' or 'sdpa', got {attention!r}")


@dataclass
class CineDenoiserConfig:
    """Registry config of a `CineDenoiser` (its constructor arguments; see the class)."""

    latent_channels: int = 4
    num_frames: int = 25
    latent_size: int = 8
    spatial_patch: int = 1
    temporal_patch: int = 5
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128])
    cross_attention_levels: list[bool] = field(default_factory=lambda: [True, False])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    cross_attention_dim: int = 128
    condition_dim: int = 128
    ecg_token_dim: int = 128
    ecg_embed_dim: int = 128
    n_demographics: int = 0
    n_condition_indices: int = 0
    attention: Literal["math", "sdpa"] = "math"
    index_features: list[str] | None = None

    def validate(self) -> None:
        _validate(self.latent_size, self.spatial_patch, self.temporal_patch, self.block_out_channels,
                  self.cross_attention_levels, self.norm_num_groups, self.attention)
        if self.num_frames < 1 or self.latent_channels < 1 or self.n_demographics < 0:
            raise ConfigError("CineDenoiserConfig: num_frames and latent_channels must be at least 1, "
                              "n_demographics non-negative")


def build_cine_denoiser(config: CineDenoiserConfig) -> CineDenoiser:
    """A `CineDenoiser` from its registry config."""
    from cardiacnets.config import to_dict

    config.validate()
    values = to_dict(config)
    values["block_out_channels"] = tuple(values["block_out_channels"])
    values["cross_attention_levels"] = tuple(values["cross_attention_levels"])
    if values["index_features"] is not None:
        values["index_features"] = tuple(values["index_features"])
    return CineDenoiser(**values)


register_model("cine_unet3d_demo", CineDenoiserConfig, build_cine_denoiser,
               "demo cine denoiser: UNet3D 64/128 over 25 x 4 x 8 x 8 latents, 5 frames per position, "
               "ResNet1D tokens (128)")
register_model("cine_unet3d_paper", CineDenoiserConfig, build_cine_denoiser,
               "paper-scale cine denoiser: UNet3D 256/512/1024/1024 over 50 x 4 x 32 x 32 latents, "
               "ECG ViT-L tokens (1024)",
               num_frames=50, latent_size=32, spatial_patch=1, temporal_patch=1, block_out_channels=[256, 512, 1024, 1024],
               cross_attention_levels=[True, True, True, False], layers_per_block=2, attention_head_dim=8,
               norm_num_groups=32, cross_attention_dim=1024, condition_dim=256, ecg_token_dim=1024,
               ecg_embed_dim=256, attention="sdpa")
