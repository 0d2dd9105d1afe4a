"""``cardiacnets heads compare``: the downstream table — training modes × tasks × label fractions.

Trains every (mode, label fraction) run of a heads config through the training
loop (hyperparameters chosen on the validation loss), evaluates the chosen runs
on the test split with 95% bootstrap CIs, compares the modes pairwise on the
same subjects and writes ``results.csv``/``results.md`` (the paper-style table),
``results_reduced_leads.*``, ``comparisons.md``/``.json``, ``selection.csv`` and ``compare.json``. Rerunning
reuses finished runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("heads", help="downstream heads: compare training modes and label fractions")
    heads_sub = parser.add_subparsers(dest="heads_command", metavar="ACTION", required=True)
    p = heads_sub.add_parser("compare", help="train, select, evaluate and tabulate every mode and label fraction",
                             description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--config", type=Path, required=True, help="comparison YAML (e.g. configs/demo/heads_compare.yaml)")
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/, tables, comparisons)")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="comparison overrides, e.g. data=runs/demo/dataset label_fractions=[0.1,1.0]")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from cardiacnets.evaluate.heads_compare import HeadsComparison, load_compare_config

    config = load_compare_config(args.config, args.overrides)
    summary = HeadsComparison(config, args.out, progress=args.progress).run()
    print((args.out / "results.md").read_text().split("\n## All metrics")[0].rstrip())
    print()
    print((args.out / "comparisons.md").read_text().rstrip())
    print("files: " + ", ".join(summary["outputs"]))
    return 0
