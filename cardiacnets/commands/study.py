"""``cardiacnets study``: check a reader-study definition, summarise and export its answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("study", help="reader studies: check a definition, summary, CSV export")
    study_sub = parser.add_subparsers(dest="study_command", metavar="SUBCOMMAND", required=True)

    p = study_sub.add_parser("check", help="validate a study YAML against a data set; list its cases and truth",
                             description="Resolve the study's cases on the data set and print them with their "
                                         "correct answers, and optionally one reader's blinded order (admin use).")
    p.add_argument("study", type=Path, metavar="STUDY.yaml")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET")
    p.add_argument("--reader", help="also print this reader's reading order")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_check)

    p = study_sub.add_parser("summary", help="per-reader and per-arm accuracy, paired McNemar tests",
                             description="Accuracy against the ground-truth labels per arm (Wilson 95 % CI) and per "
                                         "reader, and for each pair of arms the exact McNemar test on the same "
                                         "reader's paired readings of the same case. Only submitted readings count.")
    p.add_argument("db", type=Path, metavar="STUDY_DB",
                   help="the study's database (APP_DIR/studies/<name>.sqlite) or APP_DIR with --name")
    p.add_argument("--name", help="study name, when STUDY_DB is the app folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_summary)

    p = study_sub.add_parser("export", help="every reading as CSV (reader, case, arm, truth, answers, times)")
    p.add_argument("db", type=Path, metavar="STUDY_DB")
    p.add_argument("--name", help="study name, when STUDY_DB is the app folder")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv")
    p.set_defaults(func=run_export)


def _store(args: argparse.Namespace):
    from cardiacnets.errors import InputError
    from cardiacnets.review.study_store import StudyStore, study_db_path

    path = args.db
    if path.is_dir():
        if not args.name:
            found = sorted((path / "studies").glob("*.sqlite"))
            if len(found) != 1:
                raise InputError(path, f"holds {len(found)} study databases under studies/; pass --name")
            path = found[0]
        else:
            path = study_db_path(path, args.name)
    if not path.is_file():
        raise InputError(path, "no such study database")
    store = StudyStore(path)
    if "definition" not in store.meta():
        raise InputError(path, "not a cardiacnets study database")
    return store


def run_check(args: argparse.Namespace) -> int:
    from cardiacnets.data.store import TrainingSet
    from cardiacnets.review.study import load_study, reader_seed, reading_order, resolve_cases

    config = load_study(args.study)
    data = TrainingSet(args.data)
    cases = resolve_cases(config, data.manifest, data_path=args.data)
    order = None
    if args.reader:
        order = reading_order([c.case_id for c in cases], config.arms, reader_seed(config.seed, args.reader))
    if args.json:
        print(json.dumps({"study": config.name, "arms": config.arms,
                          "cases": [{"case_id": c.case_id, "truth": list(c.truth)} for c in cases],
                          "order": [{"case_id": c, "arm": a} for c, a in order] if order else None}, indent=2))
        return 0
    print(f"study {config.name}: {len(cases)} cases x {len(config.arms)} arms ({', '.join(config.arms)}) = "
          f"{len(cases) * len(config.arms)} readings per reader")
    for case in cases:
        print(f"  {case.case_id}: {' | '.join(case.truth)}")
    if order:
        print(f"order of reader {args.reader!r}:")
        for i, (case_id, arm) in enumerate(order, 1):
            print(f"  {i:3d}  {case_id}  {arm}")
    return 0


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_summary(args: argparse.Namespace) -> int:
    from cardiacnets.review.study import ARM_TITLES
    from cardiacnets.review.study_summary import summarize

    summary = summarize(_store(args))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"study {summary['study']}: {summary['n_cases']} cases, {summary['n_readers']} readers, "
          f"{summary['n_submitted']} readings submitted")
    print(f"  {'arm':22}{'n':>5}{'correct':>9}{'accuracy':>10}  {'95% CI':>13}{'confidence':>12}{'realism':>9}")
    for arm in summary["arms"]:
        b = summary["per_arm"][arm]
        ci = f"{b['ci95'][0]:.2f}-{b['ci95'][1]:.2f}" if b["ci95"] else "-"
        print(f"  {ARM_TITLES[arm]:22}{b['n']:5d}{b['n_correct']:9d}{_fmt(b['accuracy']):>10}  {ci:>13}"
              f"{_fmt(b['mean_confidence'], 2):>12}{_fmt(b['mean_realism'], 2):>9}")
    print("per reader (accuracy, readings):")
    for reader, blocks in summary["per_reader"].items():
        parts = ", ".join(f"{arm} {_fmt(blocks[arm]['accuracy'])} ({blocks[arm]['n']})" for arm in summary["arms"])
        print(f"  {reader}: all {_fmt(blocks['all']['accuracy'])} ({blocks['all']['n']}); {parts}")
    print("paired (same reader and case), exact McNemar:")
    for p in summary["paired"]:
        print(f"  {p['arm_a']} vs {p['arm_b']}: {p['n_pairs']} pairs, only A correct {p['only_a_correct']}, "
              f"only B correct {p['only_b_correct']}, p = {_fmt(p['mcnemar_exact_p'], 4)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    store = _store(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = store.export_csv()
    args.out.write_text(text)
    print(f"wrote {text.count(chr(10)) - 1} readings to {args.out}")
    return 0
