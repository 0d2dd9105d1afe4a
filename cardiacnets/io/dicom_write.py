"""Write cine CMR as a DICOM series that standard viewers open, synthetic images marked as such.

`write_dicom_series` writes an MR Image Storage series (one file per slice and
frame) that `cardiacnets.io.dicom.read_dicom_series` reads back to the same
data and affine. Synthetic images are marked as such (DERIVED\\SECONDARY,
"SYNTHETIC" in the series description, no patient identity, and the SYNTHETIC
label of `cardiacnets.io.stamp`, the one every writer of generated images uses,
burned into every frame).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from einops import rearrange
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

import cardiacnets
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom import LPS_TO_RAS
from cardiacnets.io.stamp import SYNTHETIC_STATEMENT, stamp_synthetic

_STORED_LEVELS = 4095  # 12-bit range used when intensities need a rescale slope


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _stored_values(data: np.ndarray) -> tuple[np.ndarray, float, float, int]:
    """Map the image to stored integers; returns (stored, slope, intercept, pixel_representation)."""
    whole = bool(np.all(data == np.round(data)))
    lo, hi = float(data.min()), float(data.max())
    if whole and lo >= 0 and hi <= np.iinfo(np.uint16).max:
        return data.astype(np.uint16), 1.0, 0.0, 0
    if whole and lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return data.astype(np.int16), 1.0, 0.0, 1
    slope = (hi - lo) / _STORED_LEVELS if hi > lo else 1.0
    slope = float(_ds(slope))  # the slope as it will be read back
    stored = np.clip(np.round((data - lo) / slope), 0, _STORED_LEVELS).astype(np.uint16)
    return stored, slope, float(_ds(lo)), 0


def _uid(seed: str | None, *parts: object) -> str:
    return generate_uid(entropy_srcs=[seed, *map(str, parts)]) if seed is not None else generate_uid()


def _plane_geometry(affine: np.ndarray, n_slices: int):
    """The LPS affine, unit row and column directions, pixel spacings and slice gap of a RAS affine.

    Raises:
        ValueError: in-plane axes that are not orthogonal, or (several slices) a slice axis not
            perpendicular to the plane: DICOM cannot represent either.
    """
    affine_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    x_axis, y_axis, slice_axis = affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2]
    col_spacing, row_spacing = float(np.linalg.norm(x_axis)), float(np.linalg.norm(y_axis))
    row_cosine, col_cosine = x_axis / col_spacing, y_axis / row_spacing
    if abs(float(row_cosine @ col_cosine)) > 1e-4:
        raise ValueError("the affine's in-plane axes are not orthogonal; DICOM cannot represent the image")
    normal = np.cross(row_cosine, col_cosine)
    slice_gap = float(np.linalg.norm(slice_axis))
    if n_slices > 1 and abs(abs(float(slice_axis @ normal)) - slice_gap) > 1e-4 * slice_gap:
        raise ValueError("the affine's slice axis is not perpendicular to the image plane")
    return affine_lps, row_cosine, col_cosine, row_spacing, col_spacing, slice_gap


def _file_dataset(path: Path, sop_uid: str) -> FileDataset:
    """An empty MR Image Storage file dataset (explicit VR little endian) with its SOP instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    return ds


def _set_identity(ds: FileDataset, *, synthetic: bool, patient_name: str, patient_id: str, study_uid: str,
                  series_uid: str, series_number: int, series_description: str, frame_uid: str) -> None:
    """Patient, study, series, frame-of-reference and equipment tags (no patient identity when synthetic)."""
    ds.PatientName = "ANONYMOUS^SYNTHETIC" if synthetic else patient_name
    ds.PatientID = "" if synthetic else patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = "cardiacnets synthetic cine CMR" if synthetic else "cine CMR"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.PatientPosition = ""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "cardiacnets" if synthetic else ""
    ds.SoftwareVersions = f"cardiacnets {cardiacnets.__version__}"


def _set_pixels(ds: FileDataset, pixels: np.ndarray, pixel_representation: int, slope: float, intercept: float,
                window: tuple[float, float]) -> None:
    """Image-pixel tags of one (rows, columns) frame of stored integers, its rescale and a window of (low, high)."""
    window_lo, window_hi = window
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleType = "US"  # unspecified units
    ds.WindowCenter = _ds((window_lo + window_hi) / 2)
    ds.WindowWidth = _ds(max(float(window_hi - window_lo), 1e-3))
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def write_dicom_series(
    image: CMRImage,
    out_dir: str | os.PathLike,
    *,
    series_description: str,
    synthetic: bool,
    series_number: int = 1,
    patient_name: str = "",
    patient_id: str = "",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write a cine as an MR Image Storage series, one file per slice and frame.

    Geometry tags are derived from the affine (RAS to LPS), so
    `read_dicom_series` of the folder returns the same data (whole-number
    intensities exactly; others within half a 12-bit quantisation step) and
    the same affine. Instance numbers run slice by slice, frame by frame;
    TriggerTime is the frame index times ``image.frame_interval_ms`` when
    known. WindowCenter/Width cover the 1st-99th percentiles.

    With ``synthetic=True`` the series is marked as not coming from a patient:
    ImageType ``DERIVED\\SECONDARY``, "SYNTHETIC" appended to the series
    description when absent, PatientName ``ANONYMOUS^SYNTHETIC`` with empty
    PatientID, BurnedInAnnotation ``YES``, and the word SYNTHETIC drawn in the
    top-left corner of every frame (`synthetic_label_box`), bright on dark.

    Args:
        image: (x, y, slices, frames) image or segmentation; the in-plane axes of
            the affine must be orthogonal and, with several slices, the slice
            axis perpendicular to them.
        out_dir: folder to write into (created); existing files are not overwritten.
        series_description: SeriesDescription (at most 64 characters), e.g.
            ``"CINE_segmented_SAX_b1"``.
        synthetic: whether the image was generated rather than acquired.
        series_number: SeriesNumber.
        patient_name: PatientName for a real (non-synthetic) image; empty by default.
        patient_id: PatientID for a real image; empty by default.
        study_instance_uid: put several series in one study (default: a new UID).
        frame_of_reference_uid: share the frame of reference between series.
        uid_seed: when given, every UID is derived from it, so output is reproducible.

    Returns:
        The files written, in instance order.
    """
    out_dir = Path(out_dir)
    data = image.data
    if data.ndim != 4 or 0 in data.shape:
        raise ValueError(f"image data must be non-empty (x, y, slices, frames), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("image data has NaN or infinite values")
    if synthetic and (patient_name or patient_id):
        raise ValueError("a synthetic series must not carry patient_name or patient_id")
    if synthetic and "SYNTHETIC" not in series_description.upper():
        series_description = f"{series_description} SYNTHETIC".strip()
    if len(series_description) > 64:
        raise ValueError(f"series_description is {len(series_description)} characters; DICOM allows 64")

    n_x, n_y, n_slices, n_frames = data.shape
    affine_lps, row_cosine, col_cosine, row_spacing, col_spacing, slice_gap = _plane_geometry(image.affine, n_slices)
    slice_axis, normal = affine_lps[:3, 2], np.cross(row_cosine, col_cosine)

    stored, slope, intercept, pixel_representation = _stored_values(data)
    stored = rearrange(stored, "cols rows slices frames -> slices frames rows cols")
    window_lo, window_hi = np.percentile(data, [1.0, 99.0])
    if synthetic:
        info = np.iinfo(stored.dtype)
        dark = int(stored.min())
        bright = int(stored.max()) if stored.max() > dark else min(dark + 1, info.max)

    study_uid = study_instance_uid or _uid(uid_seed, "study")
    series_uid = _uid(uid_seed, "series", series_number)
    frame_uid = frame_of_reference_uid or _uid(uid_seed, "frame_of_reference")
    interval_ms = image.frame_interval_ms
    n_images = n_slices * n_frames
    paths = [out_dir / f"S{series_number:03d}_I{instance:05d}.dcm" for instance in range(1, n_images + 1)]
    existing = [p for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists; write the series into an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    for s in range(n_slices):
        position = affine_lps[:3, 3] + s * slice_axis
        for t in range(n_frames):
            instance = s * n_frames + t + 1
            sop_uid = _uid(uid_seed, "instance", series_number, instance)
            ds = _file_dataset(paths[instance - 1], sop_uid)
            # SOP common, patient, study, series, frame of reference, equipment
            _set_identity(ds, synthetic=synthetic, patient_name=patient_name, patient_id=patient_id,
                          study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                          series_description=series_description, frame_uid=frame_uid)
            # General image and MR image
            ds.InstanceNumber = instance
            ds.ImageType = ["DERIVED", "SECONDARY"] if synthetic else ["DERIVED", "PRIMARY"]
            if synthetic:
                ds.DerivationDescription = f"Synthetic image {SYNTHETIC_STATEMENT}"
            ds.BurnedInAnnotation = "YES" if synthetic else "NO"
            ds.ScanningSequence = "RM" if synthetic else "GR"  # RM: research mode
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = ""
            ds.RepetitionTime = ""
            ds.EchoTrainLength = ""
            ds.CardiacNumberOfImages = n_frames
            if interval_ms:
                ds.TriggerTime = _ds(t * interval_ms)
                ds.NominalInterval = int(round(n_frames * interval_ms))  # VR IS: integer string
            # Image plane
            ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row_cosine, *col_cosine)]
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceThickness = _ds(slice_gap)
            if n_slices > 1:
                ds.SpacingBetweenSlices = _ds(slice_gap)
            ds.SliceLocation = _ds(float(position @ normal))
            # Image pixel
            pixels = stored[s, t]
            if synthetic:
                pixels = stamp_synthetic(pixels, value=bright, background=dark)
            _set_pixels(ds, pixels, pixel_representation, slope, intercept, (window_lo, window_hi))
            ds.save_as(paths[instance - 1], enforce_file_format=True)
    return paths
