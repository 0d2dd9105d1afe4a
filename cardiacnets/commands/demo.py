"""``cardiacnets demo``: the whole pipeline end to end on the built-in simulator.

Simulate a UK Biobank-style cohort → preprocess → align ECG and CMR → train the
generator and the heads → evaluate → ``DIR/report.html`` and ``DIR/metrics.json``.
The stages and their settings come from ``configs/demo/demo.yaml`` (see
`cardiacnets.demo.config.DemoConfig`); ``key=value`` arguments override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline end to end on a simulated cohort",
                       description="Simulate a fresh cohort, preprocess it, evaluate the reference models on it, "
                                   "train one short stage, and write DIR/report.html and DIR/metrics.json "
                                   "(--from-scratch: train every stage). Steps done earlier in the same folder "
                                   "with the same settings are reused.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--config", type=Path, default=None,
                      help="demo config (default configs/demo/demo.yaml)")
    mode.add_argument("--from-scratch", action="store_true",
                      help="train every stage on the demo cohort instead of using the reference models "
                           "(configs/demo/from_scratch.yaml; about 20 minutes)")
    p.add_argument("--n", type=int, default=None, help="simulated subjects (overrides n_subjects)")
    p.add_argument("--seed", type=int, default=None, help="simulator seed (overrides seed)")
    p.add_argument("--workers", type=int, default=None, help="processes for simulation and preprocessing")
    p.add_argument("--force", action="store_true", help="redo every step, even those done earlier in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="demo config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cardiacnets.demo.config import FROM_SCRATCH_CONFIG
    from cardiacnets.demo.run import load_demo_config, run_demo

    overrides = list(args.overrides or [])
    for flag, key in ((args.n, "n_subjects"), (args.seed, "seed"), (args.workers, "workers")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    config = load_demo_config(FROM_SCRATCH_CONFIG if args.from_scratch else args.config, overrides)
    demo = run_demo(args.out, config, force=args.force, progress=not args.no_progress)
    print()
    total = demo.timings_s.get("total", 0.0)
    print(f"demo finished in {total / 60:.1f} min: {', '.join(f'{k} {v:.0f} s' for k, v in demo.timings_s.items() if k != 'total')}")
    retrieval = demo.metrics.get("retrieval", {})
    if "ecg_to_cmr" in retrieval:
        print(f"retrieval: ECG->CMR top-1 {retrieval['ecg_to_cmr']['top1']:.3f} among {retrieval['n_candidates']} "
              f"(chance {retrieval['chance']['top1']:.3f})")
    models = demo.metrics.get("models")
    if models:
        print(f"models:  {models['bundle']} (sha256 {models['sha256'][:16]}…, card {models['model_card']})")
    print(f"report:  {demo.out / 'report.html'}")
    print(f"metrics: {demo.out / 'metrics.json'}")
    if demo.metrics.get("review_command"):
        print(f"review:  {demo.metrics['review_command']}")
    return 0
