"""Adapter for the ACDC challenge short-axis volumes stored as HDF5.

The Automated Cardiac Diagnosis Challenge (Bernard et al., IEEE TMI 2018)
training set holds 100 patients, 20 per diagnostic group in order of the
patient number. The project's sample (``shared/data/acdc_h5``) keeps, per
patient, the end-diastolic (``frame01``) and end-systolic (``frame02``) volume
as ``patientNNN_frameMM.h5`` with datasets ``image`` (float32, scaled to 0-1,
slices x H x W at the native matrix) and ``label`` (uint8; 0 background, 1 RV
cavity, 2 LV myocardium, 3 LV cavity). Voxel spacing is not stored, so the
images get a unit affine and ``metadata["spacing_known"] = False``; labels are
remapped to the UK Biobank convention of `cardiacnets.io.cmr_image`.

Safety: each dataset's shape and dtype are checked before it is read (3-D,
real numbers, at most `MAX_VOXELS` voxels), so a compressed dataset declaring a
huge shape is refused before h5py decompresses anything.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import h5py
import numpy as np
from einops import rearrange

from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import ACDC_TO_UKB, CMRImage

# Diagnostic groups of the ACDC training set by patient number (inclusive ranges).
ACDC_GROUPS = (
    (1, 20, "DCM"),  # dilated cardiomyopathy
    (21, 40, "HCM"),  # hypertrophic cardiomyopathy
    (41, 60, "MINF"),  # previous myocardial infarction
    (61, 80, "NOR"),  # normal
    (81, 100, "RV"),  # abnormal right ventricle
)
_FILE_NAME = re.compile(r"patient(\d{3})_frame(\d{2})\.h5$", re.IGNORECASE)
# In this sample frame01 is end-diastole and frame02 end-systole.
_PHASES = {1: "ED", 2: "ES"}
# Ceiling checked on the dataset shapes before reading (an ACDC volume is about 10 x 256 x 216).
MAX_VOXELS = 1 << 26


def acdc_diagnosis(patient_number: int) -> str:
    """Diagnostic group of an ACDC training patient, from its number.

    Args:
        patient_number: 1 to 100.

    Returns:
        ``"DCM"``, ``"HCM"``, ``"MINF"``, ``"NOR"`` or ``"RV"``.
    """
    for first, last, group in ACDC_GROUPS:
        if first <= patient_number <= last:
            return group
    raise ValueError(f"ACDC training patients are numbered 1-100, got {patient_number}")


def read_acdc_h5(path: str | os.PathLike) -> tuple[CMRImage, CMRImage]:
    """Read one ACDC volume and its expert segmentation.

    Args:
        path: a ``patientNNN_frameMM.h5`` file.

    Returns:
        (image, seg): `CMRImage` pair with data (H, W, slices, 1); the image is
        float32 as stored (0-1), the segmentation uint8 in the UK Biobank
        convention (1 LV cavity, 2 LV myocardium, 3 RV cavity). Both have a unit
        affine, view ``"sa"`` and metadata ``spacing_known`` (False),
        ``patient_number``, ``frame``, ``phase`` (``"ED"``/``"ES"``) and
        ``diagnosis`` when the file name follows the ACDC pattern.

    Raises:
        InputError: missing, empty, truncated or non-HDF5 file; missing
            ``image``/``label`` dataset, or one that is not a real-valued 3-D
            array of at most `MAX_VOXELS` voxels; shapes not equal; non-finite
            intensities; labels outside {0, 1, 2, 3}.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in ("image", "label") if name not in h5]
            if missing:
                raise InputError(path, f"missing HDF5 dataset(s) {missing}; found {sorted(h5.keys())}")
            for name in ("image", "label"):
                _check_dataset(path, name, h5[name])
            image = np.asarray(h5["image"][()], dtype=np.float32)
            label = np.asarray(h5["label"][()])
    except InputError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, ValueError, RuntimeError... for damaged files
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(path, f"not a readable HDF5 file; truncated or corrupt? ({detail})") from None

    if image.ndim != 3 or 0 in image.shape:
        raise InputError(path, f"image must be a non-empty (slices, H, W) array, got shape {image.shape}")
    if label.shape != image.shape:
        raise InputError(path, f"label shape {label.shape} differs from image shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise InputError(path, f"image has {int(np.count_nonzero(~np.isfinite(image)))} NaN or infinite values")
    found = np.unique(label)
    if not set(found.tolist()) <= {0, 1, 2, 3}:
        raise InputError(path, f"labels {found.tolist()} found; ACDC labels are 0 background, 1 RV, 2 myocardium, 3 LV")

    metadata: dict = {"spacing_known": False, "label_convention_in_file": "acdc"}
    match = _FILE_NAME.search(path.name)
    if match:
        patient, frame = int(match.group(1)), int(match.group(2))
        metadata.update(
            patient_number=patient,
            frame=frame,
            phase=_PHASES.get(frame),
            diagnosis=acdc_diagnosis(patient) if 1 <= patient <= 100 else None,
        )
    ukb_label = ACDC_TO_UKB[label.astype(np.uint8)]

    def as_cmr(array: np.ndarray, is_segmentation: bool) -> CMRImage:
        return CMRImage(
            data=np.ascontiguousarray(rearrange(array, "slices h w -> h w slices 1")),
            affine=np.eye(4),
            source=str(path),
            format="acdc_h5",
            view="sa",
            frame_interval_ms=None,
            is_segmentation=is_segmentation,
            metadata=dict(metadata),
        )

    return as_cmr(image, False), as_cmr(ukb_label, True)


def _check_dataset(path: Path, name: str, dataset) -> None:
    """Shape and dtype of an ``image``/``label`` dataset, checked before it is read."""
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(path, f"HDF5 entry {name!r} is a {type(dataset).__name__}, expected a dataset")
    shape = tuple(int(n) for n in dataset.shape or ())
    if len(shape) != 3 or 0 in shape:
        raise InputError(path, f"dataset {name!r} must be a non-empty (slices, H, W) array, got shape {shape}")
    if math.prod(shape) > MAX_VOXELS:
        raise InputError(path, f"dataset {name!r} declares shape {shape}, {math.prod(shape)} voxels; the limit is {MAX_VOXELS}")
    dtype = dataset.dtype
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise InputError(path, f"dataset {name!r} has dtype {dtype}; expected real integers or floats (not complex)")
