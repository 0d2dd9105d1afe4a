#!/usr/bin/env python
"""Convert UK Biobank cine DICOM bulk files to the NIfTI layout pipelines use.

UK Biobank delivers cines as zipped DICOM per participant: field 20209 (short
axis, one series per slice) and field 20208 (long axis, 2/3/4-chamber series).
Segmentation pipelines (e.g. the UK Biobank cardiac pipeline of Bai et al.)
work on per-subject NIfTI files. This script writes

    OUT/{eid}/sa.nii.gz, la_2ch.nii.gz, la_3ch.nii.gz, la_4ch.nii.gz

from every ``{eid}_20209_2_0.zip`` / ``{eid}_20208_2_0.zip`` under RAW, in
parallel. RAW is only read. A zip that cannot be converted is skipped and listed
in ``OUT/conversion_failures.csv``; existing outputs are kept (rerun = resume).
`cardiacnets preprocess --source ukb` reads the zips directly too; convert when
you want to segment or view the cines with other tools.

Usage:
    python preprocessing/ukb_dicom_to_nifti.py RAW OUT [--workers N] [--views sa la_4ch]
"""

from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cardiacnets.data.sources import UKB_DICOM_RE
from cardiacnets.errors import CardiacNetsError
from cardiacnets.io.dicom import read_dicom_series
from cardiacnets.io.nifti import write_nifti

VIEWS_BY_FIELD = {"20209": ("sa",), "20208": ("la_2ch", "la_3ch", "la_4ch")}


def convert_one(task: tuple[Path, str, Path]) -> list[dict]:
    """Convert one view of one zip; returns failure rows (empty on success)."""
    zip_path, view, target = task
    if target.exists():
        return []
    try:
        image = read_dicom_series(zip_path, view=view)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part.nii.gz")
        write_nifti(image, tmp)
        tmp.replace(target)  # atomic: a half-written file never looks finished
    except CardiacNetsError as err:
        return [{"file": str(zip_path), "view": view, "reason": str(err)}]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--views", nargs="+", default=["sa", "la_2ch", "la_3ch", "la_4ch"])
    args = parser.parse_args(argv)
    if args.out.resolve() == args.raw.resolve() or args.raw.resolve() in args.out.resolve().parents:
        parser.error("OUT must not lie inside RAW (the raw tree is never written to)")
    tasks = []
    for path in sorted(args.raw.rglob("*.zip")):
        m = UKB_DICOM_RE.match(path.name)
        if not m or m.group(3) != "2":
            continue
        for view in VIEWS_BY_FIELD[m.group(2)]:
            if view in args.views:
                tasks.append((path, view, args.out / m.group(1) / f"{view}.nii.gz"))
    failures: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for rows in pool.map(convert_one, tasks, chunksize=4):
            failures.extend(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "conversion_failures.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "view", "reason"])
        writer.writeheader()
        writer.writerows(failures)
    print(f"{len(tasks) - len(failures)} of {len(tasks)} views converted into {args.out}; "
          f"{len(failures)} failed (listed in conversion_failures.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
