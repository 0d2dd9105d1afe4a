"""Read and write cine CMR as DICOM series, including UK Biobank's zipped bulk files.

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
geometry tags and converted from DICOM's LPS to nibabel's RAS.
`write_dicom_series` writes an MR Image Storage series that standard viewers
open and that reads back to the same data and affine; synthetic images are
marked as such (DERIVED\\SECONDARY, "SYNTHETIC" in the series description, no
patient identity, and the SYNTHETIC label of `cardiacnets.io.stamp`, the one
every writer of generated images uses, burned into every frame).

Safety: sizes are checked before anything is read or decompressed. A zip's
member count comes from its end record (`MAX_FILES`); a member must be neither
encrypted nor stored with an unknown compression method, and is read through a
stream that stops at `MAX_FILE_BYTES`; all files together stop at
`MAX_SERIES_BYTES`. A deflated DICOM dataset is inflated once with the same
limit before pydicom inflates it. Rows and Columns (`MAX_MATRIX`), the number of
voxels (`MAX_VOXELS`), and every geometry value (orientation, position,
PixelSpacing, slice thickness, rescale, trigger time) must be finite and
plausible; a failure names the file (or zip member) and the tag.
"""

from __future__ import annotations

import fnmatch
import io
import math
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from einops import rearrange
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

import cardiacnets
from cardiacnets.cmr.image import VIEWS, CMRImage
from cardiacnets.errors import InputError
from cardiacnets.io.stamp import (  # noqa: F401  (the label's names stay importable from here)
    SYNTHETIC_STATEMENT,
    SYNTHETIC_TEXT,
    burn_in_text,
    stamp_synthetic,
    synthetic_label_box,
    text_bitmap,
)

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
_STORED_LEVELS = 4095  # 12-bit range used when intensities need a rescale slope

# Ceilings, checked before reading. A UK Biobank short-axis zip holds about
# 1,500 files of 90 kB (InlineVF series included), about 130 MB in all.
MAX_FILES = 20_000
MAX_FILE_BYTES = 64 << 20  # one single-frame image file (or zip member)
MAX_SERIES_BYTES = 512 << 20  # all files of a folder or zip together
MAX_MATRIX = 4096  # Rows and Columns
MAX_VOXELS = 1 << 26  # x * y * slices * frames of the volume built
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 1e4
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}
_MAX_ZIP_DIRECTORY_BYTES = MAX_FILES * 1024
_READ_CHUNK = 1 << 20
_DEFLATED_TS = "1.2.840.10008.1.2.1.99"
# Explicit-VR element headers with a 4-byte length (DICOM PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# --------------------------------------------------------------------------- reading


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


class _Source:
    """Where the files come from, so that errors name the right file."""

    def __init__(self, path: Path):
        self.path = path
        self.is_zip = path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))

    def error(self, name: str, problem: str) -> InputError:
        if self.is_zip:
            return InputError(self.path, f"{name}: {problem}")
        return InputError(name, problem)


def _shown(name: str) -> str:
    """A file or member name fit for a one-line message."""
    if name.isprintable() and len(name) <= 200:
        return name
    return repr(name[:197] + "..." if len(name) > 200 else name)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def check_zip_archive(path: str | os.PathLike) -> None:
    """Check a zip's end record before `zipfile` reads its directory.

    Args:
        path: the ``.zip`` file.

    Raises:
        InputError: no end-of-central-directory record (not a zip, or
            truncated), more than `MAX_FILES` members, or a central directory
            larger than such a zip needs.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            tail = min(size, 22 + 65535)  # the end record, then a comment of at most 64 kB
            stream.seek(size - tail)
            data = stream.read(tail)
            position = data.rfind(b"PK\x05\x06")
            if position < 0 or len(data) - position < 22:
                raise InputError(path, "zip archive cannot be read: no end-of-central-directory record (truncated?)")
            n_members, directory_bytes = struct.unpack("<HI", data[position + 10 : position + 16])
            locator = position - 20
            if (n_members == 0xFFFF or directory_bytes == 0xFFFFFFFF) and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
                # Zip64: the counts are in the zip64 end record the locator points to.
                (record_offset,) = struct.unpack("<Q", data[locator + 8 : locator + 16])
                stream.seek(record_offset)
                record = stream.read(56)
                if len(record) == 56 and record[:4] == b"PK\x06\x06":
                    n_members, directory_bytes = struct.unpack("<QQ", record[32:48])
    except OSError as err:
        raise InputError(path, f"zip archive cannot be read: {err.strerror or err}") from None
    if n_members > MAX_FILES:
        raise InputError(path, f"zip end record declares {n_members} members; the limit is {MAX_FILES}")
    if directory_bytes > _MAX_ZIP_DIRECTORY_BYTES:
        raise InputError(
            path, f"zip end record declares a {directory_bytes}-byte directory; the limit is {_MAX_ZIP_DIRECTORY_BYTES}"
        )


def _read_limited(source: _Source, name: str, stream, limit: int) -> bytes:
    """Read at most `limit` bytes; a stream with more is refused (a lying size field, a decompression bomb)."""
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise source.error(name, f"file holds more than {limit} bytes (MAX_FILE_BYTES); refused")


def _meta_end_and_syntax(blob: bytes) -> tuple[int, str] | None:
    """(end of the file meta group, TransferSyntaxUID) of a Part 10 file, or None without a meta group."""
    if blob[128:132] != b"DICM":
        return None
    position, syntax = 132, ""
    while position + 8 <= len(blob):
        group, element = struct.unpack("<HH", blob[position : position + 4])
        if group != 0x0002:
            break
        vr = blob[position + 4 : position + 6]
        if vr in _LONG_VRS:
            if position + 12 > len(blob):
                break
            (length,) = struct.unpack("<I", blob[position + 8 : position + 12])
            start = position + 12
        else:
            (length,) = struct.unpack("<H", blob[position + 6 : position + 8])
            start = position + 8
        if element == 0x0010:
            syntax = blob[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
        position = start + length
    return position, syntax


def _check_deflated(source: _Source, name: str, blob: bytes) -> None:
    """A deflated dataset is inflated here with a size limit before pydicom inflates it whole."""
    meta = _meta_end_and_syntax(blob)
    if meta is None or meta[1] != _DEFLATED_TS:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = blob[meta[0] :], 0
    try:
        while pending:
            total += len(inflater.decompress(pending, _READ_CHUNK))
            pending = inflater.unconsumed_tail
            if total > MAX_FILE_BYTES:
                raise source.error(
                    name, f"deflated DICOM dataset inflates to more than {MAX_FILE_BYTES} bytes (MAX_FILE_BYTES); refused"
                )
    except zlib.error as err:
        raise source.error(name, f"deflated DICOM dataset is corrupt ({_one_line(err)})") from None


def _read_members(source: _Source) -> tuple[list[tuple[str, Dataset]], list[str]]:
    """All DICOM datasets with pixel data under `source`, and the names skipped."""
    datasets: list[tuple[str, Dataset]] = []
    skipped: list[str] = []
    total_bytes = 0

    def count(name: str, n_bytes: int) -> None:
        nonlocal total_bytes
        if n_bytes > MAX_FILE_BYTES:
            raise source.error(name, f"file is {n_bytes} bytes; the limit for one image file is {MAX_FILE_BYTES}")
        total_bytes += n_bytes
        if total_bytes > MAX_SERIES_BYTES:
            raise InputError(source.path, f"the DICOM files hold more than {MAX_SERIES_BYTES} bytes (MAX_SERIES_BYTES); refused")

    def parse(name: str, blob: bytes) -> None:
        _check_deflated(source, name, blob)
        try:
            ds = pydicom.dcmread(io.BytesIO(blob))
        except InvalidDicomError as err:
            if name.lower().endswith(".dcm"):
                raise source.error(name, f"not a valid DICOM file ({_one_line(err)})") from None
            skipped.append(name)  # manifest.csv and the like
            return
        except Exception as err:  # pydicom raises many types for damaged files
            raise source.error(name, f"DICOM file cannot be parsed; truncated or corrupt? ({_one_line(err)})") from None
        if "PixelData" not in ds:
            skipped.append(name)  # DICOMDIR, structured reports, presentation states
            return
        datasets.append((name, ds))

    path = source.path
    if source.is_zip:
        check_zip_archive(path)
        try:
            with zipfile.ZipFile(path) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                if len(members) > MAX_FILES:
                    raise InputError(path, f"zip holds {len(members)} members; the limit is {MAX_FILES}")
                for info in sorted(members, key=lambda i: i.filename):
                    name = _shown(info.filename)
                    if info.flag_bits & 0x1:
                        raise source.error(name, "zip member is encrypted; cannot read it")
                    if info.compress_type not in _ZIP_METHODS:
                        raise source.error(
                            name, f"zip member uses compression method {info.compress_type}, which is not supported "
                            f"(expected one of {', '.join(_ZIP_METHODS.values())})"
                        )
                    count(name, info.file_size)
                    with archive.open(info) as member:
                        blob = _read_limited(source, name, member, MAX_FILE_BYTES)
                    parse(name, blob)
        except InputError:
            raise
        except Exception as err:  # BadZipFile, zlib/bz2/lzma errors, OSError, EOFError, NotImplementedError...
            raise InputError(path, f"zip archive cannot be read; truncated or corrupt? ({_one_line(err)})") from None
    elif path.is_dir():
        files = []
        for file in path.rglob("*"):
            if file.is_file() and not file.name.startswith("."):
                files.append(file)
                if len(files) > MAX_FILES:
                    raise InputError(path, f"folder holds more than {MAX_FILES} files; the limit is {MAX_FILES}")
        for file in sorted(files):
            size = file.stat().st_size
            if size == 0:
                if file.suffix.lower() == ".dcm":
                    raise InputError(file, "DICOM file is empty (0 bytes)")
                skipped.append(str(file))
                continue
            count(str(file), size)
            parse(str(file), _read_file(source, file))
    else:
        size = path.stat().st_size
        if size == 0:
            raise InputError(path, "DICOM file is empty (0 bytes)")
        count(str(path), size)
        parse(str(path), _read_file(source, path))
    return datasets, skipped


def _read_file(source: _Source, file: Path) -> bytes:
    try:
        with open(file, "rb") as stream:
            return _read_limited(source, str(file), stream, MAX_FILE_BYTES)
    except OSError as err:
        raise InputError(file, f"cannot read file: {err.strerror or err}") from None


def _numbers(source: _Source, name: str, ds: Dataset, tag: str, count: int | None = None) -> list[float]:
    """A numeric tag's values as finite floats (one value or a multi-value), else InputError naming the tag."""
    try:
        value = ds.get(tag)
    except Exception as err:  # pydicom converts values lazily and raises on malformed ones
        raise source.error(name, f"DICOM tag {tag} cannot be read ({_one_line(err)})") from None
    if value is None or value == "":
        raise source.error(name, f"missing DICOM tag {tag}")
    try:
        values = [float(v) for v in value] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [float(value)]
    except (TypeError, ValueError):
        raise source.error(name, f"DICOM tag {tag} is not numeric: {_shown(str(value))}") from None
    if count is not None and len(values) != count:
        raise source.error(name, f"DICOM tag {tag} needs {count} values, has {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise source.error(name, f"DICOM tag {tag} is not finite: {values}")
    return values


def _parse_frame(source: _Source, name: str, ds: Dataset) -> _Frame:
    """Check the tags the geometry needs and parse them."""
    try:
        missing = [tag for tag in REQUIRED_TAGS if tag not in ds or ds[tag].value in (None, "", b"")]
    except Exception as err:  # a tag whose value pydicom cannot convert
        raise source.error(name, f"unreadable DICOM tag ({_one_line(err)})") from None
    if missing:
        raise source.error(name, f"missing DICOM tag(s) {', '.join(missing)}")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        samples_per_pixel = int(ds.get("SamplesPerPixel", 1))
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as err:
        raise source.error(name, f"unreadable NumberOfFrames, SamplesPerPixel, Rows or Columns ({_one_line(err)})") from None
    if n_frames > 1:
        raise source.error(name, "multi-frame (enhanced) DICOM is not supported; expected one image per file")
    if photometric != "MONOCHROME2" or samples_per_pixel != 1:
        raise source.error(name, f"expected a MONOCHROME2 grey-scale image, got {_shown(photometric)}")
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
    source: _Source, frames: list[_Frame], series: str | None, view: str | None
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


def _group_slices(source: _Source, frames: list[_Frame]) -> tuple[list[list[_Frame]], np.ndarray, list[str]]:
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


def _frame_sort_key(source: _Source, frame: _Frame, use_trigger: bool) -> tuple[float, float]:
    """(TriggerTime, InstanceNumber) when every frame of the slice has a TriggerTime, else (0, InstanceNumber)."""
    instance = frame.ds.get("InstanceNumber")
    has_instance = instance not in (None, "")
    if not use_trigger and not has_instance:
        problem = "missing DICOM tag InstanceNumber, and TriggerTime is not on every frame; cannot order the frames"
        raise source.error(frame.name, problem)
    trigger = float(frame.ds.TriggerTime) if use_trigger else 0.0
    return trigger, float(instance) if has_instance else 0.0


def _pixels(source: _Source, frame: _Frame) -> np.ndarray:
    """The frame's pixel values after RescaleSlope/Intercept, float32 (rows, columns)."""
    try:
        stored = frame.ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad or compressed pixel data
        raise source.error(frame.name, f"pixel data cannot be decoded ({type(err).__name__}: {err})") from err
    if stored.shape != frame.shape:
        raise source.error(frame.name, f"pixel data shape {stored.shape} does not match Rows x Columns {frame.shape}")
    return np.asarray(apply_modality_lut(stored, frame.ds), dtype=np.float32)


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
        metadata with the series descriptions, UIDs, trigger times and slice
        positions.

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
    source = _Source(path)
    datasets, skipped = _read_members(source)
    if not datasets:
        detail = f" ({len(skipped)} other files skipped)" if skipped else ""
        raise InputError(path, f"no DICOM image files found{detail}")
    frames = [_parse_frame(source, name, ds) for name, ds in datasets]
    frames, left_out = _select_series(source, frames, series, view)

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

    normal = np.cross(reference.row_cosine, reference.col_cosine)
    first_position = groups[0][0].position_lps
    if len(groups) > 1:
        gaps = np.diff(positions)
        if np.any(np.abs(np.abs(gaps) - np.abs(gaps).mean()) > _SPACING_TOLERANCE * np.abs(gaps).mean() + 1e-3):
            gaps_mm = np.round(np.abs(gaps), 3).tolist()
            raise InputError(path, f"slice positions are not evenly spaced (gaps {gaps_mm} mm); a slice missing?")
        slice_step = (groups[-1][0].position_lps - first_position) / (len(groups) - 1)
    else:
        tag = "SliceThickness" if reference.ds.get("SliceThickness") not in (None, "") else "SpacingBetweenSlices"
        if reference.ds.get(tag) in (None, ""):
            raise source.error(reference.name, "missing DICOM tag(s) SliceThickness and SpacingBetweenSlices")
        (thickness,) = _numbers(source, reference.name, reference.ds, tag, 1)
        if not MIN_SPACING_MM <= thickness <= MAX_SPACING_MM:
            raise source.error(
                reference.name, f"DICOM tag {tag} is {thickness:g}; it must be from {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm"
            )
        slice_step = normal * thickness

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
    frame_interval_ms = None
    if len(trigger_ms) == len(groups[0]) and len(trigger_ms) > 1:
        frame_interval_ms = float(np.median(np.diff(trigger_ms)))
    elif reference.ds.get("NominalInterval") and reference.ds.get("CardiacNumberOfImages"):
        try:
            interval = float(reference.ds.NominalInterval) / float(reference.ds.CardiacNumberOfImages)
        except (TypeError, ValueError, ZeroDivisionError):
            interval = math.nan
        frame_interval_ms = interval if math.isfinite(interval) and interval > 0 else None  # unusable: unknown
    if frame_interval_ms is not None and not (math.isfinite(frame_interval_ms) and frame_interval_ms > 0):
        frame_interval_ms = None  # repeated trigger times

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
            "image_type": image_type,
            "synthetic": any("SYNTHETIC" in d.upper() for d in descriptions),
        },
    )


# --------------------------------------------------------------------------- writing


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
    affine_lps = LPS_TO_RAS @ np.asarray(image.affine, dtype=np.float64)
    x_axis, y_axis, slice_axis = affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2]
    col_spacing, row_spacing = float(np.linalg.norm(x_axis)), float(np.linalg.norm(y_axis))
    row_cosine, col_cosine = x_axis / col_spacing, y_axis / row_spacing
    if abs(float(row_cosine @ col_cosine)) > 1e-4:
        raise ValueError("the affine's in-plane axes are not orthogonal; DICOM cannot represent the image")
    normal = np.cross(row_cosine, col_cosine)
    slice_gap = float(np.linalg.norm(slice_axis))
    if n_slices > 1 and abs(abs(float(slice_axis @ normal)) - slice_gap) > 1e-4 * slice_gap:
        raise ValueError("the affine's slice axis is not perpendicular to the image plane")

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
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = FileDataset(str(paths[instance - 1]), {}, file_meta=meta, preamble=b"\0" * 128)
            # SOP common, patient, study, series, frame of reference, equipment
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop_uid
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
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = n_y, n_x
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
            ds.save_as(paths[instance - 1], enforce_file_format=True)
    return paths
