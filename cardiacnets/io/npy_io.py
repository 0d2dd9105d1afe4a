"""Reader for ECGs stored as a bare numpy ``.npy`` array.

A ``.npy`` file carries no sampling rate, lead labels or units, so the caller
supplies them. The array may be (leads, time) or (time, leads): the axis whose
length equals the number of lead names is the lead axis (a square array is
ambiguous and refused).

Safety: the array header (magic, version, dtype, shape) is read and checked
before any sample is loaded: the dtype must be real integers or floats, the
shape 2-D with a lead axis matching ``lead_names`` and at most
`MAX_SAMPLES_PER_LEAD` samples, the declared bytes within `MAX_ARRAY_BYTES` and
present in the file. So a header declaring terabytes costs nothing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cardiacnets.errors import InputError
from cardiacnets.io.ecg_leads import canonical_lead_name
from cardiacnets.io.ecg_record import ECGRecord

UNIT_TO_MV: dict[str, float] = {"uV": 1e-3, "mV": 1.0, "V": 1e3}

# Ceilings checked on the header, before anything is allocated.
MIN_SAMPLING_RATE_HZ = 1.0
MAX_SAMPLING_RATE_HZ = 100_000.0
MAX_LEADS = 64
MAX_SAMPLES_PER_LEAD = 10_000_000  # 5.5 h at 500 Hz, as for WFDB records
MAX_ARRAY_BYTES = 1 << 30  # 1 GiB of stored samples
_MAX_HEADER_BYTES = 10_000  # numpy's own limit for a trusted header
_ZIP_MAGIC = b"PK\x03\x04"


def read_npy(
    path: str | os.PathLike,
    *,
    sampling_rate_hz: float | None,
    lead_names: Sequence[str] | None,
    units: str = "mV",
) -> ECGRecord:
    """Read a ``.npy`` ECG array.

    Args:
        path: the ``.npy`` file.
        sampling_rate_hz: samples per second (required: the file does not say).
        lead_names: one label per lead, in the array's order (required).
        units: units of the stored values: ``"uV"``, ``"mV"`` (default) or ``"V"``.

    Returns:
        An `ECGRecord` (``format="npy"``) with the signal as (leads, time)
        float32 millivolts.

    Raises:
        InputError: missing or implausible rate, missing names, unknown units,
            an unreadable or truncated file, an array that is not 2-D, not real
            numbers (complex, object, text) or too large (`MAX_SAMPLES_PER_LEAD`,
            `MAX_ARRAY_BYTES`), infinite values, or a shape that does not match
            the number of lead names.
    """
    path = Path(path)
    # `not (a <= x <= b)` is also true for NaN.
    if sampling_rate_hz is None or not (
        math.isfinite(sampling_rate_hz) and MIN_SAMPLING_RATE_HZ <= sampling_rate_hz <= MAX_SAMPLING_RATE_HZ
    ):
        raise InputError(
            path,
            f"a .npy ECG needs a positive sampling_rate_hz, a plausible rate ({MIN_SAMPLING_RATE_HZ:g} to "
            f"{MAX_SAMPLING_RATE_HZ:g} Hz); got {sampling_rate_hz}",
        )
    if not lead_names:
        raise InputError(path, "a .npy ECG needs lead_names, one per lead in the array's order")
    if len(lead_names) > MAX_LEADS:
        raise InputError(path, f"{len(lead_names)} lead_names given; the limit is {MAX_LEADS}")
    if units not in UNIT_TO_MV:
        raise InputError(path, f"units {units!r} not supported; use one of {', '.join(UNIT_TO_MV)}")
    shape, dtype = _checked_header(path, len(lead_names))
    try:
        # allow_pickle=False: object arrays would execute code on load.
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, f"not a readable .npy array ({_one_line(err)})") from None
    if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
        raise InputError(path, "the file changed while it was read; read it again")
    if array.dtype.kind == "f" and np.isinf(array).any():
        n_inf = int(np.count_nonzero(np.isinf(array)))
        raise InputError(path, f"{n_inf} infinite sample values (NaN marks a missing sample; infinity is not a voltage)")
    # The header check made sure exactly one axis has one entry per lead name.
    signal = array if array.shape[0] == len(lead_names) else array.T  # (time, leads) -> (leads, time)

    signal_mV = (signal.astype(np.float64) * UNIT_TO_MV[units]).astype(np.float32)
    return ECGRecord(
        signal_mV=np.ascontiguousarray(signal_mV),
        lead_names=[canonical_lead_name(name) or name for name in lead_names],
        sampling_rate_hz=float(sampling_rate_hz),
        source=os.fspath(path),
        format="npy",
        units=units,
        metadata={"file_lead_labels": list(lead_names), "stored_shape": list(array.shape)},
    )


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _checked_header(path: Path, n_leads: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read the ``.npy`` header and check it against the file and the ceilings.

    Returns:
        (shape, dtype) as declared; the lead axis is known to exist.
    """
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(len(np.lib.format.MAGIC_PREFIX))
            if prefix.startswith(_ZIP_MAGIC):
                raise InputError(path, "holds an archive, not a single array (use .npy, not .npz)")
            if prefix != np.lib.format.MAGIC_PREFIX:
                raise InputError(path, "not a readable .npy array (wrong magic: the file does not start with \\x93NUMPY)")
            stream.seek(0)
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream, _MAX_HEADER_BYTES)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream, _MAX_HEADER_BYTES)
                else:
                    raise InputError(path, f"not a readable .npy array (format version {version} unknown)")
            except (ValueError, EOFError, SyntaxError, TypeError) as err:
                raise InputError(path, f"not a readable .npy array (bad header: {_one_line(err)})") from None
            data_offset = stream.tell()
            size = os.fstat(stream.fileno()).st_size
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read file: {err.strerror or err}") from None

    if dtype.hasobject:
        raise InputError(path, "not a readable .npy array (object arrays are refused: loading them runs code)")
    if dtype.kind not in "iuf" or dtype.itemsize > 8 or dtype.fields is not None:
        raise InputError(path, f"non-numeric array of dtype {dtype}; expected real integers or floats (not complex)")
    if len(shape) != 2:
        raise InputError(path, f"expected a 2-D (leads, time) or (time, leads) array, got {len(shape)}-D shape {shape}")
    if shape[0] == n_leads and shape[1] == n_leads:
        raise InputError(path, f"square array {shape} is ambiguous: cannot tell the lead axis")
    if n_leads not in shape:
        raise InputError(
            path, f"lead count mismatch: array shape {shape} has no axis of {n_leads} (the number of lead_names)"
        )
    n_samples = shape[1] if shape[0] == n_leads else shape[0]
    if n_samples > MAX_SAMPLES_PER_LEAD:
        raise InputError(path, f"array shape {shape} holds {n_samples} samples per lead; the limit is {MAX_SAMPLES_PER_LEAD}")
    declared = math.prod(shape) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise InputError(path, f"array shape {shape} of {dtype} needs {declared} bytes; the limit is {MAX_ARRAY_BYTES}")
    if size - data_offset < declared:
        raise InputError(
            path,
            f"not a readable .npy array (truncated: {size} bytes, the header declares {data_offset + declared}: "
            f"shape {shape} of {dtype})",
        )
    return shape, dtype
