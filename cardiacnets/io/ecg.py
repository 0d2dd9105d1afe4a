"""One entry point for every ECG file format: `read_ecg`.

Dispatch is on the path: ``.xml`` -> UK Biobank / GE CardioSoft reader,
``.hea`` / ``.dat`` / ``.mat`` or an extension-less record with a ``.hea``
beside it -> WFDB reader, ``.npy`` -> numpy reader (which needs the sampling
rate and lead names). `is_ecg_path` says whether a path is one of these, and
`find_ecg_records` lists the records under folders once each (a WFDB record by
its ``.hea``, not also by its ``.dat``).

Text formats are read whole, so a file larger than its format's ceiling
(`MAX_XML_BYTES`, `MAX_HEADER_BYTES`) is refused before it is read or parsed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from cardiacnets.errors import InputError
from cardiacnets.io.ecg_record import ECGRecord

SUPPORTED_FORMATS = (
    "UK Biobank / GE CardioSoft XML (.xml)",
    "WFDB record (.hea with .dat or .mat, or the record path without extension)",
    "numpy array (.npy, with sampling_rate_hz and lead_names)",
)
_WFDB_SUFFIXES = (".hea", ".dat", ".mat")
# Size ceilings of the files read whole. A UK Biobank ECG XML is about 1 MB
# (FullDisclosure included); a WFDB header is a few hundred bytes to a few kB.
MAX_XML_BYTES = 64 << 20
MAX_HEADER_BYTES = 1 << 20


def read_ecg(
    path: str | os.PathLike,
    *,
    sampling_rate_hz: float | None = None,
    lead_names: Sequence[str] | None = None,
    units: str = "mV",
) -> ECGRecord:
    """Read any supported ECG file into an `ECGRecord` in millivolts.

    Args:
        path: a UK Biobank ``.xml``, a WFDB record (``.hea``/``.dat``/``.mat`` or
            the path without extension) or a ``.npy`` array.
        sampling_rate_hz: ``.npy`` only: samples per second.
        lead_names: ``.npy`` only: lead labels in the array's order.
        units: ``.npy`` only: units of the stored values (``"uV"``, ``"mV"``, ``"V"``).

    Returns:
        The record as the format's reader returns it.

    Raises:
        InputError: unknown format (the message lists the supported ones), a
            missing file, an XML file over `MAX_XML_BYTES` or a WFDB header over
            `MAX_HEADER_BYTES`, or any problem the format's reader finds.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "xml":
        from cardiacnets.io.ukb_xml import read_ukb_xml

        _check_size(path, MAX_XML_BYTES, "UK Biobank ECG XML files are about 1 MB")
        return read_ukb_xml(path)
    if kind == "wfdb":
        from cardiacnets.io.wfdb_io import read_wfdb

        base = path.with_suffix("") if path.suffix.lower() in _WFDB_SUFFIXES else path
        _check_size(base.parent / f"{base.name}.hea", MAX_HEADER_BYTES, "a WFDB header is a few kB of text")
        return read_wfdb(path)
    if kind == "npy":
        from cardiacnets.io.npy_io import read_npy

        return read_npy(path, sampling_rate_hz=sampling_rate_hz, lead_names=lead_names, units=units)
    if not path.exists():
        raise InputError(path, "no such file (and no WFDB header beside it)")
    if path.suffix.lower() in (".dat", ".mat"):
        from cardiacnets.io.wfdb_io import read_wfdb

        return read_wfdb(path)  # raises: names the missing header
    raise InputError(path, "unsupported ECG format; supported: " + "; ".join(SUPPORTED_FORMATS))


def _check_size(path: Path, limit: int, typical: str) -> None:
    """Refuse a file larger than `limit` bytes before it is read (a sparse file costs nothing to make)."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # the reader reports a missing or unreadable file
    if size > limit:
        raise InputError(path, f"file is {size} bytes, over the limit of {limit} for this format ({typical})")


def is_ecg_path(path: str | os.PathLike) -> bool:
    """Whether `read_ecg` would treat this path as an ECG record.

    Args:
        path: a file, or a WFDB record path without extension.

    Returns:
        True for an existing ``.xml`` or ``.npy`` file, a ``.hea`` file, a
        ``.dat``/``.mat`` file with its ``.hea`` beside it, or an extension-less
        path with a ``.hea`` beside it.
    """
    return _kind(Path(path)) is not None


def find_ecg_records(paths: Iterable[str | os.PathLike], *, include_npy: bool = False) -> list[Path]:
    """Expand files and folders into ECG records, one path per record.

    Args:
        paths: files or folders (searched recursively).
        include_npy: also list ``.npy`` files found in folders (they need a
            sampling rate and lead names to be read); files given directly are
            always kept.

    Returns:
        Sorted, de-duplicated paths: each ``.xml``, each WFDB ``.hea`` (a
        ``.dat`` or ``.mat`` given directly is replaced by its header), and
        ``.npy`` files as asked.

    Raises:
        InputError: a path that does not exist, or a file that is not an ECG.
    """
    found: set[Path] = set()
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            for child in entry.rglob("*"):
                suffix = child.suffix.lower()
                if not child.is_file():
                    continue
                if suffix in (".xml", ".hea") or (include_npy and suffix == ".npy"):
                    found.add(child)
            continue
        kind = _kind(entry)
        if kind is None:
            if not entry.exists():
                raise InputError(entry, "no such file or folder")
            raise InputError(entry, "unsupported ECG format; supported: " + "; ".join(SUPPORTED_FORMATS))
        if kind == "wfdb":
            base = entry.with_suffix("") if entry.suffix.lower() in _WFDB_SUFFIXES else entry
            entry = base.parent / f"{base.name}.hea"
        found.add(entry)
    return sorted(found)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "xml" if path.is_file() else None
    if suffix == ".npy":
        return "npy" if path.is_file() else None
    if suffix == ".hea":
        return "wfdb" if path.is_file() else None
    base = path.with_suffix("") if suffix in (".dat", ".mat") else path
    if (base.parent / f"{base.name}.hea").is_file():
        return "wfdb"
    return None
