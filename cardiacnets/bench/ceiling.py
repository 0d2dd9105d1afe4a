"""Simulator ceiling estimate: how well the true ECG latents predict each CMR index, from many subjects.

Draws ``--n`` subjects' physiology and ECG latents exactly as ``cardiacnets
synth --seed SEED`` does (no waveform or image) and reports the 5-fold
cross-validated R² of a gradient-boosted learner per index, with a bootstrap
95 % CI, with and without the demographics the ECG file carries, its learning
curve, and, as the baseline in the same run, the quadratic ridge that every
cohort's ``ceiling.json`` uses (`cardiacnets.simulate.ceiling_estimate`); and the same boosted
estimate from the ECG device's measurements (the simulated XML's 12SL-style numbers) plus the
demographics: where it comes close to the latents' estimate, a linear model of the XML can tie a
deep model of the waveform.
"""

from __future__ import annotations

import argparse
import time

from cardiacnets.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=20000, help="subjects (default 20,000)")
    parser.add_argument("--seed", type=int, default=1, help="cohort seed (default 1, the reference build's)")
    parser.add_argument("--curve", type=int, nargs="*", default=[2000, 5000],
                        help="smaller sample sizes also scored (learning curve; default 2000 5000)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--no-ridge", action="store_true", help="skip the quadratic-ridge baseline")
    parser.add_argument("--no-measurements", action="store_true",
                        help="skip the device-measurement estimate (it synthesises every ECG: ~13 ms a subject)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SynthConfig overrides")


def run(args: argparse.Namespace) -> dict:
    from cardiacnets.config import load_config
    from cardiacnets.simulate import SynthConfig
    from cardiacnets.simulate.ceiling_estimate import estimate_ceiling, physiology_sample

    if args.n < 50:
        raise ConfigError(f"--n must be at least 50 for 5-fold cross-validation, got {args.n}")
    if args.n_boot < 0:
        raise ConfigError(f"--n-boot must be non-negative, got {args.n_boot}")
    config = load_config(SynthConfig, None, args.overrides)
    started = time.perf_counter()
    frame = physiology_sample(args.n, args.seed, config, measurements=not args.no_measurements)
    sample_seconds = time.perf_counter() - started
    result = estimate_ceiling(frame, seed=args.seed, n_boot=args.n_boot, curve=tuple(args.curve),
                              ridge=not args.no_ridge)
    result["seconds"] = {"sample": round(sample_seconds, 1), **result["seconds"],
                         "total": round(time.perf_counter() - started, 1)}
    return result
