"""``cardiacnets reference``: build the reference models, or verify a bundle.

``cardiacnets reference build --out DIR`` trains every stage on a large simulated
cohort (``configs/reference/reference.yaml``), evaluates it on the held-out split
and on the real files available, and exports a bundle (``DIR/bundle``) with its
model card. ``cardiacnets reference verify BUNDLE`` checks a bundle's hashes and
package version.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="build the reference models, or verify a bundle",
                       description="Build the reference models (train every stage on a large simulated cohort, "
                                   "evaluate, export a bundle with a model card), or verify a bundle.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="train, evaluate and export the reference bundle",
                           description="Train every stage on the reference cohort, evaluate it on the held-out split "
                                       "and on the real samples, and export the bundle. Steps done earlier in --out "
                                       "with the same settings are reused. Takes hours on a 2-core CPU.")
    b.add_argument("--out", type=Path, required=True, help="build folder")
    b.add_argument("--config", type=Path, default=None, help="build config (default configs/reference/reference.yaml)")
    b.add_argument("--bundle-out", type=Path, default=None, help="bundle folder (default OUT/bundle)")
    b.add_argument("--name", default=None, help="bundle name (default cardiacnets-reference-VERSION)")
    b.add_argument("--shared", type=Path, default=None,
                   help="folder of real samples (default $CARDIACNETS_SHARED_DATA or ../shared/data)")
    b.add_argument("--no-real-data", action="store_true", help="skip the evaluations on the real samples")
    b.add_argument("--force", action="store_true", help="redo every step")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="build config overrides")
    b.set_defaults(func=run_build)
    v = actions.add_parser("verify", help="check a bundle's files and package version",
                           description="Check that every file of a bundle has the SHA-256 its bundle.json records, "
                                       "that no file was added, and that this package version can load it.")
    v.add_argument("bundle", type=Path, help="bundle folder")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from cardiacnets.demo.reference import build_reference

    command = "cardiacnets " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    bundle = build_reference(args.out, args.config, args.overrides, bundle_out=args.bundle_out, name=args.name,
                             shared=args.shared, command=command, real=not args.no_real_data, force=args.force,
                             progress=not args.no_progress)
    print(f"bundle:     {bundle}")
    print(f"model card: {bundle / 'MODEL_CARD.md'}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from cardiacnets.models.bundle import verify_bundle

    summary = verify_bundle(args.bundle)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"{args.bundle}: ok — " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0
