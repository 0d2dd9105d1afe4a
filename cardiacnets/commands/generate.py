"""``cardiacnets generate --ecg FILE --model DIR --out DIR``: generate cine CMR from one ECG file.

Reads any ECG the readers accept (UK Biobank XML, WFDB, ``.npy`` with
``--sampling-rate`` and ``--leads``), standardises it as the model's training
set was (`ECGToCMRPipeline.standardize_file`), samples ``--n-samples`` cines
with the trained `ECGToCMRPipeline` and writes them as NIfTI, a DICOM series
marked synthetic, an animated GIF and a PNG frame strip, plus the per-pixel
standard deviation across samples and a provenance record
(`cardiacnets.generation.outputs`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate cine CMR from an ECG file with a trained generation pipeline")
    p.add_argument("--ecg", type=Path, required=True,
                   help="ECG file: UK Biobank XML, WFDB record (.hea), or .npy (with --sampling-rate and --leads)")
    p.add_argument("--model", type=Path, required=True, help="pipeline folder (RUN/pipeline of a diffusion run)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    p.add_argument("--n-samples", type=int, default=1,
                   help="cines drawn for the ECG; with more than one, their per-pixel SD is written too")
    p.add_argument("--scheduler", choices=("dpm++", "ddim"), default="dpm++", help="sampler (default dpm++)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="computation (default: the pipeline's own setting)")
    p.add_argument("--sampling-rate", type=float, default=None, help=".npy input: sampling rate in Hz")
    p.add_argument("--leads", default=None, help=".npy input: comma-separated lead names in row order")
    p.add_argument("--units", default="mV", help=".npy input: units of the values (uV, mV, V; default mV)")
    p.add_argument("--demographic", action="append", default=[], metavar="NAME=VALUE",
                   help="a demographic value for a model conditioned on demographics (e.g. age_years=63, "
                        "sex_male=1); overrides the ECG file's own (repeatable)")
    p.add_argument("--json", action="store_true", help="print the provenance record as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    import cardiacnets
    from cardiacnets.errors import ConfigError, InputError
    from cardiacnets.generation import ECGToCMRPipeline
    from cardiacnets.generation.outputs import sha256_of, write_generation_outputs, write_provenance

    if args.steps < 1 or args.n_samples < 1 or args.guidance < 0:
        raise ConfigError("--steps and --n-samples must be at least 1 and --guidance non-negative")
    started = time.perf_counter()
    pipe = ECGToCMRPipeline.from_pretrained(args.model)
    loaded = time.perf_counter()
    leads = [name.strip() for name in args.leads.split(",")] if args.leads else None
    standard = pipe.standardize_file(args.ecg, sampling_rate_hz=args.sampling_rate, lead_names=leads, units=args.units)
    demographics, mask, demographics_report = _demographics(pipe, standard["metadata"], args.demographic)
    standardized = time.perf_counter()
    try:
        condition = pipe.encode_ecg(standard["ecg"], standard["lead_mask"], demographics, mask)
        estimates = {name: round(float(value[0]), 2) for name, value in pipe.estimate_indices(condition).items()}
        output = pipe(ecg=standard["ecg"], lead_mask=standard["lead_mask"], demographics=demographics,
                      demographics_mask=mask, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, scheduler=args.scheduler,
                      generator=torch.Generator().manual_seed(args.seed), num_samples_per_ecg=args.n_samples,
                      precision=args.precision)
    except ValueError as err:  # the ECG does not fit this model
        raise InputError(args.ecg, str(err)) from None
    generated = time.perf_counter()
    digest = sha256_of(args.ecg)
    args.out.mkdir(parents=True, exist_ok=True)
    files = write_generation_outputs(output.cines, args.out, view=pipe.view, spacing_mm=pipe.spacing_mm,
                                     frame_interval_ms=pipe.frame_interval_ms,
                                     slice_thickness_mm=pipe.config.slice_thickness_mm,
                                     uid_seed=f"{digest}:{args.seed}:{args.steps}:{args.guidance}:{args.scheduler}")
    written = time.perf_counter()
    training = {}
    if (args.model / "provenance.json").is_file():
        training = json.loads((args.model / "provenance.json").read_text())
    provenance = {
        "synthetic": True,
        "note": "generated by a model from an ECG; not an acquired image",
        "cardiacnets_version": cardiacnets.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": str(args.model.resolve()),
        "model_training": training,
        "view": pipe.view,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "precision": args.precision or pipe.config.precision,
        "n_samples": args.n_samples,
        "input": {"path": str(args.ecg.resolve()), "sha256": digest, "quality": standard["quality"],
                  "derived_leads": standard["derived_leads"], "leads_present": int(standard["lead_mask"].sum()),
                  "sampling_rate_hz": standard["sampling_rate_hz"]},
        "demographics": demographics_report,
        "condition_index_estimates": estimates,
        "output": {"frames": int(output.cines.shape[1]), "height": int(output.cines.shape[2]),
                   "width": int(output.cines.shape[3]), "spacing_mm": pipe.spacing_mm,
                   "frame_interval_ms": pipe.frame_interval_ms, "files": files},
        "seconds": {"load_model": round(loaded - started, 3), "standardize_ecg": round(standardized - loaded, 3),
                    "generate": round(generated - standardized, 3), "write": round(written - generated, 3),
                    "total": round(written - started, 3)},
    }
    write_provenance(args.out / "provenance.json", provenance)
    if args.json:
        print(json.dumps(provenance, indent=2))
    else:
        print(f"generated {args.n_samples} synthetic {pipe.view} cine(s) of {output.cines.shape[1]} frames from "
              f"{args.ecg} in {provenance['seconds']['generate']:.1f} s ({args.steps} {args.scheduler} steps, "
              f"guidance {args.guidance:g}, seed {args.seed}); written to {args.out} "
              "(sample_*/cine.nii.gz, dicom/, cine.gif, frames.png"
              f"{', std.nii.gz, std.png' if args.n_samples > 1 else ''}, provenance.json)")
    return 0


def _demographics(pipe, metadata: dict, overrides: list[str]):
    """The model's demographics input from the ECG file's metadata and ``--demographic NAME=VALUE`` values."""
    from cardiacnets.errors import ConfigError

    given = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--demographic takes NAME=VALUE, got {item!r}")
        given[name.strip()] = value.strip()
    normalizer = pipe.config.demographics
    if not normalizer:
        if given:
            raise ConfigError("--demographic given, but this model is not conditioned on demographics")
        return None, None, None
    unknown = sorted(set(given) - set(normalizer["columns"]))
    if unknown:
        raise ConfigError(f"--demographic: this model uses {list(normalizer['columns'])}, not {unknown}")
    values = {column: metadata.get(column) for column in normalizer["columns"]}
    if values.get("sex_male") is not None:
        values["sex_male"] = float(values["sex_male"])  # the readers give True / False
    values.update(given)
    demographics, mask, report = pipe.demographics_from(values)
    report["from_file"] = sorted(c for c in report["used"] if c not in given)
    return demographics, mask, report
