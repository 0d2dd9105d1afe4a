"""Configuration of the standard cine CMR representation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cardiacnets.errors import ConfigError


@dataclass
class CMRConfig:
    """How a cine is turned into the standard (slices, frames, H, W) array.

    Defaults are UK Biobank-like and follow the CardiacNets paper (50 frames,
    80 x 80 heart-centred crops).

    Attributes:
        views: which cines to keep, from ``sa``, ``la_4ch``, ``la_2ch``, ``la_3ch``.
        n_frames: frames after temporal resampling over one cardiac cycle.
        crop_size: in-plane side length of the heart-centred crop, in pixels.
        spacing_mm: in-plane pixel size after resampling.
        sa_slices: short-axis slices kept: ``"mid"`` (1), ``"basal_mid_apical"`` (3)
            or ``"all"`` (padded/cropped to `n_sa_slices`).
        n_sa_slices: slice count for ``sa_slices: all``.
        intensity_percentiles: robust normalisation: these percentiles of the
            cine map to 0 and 1, values outside are clipped.
        crop_center: ``"auto"`` uses the segmentation's LV+RV centre when a
            segmentation exists and the temporal-variance map otherwise;
            ``"variance"`` always uses the variance map.
    """

    views: list[str] = field(default_factory=lambda: ["sa", "la_4ch"])
    n_frames: int = 50
    crop_size: int = 80
    spacing_mm: float = 1.8
    sa_slices: Literal["mid", "basal_mid_apical", "all"] = "mid"
    n_sa_slices: int = 10
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    crop_center: Literal["auto", "variance"] = "auto"

    @property
    def n_slices_out(self) -> int:
        return {"mid": 1, "basal_mid_apical": 3, "all": self.n_sa_slices}[self.sa_slices]

    def validate(self) -> None:
        bad = [v for v in self.views if v not in ("sa", "la_4ch", "la_2ch", "la_3ch")]
        if bad:
            raise ConfigError(f"cmr.views: unknown view(s) {bad}; use sa, la_4ch, la_2ch, la_3ch")
        if self.n_frames < 1 or self.crop_size < 8 or self.spacing_mm <= 0:
            raise ConfigError("cmr: n_frames >= 1, crop_size >= 8 and spacing_mm > 0 are required")
        lo, hi = self.intensity_percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError("cmr.intensity_percentiles: need 0 <= low < high <= 100")
