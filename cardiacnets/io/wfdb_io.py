"""Reader for PhysioNet WFDB records: PTB-XL, PTB-DB, MIMIC-IV-ECG, CinC ``.mat`` records.

A WFDB record is a text header (``NAME.hea``: sampling rate, and per signal
its file, storage format, gain, baseline, units and label; ``#`` comment lines
with age, sex, diagnoses) plus one or more signal files. PhysioNet lays them
out in many trees (PTB-XL ``records500/00000/00001_hr``, MIMIC-IV-ECG
``files/p1000/p10000032/s40689238/40689238``), all read the same way here:
give the record path with or without extension, or the ``.hea``, ``.dat`` or
``.mat`` file. CinC-challenge records keep the samples in a MATLAB v4/v5 file
whose header line reads ``A0001.mat 16+24 1000/mV ...``; those are read with
`scipy.io.loadmat`, which checks the MATLAB matrix instead of trusting the byte
offset.

Speed: the ``wfdb`` package parses headers through pandas ``.loc`` look-ups,
about 3 ms per 12-lead header, ten times the cost of reading the samples. For
the format nearly every ECG database uses (``16``: little-endian 16-bit, one
sample per frame, no skew) this module parses the header itself (about 0.1 ms)
and reads the samples with numpy; tests check that the result equals
``wfdb.rdrecord`` exactly on the real PTB-XL and PTB-DB records. Every other
layout (formats 212, 24, 32, FLAC, multi-segment, skewed or oversampled
signals) is read by ``wfdb.rdrecord``, as is everything when ``engine="wfdb"``.

Safety: headers may come from strangers (the review app's uploads), so a header
is checked before any file it names is touched or any array is allocated. A
signal file (or segment) name must be a plain file name; it is resolved in the
header's own folder and must be a regular file there (a symbolic link leading
out of the folder counts as missing). Messages name the header and the field,
never a path, existence or size outside the record's folder. Sampling rate,
gains, signal and sample counts must be plausible, and the declared samples must
fit in the bytes present (ceilings: `MAX_SIGNALS`, `MAX_SAMPLES_PER_SIGNAL`).
The same checks run before handing a record to ``wfdb.rdrecord``.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from einops import rearrange

from cardiacnets.errors import InputError
from cardiacnets.io.ecg_leads import canonical_lead_name
from cardiacnets.io.ecg_record import ECGRecord

# Factor from each accepted physical unit to millivolts.
UNIT_TO_MV: dict[str, float] = {
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
}
DEFAULT_SAMPLING_RATE_HZ = 250.0  # WFDB's default when the record line omits it
DEFAULT_ADC_GAIN = 200.0  # WFDB's default when a signal line gives 0 or nothing
INVALID_SAMPLE_16 = -32768  # format 16 marker of a missing sample

# Plausibility limits, checked before anything is allocated.
MIN_SAMPLING_RATE_HZ = 1.0
MAX_SAMPLING_RATE_HZ = 100_000.0
MAX_SIGNALS = 64
MAX_SAMPLES_PER_SIGNAL = 10_000_000  # 5.5 h at 500 Hz
# Bits each stored sample takes in the formats of fixed width (FLAC 508/516/524 are compressed).
_BITS_PER_SAMPLE = {8: 8, 80: 8, 16: 16, 61: 16, 160: 16, 212: 12, 310: 32 / 3, 311: 32 / 3, 24: 24, 32: 32}
_NULL_SEGMENT = "~"  # WFDB's name of a gap in a multi-segment record
_NO_FILE = "~"  # WFDB's signal file name in the layout header of a multi-segment record (never opened)

_SIGNAL_FORMAT = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_GAIN = re.compile(r"^(?P<gain>[-+0-9.eE]+)(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>.+))?$")
_COMMENT_FIELD = re.compile(r"^\s*(?P<key>[A-Za-z][\w ()/.-]*?)\s*:\s*(?P<value>.*?)\s*$")


@dataclass
class _SignalSpec:
    file_name: str
    fmt: int
    samples_per_frame: int
    skew: int
    byte_offset: int
    adc_gain: float
    baseline: int
    units: str
    adc_zero: int
    label: str


@dataclass
class _Header:
    record_name: str
    n_segments: int
    n_signals: int
    sampling_rate_hz: float
    n_samples: int | None
    base_time: str | None
    base_date: str | None
    signals: list[_SignalSpec] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # multi-segment records: segment record names
    comments: list[str] = field(default_factory=list)


def read_wfdb(path: str | os.PathLike, *, engine: Literal["auto", "wfdb"] = "auto") -> ECGRecord:
    """Read a WFDB ECG record into millivolts.

    Args:
        path: the record (``.../00001_hr``), its ``.hea`` header, or its ``.dat``
            / ``.mat`` signal file.
        engine: ``"auto"`` reads format-16 ``.dat`` and ``.mat`` records with
            numpy/scipy and everything else with ``wfdb.rdrecord``; ``"wfdb"``
            always uses ``wfdb.rdrecord``.

    Returns:
        An `ECGRecord` (``format`` ``"wfdb"`` or ``"wfdb_mat"``) with standard lead
        names where recognised (``AVR`` -> ``aVR``, ``i`` -> ``I``), the file's
        label otherwise (``vx``), ``units`` the header's physical units, and the
        header comments in ``metadata`` (``comments``, ``fields``, plus
        ``age_years`` and ``sex`` when stated). Missing samples are NaN.

    Raises:
        InputError: no header, a bad or implausible header line (a signal file
            name that is not a plain file name in the record's folder, sampling
            rate, gain, signal or sample count out of range), a missing or
            truncated signal file, or units that are not a voltage.
    """
    header_path = _header_path(Path(path))
    text = _read_text(header_path)
    header = _parse_header(header_path, text)
    is_mat = bool(header.signals) and header.signals[0].file_name.lower().endswith(".mat")
    if engine == "wfdb" or not _fast_path_supported(header):
        signal_mV, units, labels = _read_with_wfdb(header_path, header)
    else:
        labels = [spec.label for spec in header.signals]
        reader = _read_mat if is_mat else _read_format16
        signal_mV, units = reader(header_path, header)
    fmt = "wfdb_mat" if is_mat else "wfdb"
    return ECGRecord(
        signal_mV=signal_mV,
        lead_names=[canonical_lead_name(label) or label for label in labels],
        sampling_rate_hz=header.sampling_rate_hz,
        source=os.fspath(header_path.with_suffix("")),
        format=fmt,
        units=units,
        metadata=_metadata(header, labels),
    )


def record_file_names(header_path: str | os.PathLike) -> list[str]:
    """The files a WFDB record needs beside its header, as the header names them.

    Args:
        header_path: the record's ``.hea`` file.

    Returns:
        The signal file names (each once, in header order), or for a
        multi-segment record the segment headers (``NAME.hea``); every name has
        been checked to be a plain file name.

    Raises:
        InputError: the header cannot be read or fails the checks of `read_wfdb`.
    """
    header_path = Path(header_path)
    header = _parse_header(header_path, _read_text(header_path))
    if header.n_segments > 1:
        names = [f"{name}.hea" for name in header.segments if name != _NULL_SEGMENT]
    else:
        names = [spec.file_name for spec in header.signals]
    return list(dict.fromkeys(names))


def _header_path(path: Path) -> Path:
    suffix = path.suffix.lower()
    base = path.with_suffix("") if suffix in (".hea", ".dat", ".mat") else path
    header_path = base.parent / f"{base.name}.hea"
    if not header_path.is_file():
        if suffix in (".dat", ".mat") and path.is_file():
            raise InputError(path, f"signal file without its WFDB header {header_path.name}")
        raise InputError(path, f"no WFDB header {header_path.name} (is this a WFDB record?)")
    return header_path


def _read_text(header_path: Path) -> str:
    try:
        raw = header_path.read_bytes()
    except OSError as err:
        raise InputError(header_path, f"cannot read header: {err.strerror or err}") from None
    # Headers are ASCII; Latin-1 never fails and keeps stray bytes visible.
    return raw.decode("latin-1")


def _parse_header(header_path: Path, text: str) -> _Header:
    """Parse the header text (WFDB ``header(5)`` grammar) without pandas."""
    lines = text.splitlines()
    comments = [line.strip()[1:].strip() for line in lines if line.strip().startswith("#")]
    # Only whole lines starting with '#' are comments (labels may contain '#').
    content = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")]
    if not content:
        raise InputError(header_path, "bad header: empty (no record line)")

    number, record_line = content[0]
    fields = record_line.split()
    if len(fields) < 2:
        raise InputError(header_path, f"bad header: line {number}: record line {record_line!r} lacks the signal count")
    name, _, n_segments_text = fields[0].partition("/")
    try:
        n_segments = int(n_segments_text) if n_segments_text else 1
        n_signals = int(fields[1])
        sampling_rate_hz = float(fields[2].split("/")[0]) if len(fields) > 2 else DEFAULT_SAMPLING_RATE_HZ
        n_samples = int(fields[3]) if len(fields) > 3 else None
    except ValueError:
        raise InputError(header_path, f"bad header: line {number}: cannot parse record line {record_line!r}") from None
    where = f"bad header: line {number}: record line"
    if n_segments < 1:
        raise InputError(header_path, f"{where}: number of segments {n_segments} must be at least 1")
    if not 0 <= n_signals <= MAX_SIGNALS:
        raise InputError(header_path, f"{where}: number of signals {n_signals} is outside 0 to {MAX_SIGNALS}")
    # `not (a <= x <= b)` is also true for NaN.
    if not (math.isfinite(sampling_rate_hz) and MIN_SAMPLING_RATE_HZ <= sampling_rate_hz <= MAX_SAMPLING_RATE_HZ):
        raise InputError(
            header_path,
            f"{where}: sampling frequency {fields[2]!r} is not a plausible rate "
            f"({MIN_SAMPLING_RATE_HZ:g} to {MAX_SAMPLING_RATE_HZ:g} Hz)",
        )
    if n_samples is not None and not 0 <= n_samples <= MAX_SAMPLES_PER_SIGNAL:
        raise InputError(
            header_path, f"{where}: number of samples {n_samples} is outside 0 to {MAX_SAMPLES_PER_SIGNAL} per signal"
        )
    header = _Header(
        record_name=name,
        n_segments=n_segments,
        n_signals=n_signals,
        sampling_rate_hz=sampling_rate_hz,
        n_samples=n_samples or None,
        base_time=fields[4] if len(fields) > 4 else None,
        base_date=fields[5] if len(fields) > 5 else None,
        comments=comments,
    )
    if n_segments > 1:
        # Segment lines ("NAME n_samples"), not signal lines: wfdb reads the segments.
        segment_lines = content[1:]
        if len(segment_lines) < n_segments:
            raise InputError(
                header_path,
                f"bad header: record line announces {n_segments} segments, found {len(segment_lines)} segment lines",
            )
        for index, (number, line) in enumerate(segment_lines[:n_segments]):
            segment_name = line.split()[0]
            if segment_name != _NULL_SEGMENT and not _is_plain_file_name(segment_name):
                raise InputError(
                    header_path,
                    f"bad header: line {number}: segment {index + 1} record name {_shown(segment_name)} "
                    "is not a plain file name in the record's folder",
                )
            header.segments.append(segment_name)
        return header

    signal_lines = content[1:]
    if len(signal_lines) < n_signals:
        raise InputError(
            header_path, f"bad header: record line announces {n_signals} signals, found {len(signal_lines)} signal lines"
        )
    for index, (number, line) in enumerate(signal_lines[:n_signals]):
        header.signals.append(_parse_signal_line(header_path, number, line, index))
    if n_signals == 0:
        raise InputError(header_path, "bad header: record has no signals")
    return header


def _parse_signal_line(header_path: Path, number: int, line: str, index: int) -> _SignalSpec:
    fields = line.split(maxsplit=8)
    where = f"bad header: line {number}"
    if fields[0] != _NO_FILE and not _is_plain_file_name(fields[0]):
        raise InputError(
            header_path,
            f"{where}: signal {index + 1} file name {_shown(fields[0])} is not a plain file name in the record's folder",
        )
    if len(fields) < 2:
        raise InputError(header_path, f"{where}: signal line {line!r} lacks the storage format")
    fmt_match = _SIGNAL_FORMAT.match(fields[1])
    if fmt_match is None:
        raise InputError(header_path, f"{where}: cannot parse storage format {fields[1]!r}")
    adc_gain, baseline, units = DEFAULT_ADC_GAIN, None, "mV"
    if len(fields) > 2:
        gain_match = _GAIN.match(fields[2])
        if gain_match is None:
            raise InputError(header_path, f"{where}: cannot parse ADC gain {fields[2]!r}")
        try:
            # WFDB: a gain of 0 means the default gain (wfdb.rdheader does the same).
            adc_gain = float(gain_match["gain"]) or DEFAULT_ADC_GAIN
        except ValueError:
            raise InputError(header_path, f"{where}: cannot parse ADC gain {fields[2]!r}") from None
        if not math.isfinite(adc_gain):
            raise InputError(header_path, f"{where}: signal {index + 1} ADC gain {fields[2]!r} is not a finite number")
        if adc_gain < 0:
            raise InputError(
                header_path, f"{where}: signal {index + 1} ADC gain {fields[2]!r} is negative; it must be positive"
            )
        baseline = int(gain_match["baseline"]) if gain_match["baseline"] is not None else None
        units = gain_match["units"] or "mV"
    try:
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
    except ValueError:
        raise InputError(header_path, f"{where}: ADC zero {fields[4]!r} is not an integer") from None
    label = fields[8].strip() if len(fields) > 8 else f"signal{index + 1}"  # unlabelled: flagged unknown later
    samples_per_frame = int(fmt_match["spf"] or 1)
    if not 1 <= samples_per_frame <= MAX_SIGNALS:
        raise InputError(
            header_path, f"{where}: signal {index + 1} samples per frame {samples_per_frame} is outside 1 to {MAX_SIGNALS}"
        )
    return _SignalSpec(
        file_name=fields[0],
        fmt=int(fmt_match["fmt"]),
        samples_per_frame=samples_per_frame,
        skew=int(fmt_match["skew"] or 0),
        byte_offset=int(fmt_match["offset"] or 0),
        adc_gain=adc_gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        adc_zero=adc_zero,
        label=label,
    )


def _is_plain_file_name(name: str) -> bool:
    """Whether `name` can only mean a file directly in the header's folder.

    No directory separator of either kind, not ``.``/``..``, no drive letter or
    stream (``:``), no home-folder ``~``, nothing unprintable (NUL included).
    """
    return (
        name not in ("", ".", "..")
        and name.isprintable()
        and not any(char in name for char in "/\\:~")
    )


def _shown(name: str) -> str:
    """A header field quoted for a message, cut to a readable length."""
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _signal_file(header_path: Path, file_name: str, field_name: str, what: str = "signal file") -> tuple[Path, int]:
    """Resolve a checked file name in the header's folder: (real path, size in bytes).

    Anything that is not a regular file inside the folder (absent, a folder, a
    device, a symbolic link leading out of the folder, unreadable metadata)
    gets the same message, so that nothing is learnt about files elsewhere.
    """
    assert file_name == _NO_FILE or _is_plain_file_name(file_name), file_name  # checked by the header parser
    folder = header_path.parent
    try:
        real_folder = folder.resolve(strict=True)
        real = (folder / file_name).resolve(strict=True)
        info = real.stat()
        inside = real_folder in real.parents
    except (OSError, RuntimeError):  # missing, dangling link, link loop
        inside, info = False, None
    if not inside or info is None or not stat.S_ISREG(info.st_mode):
        raise InputError(
            header_path,
            f"{what} {file_name} named in the header is missing "
            f"(no regular file of that name in the record's folder; {field_name})",
        )
    return real, info.st_size


def _check_files_for_wfdb(header_path: Path, header: _Header, depth: int = 0) -> None:
    """Before ``wfdb.rdrecord``: every named file is a regular file in the folder and holds the declared samples."""
    if header.n_segments > 1:
        if depth:
            raise InputError(header_path, "bad header: a segment of a multi-segment record is itself multi-segment")
        for index, name in enumerate(header.segments):
            if name == _NULL_SEGMENT:
                continue
            segment_path, _ = _signal_file(
                header_path, f"{name}.hea", f"segment {index + 1} record name", what="segment header"
            )
            segment_header_path = header_path.parent / f"{name}.hea"
            _check_files_for_wfdb(segment_header_path, _parse_header(segment_header_path, _read_text(segment_path)), 1)
        return
    by_file: dict[str, list[int]] = {}
    for index, spec in enumerate(header.signals):
        by_file.setdefault(spec.file_name, []).append(index)
    for file_name, indices in by_file.items():
        if depth and file_name == _NO_FILE:
            continue  # a layout segment: wfdb reads no samples for it
        _, size = _signal_file(header_path, file_name, f"file name of signal {indices[0] + 1}")
        specs = [header.signals[i] for i in indices]
        if header.n_samples is None or any(spec.fmt not in _BITS_PER_SAMPLE for spec in specs):
            continue  # length taken from the file, or a compressed format: wfdb checks it
        bits_per_frame = sum(spec.samples_per_frame * _BITS_PER_SAMPLE[spec.fmt] for spec in specs)
        needed = specs[0].byte_offset + int(header.n_samples * bits_per_frame // 8)
        if size < needed:
            raise InputError(
                header_path,
                f"truncated signal file {file_name}: {size} bytes, the header needs {needed} "
                f"({header.n_samples} samples x {len(indices)} signals)",
            )


def _fast_path_supported(header: _Header) -> bool:
    if header.n_segments != 1 or not header.signals:
        return False
    is_mat = [spec.file_name.lower().endswith(".mat") for spec in header.signals]
    if any(is_mat):
        # MATLAB records: one file holding every signal, read with loadmat.
        return all(is_mat) and len({spec.file_name for spec in header.signals}) == 1
    return all(spec.fmt == 16 and spec.samples_per_frame == 1 and spec.skew == 0 for spec in header.signals)


def _mv_scale(header_path: Path, header: _Header) -> tuple[np.ndarray, str]:
    """Per-signal factor to millivolts, and the units as one string."""
    scale = []
    for spec in header.signals:
        factor = UNIT_TO_MV.get(spec.units.strip().lower())
        if factor is None:
            raise InputError(
                header_path, f"signal {spec.label!r} has units {spec.units!r}; expected a voltage (uV, mV or V)"
            )
        scale.append(factor)
    units = sorted({spec.units for spec in header.signals})
    return np.asarray(scale, dtype=np.float64), ",".join(units)


def _to_mV(header_path: Path, header: _Header, digital: np.ndarray, invalid: int | None) -> tuple[np.ndarray, str]:
    """(leads, time) integer samples -> float32 millivolts; ``invalid`` samples -> NaN."""
    scale, units = _mv_scale(header_path, header)
    gain = np.array([spec.adc_gain for spec in header.signals], dtype=np.float64)
    baseline = np.array([spec.baseline for spec in header.signals], dtype=np.float64)
    physical = (digital - baseline[:, None]) / gain[:, None] * scale[:, None]
    if invalid is not None:
        physical[digital == invalid] = np.nan
    return physical.astype(np.float32), units


def _read_format16(header_path: Path, header: _Header) -> tuple[np.ndarray, str]:
    """Format-16 signals, possibly spread over several files (PTB-DB ``.dat`` + ``.xyz``)."""
    by_file: dict[str, list[int]] = {}
    for index, spec in enumerate(header.signals):
        by_file.setdefault(spec.file_name, []).append(index)
    n_samples = header.n_samples
    digital = None
    for file_name, indices in by_file.items():
        real_path, size = _signal_file(header_path, file_name, f"file name of signal {indices[0] + 1}")
        offset = header.signals[indices[0]].byte_offset
        frame_bytes = 2 * len(indices)
        available = size - offset
        if n_samples is None:
            if available <= 0 or available % frame_bytes:
                raise InputError(
                    header_path,
                    f"signal file {file_name} of {size} bytes is not a whole number of "
                    f"{len(indices)}-signal frames (truncated?)",
                )
            n_samples = available // frame_bytes
            if n_samples > MAX_SAMPLES_PER_SIGNAL:
                raise InputError(
                    header_path,
                    f"signal file {file_name} holds {n_samples} samples per signal; the limit is {MAX_SAMPLES_PER_SIGNAL}",
                )
        needed = n_samples * frame_bytes
        if available < needed:
            raise InputError(
                header_path,
                f"truncated signal file {file_name}: {size} bytes, the header needs {needed + offset} "
                f"({n_samples} samples x {len(indices)} signals)",
            )
        try:
            with open(real_path, "rb") as stream:
                stream.seek(offset)
                raw = stream.read(needed)  # only the declared samples, never the whole of a larger file
        except OSError as err:
            raise InputError(header_path, f"cannot read signal file {file_name}: {err.strerror or err}") from None
        if len(raw) < needed:  # the file shrank since it was measured
            raise InputError(header_path, f"truncated signal file {file_name}: the header needs {needed + offset} bytes")
        block = np.frombuffer(raw, dtype="<i2", count=n_samples * len(indices))
        if digital is None:
            digital = np.empty((header.n_signals, n_samples), dtype=np.int16)
        digital[indices] = rearrange(block, "(time lead) -> lead time", lead=len(indices))  # frames are interleaved
    assert digital is not None
    return _to_mV(header_path, header, digital, INVALID_SAMPLE_16)


def _read_mat(header_path: Path, header: _Header) -> tuple[np.ndarray, str]:
    """CinC-style record: a MATLAB file with one (signals, samples) matrix."""
    import scipy.io

    file_name = header.signals[0].file_name
    real_path, _ = _signal_file(header_path, file_name, "file name of signal 1")
    where = f"signal file {file_name}"

    def unreadable(err: Exception) -> InputError:
        return InputError(header_path, f"{where}: cannot read MATLAB file ({type(err).__name__}: {err})")

    try:
        # The variables' shapes are listed (and checked) before anything is loaded.
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(real_path)}
    except Exception as err:  # scipy raises ValueError, TypeError, OSError... for damaged files
        raise unreadable(err) from None
    if "val" in shapes:
        chosen = "val"
    elif len(shapes) == 1:
        chosen = next(iter(shapes))
    else:
        raise InputError(
            header_path, f"{where}: MATLAB file has variables {sorted(shapes)}; expected one (signals x samples) matrix 'val'"
        )
    shape = shapes[chosen]
    if len(shape) == 2 and shape[0] != header.n_signals:
        raise InputError(header_path, f"{where}: MATLAB matrix has {shape[0]} rows, the header lists {header.n_signals} signals")
    if len(shape) == 2 and shape[1] > MAX_SAMPLES_PER_SIGNAL:
        raise InputError(
            header_path, f"{where}: MATLAB matrix has {shape[1]} samples per signal; the limit is {MAX_SAMPLES_PER_SIGNAL}"
        )
    try:
        matrix = np.asarray(scipy.io.loadmat(real_path, variable_names=[chosen])[chosen])
    except Exception as err:
        raise unreadable(err) from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise InputError(
            header_path, f"{where}: MATLAB matrix must be numeric (signals, samples), got {matrix.dtype} {matrix.shape}"
        )
    if matrix.shape[0] != header.n_signals:
        raise InputError(
            header_path, f"{where}: MATLAB matrix has {matrix.shape[0]} rows, the header lists {header.n_signals} signals"
        )
    if header.n_samples is not None and matrix.shape[1] != header.n_samples:
        raise InputError(
            header_path,
            f"{where}: truncated or wrong-length MATLAB matrix: {matrix.shape[1]} samples, the header says {header.n_samples}",
        )
    invalid = INVALID_SAMPLE_16 if matrix.dtype == np.int16 else None
    return _to_mV(header_path, header, matrix, invalid)


def _read_with_wfdb(header_path: Path, header: _Header) -> tuple[np.ndarray, str, list[str]]:
    """Any WFDB layout through ``wfdb.rdrecord`` (physical units, NaN for missing)."""
    import wfdb

    record_base = os.fspath(header_path.with_suffix(""))
    _check_files_for_wfdb(header_path, header)  # wfdb opens whatever the header names: check first
    try:
        record = wfdb.rdrecord(record_base)
    except Exception as err:  # wfdb raises many types for damaged records
        raise InputError(header_path, f"wfdb cannot read the record ({type(err).__name__}: {err})") from None
    if record.p_signal is None:
        raise InputError(header_path, "wfdb returned no physical signal")
    signal = np.asarray(record.p_signal, dtype=np.float64).T  # (leads, time)
    expected = header.n_samples or record.sig_len
    if signal.shape != (len(record.sig_name), expected):
        needs = (len(record.sig_name), expected)
        raise InputError(header_path, f"signal has shape {signal.shape}, the header needs {needs} (truncated?)")
    units = [u or "mV" for u in record.units]
    scale = []
    for label, unit in zip(record.sig_name, units):
        factor = UNIT_TO_MV.get(unit.strip().lower())
        if factor is None:
            raise InputError(header_path, f"signal {label!r} has units {unit!r}; expected a voltage (uV, mV or V)")
        scale.append(factor)
    signal_mV = (signal * np.asarray(scale)[:, None]).astype(np.float32)
    return signal_mV, ",".join(sorted(set(units))), list(record.sig_name)


def _metadata(header: _Header, labels: list[str]) -> dict:
    fields: dict[str, str] = {}
    for comment in header.comments:
        match = _COMMENT_FIELD.match(comment)
        if match and match["value"]:
            fields[match["key"].strip().lower()] = match["value"]
    metadata: dict = {
        "record_name": header.record_name,
        "file_lead_labels": labels,
        "comments": header.comments,
        "fields": fields,
        "base_time": header.base_time,
        "base_date": header.base_date,
    }
    age_text = fields.get("age")
    if age_text is not None:
        try:
            metadata["age_years"] = float(age_text)
        except ValueError:
            metadata["age_years"] = None  # e.g. "n/a", "NaN"
    sex_text = (fields.get("sex") or fields.get("gender") or "").strip().lower()
    if sex_text:
        sex = {"f": "female", "female": "female", "m": "male", "male": "male"}.get(sex_text)
        metadata["sex"] = sex
        metadata["sex_male"] = None if sex is None else sex == "male"
    return metadata
