"""The files of a DICOM series, read safely: a folder, a single file or a zip (UK Biobank's bulk files).

Sizes are checked before anything is read or decompressed. A zip's member
count comes from its end record (`MAX_FILES`); a member must be neither
encrypted nor stored with an unknown compression method, and is read through a
stream that stops at `MAX_FILE_BYTES`; all files together stop at
`MAX_SERIES_BYTES`. A deflated DICOM dataset is inflated once with the same
limit before pydicom inflates it. `read_dicom_files` returns the parsed
datasets and the names of the files that are not DICOM images; errors name the
file (or the zip and its member). The series is assembled by
`cardiacnets.io.dicom.read_dicom_series`.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cardiacnets.errors import InputError

# Ceilings, checked before reading. A UK Biobank short-axis zip holds about
# 1,500 files of 90 kB (InlineVF series included), about 130 MB in all.
MAX_FILES = 20_000
MAX_FILE_BYTES = 64 << 20  # one single-frame image file (or zip member)
MAX_SERIES_BYTES = 512 << 20  # all files of a folder or zip together
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}
_MAX_ZIP_DIRECTORY_BYTES = MAX_FILES * 1024
_READ_CHUNK = 1 << 20
_DEFLATED_TS = "1.2.840.10008.1.2.1.99"
# Explicit-VR element headers with a 4-byte length (DICOM PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class DicomSource:
    """Where the files come from, so that errors name the right file."""

    def __init__(self, path: Path):
        self.path = path
        self.is_zip = path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))

    def error(self, name: str, problem: str) -> InputError:
        if self.is_zip:
            return InputError(self.path, f"{name}: {problem}")
        return InputError(name, problem)


def shown_name(name: str) -> str:
    """A file or member name fit for a one-line message."""
    if name.isprintable() and len(name) <= 200:
        return name
    return repr(name[:197] + "..." if len(name) > 200 else name)


def one_line(err: BaseException) -> str:
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


def _read_limited(source: DicomSource, name: str, stream, limit: int) -> bytes:
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


def _check_deflated(source: DicomSource, name: str, blob: bytes) -> None:
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
        raise source.error(name, f"deflated DICOM dataset is corrupt ({one_line(err)})") from None


def read_dicom_files(source: DicomSource) -> tuple[list[tuple[str, Dataset]], list[str]]:
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
                raise source.error(name, f"not a valid DICOM file ({one_line(err)})") from None
            skipped.append(name)  # manifest.csv and the like
            return
        except Exception as err:  # pydicom raises many types for damaged files
            raise source.error(name, f"DICOM file cannot be parsed; truncated or corrupt? ({one_line(err)})") from None
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
                    name = shown_name(info.filename)
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
            raise InputError(path, f"zip archive cannot be read; truncated or corrupt? ({one_line(err)})") from None
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


def _read_file(source: DicomSource, file: Path) -> bytes:
    try:
        with open(file, "rb") as stream:
            return _read_limited(source, str(file), stream, MAX_FILE_BYTES)
    except OSError as err:
        raise InputError(file, f"cannot read file: {err.strerror or err}") from None
