"""``cardiacnets demo``: the whole pipeline on the built-in simulator.

Simulate a UK Biobank-style cohort → preprocess it into a training set →
inspect one ECG and one cine → print and save a summary. Later stages
(alignment, generation, heads) join this command as they are built.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cardiacnets.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline end to end on a simulated cohort")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--n", type=int, default=200, help="simulated subjects (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--config", type=Path, default=None, help="preprocessing config (default configs/demo/preprocess.yaml if present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cardiacnets.commands.inspect import describe_cmr, describe_ecg
    from cardiacnets.config import load_config
    from cardiacnets.data.preprocess import PreprocessConfig, preprocess
    from cardiacnets.simulate import write_cohort

    out: Path = args.out
    raw, dataset = out / "raw", out / "dataset"
    if dataset.exists() and not (dataset / "dataset.yaml").exists():
        raise InputError(dataset, "exists but is not a training set; choose another --out")
    config_path = args.config
    if config_path is None:
        candidate = Path(__file__).resolve().parents[2] / "configs" / "demo" / "preprocess.yaml"
        config_path = candidate if candidate.is_file() else None
    config = load_config(PreprocessConfig, config_path)
    timings = {}

    print(f"[1/3] simulating {args.n} UK Biobank-style subjects into {raw}")
    t0 = time.perf_counter()
    cohort = write_cohort(raw, args.n, seed=args.seed, workers=args.workers, progress=True)
    timings["simulate_s"] = round(time.perf_counter() - t0, 2)

    print(f"[2/3] preprocessing into {dataset}")
    t0 = time.perf_counter()
    result = preprocess("ukb", raw, dataset, config, workers=args.workers, progress=True)
    timings["preprocess_s"] = round(time.perf_counter() - t0, 2)

    print("[3/3] inspecting one subject")
    ecg_file = sorted((raw / "ecg").glob("*.xml"))[0]
    sa_file = sorted((raw / "cmr").glob("*/sa.nii.gz"))[0]
    ecg_desc, cmr_desc = describe_ecg(ecg_file), describe_cmr(sa_file)

    summary = {
        "n_subjects": args.n,
        "raw": str(raw),
        "dataset": str(dataset),
        "cohort": cohort.as_dict() if hasattr(cohort, "as_dict") else str(cohort),
        "preprocess": {"counts": result.counts, "failed_records": result.n_failed_records},
        "example_ecg": {k: ecg_desc[k] for k in ("path", "format", "leads", "sampling_rate_hz", "duration_s", "measurements")},
        "example_cmr": {k: cmr_desc[k] for k in ("path", "format", "shape", "spacing_mm", "n_frames", "n_slices", "orientation")},
        "timings": timings,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print()
    print(f"simulated {args.n} subjects in {timings['simulate_s']} s; preprocessed in {timings['preprocess_s']} s")
    print(f"training set: {dataset} ({', '.join(f'{k}={v}' for k, v in sorted(result.counts.items()))})")
    print(f"failed records: {result.n_failed_records} (see {dataset / 'failures.csv'})")
    print(f"example ECG: {ecg_file.name}: {len(ecg_desc['leads'])} leads, {ecg_desc['sampling_rate_hz']:g} Hz, "
          f"{ecg_desc['duration_s']:g} s, rate {ecg_desc['measurements'].get('ventricular_rate_bpm')} bpm")
    print(f"example CMR: {sa_file.parent.name}/{sa_file.name}: shape {cmr_desc['shape']}, spacing {cmr_desc['spacing_mm']} mm")
    print(f"summary: {out / 'metrics.json'}")
    return 0
