"""``cardiacnets predict --ecg FILE --model RUN``: cardiac indices and screening probabilities from one ECG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="cardiac indices and disease screening from one ECG file (a heads model)",
                       description="Every CMR index the model predicts, with its unit and a 95%% prediction "
                                   "interval (split-conformal, from validation residuals), every screening "
                                   "probability with its decision at the validation Youden threshold, the "
                                   "cardiomyopathy subtype, the ECG's quality findings and the model's provenance.")
    p.add_argument("--ecg", type=Path, required=True, metavar="FILE",
                   help="ECG record: UK Biobank XML, WFDB (.hea / record path) or .npy")
    p.add_argument("--model", type=Path, required=True, metavar="RUN",
                   help="heads training run (uses RUN/model/) or a saved HeadsModel folder")
    p.add_argument("--leads", default=None, metavar="LEADS",
                   help="show the model only these leads: I, II, limb, or a list like I,II,V1 (default: all recorded)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cardiacnets.heads.predict import format_prediction, predict_record

    result = predict_record(args.model, args.ecg, leads=args.leads)
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))
    return 0
