"""``cardiacnets evaluate``: evaluate trained models on a training-set split or on real recordings.

Subcommands: ``retrieval`` (ECG↔CMR retrieval of an aligned model, with
embedding export and a projection plot); the modules of `EVALUATION_MODULES`
add ``heads``, ``generation``, ``segmentation`` and ``real`` (the segmenter
on the Sunnybrook cine, heads on PTB-XL) beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


# Modules adding further evaluations; each defines ``register(eval_subparsers)``.
EVALUATION_MODULES: tuple[str, ...] = ("cardiacnets.commands.evaluate_heads", "cardiacnets.commands.evaluate_generation",
                                        "cardiacnets.commands.evaluate_real")


def register(sub: argparse._SubParsersAction) -> None:
    import importlib

    parser = sub.add_parser("evaluate", help="evaluate a trained model")
    eval_sub = parser.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    register_retrieval(eval_sub)
    for module in EVALUATION_MODULES:
        importlib.import_module(module).register(eval_sub)


def register_retrieval(eval_sub: argparse._SubParsersAction) -> None:

    p = eval_sub.add_parser("retrieval", help="ECG->CMR and CMR->ECG retrieval of an aligned model; embedding export",
                            description="Top-1/5/10 accuracy and median rank of each subject's true partner among "
                                        "N candidates (the partner plus N-1 seeded distractors from the split), "
                                        "in both directions, per CMR view.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN",
                   help="training run folder (uses RUN/model/) or a saved model folder")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="training set folder (cardiacnets preprocess)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--candidates", type=int, default=100, metavar="N",
                   help="candidates per query, the true partner included (default 100; all subjects when the split is smaller)")
    p.add_argument("--view", action="append", dest="views", metavar="VIEW",
                   help="CMR view to score (repeatable; default: every view the data and model share, sa first)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distractor draw (default 0)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write embeddings_ecg.npy, embeddings_cmr_<view>.npy, subject_ids.txt, ranks_<view>.csv, "
                        "projection_<phenotype>.png and retrieval.json here")
    p.add_argument("--color-by", default="lvef_pct", metavar="COLUMN",
                   help="numeric manifest column colouring the projection plot written with --out (default lvef_pct)")
    p.add_argument("--batch-size", type=int, default=64, help="subjects per forward pass (default 64)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="inference precision (bf16 = autocast)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run_retrieval)


def _format_table(block: dict) -> list[str]:
    lines = [f"  {'':12}{'top1':>8}{'top5':>8}{'top10':>8}{'median rank':>13}"]
    for label, key in (("ECG -> CMR", "ecg_to_cmr"), ("CMR -> ECG", "cmr_to_ecg"), ("chance", "chance")):
        m = block[key]
        lines.append(f"  {label:12}{m['top1']:8.3f}{m['top5']:8.3f}{m['top10']:8.3f}{m['median_rank']:13.1f}")
    return lines


def run_retrieval(args: argparse.Namespace) -> int:
    from cardiacnets.errors import ConfigError
    from cardiacnets.evaluate.retrieval import evaluate_retrieval

    if args.workers < 0:
        raise ConfigError(f"--workers must be at least 0, got {args.workers}")
    result = evaluate_retrieval(
        args.model, args.data, split=args.split, views=args.views, n_candidates=args.candidates, seed=args.seed,
        out_dir=args.out, color_by=args.color_by, batch_size=args.batch_size, precision=args.precision,
        device=args.device, num_workers=args.workers, progress=args.progress,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"retrieval: {result['model_class']} {result['model']} on split {result['split']!r} of {result['data']} "
          f"({result['n_subjects_with_ecg']} subjects with an ECG; {result['precision']} on {result['device']})")
    for view, block in result["views"].items():
        requested = "" if block["n_candidates"] == block["n_candidates_requested"] else \
            f", every subject ({block['n_candidates_requested']} requested)"
        print(f"view {view}: {block['n_queries']} queries, {block['n_candidates']} candidates each{requested}, seed {block['seed']}")
        print("\n".join(_format_table(block)))
    for note in result["notes"]:
        print(f"note: {note}")
    timing = result["timing"]
    print(f"embedded in {timing['embed_seconds']:.2f} s ({timing['subjects_per_s']:.1f} subjects/s)")
    if "outputs" in result:
        print("files: " + ", ".join(result["outputs"]))
    return 0
