"""``cardiacnets evaluate real``: simulator-trained models on real recordings.

The segmenter on the Sunnybrook short-axis cine against its expert contours
(`cardiacnets.evaluate.sunnybrook`: LV volumes, EF and Dice at the contoured
end-diastole and end-systole); heads models on PTB-XL records, their LV mass,
LVEDV and LVEF estimates for LVH (and HYP) against NORM records beside the
Sokolow-Lyon and Cornell voltages of the same records
(`cardiacnets.evaluate.ptbxl`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULT_FILE = "real_data.json"


def register(eval_sub: argparse._SubParsersAction) -> None:
    p = eval_sub.add_parser("real", help="segmenter on the Sunnybrook cine, heads on PTB-XL (LVH vs NORM)",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--segmenter", type=Path, metavar="RUN", help="segment run or saved CineSegmenter folder")
    p.add_argument("--heads", type=Path, action="append", default=[], metavar="RUN",
                   help="heads run or saved HeadsModel folder (repeatable)")
    p.add_argument("--shared", type=Path, metavar="DIR",
                   help="the real-data folder holding sunnybrook/ and ptbxl/ (default: $CARDIACNETS_SHARED_DATA, "
                        "else shared/data beside the checkout)")
    p.add_argument("--crop-center", choices=("variance", "auto"), default="variance",
                   help="Sunnybrook crop centre: from the images (default) or from the expert contours (diagnostic)")
    p.add_argument("--max-records", type=int, metavar="N", help="read only the first N PTB-XL records")
    p.add_argument("--no-voltage", action="store_true",
                   help="without --heads, skip PTB-XL (by default the voltage criteria are scored alone)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", type=Path, metavar="DIR", help=f"write {RESULT_FILE} and ptbxl_records.csv here")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="segmenter precision")
    p.add_argument("--device", default="auto", help="segmenter device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run_real)


def _print_sunnybrook(r: dict) -> None:
    c = r["compared"]
    print(f"Sunnybrook {r['cine']['folder']}: slices {c['slices']} at ED phase {c['ed_phase']} and ES phase "
          f"{c['es_phase']} (0-based; the contoured phases of largest and smallest expert LV volume)")
    for key, label in (("lvedv_ml", "LVEDV ml"), ("lvesv_ml", "LVESV ml"), ("lvef_pct", "LVEF %"), ("lvm_g", "LVM g")):
        print(f"  {label:9} expert {r['expert'][key]:7.1f}   segmenter {r['segmenter_same_slices'][key]:7.1f}   "
              f"whole stack {r['segmenter_whole_stack'][key]:7.1f}")
    d = r["dice"]
    print(f"  Dice LV blood pool ED {d['ed']['lv_cavity']:.3f} ES {d['es']['lv_cavity']:.3f}; myocardium ED "
          f"{d['ed']['lv_myocardium'] if d['ed']['lv_myocardium'] is None else round(d['ed']['lv_myocardium'], 3)}; "
          f"contoured area inside the crop {r['label_coverage']:.1%}")


def _print_ptbxl(r: dict) -> None:
    data = r["data"]
    print(f"PTB-XL {data['folder']}: {data['n_records_scored']} records scored ({data['n_patients_scored']} patients), "
          f"{data['n_records_skipped']} skipped")
    for comparison, block in r["comparisons"].items():
        print(f"  {comparison}")
        for score, e in block.items():
            if "not_scored" in e:
                print(f"    {score:24} not scored: {e['not_scored']}")
                continue
            sd = "" if e["fold_auroc_sd"] is None else f" ± {e['fold_auroc_sd']:.3f}"
            fold_mean = "–" if e["fold_auroc_mean"] is None else f"{e['fold_auroc_mean']:.3f}{sd}"
            print(f"    {score:24} n {e['n_positive']}/{e['n_negative']}  AUROC {e['auroc']['value']:.3f} "
                  f"({e['auroc']['low']:.3f}-{e['auroc']['high']:.3f})  diff {e['mean_difference']['value']:+.2f}  "
                  f"p {e['p_value']:.2g}  folds {fold_mean} ({e['n_folds_scored']} folds)")
    print(f"  note: {r['label_note']}")
    for s in r["skipped"]:
        print(f"  skipped {s['ecg_id']} ({s['stage']}): {s['reason']}")


def run_real(args: argparse.Namespace) -> int:
    from cardiacnets.config import shared_data_dir
    from cardiacnets.errors import ConfigError
    from cardiacnets.heads.inference import resolve_device

    if args.n_boot < 1:
        raise ConfigError(f"--n-boot must be at least 1, got {args.n_boot}")
    if args.max_records is not None and args.max_records < 1:
        raise ConfigError(f"--max-records must be at least 1, got {args.max_records}")
    run_ptbxl = bool(args.heads) or not args.no_voltage
    if args.segmenter is None and not run_ptbxl:
        raise ConfigError("nothing to evaluate: give --segmenter RUN and/or --heads RUN (or drop --no-voltage)")
    shared = args.shared or shared_data_dir()
    result: dict = {"shared": str(shared)}
    if args.segmenter is not None:
        from cardiacnets.evaluate.segmentation import load_segmenter
        from cardiacnets.evaluate.sunnybrook import evaluate_sunnybrook

        segmenter = load_segmenter(args.segmenter)
        result["sunnybrook"] = {"segmenter": str(segmenter.folder), **evaluate_sunnybrook(
            segmenter, shared / "sunnybrook", crop_center=args.crop_center, device=resolve_device(args.device),
            bf16=args.precision == "bf16")}
    if run_ptbxl:
        from cardiacnets.evaluate.ptbxl import evaluate_ptbxl

        result["ptbxl"] = evaluate_ptbxl(args.heads, shared / "ptbxl", n_boot=args.n_boot, seed=args.seed,
                                         max_records=args.max_records, out_dir=args.out, progress=args.progress)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "sunnybrook" in result:
        _print_sunnybrook(result["sunnybrook"])
    if "ptbxl" in result:
        _print_ptbxl(result["ptbxl"])
    if args.out is not None:
        print(f"files in {args.out}: {RESULT_FILE}" + (", ptbxl_records.csv" if "ptbxl" in result else ""))
    return 0
