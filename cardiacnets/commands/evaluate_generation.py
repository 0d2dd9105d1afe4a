"""``cardiacnets evaluate generation`` and ``cardiacnets evaluate segmentation``.

``generation`` scores ECG→CMR generation on a held-out split against the true
cines and against the nearest-neighbour retrieval baseline
(`cardiacnets.evaluate.generation`); ``segmentation`` checks the cine
segmenter those measurements rely on, on real ACDC scans and/or a
training-set split (`cardiacnets.evaluate.segmentation`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(eval_sub: argparse._SubParsersAction) -> None:
    """Add the ``generation`` and ``segmentation`` evaluations to ``cardiacnets evaluate``."""
    p = eval_sub.add_parser(
        "generation", help="ECG->CMR generation on held-out pairs: SSIM, PSNR, Frechet, LV/RV function vs truth",
        description="Generate each subject's cine from its ECG and score it against the true cine: SSIM, PSNR, the "
                    "Frechet distance of aligned CMR-encoder features, and LV/RV cavity size and EF measured by a "
                    "segmenter on generated and true cines (Pearson r, MAE), and how much the cines move like one "
                    "cardiac cycle. The baselines are scored the same way: the nearest neighbour (the training "
                    "subject with the closest aligned ECG embedding, and its real cine), the pixel mean of the k "
                    "nearest, a random real cine, and the rendered read-out (a ridge of the ECG's device "
                    "measurements and demographics drawn as a plain anatomy of that size). One mid-ventricular "
                    "slice gives area-based proxies: 'lvedv' = LV cavity area at ED x slice spacing.")
    p.add_argument("--model", type=Path, metavar="DIR", action="append",
                   help="pipeline folder of either generator (RUN/pipeline of a diffusion or anatomy run); repeat it "
                        "to score several generators side by side on the same subjects")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="training set folder")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--segmenter", type=Path, required=True, metavar="RUN",
                   help="segment run (RUN/model) or saved CineSegmenter folder")
    p.add_argument("--feature-encoder", type=Path, metavar="DIR",
                   help="saved CMR encoder for the Frechet features (default: the one the pipeline folder records)")
    p.add_argument("--alignment", type=Path, metavar="RUN",
                   help="alignment run of the nearest-neighbour baseline (default: the one the pipeline records)")
    p.add_argument("--baselines-only", action="store_true", help="score the baselines only (no --model)")
    p.add_argument("--no-baselines", action="store_true", help="score the generator only")
    p.add_argument("--acdc", type=Path, metavar="DIR", help="ACDC HDF5 folder: also report the segmenter's Dice there")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N subjects of the split")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: 3 for the direct generator, the validation-chosen "
                        "value of an anatomy-first pipeline)")
    p.add_argument("--temperature", type=float, default=None,
                   help="anatomy-first pipelines: the sampled indices' temperature (default: validation-chosen)")
    p.add_argument("--no-acquisition-noise", dest="acquisition_noise", action="store_false",
                   help="anatomy-first pipelines: score the decoded frames without the acquisition noise")
    p.add_argument("--shape-temperature", type=float, default=None,
                   help="anatomy-first pipelines: the shape code's temperature (default: validation-chosen)")
    p.add_argument("--knn", type=int, default=5, help="neighbours averaged by the k-nearest baseline (default 5)")
    p.add_argument("--scheduler", choices=("dpm++", "ddim"), default="dpm++", help="sampler (default dpm++)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise and the random baseline")
    p.add_argument("--n-samples", type=int, default=1, metavar="M",
                   help="cines per ECG (default 1); with M > 1 the mean of each subject's M measurements is also "
                        "scored ('samples' in the JSON; the top-level scores stay those of the first sample)")
    p.add_argument("--batch-size", type=int, default=8, help="subjects per generation batch (default 8)")
    p.add_argument("--slice-spacing-mm", type=float, default=10.0,
                   help="slice spacing of the volume measurements (default 10: UK Biobank 8 mm slices + 2 mm gaps)")
    p.add_argument("--reference-split", default="train", help="split the baselines take real cines from")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write metrics.json, per_subject.csv and comparison PNG/GIFs here")
    p.add_argument("--examples", type=int, default=4, help="subjects in the comparison images (default 4)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="precision of the segmenter and feature encoder")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.set_defaults(func=run_generation)

    s = eval_sub.add_parser(
        "segmentation", help="Dice of the cine segmenter on ACDC expert labels and/or a training-set split",
        description="Check a segmenter trained with 'cardiacnets train configs/demo/segment.yaml': per-class Dice "
                    "(LV cavity, LV myocardium, RV cavity) on the ACDC scans (standardised like the training set; "
                    "the in-plane spacing ACDC files lack is assumed) and on a training-set split, where the "
                    "measurements from predicted and stored labels are also compared.")
    s.add_argument("--model", type=Path, required=True, metavar="RUN", help="segment run or saved CineSegmenter folder")
    s.add_argument("--acdc", type=Path, metavar="DIR", help="ACDC HDF5 folder (patientNNN_frame01/02.h5)")
    s.add_argument("--acdc-spacing-mm", type=float, default=1.5,
                   help="in-plane spacing assumed for ACDC images (default 1.5; the files store none)")
    s.add_argument("--data", type=Path, metavar="DATASET", help="also score this training set's split")
    s.add_argument("--split", default="test", help="split of --data (default: test)")
    s.add_argument("--limit", type=int, metavar="N", help="score the first N subjects of the split")
    s.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="inference precision")
    s.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    s.add_argument("--json", action="store_true", help="print only the JSON result")
    s.set_defaults(func=run_segmentation)


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _row(label: str, block: dict, keys: list[str]) -> str:
    cycle = block.get("temporal", {}).get("one_cycle", float("nan"))
    return f"  {label:18}" + "".join(f"{block.get(k, float('nan')):>13.3f}" for k in keys) + f"{cycle:>13.3f}"


def run_generation(args: argparse.Namespace) -> int:
    from cardiacnets.errors import ConfigError
    from cardiacnets.evaluate.generation import evaluate_generation

    if args.baselines_only and args.no_baselines:
        raise ConfigError("--baselines-only and --no-baselines exclude each other")
    if args.baselines_only == bool(args.model):
        raise ConfigError("give --model DIR (the pipeline) or --baselines-only")
    result = evaluate_generation(
        (args.model[0] if len(args.model) == 1 else args.model) if args.model else None, args.data, args.split,
        segmenter=args.segmenter, feature_encoder=args.feature_encoder,
        alignment=args.alignment, baselines=not args.no_baselines, limit=args.limit, steps=args.steps,
        guidance=args.guidance, seed=args.seed, scheduler=args.scheduler, n_samples=args.n_samples,
        batch_size=args.batch_size,
        slice_spacing_mm=args.slice_spacing_mm, reference_split=args.reference_split, acdc_dir=args.acdc,
        out_dir=args.out, n_examples=args.examples, device=_device(args.device), bf16=args.precision == "bf16",
        progress=args.progress, temperature=args.temperature, knn=args.knn,
        shape_temperature=args.shape_temperature, acquisition_noise=args.acquisition_noise)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = result["settings"]
    print(f"generation: {result['model'] or 'baselines only'} on split {result['split']!r} of {result['data']} "
          f"({result['n']} subjects, view {result['view']}; {s['steps']} {s['scheduler']} steps, guidance "
          f"{s['guidance']}, seed {s['seed']})")
    keys = ["ssim", "psnr", "frechet", "frechet_statistics", "lvedv_r", "lvef_r", "lvm_r", "lvedv_mae_ml",
            "lvef_mae_pct", "rvedv_r"]
    print(f"  {'':18}" + "".join(f"{k:>13}" for k in keys) + f"{'one_cycle':>13}")
    generators = result.get("generators") or ({"generator": result} if "ssim" in result else {})
    for name, block in generators.items():
        print(_row(name, block, keys))
        if "samples" in block:
            print(_row(f"  mean of {block['samples']['n_samples']}", block["samples"]["mean_of_samples"], keys))
    for name, block in result.items():
        if isinstance(block, dict) and (name.endswith("_baseline") or name == "rendered_readout"):
            print(_row(name.replace("_", " "), block, keys))
    drawn = {"rendered readout": result["rendered_readout"]} if "rendered_readout" in result else {}
    for name, block in {**generators, **drawn}.items():
        if "anatomy" in block:
            a = block["anatomy"]
            print(f"  {name} anatomy: Dice vs segmented cine " +
                  ", ".join(f"{k} {v:.3f}" for k, v in a["dice_vs_segmented_cine"].items()) +
                  "; predicted function r " + ", ".join(f"{k} {v:.3f}" for k, v in a["predicted_function"].items()
                                                       if k.endswith("_r")))
    print(f"  ({result['measurement_note']})")
    acdc = result["segmenter"]["acdc_dice"]
    if acdc is not None:
        print("segmenter ACDC Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in acdc.items()))
    for note in result["notes"]:
        print(f"note: {note}")
    print("timing: " + ", ".join(f"{k} {v}" for k, v in result["timing"].items()))
    if "outputs" in result:
        print(f"files in {args.out}: metrics.json, per_subject.csv, compare_*.png/gif")
    return 0


def run_segmentation(args: argparse.Namespace) -> int:
    from cardiacnets.errors import ConfigError
    from cardiacnets.evaluate.segmentation import evaluate_acdc, evaluate_split, load_segmenter

    if args.acdc is None and args.data is None:
        raise ConfigError("nothing to score: give --acdc DIR and/or --data DATASET")
    if args.acdc_spacing_mm <= 0:
        raise ConfigError(f"--acdc-spacing-mm must be positive, got {args.acdc_spacing_mm}")
    segmenter = load_segmenter(args.model)
    device, bf16 = _device(args.device), args.precision == "bf16"
    result: dict = {"model": str(segmenter.folder)}
    if args.acdc is not None:
        geometry = segmenter.geometry
        if geometry is None and args.data is not None:
            from cardiacnets.evaluate.segmentation import CineGeometry

            geometry = CineGeometry.from_dataset(args.data)
        result["acdc"] = evaluate_acdc(segmenter, args.acdc, geometry, args.acdc_spacing_mm, device=device, bf16=bf16)
    if args.data is not None:
        result["split"] = evaluate_split(segmenter, args.data, args.split, limit=args.limit, device=device, bf16=bf16)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"segmenter {result['model']}")
    if "acdc" in result:
        a = result["acdc"]
        print(f"ACDC: {a['n_patients']} patients ({a['n_volumes']} ED/ES stacks), assumed spacing "
              f"{a['assumed_spacing_mm']} mm, labelled area inside the crop {a['label_coverage']:.1%}")
        for label, block in (("volume Dice", a["dice_volume"]), ("mid-slice Dice", a["dice_mid_slice"])):
            print(f"  {label:15}" + ", ".join(f"{k} {v:.3f}" for k, v in block.items()))
        for failure in a["failures"]:
            print(f"  skipped {failure['patient']}: {failure['reason']}")
    if "split" in result:
        sp = result["split"]
        print(f"split {args.split!r} ({sp['n']} subjects): Dice " +
              ", ".join(f"{k} {v:.3f}" for k, v in sp["dice"].items()))
        print("  measurements, predicted vs stored labels: " +
              ", ".join(f"{k} r {v['r']:.3f} MAE {v['mae']:.2f}" for k, v in sp["measurements"].items()))
    return 0
