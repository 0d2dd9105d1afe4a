"""A 1-D residual network over the 12-lead ECG: the supervised baseline encoder.

Residual networks of 1-D convolutions are the usual strong baseline for ECG
tasks (Ribeiro et al., "Automatic diagnosis of the 12-lead ECG using a deep
neural network", Nature Communications 2020; Strodthoff et al., PTB-XL
benchmark, 2021). This one has a strided stem, stages of two-convolution
basic blocks with batch norm, and global average pooling; it exposes the same
``forward_features`` / ``forward_head`` / ``forward`` interface as `ECGViT`,
so the two are interchangeable in the alignment model and the heads. Absent
leads (``lead_mask`` False) are zeroed before the stem; demographics, when
``film`` is set, modulate the stem's channels with FiLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from cardiacnets.errors import ConfigError
from cardiacnets.models.layers import FiLM
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class


@dataclass
class ResNet1DConfig:
    """Shape of a `ResNet1D`.

    Attributes:
        n_leads: input leads.
        n_samples: samples per lead expected (informational; any length ≥ the total stride works).
        stem_width: channels of the stem convolution.
        stem_kernel: kernel of the stem convolution (stride 2, then max-pool 2).
        widths: channels of each stage; every stage after the first halves the time axis.
        blocks: basic blocks per stage (same length as ``widths``).
        kernel_size: kernel of the block convolutions (odd).
        dropout: dropout before the head.
        embed_dim: size of the pooled, projected embedding.
        film: condition the stem channels on demographics with FiLM.
        n_demographics: length of the demographics vector when ``film`` is set.
        film_hidden: hidden width of the FiLM MLP.
    """

    n_leads: int = 12
    n_samples: int = 2500
    stem_width: int = 64
    stem_kernel: int = 15
    widths: list[int] = field(default_factory=lambda: [64, 128, 192, 256])
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    kernel_size: int = 7
    dropout: float = 0.0
    embed_dim: int = 256
    film: bool = False
    n_demographics: int = 3
    film_hidden: int = 64

    def validate(self) -> None:
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ConfigError(f"ResNet1DConfig: widths {self.widths} and blocks {self.blocks} must be non-empty and of equal length")
        if self.kernel_size % 2 == 0 or self.stem_kernel % 2 == 0:
            raise ConfigError("ResNet1DConfig: kernel_size and stem_kernel must be odd")
        if min(self.widths + self.blocks + [self.stem_width, self.embed_dim, self.n_leads]) <= 0:
            raise ConfigError("ResNet1DConfig: widths, blocks, stem_width, embed_dim and n_leads must be positive")


class BasicBlock1d(nn.Module):
    """Two same-padded 1-D convolutions with batch norm and a (projected) skip connection.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size.
        stride: stride of the first convolution (and of the skip projection).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        nn.init.zeros_(self.bn2.weight)  # each residual branch starts as the identity
        self.act = nn.ReLU(inplace=True)
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm1d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.skip(x))


@pretrained_class
class ResNet1D(nn.Module, PretrainedMixin):
    """1-D ResNet ECG encoder.

    Args:
        config: the `ResNet1DConfig`.
    """

    config_class = ResNet1DConfig

    def __init__(self, config: ResNet1DConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.stem = nn.Sequential(
            nn.Conv1d(c.n_leads, c.stem_width, c.stem_kernel, 2, c.stem_kernel // 2, bias=False),
            nn.BatchNorm1d(c.stem_width), nn.ReLU(inplace=True), nn.MaxPool1d(2),
        )
        self.film = FiLM(c.n_demographics, c.stem_width, c.film_hidden) if c.film else None
        layers, channels = [], c.stem_width
        for i, (width, n_blocks) in enumerate(zip(c.widths, c.blocks)):
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock1d(channels, width, c.kernel_size, stride))
                channels = width
        self.stages = nn.Sequential(*layers)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(channels, c.embed_dim)
        self.width = channels

    def forward_features(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                         demographics: torch.Tensor | None = None) -> torch.Tensor:
        """Convolutional features as a token sequence.

        Args:
            ecg: (B, leads, samples) in mV.
            lead_mask: (B, leads) bool, False = lead absent (zeroed).
            demographics: (B, n_demographics), required when ``config.film`` is set.

        Returns:
            (B, time steps, channels) features (time downsampled by 4 × 2^(stages − 1)).
        """
        c = self.config
        if ecg.ndim != 3 or ecg.shape[1] != c.n_leads:
            raise ValueError(f"ResNet1D expects ecg of shape (batch, {c.n_leads}, samples), got {tuple(ecg.shape)}")
        if c.film != (demographics is not None):
            raise ValueError("pass demographics exactly when config.film is set "
                             f"(film={c.film}, demographics {'given' if demographics is not None else 'missing'})")
        if lead_mask is not None:
            ecg = ecg * rearrange(lead_mask.to(ecg.dtype), "b l -> b l 1")
        x = self.stem(ecg)
        if self.film is not None:
            x = rearrange(self.film(rearrange(x, "b c t -> b t c"), demographics), "b t c -> b c t")
        x = self.stages(x)
        return rearrange(x, "b c t -> b t c")

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Average over time, dropout, linear projection: (B, T', C) → (B, embed_dim)."""
        return self.head(self.dropout(tokens.mean(dim=1)))

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                demographics: torch.Tensor | None = None) -> torch.Tensor:
        """`forward_features` then `forward_head`: (B, leads, samples) → (B, embed_dim)."""
        return self.forward_head(self.forward_features(ecg, lead_mask, demographics))
