"""The in-memory cine CMR image every reader returns, and the label convention.

Segmentation labels follow the UK Biobank cardiac pipeline (Bai et al., JCMR
2018, as written in ``seg_sa.nii.gz``):

    0 background, 1 LV blood pool (cavity), 2 LV myocardium, 3 RV blood pool.

Other conventions (ACDC: 1 RV, 2 myocardium, 3 LV) are remapped by their readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEG_LABELS: dict[str, int] = {"background": 0, "lv_cavity": 1, "lv_myocardium": 2, "rv_cavity": 3}
ACDC_TO_UKB = np.array([0, 3, 2, 1], dtype=np.uint8)  # ACDC label -> UKB label

VIEWS = ("sa", "la_4ch", "la_2ch", "la_3ch")


@dataclass
class CMRImage:
    """A cine (or single-phase) cardiac MR image or its segmentation.

    Attributes:
        data: (x, y, slices, frames) array; float32 intensities or uint8 labels.
        affine: (4, 4) voxel-to-world (RAS, mm) matrix as nibabel uses it.
        source: path of the file or folder read.
        format: ``"nifti"``, ``"dicom"``, ``"dicom_zip"`` or ``"acdc_h5"``.
        view: ``"sa"``, ``"la_4ch"``, ``"la_2ch"``, ``"la_3ch"`` or ``"unknown"``.
        frame_interval_ms: time between frames when known.
        is_segmentation: True when `data` holds labels in the `SEG_LABELS` convention.
        metadata: anything else the file says.
    """

    data: np.ndarray
    affine: np.ndarray
    source: str = ""
    format: str = ""
    view: str = "unknown"
    frame_interval_ms: float | None = None
    is_segmentation: bool = False
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[2])

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along x, y and slice, in mm, from the affine's column norms."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes of the affine (e.g. ``('L', 'P', 'S')``), nibabel's convention."""
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))
