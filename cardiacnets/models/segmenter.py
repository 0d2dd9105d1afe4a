"""A 2-D cine-frame segmentation network (MONAI ``UNet``) that labels LV cavity, LV myocardium and RV cavity.

The physiological evaluation of generated cines (CardiacNets, arXiv
2411.13602, measures LV and RV volumes and ejection fraction on its generated
CMR) needs a segmenter: `CineSegmenter` wraps MONAI's residual ``UNet``
(Kerfoot et al., "Left-ventricle quantification using residual U-Net",
STACOM 2018) as a cardiacnets model with a typed config and
``save_pretrained`` / ``from_pretrained``. It labels one short-axis frame at a
time, (B, 1, H, W) → (B, 4, H, W) logits in the UK Biobank label convention
of `cardiacnets.io.cmr_image.SEG_LABELS` (0 background, 1 LV cavity, 2 LV
myocardium, 3 RV cavity); `CineSegmenter.segment` labels whole cines
(B, slices, frames, H, W). It is trained by the ``segment`` task
(`cardiacnets.train.segment_task`), whose export writes the standard-cine
geometry of its training set beside the weights (`CineGeometry`,
``cmr_geometry.json``) so that the evaluation standardises other cines the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from cardiacnets.data.store import DATASET_YAML, read_dataset_info
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.cmr_image import SEG_LABELS
from cardiacnets.models.pretrained import PretrainedMixin, pretrained_class
from cardiacnets.models.registry import register_model


@dataclass
class SegmenterConfig:
    """Shape of a `CineSegmenter` (MONAI ``UNet`` arguments).

    Attributes:
        n_classes: output classes, background included; the UK Biobank convention has 4.
        channels: feature channels of each encoder level (deepest last).
        strides: downsampling stride between consecutive levels (one fewer than ``channels``).
        num_res_units: residual units per level (0: plain convolutions).
        norm: ``batch`` or ``instance`` normalisation.
        dropout: dropout probability inside the blocks.
    """

    n_classes: int = len(SEG_LABELS)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = 1
    norm: Literal["batch", "instance"] = "batch"
    dropout: float = 0.0

    def validate(self) -> None:
        if self.n_classes < 2:
            raise ConfigError(f"SegmenterConfig.n_classes must be at least 2, got {self.n_classes}")
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ConfigError(f"SegmenterConfig: need at least 2 channels and one stride fewer "
                              f"(got channels {self.channels}, strides {self.strides})")
        if any(c < 1 for c in self.channels) or any(s < 1 for s in self.strides):
            raise ConfigError("SegmenterConfig.channels and strides must be positive")
        if self.num_res_units < 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("SegmenterConfig: num_res_units >= 0 and 0 <= dropout < 1 are required")

    @property
    def total_stride(self) -> int:
        """Factor by which the deepest level is downsampled; H and W must be multiples of it."""
        total = 1
        for stride in self.strides:
            total *= stride
        return total


@pretrained_class
class CineSegmenter(nn.Module, PretrainedMixin):
    """Label short-axis cine frames with a 2-D MONAI ``UNet``.

    Args:
        config: the `SegmenterConfig`.
    """

    config_class = SegmenterConfig

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        from monai.networks.nets import UNet

        config.validate()
        self.config = config
        self.unet = UNet(spatial_dims=2, in_channels=1, out_channels=config.n_classes, channels=tuple(config.channels),
                         strides=tuple(config.strides), num_res_units=config.num_res_units, norm=config.norm.upper(),
                         dropout=config.dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of each pixel.

        Args:
            images: (B, 1, H, W) frames in the training set's [0, 1] intensity scale; H and W
                multiples of ``config.total_stride``.

        Returns:
            (B, n_classes, H, W) logits.
        """
        stride = self.config.total_stride
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] % stride or images.shape[-2] % stride:
            raise ValueError(f"CineSegmenter expects (batch, 1, H, W) with H and W multiples of {stride}, "
                             f"got {tuple(images.shape)}")
        return self.unet(images)

    @torch.no_grad()
    def segment(self, cines: torch.Tensor, batch_frames: int = 256) -> torch.Tensor:
        """Label every frame of every slice of a batch of cines (argmax of the logits).

        Args:
            cines: (B, slices, frames, H, W) float intensities.
            batch_frames: frames per forward pass.

        Returns:
            (B, slices, frames, H, W) uint8 labels on the cines' device.
        """
        if cines.ndim != 5:
            raise ValueError(f"segment expects (batch, slices, frames, H, W) cines, got {tuple(cines.shape)}")
        b, s, f = cines.shape[:3]
        frames = rearrange(cines, "b s f h w -> (b s f) 1 h w")
        labels = torch.cat([self(frames[i:i + batch_frames]).argmax(dim=1).to(torch.uint8)
                            for i in range(0, len(frames), batch_frames)])
        return rearrange(labels, "(b s f) h w -> b s f h w", b=b, s=s, f=f)


register_model("cmr_seg_unet_demo", SegmenterConfig, CineSegmenter,
               "demo cine-frame segmenter: MONAI residual UNet 16-32-64-128, batch norm, 4 UK Biobank labels")


# --- the standard-cine geometry a segmenter was trained on ---------------------------------------------------

#: File written next to a segmenter's weights: the standard-cine geometry of its training set.
GEOMETRY_FILE = "cmr_geometry.json"

@dataclass
class CineGeometry:
    """Geometry and intensity scale of standard cines (`cardiacnets.cmr.config.CMRConfig` fields).

    Attributes:
        spacing_mm: in-plane pixel size.
        crop_size: side of the square crop, pixels.
        n_frames: frames per cycle.
        intensity_percentiles: input percentiles mapped to 0 and 1.
        sa_slices: short-axis slice choice (``mid``, ``basal_mid_apical``, ``all``).
    """

    spacing_mm: float
    crop_size: int
    n_frames: int
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    sa_slices: str = "mid"

    @classmethod
    def from_dataset(cls, root: str | os.PathLike) -> CineGeometry:
        """The geometry recorded in a training set's ``dataset.yaml``.

        Raises:
            InputError: the file lacks the ``config.cmr`` section.
        """
        path = Path(root) / DATASET_YAML
        try:
            cmr = read_dataset_info(root)["config"]["cmr"]
            return cls(float(cmr["spacing_mm"]), int(cmr["crop_size"]), int(cmr["n_frames"]),
                       tuple(float(p) for p in cmr.get("intensity_percentiles", (1.0, 99.0))),
                       str(cmr.get("sa_slices", "mid")))
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"does not record the cine geometry (config.cmr: {err})") from None


def save_geometry(geometry: CineGeometry, model_dir: str | os.PathLike) -> Path:
    """Write ``cmr_geometry.json`` into a saved-model folder."""
    path = Path(model_dir) / GEOMETRY_FILE
    path.write_text(json.dumps(asdict(geometry), indent=2) + "\n")
    return path
