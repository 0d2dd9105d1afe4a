"""The ECG encoder of CardiacNets: a Vision Transformer over lead × time patches.

CardiacNets (arXiv 2411.13602) encodes a 12-lead ECG with a ViT whose tokens
are patches of one lead × ``patch_size`` samples (12 × 5000 samples at 500 Hz
with patches of 100 samples: 600 tokens plus a class token; ViT-Large, 1024
wide, 24 blocks, 16 heads, projected to 256). Each token gets a learned lead
embedding and a learned time-position embedding; pre-norm transformer blocks
(timm's, with a fused QKV projection; ``scaled_dot_product_attention`` on
accelerators, explicit softmax attention on the CPU where that trains faster —
see `cardiacnets.models.layers.Attention`) follow.

Absent leads: the patch tokens of a lead marked absent in ``lead_mask`` are
*replaced* by one learned mask token before the lead and time embeddings are
added, so the encoder knows which lead is missing but none of its samples
reach the network (their values cannot change the output). This keeps
attention dense and unmasked (one batched operation, no padding), and lets one
encoder serve 12-lead, reduced-lead and single-lead input;
`cardiacnets.data.transforms.random_lead_mask` draws such reduced-lead views during training.

Demographics (optional): with ``film`` set, a FiLM layer (identity at
initialisation) scales and shifts every token by a small MLP of the
demographics vector before the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, repeat
from timm.layers import trunc_normal_
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.models.layers import FiLM, init_weights, transformer_blocks
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class


@dataclass
class ECGViTConfig:
    """Shape and size of an `ECGViT`. The defaults are the small demo encoder (250 Hz, 10 s).

    Attributes:
        n_leads: leads of the input (12, in `STANDARD_LEADS` order).
        n_samples: samples per lead the position embedding covers (shorter inputs
            that are a multiple of ``patch_size`` use its first positions).
        patch_size: samples per token (one lead × ``patch_size`` samples).
        width: token width; a multiple of 64 keeps the matmuls fast.
        depth: transformer blocks.
        heads: attention heads (``width / heads`` = 64 is the fast head size).
        mlp_ratio: MLP hidden width ÷ ``width``.
        qkv_bias: bias in the QKV projection.
        drop_path_rate: stochastic depth at the last block.
        embed_dim: size of the projected class-token embedding (`forward_head`).
        film: condition the tokens on demographics with FiLM.
        n_demographics: length of the demographics vector when ``film`` is set.
        film_hidden: hidden width of the FiLM MLP.
        attention: ``auto`` (explicit softmax attention on the CPU, where it is faster to train,
            ``scaled_dot_product_attention`` elsewhere), ``sdpa`` or ``math``; see `layers.Attention`.
    """

    n_leads: int = 12
    n_samples: int = 2500
    patch_size: int = 100
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    embed_dim: int = 256
    film: bool = False
    n_demographics: int = 3
    film_hidden: int = 64
    attention: Literal["auto", "sdpa", "math"] = "auto"

    def validate(self) -> None:
        for name in ("n_leads", "n_samples", "patch_size", "width", "depth", "heads", "embed_dim", "n_demographics"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ECGViTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_samples % self.patch_size:
            raise ConfigError(f"ECGViTConfig: n_samples {self.n_samples} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"ECGViTConfig: width {self.width} is not divisible by heads {self.heads}")

    @property
    def n_time_patches(self) -> int:
        return self.n_samples // self.patch_size

    @property
    def n_tokens(self) -> int:
        """Patch tokens of a full-length input (without the class token)."""
        return self.n_leads * self.n_time_patches


@pretrained_class
class ECGViT(nn.Module, PretrainedMixin):
    """ViT over lead × time patches of a 12-lead ECG.

    Args:
        config: the `ECGViTConfig`.
    """

    config_class = ECGViTConfig

    def __init__(self, config: ECGViTConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.patch_embed = nn.Linear(c.patch_size, c.width)
        self.lead_embed = nn.Parameter(torch.zeros(c.n_leads, c.width))
        self.time_embed = nn.Parameter(torch.zeros(c.n_time_patches, c.width))
        self.cls_token = nn.Parameter(torch.zeros(c.width))
        self.mask_token = nn.Parameter(torch.zeros(c.width))  # stands in for the patches of an absent lead
        self.blocks = transformer_blocks(c.width, c.depth, c.heads, c.mlp_ratio, c.qkv_bias, c.drop_path_rate, c.attention)
        self.norm = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.embed_dim)
        self.apply(init_weights)
        for p in (self.lead_embed, self.time_embed, self.cls_token, self.mask_token):
            trunc_normal_(p, std=0.02)
        # Built after `init_weights` so that its zero-initialised output layer (identity FiLM) stays zero.
        self.film = FiLM(c.n_demographics, c.width, c.film_hidden) if c.film else None

    @property
    def width(self) -> int:
        return self.config.width

    def check_input(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None, demographics: torch.Tensor | None) -> int:
        """Check input shapes against the config.

        Returns:
            The number of time patches of ``ecg``.

        Raises:
            ValueError: a wrongly shaped ECG, lead mask or demographics vector, or demographics
                given to an encoder without FiLM (or missing for one with it).
        """
        c = self.config
        if ecg.ndim != 3 or ecg.shape[1] != c.n_leads:
            raise ValueError(f"ECGViT expects ecg of shape (batch, {c.n_leads}, samples), got {tuple(ecg.shape)}")
        n_samples = ecg.shape[-1]
        if n_samples % c.patch_size or n_samples > c.n_samples:
            raise ValueError(f"ECGViT: {n_samples} samples is not a multiple of patch_size {c.patch_size} "
                             f"up to n_samples {c.n_samples}")
        if lead_mask is not None and lead_mask.shape != ecg.shape[:2]:
            raise ValueError(f"lead_mask must have shape {tuple(ecg.shape[:2])}, got {tuple(lead_mask.shape)}")
        if c.film and demographics is None:
            raise ValueError("this ECGViT conditions on demographics (config.film); pass demographics")
        if not c.film and demographics is not None:
            raise ValueError("demographics given but config.film is off; build the encoder with film=True")
        if demographics is not None and demographics.shape != (ecg.shape[0], c.n_demographics):
            raise ValueError(f"demographics must have shape ({ecg.shape[0]}, {c.n_demographics}), got {tuple(demographics.shape)}")
        return n_samples // c.patch_size

    def embed_patches(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens with absent leads replaced and lead/time embeddings added.

        Args:
            ecg: (B, leads, samples) in mV.
            lead_mask: (B, leads) bool, False = lead absent; ``None`` = all present.

        Returns:
            (B, leads × time patches, width) tokens, lead-major (all patches of lead I first).
        """
        n_time = ecg.shape[-1] // self.config.patch_size
        patches = rearrange(ecg, "b l (p s) -> b l p s", s=self.config.patch_size)
        tokens = self.patch_embed(patches)  # (B, leads, time patches, width)
        if lead_mask is not None:
            present = rearrange(lead_mask.to(torch.bool), "b l -> b l 1 1")
            tokens = torch.where(present, tokens, self.mask_token.to(tokens.dtype))
        position = rearrange(self.lead_embed, "l c -> l 1 c") + self.time_embed[:n_time]
        return rearrange(tokens + position, "b l p c -> b (l p) c")

    def run_blocks(self, tokens: torch.Tensor, demographics: torch.Tensor | None = None) -> torch.Tensor:
        """Prepend the class token, apply FiLM, the transformer blocks and the final norm.

        Args:
            tokens: (B, N, width) embedded patch tokens (all of them, or a kept subset as in MAE).
            demographics: (B, n_demographics) when ``config.film`` is set.

        Returns:
            (B, 1 + N, width) normalised tokens, class token first.
        """
        cls = repeat(self.cls_token, "c -> b 1 c", b=tokens.shape[0]).to(tokens.dtype)
        x = torch.cat([cls, tokens], dim=1)
        if self.film is not None:
            x = self.film(x, demographics)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                         demographics: torch.Tensor | None = None) -> torch.Tensor:
        """Encode an ECG into tokens.

        Args:
            ecg: (B, leads, samples) float, mV; samples a multiple of ``patch_size`` up to ``n_samples``.
            lead_mask: (B, leads) bool, False = lead absent (its samples are ignored).
            demographics: (B, n_demographics) float, required when ``config.film`` is set.

        Returns:
            (B, 1 + leads × samples / patch_size, width) tokens, class token first.
        """
        self.check_input(ecg, lead_mask, demographics)
        return self.run_blocks(self.embed_patches(ecg, lead_mask), demographics)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Project the class token.

        Args:
            tokens: (B, 1 + N, width) from `forward_features`.

        Returns:
            (B, embed_dim) embedding (not normalised).
        """
        return self.head(tokens[:, 0])

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                demographics: torch.Tensor | None = None) -> torch.Tensor:
        """`forward_features` then `forward_head`: (B, leads, samples) → (B, embed_dim)."""
        return self.forward_head(self.forward_features(ecg, lead_mask, demographics))


