"""Simulator throughput: subjects/s with 1 worker (baseline) and with W workers.

Each subject is simulated end to end as ``cardiacnets synth`` does it
(physiology, ECG, CMR rendering, measurement on the segmentation, writing the
XML and three compressed NIfTI files), at the default matrix size unless
overridden. The baseline runs in this process; the parallel run uses the
process pool of `write_cohort`. Milliseconds per subject are split by stage
(per worker, so they add up to the baseline's time per subject). On a shared
machine wall-clock rates depend on other load, so the CPU time per subject is
reported too, with the rate it implies when every core runs one worker
(``cpu_bound_subjects_per_s``).
"""

from __future__ import annotations

import argparse
import os
import tempfile

TARGET_SUBJECTS_PER_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=40, help="subjects in the parallel run (default 40)")
    parser.add_argument("--baseline-n", type=int, default=12, help="subjects in the 1-worker baseline (default 12)")
    parser.add_argument("--workers", type=int, default=None, help="workers of the parallel run (default: CPU count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SynthConfig overrides (e.g. image_size=96)")


def run(args: argparse.Namespace) -> dict:
    from cardiacnets.config import load_config, to_dict
    from cardiacnets.simulate import SynthConfig, write_cohort

    config = load_config(SynthConfig, None, args.overrides)
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="cardiacnets-bench-synth-") as tmp:
        baseline = write_cohort(os.path.join(tmp, "baseline"), args.baseline_n, seed=args.seed, config=config,
                                workers=1, ceiling=False)
        parallel = write_cohort(os.path.join(tmp, "parallel"), args.n, seed=args.seed + 1, config=config,
                                workers=workers, ceiling=False)
    return {
        "config": {k: v for k, v in to_dict(config).items() if k != "prevalence"},
        "baseline": {"workers": 1, "n": baseline.n_written, "seconds": round(baseline.seconds, 3),
                     "subjects_per_s": round(baseline.subjects_per_s, 3)},
        "parallel": {"workers": parallel.workers, "n": parallel.n_written, "seconds": round(parallel.seconds, 3),
                     "subjects_per_s": round(parallel.subjects_per_s, 3)},
        "speedup": round(parallel.subjects_per_s / baseline.subjects_per_s, 3),
        "cpu_ms_per_subject": round(baseline.cpu_ms_per_subject, 1),
        "cpu_bound_subjects_per_s": round(workers * 1000.0 / baseline.cpu_ms_per_subject, 3),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "ms_per_subject": {k: round(v, 1) for k, v in baseline.stage_ms.items()},
        "ms_per_subject_parallel_workers": {k: round(v, 1) for k, v in parallel.stage_ms.items()},
        "target_subjects_per_s": TARGET_SUBJECTS_PER_S,
        "meets_target": parallel.subjects_per_s >= TARGET_SUBJECTS_PER_S,
        "failures": len(baseline.failures) + len(parallel.failures),
    }
