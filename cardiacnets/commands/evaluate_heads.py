"""``cardiacnets evaluate heads``: score a heads model on a split, with 95% bootstrap CIs.

Indices: Pearson r, R², MAE in the index's unit (and R² as a fraction of the
simulator's ceiling when the training set's raw folder has ``ceiling.json``);
screening labels: AUROC, AUPRC, sensitivity and specificity at the Youden
threshold chosen on the validation split, calibration error; the
cardiomyopathy subtype: accuracy, balanced accuracy, one-vs-rest AUROC.
``--compare`` adds a paired bootstrap (every metric) and DeLong's test (AUROC)
against another model on the same subjects; ``--leads`` repeats the scores
with only some leads shown; ``--out`` writes plots, predictions and tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(eval_sub: argparse._SubParsersAction) -> None:
    p = eval_sub.add_parser("heads", help="indices and screening of a heads model, with bootstrap CIs",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model", type=Path, required=True, metavar="RUN",
                   help="heads training run (uses RUN/model/) or a saved HeadsModel folder")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET",
                   help="training set folder (cardiacnets preprocess)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--val-split", default="val",
                   help="split whose predictions choose the Youden thresholds (default: val; 'none': the model's "
                        "stored thresholds, themselves chosen on its validation split)")
    p.add_argument("--compare", type=Path, metavar="OTHER_RUN",
                   help="compare with another heads run on the same subjects (paired bootstrap and DeLong; "
                        "differences are MODEL - OTHER_RUN)")
    p.add_argument("--leads", action="append", dest="lead_subsets", metavar="SUBSET",
                   help="also score with only these leads shown: I, II, limb, or a list like I,II,V1 (repeatable)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write roc.png, calibration.png, scatter_<index>.png, bland_altman_<index>.png, "
                        "predictions.csv, results.csv, results.md and heads.json here")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="subjects per forward pass (default 64)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="inference precision (bf16 = autocast)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the measurement baselines (ridge / logistic on the ECG device's measurements and "
                        "demographics, and on the Sokolow-Lyon voltage alone, fitted on the train split)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run_heads)


def _cell(metric: dict) -> str:
    from cardiacnets.evaluate.report_tables import format_ci

    return format_ci(metric["value"], metric["low"], metric["high"])


def format_scores(scores: dict, indent: str = "  ") -> list[str]:
    """Human-readable lines of a `score_split` result."""
    lines = []
    if scores["regression"]:
        lines.append(f"{indent}{'index':16}{'n':>5}  {'R²':24}{'Pearson r':24}{'MAE':26}{'R²/ceiling':>12}")
        for name, e in scores["regression"].items():
            fraction = e.get("r2_fraction_of_ceiling")
            lines.append(f"{indent}{name:16}{e['n']:>5}  {_cell(e['r2']):24}{_cell(e['pearson_r']):24}"
                         f"{_cell(e['mae']) + ' ' + e['unit']:26}"
                         f"{(format(fraction['value'], '.2f') if fraction else '–'):>12}")
    if scores["binary"]:
        lines.append(f"{indent}{'label':30}{'n (cases)':>11}  {'AUROC':24}{'AUPRC':24}{'sens':8}{'spec':8}{'ECE':>6}")
        for name, e in scores["binary"].items():
            lines.append(f"{indent}{name:30}{e['n']:>5} ({e['n_positive']:>3})  {_cell(e['auroc']):24}"
                         f"{_cell(e['auprc']):24}{e['sensitivity']['value']:<8.3f}{e['specificity']['value']:<8.3f}"
                         f"{e['ece']['value']:>6.3f}")
    for name, e in scores["multiclass"].items():
        auroc = f", macro AUROC {_cell(e['macro_auroc'])}" if "macro_auroc" in e else ""
        lines.append(f"{indent}{name}: n {e['n']} {e['class_counts']}, accuracy {_cell(e['accuracy'])}, "
                     f"balanced accuracy {_cell(e['balanced_accuracy'])}{auroc}")
    for name, why in scores["skipped"].items():
        lines.append(f"{indent}not scored: {name} ({why})")
    return lines


def run_heads(args: argparse.Namespace) -> int:
    from cardiacnets.errors import ConfigError
    from cardiacnets.evaluate.heads import evaluate_heads

    if args.workers < 0:
        raise ConfigError(f"--workers must be at least 0, got {args.workers}")
    if args.n_boot < 1:
        raise ConfigError(f"--n-boot must be at least 1, got {args.n_boot}")
    if args.lead_subsets:
        from cardiacnets.io.ecg_leads import resolve_lead_subset

        for subset in args.lead_subsets:
            try:
                resolve_lead_subset(subset)
            except ValueError as err:
                raise ConfigError(f"--leads {subset}: {err}") from None
    val_split = None if args.val_split.lower() == "none" else args.val_split
    result = evaluate_heads(args.model, args.data, split=args.split, val_split=val_split,
                            lead_subsets=args.lead_subsets, compare=args.compare, out_dir=args.out,
                            n_boot=args.n_boot, seed=args.seed, batch_size=args.batch_size, precision=args.precision,
                            device=args.device, num_workers=args.workers, progress=args.progress,
                            baselines=not args.no_baselines)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    provenance = result["provenance"]
    print(f"heads: {result['model']} ({provenance.get('mode', '?')}, {provenance.get('label_fraction', '?')} of the "
          f"labels) on split {result['split']!r} of {result['data']}: {result['n_subjects']} subjects, leads "
          f"{result['leads']}; thresholds from {result['threshold_split'] or 'the model'}; 95% CIs from "
          f"{result['n_boot']} bootstrap resamples")
    print("\n".join(format_scores(result)))
    for subset, scores in result["lead_subsets"].items():
        print(f"leads {subset} only:")
        print("\n".join(format_scores(scores)))
    if "compare" in result:
        c = result["compare"]
        _print_comparison(c, f"compared with {c['a']} (differences {c['difference']}, paired bootstrap; DeLong for "
                             "AUROC):")
    for name, block in result["baselines"].items():
        if "skipped" in block and "heads_minus_baseline" not in block:
            print(f"baseline {name}: not scored ({block['skipped']})")
            continue
        _print_comparison(block["heads_minus_baseline"],
                          f"baseline {name} (fitted on {block['n_train']} train subjects; baseline -> heads):")
    if "outputs" in result:
        print("files: " + ", ".join(result["outputs"]))
    return 0


def _print_comparison(c: dict, header: str) -> None:
    print(header)
    for name, e in c["regression"].items():
        r2 = e["r2"]
        print(f"  {name:16} R² {r2['a']:.3f} -> {r2['b']:.3f}, diff {r2['diff']:+.3f} "
              f"({r2['low']:+.3f} to {r2['high']:+.3f}), p {r2['p_value']:.3g}")
    for name, e in c["binary"].items():
        d = e["delong"]
        print(f"  {name:30} AUROC {d['auroc_a']:.3f} -> {d['auroc_b']:.3f}, diff {d['diff']:+.3f} "
              f"({d['ci_low']:+.3f} to {d['ci_high']:+.3f}), DeLong p {d['p_value']:.3g}")
