"""``cardiacnets inspect FILE``: say what an ECG or CMR file is.

Files may come from strangers, so a bad one gives exit status 2 and one line
naming the file and the problem (never a traceback), including running out of
memory; warnings the readers raise are collected into the description instead
of being printed. ``--json`` prints strict JSON: NaN and infinite numbers
become ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np

from cardiacnets.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe an ECG or CMR file (format, leads/shape, quality)")
    p.add_argument("path", type=Path, help="ECG (UKB XML, WFDB record, .npy) or CMR (NIfTI, DICOM folder/zip, ACDC .h5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sampling-rate", type=float, help=".npy ECG: sampling rate in Hz")
    p.add_argument("--leads", help=".npy ECG: comma-separated lead names in row order")
    p.add_argument("--units", default="mV", help=".npy ECG: units of the stored values (default mV)")
    p.set_defaults(func=run)


def describe_ecg(path: Path, sampling_rate_hz=None, lead_names=None, units="mV") -> dict:
    """The ``inspect`` description of an ECG file."""
    from cardiacnets.ecg.quality import check_quality
    from cardiacnets.io.ecg import read_ecg

    record = read_ecg(path, sampling_rate_hz=sampling_rate_hz, lead_names=lead_names, units=units)
    findings = check_quality(record)
    return {
        "modality": "ecg",
        "format": record.format,
        "path": str(path),
        "leads": list(record.lead_names),
        "n_leads": record.n_leads,
        "sampling_rate_hz": float(record.sampling_rate_hz),
        "duration_s": round(record.duration_s, 4),
        "n_samples": record.n_samples,
        "units": "mV",
        "stored_units": record.units,
        "amplitude_range_mV": [round(float(np.nanmin(record.signal_mV)), 4), round(float(np.nanmax(record.signal_mV)), 4)]
        if record.signal_mV.size else None,
        "quality": [{"code": f.code, "severity": f.severity, "lead": f.lead, "message": f.message} for f in findings],
        "measurements": {k: v for k, v in record.measurements.items() if v is not None},
        "interpretation": list(record.interpretation),
        "has_median_beats": record.median_mV is not None,
    }


def describe_cmr(path: Path) -> dict:
    """The ``inspect`` description of a CMR file."""
    from cardiacnets.io.cmr import read_cmr

    image = read_cmr(path)
    spacing_known = image.metadata.get("spacing_known", True)
    desc = {
        "modality": "cmr",
        "format": image.format,
        "path": str(path),
        "view": image.view,
        "is_segmentation": image.is_segmentation,
        "shape": list(image.shape),
        "spacing_mm": [round(v, 4) for v in image.spacing_mm] if spacing_known else None,
        "n_slices": image.n_slices,
        "n_frames": image.n_frames,
        "frame_interval_ms": image.frame_interval_ms,
        "orientation": "".join(image.orientation),
        "dtype": str(image.data.dtype),
    }
    if image.is_segmentation:
        labels, counts = np.unique(np.asarray(image.data), return_counts=True)
        desc["labels"] = {int(k): int(v) for k, v in zip(labels, counts)}
    else:
        desc["intensity_range"] = [float(np.min(image.data)), float(np.max(image.data))]
    if image.metadata:
        desc["metadata"] = {k: v for k, v in image.metadata.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return desc


def detect_modality(path: Path) -> str:
    """``"ecg"`` or ``"cmr"`` from the path, or InputError when neither reader takes it."""
    from cardiacnets.io.cmr import is_cmr_path
    from cardiacnets.io.ecg import is_ecg_path

    if not path.exists() and not path.with_suffix(".hea").exists():
        raise InputError(path, "no such file or folder")
    if is_ecg_path(path):
        return "ecg"
    if is_cmr_path(path):
        return "cmr"
    raise InputError(path, "not a supported ECG (UKB XML, WFDB .hea/.dat/.mat, .npy) or CMR (NIfTI, DICOM, .zip, ACDC .h5) file")


def strict_json_value(value):
    """`value` with NaN and infinite floats replaced by None, numpy scalars and arrays made plain.

    Args:
        value: a description (dicts, lists, tuples, numbers, strings, numpy values).

    Returns:
        A structure ``json.dumps(..., allow_nan=False)`` accepts (other objects
        become their ``str``).
    """
    if isinstance(value, dict):
        return {str(key): strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return strict_json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def run(args: argparse.Namespace) -> int:
    path = args.path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            modality = detect_modality(path)
            if modality == "ecg":
                leads = args.leads.split(",") if args.leads else None
                desc = describe_ecg(path, args.sampling_rate, leads, args.units)
            else:
                desc = describe_cmr(path)
        except MemoryError:
            raise InputError(path, "out of memory while reading; the file declares more data than can be held") from None
        except InputError as err:
            # One line on the terminal whatever a library put in the message.
            raise InputError(err.path, " ".join(err.problem.split())) from None
    reader_warnings = sorted({" ".join(str(w.message).split())[:300] for w in caught})
    if reader_warnings:
        desc["reader_warnings"] = reader_warnings
    if args.json:
        print(json.dumps(strict_json_value(desc), indent=2, allow_nan=False))
        return 0
    _print_human(desc)
    return 0


def _print_human(desc: dict) -> None:
    print(f"{desc['path']}: {desc['modality'].upper()} ({desc['format']})")
    if desc["modality"] == "ecg":
        print(f"  leads        {desc['n_leads']}: {', '.join(desc['leads'])}")
        print(f"  sampling     {desc['sampling_rate_hz']:g} Hz, {desc['n_samples']} samples, {desc['duration_s']:g} s")
        print(f"  units        {desc['units']} (stored as {desc['stored_units']})")
        if desc["amplitude_range_mV"]:
            lo, hi = desc["amplitude_range_mV"]
            print(f"  amplitude    {lo:.3f} .. {hi:.3f} mV")
        if desc["measurements"]:
            print("  measurements " + ", ".join(f"{k}={v:g}" for k, v in desc["measurements"].items()))
        if desc["interpretation"]:
            print("  statements   " + " | ".join(desc["interpretation"]))
        if desc["quality"]:
            for f in desc["quality"]:
                lead = f" [{f['lead']}]" if f["lead"] else ""
                print(f"  quality      {f['severity']}: {f['code']}{lead}: {f['message']}")
        else:
            print("  quality      no findings")
    else:
        print(f"  view         {desc['view']}{' (segmentation)' if desc['is_segmentation'] else ''}")
        print(f"  shape        {' x '.join(map(str, desc['shape']))} (x, y, slices, frames)")
        spacing = desc["spacing_mm"]
        print(f"  spacing      {' x '.join(f'{v:g}' for v in spacing)} mm" if spacing else "  spacing      unknown (not stored in the file)")
        print(f"  slices       {desc['n_slices']}, frames {desc['n_frames']}"
              + (f", {desc['frame_interval_ms']:g} ms apart" if desc.get("frame_interval_ms") else ""))
        print(f"  orientation  {desc['orientation']}")
        if "labels" in desc:
            print("  labels       " + ", ".join(f"{k}: {v} voxels" for k, v in desc["labels"].items()))
    for warning in desc.get("reader_warnings", []):
        print(f"  warning      {warning}")
