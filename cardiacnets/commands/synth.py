"""``cardiacnets synth``: simulate a paired UK Biobank-style ECG-CMR cohort."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="simulate a paired ECG-CMR cohort in the UK Biobank layout")
    p.add_argument("--n", type=int, required=True, help="number of subjects")
    p.add_argument("--out", type=Path, required=True, help="output folder (new, empty or a previous synth output)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (subject i uses default_rng([seed, i]))")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--config", type=Path, help="SynthConfig YAML file")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. image_size=96 prevalence.dcm=0.1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cardiacnets.config import load_config
    from cardiacnets.errors import ConfigError
    from cardiacnets.simulate import SynthConfig, write_cohort

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    config = load_config(SynthConfig, args.config, args.overrides)
    summary = write_cohort(args.out, args.n, seed=args.seed, config=config, workers=args.workers,
                           progress=args.progress)
    diseases = ", ".join(f"{name} {count}" for name, count in summary.disease_counts.items())
    enriched = " (prevalences enriched)" if summary.prevalence_enriched else ""
    print(f"simulated {summary.n_written}/{summary.n} subjects in {summary.seconds:.1f} s "
          f"({summary.subjects_per_s:.2f} subjects/s, {summary.workers} workers)")
    print(f"diseases{enriched}: {diseases}")
    stages = ", ".join(f"{k} {v:.0f}" for k, v in summary.stage_ms.items())
    print(f"ms per subject per worker: {stages}")
    if summary.ceiling is not None:
        r2 = ", ".join(f"{k} {v:.2f}" for k, v in summary.ceiling["r2"].items())
        print(f"ceiling R2 of the true ECG latents: {r2}")
    out = summary.out_dir
    print(f"files: {out / 'ecg'}/<eid>_20205_2_0.xml, {out / 'cmr'}/<eid>/{{sa,seg_sa,la_4ch}}.nii.gz, "
          f"{out / 'ukb_tabular.csv'}, {out / 'ground_truth.csv'}, {out / 'synth_config.yaml'}, {out / 'ceiling.json'}")
    for eid, reason in summary.failures:
        print(f"failed: {eid}: {reason}")
    return 1 if summary.failures else 0
