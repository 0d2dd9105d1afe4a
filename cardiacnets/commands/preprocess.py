"""``cardiacnets preprocess``: raw UK Biobank-style or WFDB trees → training set."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiacnets.config import load_config, save_config
from cardiacnets.data.preprocess import DEFAULT_WORKER_MEMORY_GB, PreprocessConfig, preprocess


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="build a memory-mapped training set from a raw tree")
    p.add_argument("--source", choices=("ukb", "wfdb"), required=True,
                   help="ukb: ECG XML + CMR NIfTI/DICOM + tabular CSVs; wfdb: ECG-only WFDB tree (PTB-XL, MIMIC-IV-ECG)")
    p.add_argument("raw", type=Path, help="raw tree (read only)")
    p.add_argument("--out", type=Path, required=True, help="training set folder (created, or resumed)")
    p.add_argument("--config", type=Path, help="YAML preprocessing config (default: built-in defaults)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs; 0 = in this process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--retry-failed", action="store_true",
                   help="process again the records that failed in an earlier run into --out (default: keep their failure)")
    p.add_argument("--worker-memory-gb", type=float, default=DEFAULT_WORKER_MEMORY_GB,
                   help=f"memory each worker may use beyond its start, in GiB; a record needing more fails "
                        f"(default {DEFAULT_WORKER_MEMORY_GB:g}; 0 = no limit)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. ecg.notch_hz=60")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(PreprocessConfig, args.config, args.overrides)
    result = preprocess(args.source, args.raw, args.out, config, workers=args.workers, progress=not args.no_progress,
                        retry_failed=args.retry_failed, worker_memory_gb=args.worker_memory_gb)
    save_config(config, result.out / "config.yaml")
    ok = result.n_subjects - len({f["subject_id"] for f in result.failures})
    print(f"preprocessed {result.n_subjects} subjects from {args.raw} into {result.out} in {result.seconds:.1f} s "
          f"({result.n_processed} processed, {result.n_skipped_done} already done)")
    print(f"  {ok} succeeded, {len({f['subject_id'] for f in result.failures})} had failures "
          f"({result.n_failed_records} failed records, listed in {result.out / 'failures.csv'})")
    if result.n_failed_not_retried:
        print(f"  {result.n_failed_not_retried} records failed in an earlier run and were not retried "
              "(--retry-failed tries them again)")
    for key, value in sorted(result.counts.items()):
        print(f"  {key:>16}: {value}")
    for failure in result.failures[:10]:
        print(f"  skipped {failure['subject_id']} {failure['modality']}: {failure['file']}: {failure['reason']}")
    if len(result.failures) > 10:
        print(f"  ... and {len(result.failures) - 10} more in failures.csv")
    return 0
