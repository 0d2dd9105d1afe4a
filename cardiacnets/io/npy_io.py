"""Reader for ECGs stored as a bare numpy ``.npy`` array.

A ``.npy`` file carries no sampling rate, lead labels or units, so the caller
supplies them. The array may be (leads, time) or (time, leads): the axis whose
length equals the number of lead names is the lead axis (a square array is
ambiguous and refused).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cardiacnets.ecg.leads import canonical_lead_name
from cardiacnets.ecg.record import ECGRecord
from cardiacnets.errors import InputError

UNIT_TO_MV: dict[str, float] = {"uV": 1e-3, "mV": 1.0, "V": 1e3}


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
        InputError: missing rate or names, unknown units, an unreadable file, an
            array that is not 2-D or not numeric, or whose shape does not match
            the number of lead names.
    """
    path = Path(path)
    if sampling_rate_hz is None or not np.isfinite(sampling_rate_hz) or sampling_rate_hz <= 0:
        raise InputError(path, f"a .npy ECG needs a positive sampling_rate_hz (got {sampling_rate_hz})")
    if not lead_names:
        raise InputError(path, "a .npy ECG needs lead_names, one per lead in the array's order")
    if units not in UNIT_TO_MV:
        raise InputError(path, f"units {units!r} not supported; use one of {', '.join(UNIT_TO_MV)}")
    try:
        # allow_pickle=False: object arrays would execute code on load.
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, f"not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(path, "holds an archive, not a single array (use .npy, not .npz)")
    if array.dtype.kind not in "iuf":
        raise InputError(path, f"non-numeric array of dtype {array.dtype}; expected integers or floats")
    if array.ndim != 2:
        raise InputError(path, f"expected a 2-D (leads, time) or (time, leads) array, got {array.ndim}-D shape {array.shape}")

    n_leads = len(lead_names)
    if array.shape[0] == n_leads and array.shape[1] == n_leads:
        raise InputError(path, f"square array {array.shape} is ambiguous: cannot tell the lead axis")
    if array.shape[0] == n_leads:
        signal = array
    elif array.shape[1] == n_leads:
        signal = array.T  # (time, leads) -> (leads, time)
    else:
        raise InputError(
            path, f"lead count mismatch: array shape {array.shape} has no axis of {n_leads} (the number of lead_names)"
        )

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
