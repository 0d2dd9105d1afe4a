"""``cardiacnets generate --ecg FILE --model DIR --out DIR``: generate cine CMR from one ECG file.

Reads any ECG the readers accept (UK Biobank XML, WFDB, ``.npy`` with
``--sampling-rate`` and ``--leads``) through the one generation request path
(`cardiacnets.generation.request`: standardised as the model's training set
was, demographics and device measurements from the file), samples
``--n-samples`` cines with either generator (the direct `ECGToCMRPipeline` or
the anatomy-first `AnatomyFirstPipeline`) and writes them as NIfTI, a DICOM
series, an animated GIF and a PNG frame strip, all marked synthetic, plus the
per-pixel standard deviation across samples, the generated anatomy (a label
NIfTI, anatomy-first generator) and a provenance record
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
    p.add_argument("--model", type=Path, required=True,
                   help="pipeline folder (RUN/pipeline of a diffusion or anatomy run)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: 3 for the direct generator; the anatomy-first "
                        "generator's validation-chosen value)")
    p.add_argument("--temperature", type=float, default=None,
                   help="anatomy-first generator: scale of the sampled indices' scatter around the ECG's "
                        "estimates (1: the read-out's calibrated scatter, 0: the estimates; default: the "
                        "validation-chosen value)")
    p.add_argument("--shape-temperature", type=float, default=None,
                   help="anatomy-first generator: scale of the shape code's initial noise (1 draws the shape and "
                        "motion the indices leave open from the learned distribution, 0 the most typical one; "
                        "default: the validation-chosen value)")
    p.add_argument("--no-acquisition-noise", dest="acquisition_noise", action="store_false",
                   help="anatomy-first generator: write the decoded frames without the acquisition noise that "
                        "the pipeline's noise model adds (the expected image; noise is added by default)")
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

    from cardiacnets.errors import ConfigError
    from cardiacnets.generation.outputs import write_generation_outputs, write_provenance
    from cardiacnets.generation.request import (
        build_request, generator_kind, load_pipeline, parse_overrides, request_provenance, run_request,
    )

    if args.steps < 1 or args.n_samples < 1 or (args.guidance is not None and args.guidance < 0):
        raise ConfigError("--steps and --n-samples must be at least 1 and --guidance non-negative")
    if any(value is not None and value < 0 for value in (args.temperature, args.shape_temperature)):
        raise ConfigError("--temperature and --shape-temperature must be non-negative")
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    kind = generator_kind(pipe)
    loaded = time.perf_counter()
    leads = [name.strip() for name in args.leads.split(",")] if args.leads else None
    request = build_request(pipe, args.ecg, demographics=parse_overrides(args.demographic),
                            sampling_rate_hz=args.sampling_rate, lead_names=leads, units=args.units)
    standardized = time.perf_counter()
    settings = {"steps": args.steps, "guidance": args.guidance, "temperature": args.temperature,
                "shape_temperature": args.shape_temperature, "n_samples": args.n_samples, "seed": args.seed,
                "scheduler": args.scheduler, "precision": args.precision, "acquisition_noise": args.acquisition_noise}
    output = run_request(pipe, request, **settings)
    generated = time.perf_counter()
    provenance = request_provenance(pipe, request, args.model, **settings)
    provenance["condition_index_estimates"] = {name: round(float(value[0]), 2)
                                               for name, value in output.index_estimates.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    labels = getattr(output, "labels", None)
    files = write_generation_outputs(output.cines, args.out, view=pipe.view, spacing_mm=pipe.spacing_mm,
                                     frame_interval_ms=pipe.frame_interval_ms,
                                     slice_thickness_mm=pipe.config.slice_thickness_mm, labels=labels,
                                     uid_seed=f"{request.sha256}:{args.seed}:{args.steps}:{provenance['guidance']}:"
                                              f"{args.scheduler}")
    written = time.perf_counter()
    if labels is not None:
        from cardiacnets.cmr.indices import DEFAULT_SLICE_SPACING_MM, cavity_measurements

        measured = cavity_measurements(labels[:, None] if labels.ndim == 4 else labels, pipe.spacing_mm or 1.0,
                                       DEFAULT_SLICE_SPACING_MM)
        provenance["anatomy_indices"] = [
            {name: round(float(row[name]), 2) for name in ("lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g", "rvedv_ml")}
            for _, row in measured.iterrows()]
        provenance["anatomy_note"] = ("indices measured on each sample's generated anatomy (label cine); one "
                                      "slice: areas x the slice spacing, a mid-slice proxy of the volumes")
    provenance["output"] = {"frames": int(output.cines.shape[1]), "height": int(output.cines.shape[2]),
                            "width": int(output.cines.shape[3]), "spacing_mm": pipe.spacing_mm,
                            "frame_interval_ms": pipe.frame_interval_ms, "files": files}
    provenance["seconds"] = {"load_model": round(loaded - started, 3), "standardize_ecg": round(standardized - loaded, 3),
                             "generate": round(generated - standardized, 3), "write": round(written - generated, 3),
                             "total": round(written - started, 3)}
    write_provenance(args.out / "provenance.json", provenance)
    if args.json:
        print(json.dumps(provenance, indent=2))
    else:
        anatomy = ", sample_*/anatomy_seg.nii.gz" if labels is not None else ""
        print(f"generated {args.n_samples} synthetic {pipe.view} cine(s) of {output.cines.shape[1]} frames from "
              f"{args.ecg} with the {kind} generator in {provenance['seconds']['generate']:.1f} s ({args.steps} "
              f"{args.scheduler} steps, guidance {provenance['guidance']:g}, seed {args.seed}); written to {args.out} "
              f"(sample_*/cine.nii.gz{anatomy}, dicom/, cine.gif, frames.png"
              f"{', std.nii.gz, std.png' if args.n_samples > 1 else ''}, provenance.json)")
    return 0
