"""Throughput of ECG file -> standard tensor, ours against the CardiacNets authors' preprocessing.

Both pipelines start from the same reader (`cardiacnets.io.ecg.read_ecg`):
``speedup`` compares them end to end (file to array), ``processing_speedup``
without the reader, whose own time is reported beside them.

Ours: `standardize_ecg` with the default `ECGConfig` (quality check, resampling,
zero-phase notch + band-pass with cached designs applied to all leads at once,
crop/pad, masks).

Baseline, re-implemented here from the CardiacNets authors' public code for UK
Biobank ECGs: for each lead, statsmodels ``seasonal_decompose`` (additive, with a
period of one beat, ``sampling_rate * 60 / ventricular_rate`` samples; in their
code ``int(5000 * 6 / VentricularRate)`` for 10 s at 500 Hz) and subtraction of
its trend (the trend's undefined ends held at the nearest defined value); then
their ``CropResizing`` (first ``duration_s`` seconds, resized by per-lead linear
interpolation to the target length) and channel-wise min-max scaling to [-1, 1].
Files without a device heart rate (WFDB) use 75 bpm: a short period, so the
baseline is, if anything, faster than with their true rate (a conservative speedup).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from cardiacnets.config import to_dict
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.errors import CardiacNetsError, InputError
from cardiacnets.io.ecg_leads import STANDARD_LEADS, canonical_lead_name
from cardiacnets.io.ecg_record import ECGRecord

# Files without a device rate: a high rate keeps the seasonal period short and
# the baseline fast, so the reported speedup is conservative.
BASELINE_DEFAULT_HEART_RATE_BPM = 75.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inputs", nargs="+", type=Path, metavar="PATH",
        help="ECG files or folders (UK Biobank .xml, WFDB records); default: simulated files in a temp folder",
    )
    parser.add_argument("--repeat", type=_positive_int, default=3, help="passes over the inputs (default 3)")
    parser.add_argument("--limit", type=_positive_int, help="use at most this many records per format")
    parser.add_argument("--n-synthetic", type=_positive_int, default=16,
                        help="without --inputs: simulated subjects to write (each as UKB XML and WFDB)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated inputs")


def run(args: argparse.Namespace) -> dict:
    """Time reader, ours and baseline over the inputs.

    Args:
        args: parsed options (``inputs``, ``repeat``, ``limit``, ``n_synthetic``, ``seed``).

    Returns:
        The JSON-ready result: records, per-pipeline ``records_per_s`` and
        ``ms_per_record``, ``speedup`` (ours / baseline records per second, end
        to end), the same per file format, and skipped records with reasons.
    """
    from cardiacnets.io.ecg import find_ecg_records

    try:
        import statsmodels  # noqa: F401  (the baseline's seasonal_decompose)
    except ImportError:
        raise CardiacNetsError("the baseline needs statsmodels: pip install 'cardiacnets[dev]'") from None
    config = ECGConfig()
    config.validate()
    with tempfile.TemporaryDirectory(prefix="cardiacnets-bench-") as tmp:
        if args.inputs:
            paths = find_ecg_records(args.inputs)
            inputs = {"source": "files", "paths": [str(p) for p in args.inputs]}
        else:
            paths = write_synthetic_inputs(Path(tmp), args.n_synthetic, args.seed)
            inputs = {"source": "simulated", "subjects": args.n_synthetic, "formats": ["ukb_xml", "wfdb"]}
        if not paths:
            raise InputError(", ".join(map(str, args.inputs or [])), "no ECG records (.xml, .hea) found")
        records, skipped = _load(paths)
        if args.limit is not None:
            kept: dict[str, int] = defaultdict(int)
            selected = []
            for path, record in records:
                if kept[record.format] < args.limit:
                    kept[record.format] += 1
                    selected.append((path, record))
            records = selected
        if not records:
            raise InputError(str(paths[0]), "no readable ECG records: " + "; ".join(s["reason"] for s in skipped[:3]))
        timings = _time_pipelines([p for p, _ in records], config, args.repeat, skipped)
    if not timings:
        raise InputError(str(paths[0]), "no record could be processed: " + "; ".join(s["reason"] for s in skipped[:3]))

    formats = sorted({fmt for fmt, *_ in timings})
    result = {
        "inputs": inputs,
        "repeat": args.repeat,
        "config": to_dict(config),
        "baseline_description": (
            "per-lead statsmodels seasonal_decompose (period one beat) trend removal, "
            "per-lead linear resize to the target length, channel-wise min-max to [-1, 1]"
        ),
        "baseline_default_heart_rate_bpm": BASELINE_DEFAULT_HEART_RATE_BPM,
        **_summary(timings),
        "per_format": {fmt: _summary([t for t in timings if t[0] == fmt]) for fmt in formats},
        "skipped": skipped,
    }
    return result


def baseline_preprocess(record: ECGRecord, config: ECGConfig) -> np.ndarray:
    """The CardiacNets authors' ECG preprocessing (re-implemented; see module docstring).

    Args:
        record: the ECG as read.
        config: only ``duration_s`` and ``n_samples`` are used (the crop and the
            resize target).

    Returns:
        (leads, config.n_samples) float32, leads in `STANDARD_LEADS` order for
        those the record has.
    """
    from statsmodels.tsa.seasonal import seasonal_decompose

    fs = float(record.sampling_rate_hz)
    heart_rate = record.measurements.get("ventricular_rate_bpm") or BASELINE_DEFAULT_HEART_RATE_BPM
    period = int(fs * 60.0 / heart_rate)
    rows = {canonical_lead_name(name): i for i, name in enumerate(record.lead_names)}
    crop_len = min(record.n_samples, int(round(config.duration_s * fs)))
    detrended = []
    for name in STANDARD_LEADS:
        if name not in rows:
            continue
        lead = record.signal_mV[rows[name]].astype(np.float32)
        trend = np.asarray(seasonal_decompose(lead, model="additive", period=period).trend)
        defined = np.flatnonzero(~np.isnan(trend))
        trend[: defined[0]] = trend[defined[0]]
        trend[defined[-1] + 1:] = trend[defined[-1]]
        detrended.append(lead - trend)
    out = np.empty((len(detrended), config.n_samples), dtype=np.float32)
    positions = np.linspace(0, crop_len, num=config.n_samples)
    for i, lead in enumerate(detrended):
        out[i] = np.interp(positions, np.arange(crop_len), lead[:crop_len])
    low = out.min(axis=1, keepdims=True)
    high = out.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return ((out - low) / span * 2.0 - 1.0).astype(np.float32)


def write_synthetic_inputs(folder: Path, n_subjects: int, seed: int) -> list[Path]:
    """Simulated subjects written as UK Biobank XML and as WFDB (format 16) records.

    Args:
        folder: where to write (must exist).
        n_subjects: how many subjects.
        seed: random seed.

    Returns:
        The record paths (``.xml`` and ``.hea``).

    Raises:
        CardiacNetsError: the simulator modules are not available.
    """
    import wfdb

    try:
        from cardiacnets.simulate.ecg_model import ecg_parameters, synthesize_ecg
        from cardiacnets.simulate.physiology import sample_physiology
        from cardiacnets.simulate.ukb_xml_writer import write_ukb_xml
    except ImportError as err:
        raise CardiacNetsError(f"the ECG simulator is not available ({err}); pass --inputs FILES") from None

    paths = []
    for index in range(n_subjects):
        rng = np.random.default_rng([seed, index])
        try:
            phys = sample_physiology(1_000_000 + index, rng)
        except ImportError as err:
            raise CardiacNetsError(f"the simulator is incomplete ({err}); pass --inputs FILES") from None
        ecg = synthesize_ecg(ecg_parameters(phys, rng), rng)
        xml_path = folder / f"{1_000_000 + index}_20205_2_0.xml"
        write_ukb_xml(
            xml_path, ecg.signal_mV, ecg.sampling_rate_hz, median_mV=ecg.median_mV,
            measurements=ecg.measurements, interpretation=ecg.interpretation,
            age_years=phys.age_years, is_male=phys.is_male, height_cm=phys.height_cm,
            weight_kg=phys.weight_kg, beat_times_ms=ecg.beat_times_ms,
        )
        record_name = f"sim{index:05d}"
        wfdb.wrsamp(
            record_name, fs=ecg.sampling_rate_hz, units=["mV"] * len(ecg.lead_names),
            sig_name=list(ecg.lead_names), p_signal=ecg.signal_mV.T.astype(np.float64),
            fmt=["16"] * len(ecg.lead_names), adc_gain=[1000.0] * len(ecg.lead_names),
            baseline=[0] * len(ecg.lead_names), write_dir=str(folder),
        )
        paths += [xml_path, folder / f"{record_name}.hea"]
    return paths


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _load(paths: list[Path]) -> tuple[list[tuple[Path, ECGRecord]], list[dict]]:
    """Read every record once (untimed) to drop unreadable ones and learn formats."""
    from cardiacnets.io.ecg import read_ecg

    records, skipped = [], []
    for path in paths:
        try:
            records.append((path, read_ecg(path)))
        except CardiacNetsError as err:  # a batch job never dies on one bad record
            skipped.append({"path": str(path), "reason": str(getattr(err, "problem", err))})
    return records, skipped


def _time_pipelines(paths: list[Path], config: ECGConfig, repeat: int, skipped: list[dict]) -> list[tuple]:
    """(format, path, read_s, ours_s, baseline_s) per record and pass, interleaved."""
    from cardiacnets.ecg.standardize import standardize_ecg
    from cardiacnets.io.ecg import read_ecg

    # Warm-up (imports, filter designs) so the first record does not pay one-off costs.
    warm = read_ecg(paths[0])
    try:
        standardize_ecg(warm, config)
        baseline_preprocess(warm, config)
    except CardiacNetsError:
        pass  # the timed loop below records why this record is skipped

    timings = []
    bad: set[Path] = set()
    for _ in range(repeat):
        for path in paths:
            if path in bad:
                continue
            try:
                # Each pipeline reads the file itself; reading and processing are timed apart,
                # so processing time is measured, never derived by subtraction.
                t0 = time.perf_counter()
                record = read_ecg(path)
                t1 = time.perf_counter()
                std = standardize_ecg(record, config)
                t2 = time.perf_counter()
                base_record = read_ecg(path)
                t3 = time.perf_counter()
                base = baseline_preprocess(base_record, config)
                t4 = time.perf_counter()
            except CardiacNetsError as err:
                bad.add(path)
                skipped.append({"path": str(path), "reason": str(getattr(err, "problem", err))})
                continue
            assert std.signal.shape == (len(STANDARD_LEADS), config.n_samples)
            assert base.shape[1] == config.n_samples
            # (format, path, ours read, ours processing, baseline read, baseline processing)
            timings.append((record.format, str(path), t1 - t0, t2 - t1, t3 - t2, t4 - t3))
    return [t for t in timings if Path(t[1]) not in bad]


def _summary(timings: list[tuple]) -> dict:
    n = len(timings)
    if n == 0:
        return {}
    ours_read, ours_proc = sum(t[2] for t in timings), sum(t[3] for t in timings)
    base_read, base_proc = sum(t[4] for t in timings), sum(t[5] for t in timings)

    def pipeline(read_s: float, processing_s: float) -> dict:
        total_s = read_s + processing_s
        return {
            "records_per_s": round(n / total_s, 2),
            "ms_per_record": round(1000.0 * total_s / n, 3),
            "read_ms_per_record": round(1000.0 * read_s / n, 3),
            "processing_ms_per_record": round(1000.0 * processing_s / n, 3),
        }

    return {
        "records": len({t[1] for t in timings}),
        "reader": {"ms_per_record": round(1000.0 * (ours_read + base_read) / (2 * n), 3)},
        "ours": pipeline(ours_read, ours_proc),
        "baseline": pipeline(base_read, base_proc),
        "speedup": round((base_read + base_proc) / (ours_read + ours_proc), 2),
        "processing_speedup": round(base_proc / ours_proc, 2),
    }
