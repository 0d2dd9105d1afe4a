"""One entry point for cine CMR files of any supported format.

`read_cmr` picks the reader from the path: NIfTI (``.nii``, ``.nii.gz``; the
UK Biobank pipeline's ``sa.nii.gz``, ``la_4ch.nii.gz``...), DICOM (a ``.dcm``
file or a folder of DICOM files), a UK Biobank zipped DICOM bulk file
(``.zip``, fields 20208/20209) or an ACDC HDF5 volume (``.h5``; the image
only, see `cardiacnets.io.acdc.read_acdc_h5` for its segmentation).
`is_cmr_path` says whether a path looks like one of these, for scanning folders.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from cardiacnets.errors import InputError
from cardiacnets.io.acdc import read_acdc_h5
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom import read_dicom_series
from cardiacnets.io.dicom_files import check_zip_archive
from cardiacnets.io.nifti import read_nifti

_DICM_OFFSET = 128  # DICOM Part 10 files carry "DICM" after a 128-byte preamble


def _kind(path: Path) -> str | None:
    """``"nifti"``, ``"dicom"``, ``"zip"``, ``"h5"`` or None, from the name (and folder contents)."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom" if _folder_has_dicom(path) else None
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".h5", ".hdf5")):
        return "h5"
    return None


def _has_dicom_magic(file: Path) -> bool:
    try:
        with open(file, "rb") as stream:
            stream.seek(_DICM_OFFSET)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def _folder_has_dicom(folder: Path, max_checked: int = 20) -> bool:
    """True when the folder (recursively) holds a ``.dcm`` file or a file with the DICOM magic."""
    checked = 0
    for file in folder.rglob("*"):
        if not file.is_file():
            continue
        if file.suffix.lower() == ".dcm":
            return True
        if checked < max_checked:
            checked += 1
            if _has_dicom_magic(file):
                return True
    return False


def is_cmr_path(path: str | os.PathLike) -> bool:
    """Whether `read_cmr` would try to read this path.

    Args:
        path: a file or folder.

    Returns:
        True for existing ``.nii``/``.nii.gz``/``.dcm``/``.h5`` files, ``.zip``
        files that contain ``.dcm`` members or whose directory cannot be listed
        safely (so that `read_cmr` reports the problem), and folders holding
        DICOM files.
    """
    path = Path(path)
    if not path.exists():
        return False
    kind = _kind(path)
    if kind == "zip":
        try:
            check_zip_archive(path)  # the member count, before zipfile lists them
            with zipfile.ZipFile(path) as archive:
                return any(n.lower().endswith(".dcm") for n in archive.namelist())
        except Exception:  # InputError, BadZipFile, OSError...: damaged, let the reader say how
            return True
    return kind is not None


def read_cmr(path: str | os.PathLike, *, view: str | None = None) -> CMRImage:
    """Read a cine CMR image from any supported format.

    Args:
        path: ``.nii``/``.nii.gz`` file, ``.dcm`` file, folder of DICOM files,
            UK Biobank ``.zip`` of DICOM files, or ACDC ``.h5`` file.
        view: ``"sa"``, ``"la_2ch"``, ``"la_3ch"`` or ``"la_4ch"``. For NIfTI it
            labels the image (else inferred from the file name); for DICOM it
            also selects that view's series in a multi-view zip or folder. ACDC
            files are short axis only.

    Returns:
        The `CMRImage` (x, y, slices, frames).

    Raises:
        InputError: the path does not exist, has an unsupported type, or its
            reader rejects it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file or folder does not exist")
    kind = _kind(path)
    if kind == "nifti":
        return read_nifti(path, view=view)
    if kind in ("dicom", "zip"):
        return read_dicom_series(path, view=view)
    if kind == "h5":
        if view not in (None, "sa"):
            raise InputError(path, f"ACDC files hold short-axis volumes; view {view!r} was asked for")
        return read_acdc_h5(path)[0]
    what = "a folder without DICOM files" if path.is_dir() else "an unsupported file type"
    raise InputError(path, f"{what}; expected .nii, .nii.gz, .dcm, a DICOM folder, .zip of DICOM or .h5")
