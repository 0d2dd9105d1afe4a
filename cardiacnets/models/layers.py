"""Building blocks shared by the cardiacnets encoders.

Transformer blocks are timm's pre-norm ViT ``Block`` (fused QKV projection,
``torch.nn.functional.scaled_dot_product_attention``, GELU MLP), so the ECG
ViT, the MAE decoder and timm's image models share one implementation. This
module adds what timm does not have: FiLM conditioning on demographics
(Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer",
2018), the symmetric InfoNCE used by the hybrid pretraining objectives
(Radford et al., CLIP, 2021), weight initialisation, and parameter counting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Attention as TimmAttention
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

#: How attention is computed: ``sdpa`` = ``F.scaled_dot_product_attention``; ``math`` = explicit
#: softmax(QKᵀ/√d)·V with two batched matmuls; ``auto`` = ``sdpa`` on accelerators, ``math`` on the CPU.
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "math")


class Attention(TimmAttention):
    """timm's multi-head self-attention (fused QKV projection) with a CPU-friendly path.

    On GPUs ``scaled_dot_product_attention`` (flash / memory-efficient kernels) is
    the right choice. On the CPU, PyTorch's flash-attention kernel is slow in
    training for the short sequences of these models: measured on the 2-core
    development machine (bf16, forward + backward, one thread), 97 ms vs 28 ms for
    (batch 128, 4 heads, 61 tokens, 64 dims) — the MAE encoder — and 407 ms vs
    266 ms for (64, 4, 301, 64) — the demo ECG ViT — against two batched matmuls
    and a softmax, which reach the matmul kernels' throughput. ``implementation``
    (set by `transformer_blocks`) chooses; ``auto`` picks by the input's device.
    The softmax runs in the input dtype (bf16 under autocast, accumulating in fp32
    inside the kernel), as CPU autocast does for ``softmax``.
    """

    implementation: str = "auto"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """(B, N, C) → (B, N, C); masks and causal attention always go through timm's SDPA path."""
        use_math = self.implementation == "math" or (self.implementation == "auto" and x.device.type == "cpu")
        if not use_math or attn_mask is not None or is_causal or self.gate is not None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        weights = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))  # (B, heads, N, N)
        out = rearrange(weights @ v, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(self.norm(out)))


def transformer_blocks(width: int, depth: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                       drop_path_rate: float = 0.0, attention: str = "auto") -> nn.ModuleList:
    """A stack of pre-norm transformer blocks (timm's ViT ``Block`` with `Attention`).

    Args:
        width: token width (channels).
        depth: number of blocks.
        heads: attention heads (``width`` must be divisible by it).
        mlp_ratio: MLP hidden width ÷ ``width``.
        qkv_bias: bias in the fused QKV projection.
        drop_path_rate: stochastic depth rate, increasing linearly to this value over the blocks.
        attention: one of `ATTENTION_IMPLEMENTATIONS` (see `Attention`).

    Returns:
        ``nn.ModuleList`` of ``depth`` blocks mapping (B, N, width) → (B, N, width).
    """
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # plain floats: works on the meta device
    blocks = nn.ModuleList(
        Block(width, heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, attn_layer=Attention)
        for rate in rates
    )
    for block in blocks:
        block.attn.implementation = attention
    return blocks


def init_weights(module: nn.Module) -> None:
    """Initialise a module as ViT/MAE do: truncated normal (std 0.02) linear weights, zero biases.

    Apply with ``model.apply(init_weights)``; LayerNorms get unit scale and zero shift.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class FiLM(nn.Module):
    """Feature-wise linear modulation of tokens by a conditioning vector.

    ``tokens * (1 + scale) + shift`` with (scale, shift) from a two-layer MLP of
    the condition. The last layer starts at zero, so at initialisation the
    module is the identity and a pretrained encoder is unchanged by adding it.

    Args:
        n_conditions: length of the condition vector (e.g. normalised age, sex, BMI).
        width: channels of the tokens to modulate.
        hidden: hidden width of the MLP.
    """

    def __init__(self, n_conditions: int, width: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_conditions, hidden), nn.GELU(), nn.Linear(hidden, 2 * width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Modulate tokens.

        Args:
            tokens: (B, N, C) token sequence.
            condition: (B, n_conditions) float.

        Returns:
            Tensor of the shape of ``tokens``.
        """
        scale, shift = rearrange(self.mlp(condition.to(tokens.dtype)), "b (two c) -> two b 1 c", two=2)
        return tokens * (1.0 + scale) + shift


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE between two batches of paired embeddings (CLIP's loss, one process).

    Row i of ``a`` and row i of ``b`` are the positive pair; every other row of
    the batch is a negative. The cross-process version with gathered negatives
    is ``cardiacnets.losses.ClipLoss``; this one serves the in-model auxiliary
    terms (hybrid MAE views, short-axis ↔ long-axis).

    Args:
        a: (B, D) L2-normalised embeddings.
        b: (B, D) L2-normalised embeddings.
        logit_scale: multiplier of the cosine similarities (1 / temperature).

    Returns:
        Scalar loss: the mean of the a→b and b→a cross-entropies.
    """
    logits = logit_scale * (a.float() @ b.float().T)  # (B, B) similarities, computed in fp32
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def temperature_to_logit_scale(temperature: float) -> float:
    """``log(1 / temperature)``: the stored (log-space) logit scale for a temperature."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return math.log(1.0 / temperature)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on the meta device).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The parameter count.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
