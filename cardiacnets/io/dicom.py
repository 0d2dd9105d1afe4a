"""Read cine CMR from DICOM series, including UK Biobank's zipped bulk files.

UK Biobank delivers each subject's cines as zips of DICOM files (field 20209
short axis, 20208 long axis, named ``{eid}_{field}_{instance}_{array}.zip``):
one series per short-axis slice (``CINE_segmented_SAX_b1`` ... ``_bN``, base to
apex), one per long-axis view (``CINE_segmented_LAX_2Ch`` / ``_3Ch`` /
``_4Ch``), each with about 50 frames over one R-R interval, plus Siemens
"InlineVF" series that repeat the same slices for the scanner's inline
volumetry. `read_dicom_series` reads a folder, a single file or such a zip with
pydicom into a `CMRImage`: images are grouped into slices by their position
along the plane normal (from ImageOrientationPatient and
ImagePositionPatient), frames ordered by TriggerTime then InstanceNumber,
RescaleSlope/Intercept applied, and the voxel-to-world affine built from the
geometry tags and converted from DICOM's LPS to nibabel's RAS. The writer is
`cardiacnets.io.dicom_write.write_dicom_series`.

Safety: the files are read by `cardiacnets.io.dicom_files`, which checks
sizes before anything is read or decompressed (`MAX_FILES`, `MAX_FILE_BYTES`,
`MAX_SERIES_BYTES`, encrypted or unknown-method zip members). Rows and Columns
(`MAX_MATRIX`), the number of voxels (`MAX_VOXELS`), and every geometry value
(orientation, position, PixelSpacing, slice thickness, rescale, trigger time)
must be finite and plausible; a failure names the file (or zip member) and the tag.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from einops import rearrange
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import VIEWS, CMRImage
from cardiacnets.io.dicom_files import DicomSource, one_line, read_dicom_files, shown_name

# DICOM patient coordinates are LPS (x to the patient's left, y posterior);
# nibabel's are RAS. Negating x and y converts either way.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# SeriesDescription patterns (case-insensitive regex) of the UK Biobank cine views.
VIEW_SERIES_PATTERNS = {"sa": r"sax", "la_2ch": r"2ch", "la_3ch": r"3ch", "la_4ch": r"4ch"}
# Siemens inline-volumetry series repeat the cine slices; skipped unless asked for.
DUPLICATE_SERIES_PATTERN = re.compile(r"inlinevf", re.IGNORECASE)
REQUIRED_TAGS = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "PixelData")
_POSITION_TOLERANCE_MM = 0.01
_SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the mean gap
_UKB_SLICE_NUMBER = re.compile(r"_b(\d+)$", re.IGNORECASE)

# Ceilings of the volume built, checked before its pixels are read (the file ceilings are in
# `cardiacnets.io.dicom_files`).
MAX_MATRIX = 4096  # Rows and Columns
MAX_VOXELS = 1 << 26  # x * y * slices * frames of the volume built
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 1e4


@dataclass
class _Frame:
    """One DICOM image: a frame of a slice, with its parsed geometry."""

    name: str  # file path, or member name inside a zip
    ds: Dataset
    row_cosine: np.ndarray  # LPS direction of increasing column index
    col_cosine: np.ndarray  # LPS direction of increasing row index
    position_lps: np.ndarray  # ImagePositionPatient, mm
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    shape: tuple[int, int]  # (rows, columns)

    @property
    def description(self) -> str:
        return str(self.ds.get("SeriesDescription", "") or "")

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")


def _numbers(source: DicomSource, name: str, ds: Dataset, tag: str, count: int | None = None) -> list[float]:
    """A numeric tag's values as finite floats (one value or a multi-value), else InputError naming the tag."""
    try:
        value = ds.get(tag)
    except Exception as err:  # pydicom converts values lazily and raises on malformed ones
        raise source.error(name, f"DICOM tag {tag} cannot be read ({one_line(err)})") from None
    if value is None or value == "":
        raise source.error(name, f"missing DICOM tag {tag}")
    try:
        values = [float(v) for v in value] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [float(value)]
    except (TypeError, ValueError):
        raise source.error(name, f"DICOM tag {tag} is not numeric: {shown_name(str(value))}") from None
    if count is not None and len(values) != count:
        raise source.error(name, f"DICOM tag {tag} needs {count} values, has {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise source.error(name, f"DICOM tag {tag} is not finite: {values}")
    return values


def _parse_frame(source: DicomSource, name: str, ds: Dataset) -> _Frame:
    """Check the tags the geometry needs and parse them."""
    try:
        missing = [tag for tag in REQUIRED_TAGS if tag not in ds or ds[tag].value in (None, "", b"")]
    except Exception as err:  # a tag whose value pydicom cannot convert
        raise source.error(name, f"unreadable DICOM tag ({one_line(err)})") from None
    if missing:
        raise source.error(name, f"missing DICOM tag(s) {', '.join(missing)}")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        samples_per_pixel = int(ds.get("SamplesPerPixel", 1))
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as err:
        raise source.error(name, f"unreadable NumberOfFrames, SamplesPerPixel, Rows or Columns ({one_line(err)})") from None
    if n_frames > 1:
        raise source.error(name, "multi-frame (enhanced) DICOM is not supported; expected one image per file")
    if photometric != "MONOCHROME2" or samples_per_pixel != 1:
        raise source.error(name, f"expected a MONOCHROME2 grey-scale image, got {shown_name(photometric)}")
    if not (1 <= rows <= MAX_MATRIX and 1 <= columns <= MAX_MATRIX):
        raise source.error(name, f"DICOM tags Rows x Columns are {rows} x {columns}; each must be 1 to {MAX_MATRIX}")
    orientation = np.array(_numbers(source, name, ds, "ImageOrientationPatient", 6))
    position = np.array(_numbers(source, name, ds, "ImagePositionPatient", 3))
    spacing = tuple(_numbers(source, name, ds, "PixelSpacing", 2))
    if not all(MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in spacing):
        raise source.error(
            name, f"DICOM tag PixelSpacing is {list(spacing)}; each must be from {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm"
        )
    for tag in ("RescaleSlope", "RescaleIntercept", "TriggerTime", "InstanceNumber", "SeriesNumber"):
        try:
            present = tag in ds and ds[tag].value not in (None, "")
        except Exception:  # malformed: _numbers says how
            present = True
        if present:
            _numbers(source, name, ds, tag, 1)  # used for scaling and ordering: finite numbers or absent
    row_cosine, col_cosine = orientation[:3], orientation[3:]
    norms = np.array([np.linalg.norm(row_cosine), np.linalg.norm(col_cosine)])
    if np.any(norms < 1e-6) or np.linalg.norm(np.cross(row_cosine / norms[0], col_cosine / norms[1])) < 1e-3:
        raise source.error(
            name, "degenerate DICOM tag ImageOrientationPatient: the row and column directions must be non-zero and not parallel"
        )
    return _Frame(
        name=name,
        ds=ds,
        row_cosine=row_cosine / norms[0],
        col_cosine=col_cosine / norms[1],
        position_lps=position,
        pixel_spacing=(spacing[0], spacing[1]),
        shape=(rows, columns),
    )


def _select_series(
    source: DicomSource, frames: list[_Frame], series: str | None, view: str | None
) -> tuple[list[_Frame], list[str]]:
    """Keep the frames of the requested series; returns them and the descriptions left out."""

    def described(frame: _Frame) -> str:
        return frame.description or frame.series_uid

    if series is not None:
        pattern = series.lower()
        kept = [
            f for f in frames if f.series_uid == series or fnmatch.fnmatchcase(f.description.lower(), pattern)
        ]
        if not kept:
            available = sorted({described(f) for f in frames})
            raise InputError(source.path, f"no series matches {series!r}; series present: {available}")
    else:
        kept = [f for f in frames if not DUPLICATE_SERIES_PATTERN.search(f.description)]
        if not kept:
            kept = frames  # only InlineVF series: they hold the cine
        if view is not None and view != "unknown":
            names_a_view = any(
                re.search(p, f.description, re.IGNORECASE) for f in kept for p in VIEW_SERIES_PATTERNS.values()
            )
            if names_a_view:
                # Descriptions name views: keep the requested one. Otherwise the
                # series cannot be told apart by name and `view` only labels them.
                kept = [f for f in kept if re.search(VIEW_SERIES_PATTERNS[view], f.description, re.IGNORECASE)]
                if not kept:
                    available = sorted({described(f) for f in frames})
                    raise InputError(source.path, f"no {view} series found; series present: {available}")
    left_out = sorted({described(f) for f in frames} - {described(f) for f in kept})
    return kept, left_out


def _infer_view(frames: list[_Frame]) -> str:
    """The view all series descriptions agree on, else ``"unknown"``."""
    descriptions = {f.description for f in frames}
    for view in ("la_2ch", "la_3ch", "la_4ch", "sa"):
        if descriptions and all(re.search(VIEW_SERIES_PATTERNS[view], d, re.IGNORECASE) for d in descriptions):
            return view
    return "unknown"


def _slice_order_key(frames: list[_Frame]) -> tuple[float, float]:
    """Acquisition order of a slice: UKB ``_bN`` number (else SeriesNumber), then InstanceNumber."""
    first = frames[0]
    match = _UKB_SLICE_NUMBER.search(first.description)
    series_rank = float(match.group(1)) if match else float(first.ds.get("SeriesNumber", 0) or 0)
    instance = min(float(f.ds.get("InstanceNumber", 0) or 0) for f in frames)
    return series_rank, instance


def _group_slices(source: DicomSource, frames: list[_Frame]) -> tuple[list[list[_Frame]], np.ndarray, list[str]]:
    """Group frames by position along the plane normal; returns groups, positions and superseded series."""
    normal = np.cross(frames[0].row_cosine, frames[0].col_cosine)
    along = np.array([float(f.position_lps @ normal) for f in frames])
    order = np.argsort(along, kind="stable")
    groups: list[list[_Frame]] = []
    positions: list[float] = []
    for index in order:
        if not positions or along[index] - positions[-1] > _POSITION_TOLERANCE_MM:
            groups.append([])
            positions.append(float(along[index]))
        groups[-1].append(frames[index])

    superseded: list[str] = []
    for i, group in enumerate(groups):
        by_series: dict[str, list[_Frame]] = {}
        for frame in group:
            by_series.setdefault(frame.series_uid, []).append(frame)
        if len(by_series) > 1:
            # A slice acquired more than once (a repeated breath-hold): keep the
            # latest series, as the radiographer repeated it for a reason.
            ranked = sorted(by_series, key=lambda uid: (float(by_series[uid][0].ds.get("SeriesNumber", 0) or 0), uid))
            groups[i] = by_series[ranked[-1]]
            superseded += [by_series[uid][0].description or uid for uid in ranked[:-1]]
    return groups, np.array(positions), superseded


def _frame_sort_key(source: DicomSource, frame: _Frame, use_trigger: bool) -> tuple[float, float]:
    """(TriggerTime, InstanceNumber) when every frame of the slice has a TriggerTime, else (0, InstanceNumber)."""
    instance = frame.ds.get("InstanceNumber")
    has_instance = instance not in (None, "")
    if not use_trigger and not has_instance:
        problem = "missing DICOM tag InstanceNumber, and TriggerTime is not on every frame; cannot order the frames"
        raise source.error(frame.name, problem)
    trigger = float(frame.ds.TriggerTime) if use_trigger else 0.0
    return trigger, float(instance) if has_instance else 0.0


def _instance_number(frame: _Frame) -> int | None:
    """The frame's InstanceNumber (checked finite by `_parse_frame`), None when absent."""
    instance = frame.ds.get("InstanceNumber")
    return None if instance in (None, "") else int(float(instance))


def _pixels(source: DicomSource, frame: _Frame) -> np.ndarray:
    """The frame's pixel values after RescaleSlope/Intercept, float32 (rows, columns)."""
    try:
        stored = frame.ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad or compressed pixel data
        raise source.error(frame.name, f"pixel data cannot be decoded ({type(err).__name__}: {err})") from err
    if stored.shape != frame.shape:
        raise source.error(frame.name, f"pixel data shape {stored.shape} does not match Rows x Columns {frame.shape}")
    return np.asarray(apply_modality_lut(stored, frame.ds), dtype=np.float32)


def _check_one_plane(source: DicomSource, path: Path, frames: list[_Frame]) -> None:
    """All images share the first one's size, plane orientation and pixel spacing (else `InputError`)."""
    reference = frames[0]
    for frame in frames[1:]:
        if frame.shape != reference.shape:
            raise source.error(
                frame.name, f"image size {frame.shape} differs from {reference.shape} of {reference.name}"
            )
        same_plane = np.allclose(frame.row_cosine, reference.row_cosine, atol=1e-3) and np.allclose(
            frame.col_cosine, reference.col_cosine, atol=1e-3
        )
        if not same_plane:
            planes = sorted({f.description or f.series_uid for f in frames})
            raise InputError(
                path,
                f"images lie in different plane orientations (series {planes}); choose one with series= or view=",
            )
        if not np.allclose(frame.pixel_spacing, reference.pixel_spacing, rtol=1e-4):
            raise source.error(
                frame.name, f"PixelSpacing {frame.pixel_spacing} differs from {reference.pixel_spacing}"
            )


def _slice_step(source: DicomSource, path: Path, reference: _Frame, groups: list[list[_Frame]],
                positions: np.ndarray) -> np.ndarray:
    """LPS step from one slice to the next: from evenly spaced slice positions, or the thickness of a single slice."""
    normal = np.cross(reference.row_cosine, reference.col_cosine)
    first_position = groups[0][0].position_lps
    if len(groups) > 1:
        gaps = np.diff(positions)
        if np.any(np.abs(np.abs(gaps) - np.abs(gaps).mean()) > _SPACING_TOLERANCE * np.abs(gaps).mean() + 1e-3):
            gaps_mm = np.round(np.abs(gaps), 3).tolist()
            raise InputError(path, f"slice positions are not evenly spaced (gaps {gaps_mm} mm); a slice missing?")
        return (groups[-1][0].position_lps - first_position) / (len(groups) - 1)
    tag = "SliceThickness" if reference.ds.get("SliceThickness") not in (None, "") else "SpacingBetweenSlices"
    if reference.ds.get(tag) in (None, ""):
        raise source.error(reference.name, "missing DICOM tag(s) SliceThickness and SpacingBetweenSlices")
    (thickness,) = _numbers(source, reference.name, reference.ds, tag, 1)
    if not MIN_SPACING_MM <= thickness <= MAX_SPACING_MM:
        raise source.error(
            reference.name, f"DICOM tag {tag} is {thickness:g}; it must be from {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm"
        )
    return normal * thickness


def _frame_interval_ms(trigger_ms: list[float], frames: list[_Frame], reference: _Frame) -> float | None:
    """Time between frames: from the TriggerTime steps, else NominalInterval / CardiacNumberOfImages; None if unknown."""
    frame_interval_ms = None
    if len(trigger_ms) == len(frames) and len(trigger_ms) > 1:
        frame_interval_ms = float(np.median(np.diff(trigger_ms)))
    elif reference.ds.get("NominalInterval") and reference.ds.get("CardiacNumberOfImages"):
        try:
            interval = float(reference.ds.NominalInterval) / float(reference.ds.CardiacNumberOfImages)
        except (TypeError, ValueError, ZeroDivisionError):
            interval = math.nan
        frame_interval_ms = interval if math.isfinite(interval) and interval > 0 else None  # unusable: unknown
    if frame_interval_ms is not None and not (math.isfinite(frame_interval_ms) and frame_interval_ms > 0):
        frame_interval_ms = None  # repeated trigger times
    return frame_interval_ms


def read_dicom_series(path: str | os.PathLike, *, series: str | None = None, view: str | None = None) -> CMRImage:
    """Read a cine from a DICOM folder, a single DICOM file or a UK Biobank zip.

    Series selection: with `series`, only images whose SeriesInstanceUID equals
    it or whose SeriesDescription matches it as a case-insensitive shell pattern
    (``"CINE_segmented_LAX_4Ch"``, ``"*SAX_b*"``) are read. Otherwise Siemens
    ``InlineVF`` series (the cine slices again, in one series) are skipped
    when other series are present and, when `view` is given and the
    series descriptions name views (``SAX``, ``2Ch``, ``3Ch``, ``4Ch``), only
    that view's series are kept. All kept images must share one image plane
    orientation; several short-axis series (one per slice, as UK Biobank
    stores them) are stacked into one volume.

    Slices are ordered by position along the plane normal, in the direction in
    which the UK Biobank ``_bN`` slice number (else SeriesNumber, then
    InstanceNumber) increases, so a UK Biobank stack runs base to apex as in the
    UK Biobank pipeline's ``sa.nii.gz``. Slices must be evenly spaced. When a
    slice position holds several series (a repeated acquisition) the one with
    the highest SeriesNumber is kept and the others are listed in
    ``metadata["superseded_series"]``.

    Args:
        path: a folder of DICOM files (searched recursively), one DICOM file, or
            a ``.zip`` of DICOM files. Non-DICOM files (``manifest.csv``) and
            DICOM files without pixel data are skipped and listed in
            ``metadata["skipped_files"]``.
        series: SeriesInstanceUID or SeriesDescription pattern to read.
        view: ``"sa"``, ``"la_2ch"``, ``"la_3ch"`` or ``"la_4ch"``: selects the
            series (see above) and labels the image; inferred from the series
            descriptions when None.

    Returns:
        A `CMRImage` with float32 data (x = columns, y = rows, slices, frames)
        in the rescaled units, the RAS affine, ``frame_interval_ms`` from the
        TriggerTime steps (else NominalInterval / CardiacNumberOfImages), and
        metadata with the series descriptions, UIDs, trigger times, slice
        positions and ``instance_numbers`` (slices x frames, the InstanceNumber of
        the file behind each image, None where absent).

    Raises:
        InputError: no DICOM images, missing, non-finite or implausible
            geometry, rescale or ordering tags, mixed image sizes or plane
            orientations, unequal frame counts per slice, uneven slice spacing,
            undecodable pixel data, or a size over the ceilings (`MAX_FILES`,
            `MAX_FILE_BYTES`, `MAX_SERIES_BYTES`, `MAX_MATRIX`, `MAX_VOXELS`),
            an encrypted zip member or one with an unknown compression method.
    """
    path = Path(path)
    if view is not None and view not in (*VIEWS, "unknown"):
        raise ValueError(f"view must be one of {VIEWS} or 'unknown', got {view!r}")
    if not path.exists():
        raise InputError(path, "file or folder does not exist")
    source = DicomSource(path)
    datasets, skipped = read_dicom_files(source)
    if not datasets:
        detail = f" ({len(skipped)} other files skipped)" if skipped else ""
        raise InputError(path, f"no DICOM image files found{detail}")
    frames = [_parse_frame(source, name, ds) for name, ds in datasets]
    frames, left_out = _select_series(source, frames, series, view)

    reference = frames[0]
    _check_one_plane(source, path, frames)

    groups, positions, superseded = _group_slices(source, frames)
    if _slice_order_key(groups[0]) > _slice_order_key(groups[-1]):
        groups, positions = groups[::-1], positions[::-1]

    for i, group in enumerate(groups):
        use_trigger = all(f.ds.get("TriggerTime") not in (None, "") for f in group)
        groups[i] = sorted(group, key=lambda f: _frame_sort_key(source, f, use_trigger))
    counts = [len(g) for g in groups]
    if len(set(counts)) != 1:
        where = np.round(positions, 2).tolist()
        raise InputError(path, f"slices have different frame counts {counts} (positions {where} mm)")

    first_position = groups[0][0].position_lps
    slice_step = _slice_step(source, path, reference, groups, positions)

    row_spacing, col_spacing = reference.pixel_spacing
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = reference.row_cosine * col_spacing  # x: along a row, one column per step
    affine_lps[:3, 1] = reference.col_cosine * row_spacing  # y: down a column, one row per step
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = first_position

    n_voxels = len(groups) * counts[0] * reference.shape[0] * reference.shape[1]
    if n_voxels > MAX_VOXELS:
        raise InputError(
            path, f"the series makes {len(groups)} slices x {counts[0]} frames x {reference.shape[0]} x "
            f"{reference.shape[1]} = {n_voxels} voxels; the limit is {MAX_VOXELS}"
        )
    stack = np.stack([np.stack([_pixels(source, f) for f in group]) for group in groups])
    if not np.all(np.isfinite(stack)):
        raise InputError(path, "pixel values are not finite after RescaleSlope/RescaleIntercept (overflow?)")
    data = rearrange(stack, "slices frames rows cols -> cols rows slices frames")

    trigger_ms = [float(f.ds.TriggerTime) for f in groups[0] if f.ds.get("TriggerTime") not in (None, "")]
    frame_interval_ms = _frame_interval_ms(trigger_ms, groups[0], reference)

    descriptions = sorted({f.description for g in groups for f in g})
    image_type = [str(v) for v in reference.ds.get("ImageType", [])]
    return CMRImage(
        data=np.ascontiguousarray(data, dtype=np.float32),
        affine=LPS_TO_RAS @ affine_lps,
        source=str(path),
        format="dicom_zip" if source.is_zip else "dicom",
        view=view if view is not None else _infer_view([g[0] for g in groups]),
        frame_interval_ms=frame_interval_ms,
        is_segmentation=False,
        metadata={
            "series_descriptions": descriptions,
            "series_instance_uids": sorted({f.series_uid for g in groups for f in g}),
            "series_left_out": left_out,
            "superseded_series": superseded,
            "skipped_files": skipped,
            "n_files": sum(counts),
            "trigger_times_ms": trigger_ms,
            "slice_positions_mm": [float(p) for p in positions],
            "instance_numbers": [[_instance_number(f) for f in group] for group in groups],
            "image_type": image_type,
            "synthetic": any("SYNTHETIC" in d.upper() for d in descriptions),
        },
    )
