"""``cardiacnets bench NAME``: run a benchmark and print JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from cardiacnets.bench import BENCHMARKS, machine_info


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="measure performance against a baseline (JSON output)")
    bench_sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print only the JSON result")
        p.add_argument("--output", type=Path, help="also write the JSON result to this file")
        module.add_arguments(p)
        p.set_defaults(func=_run, bench_module=module, bench_name=name)


def _run(args: argparse.Namespace) -> int:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = {"benchmark": args.bench_name, "started": started, "machine": machine_info()}
    result.update(args.bench_module.run(args))
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return 0
