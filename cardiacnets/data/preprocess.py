"""Raw trees → memory-mapped training sets (``cardiacnets preprocess``).

Subjects are found first (`cardiacnets.data.sources`), which fixes the row of
every subject, then arrays are allocated at full size and filled in parallel
by worker processes, each writing its rows in place. A status array records
each finished row, so an interrupted run resumes where it stopped and a rerun
with the same inputs and config does nothing new (idempotent). A record that
fails is skipped and listed with its reason in ``failures.csv``; the run always
finishes. The raw tree is only ever read.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from cardiacnets.cmr.config import CMRConfig
from cardiacnets.config import to_dict
from cardiacnets.data.labels import DEFAULT_ICD10_MAP, ICD10Mapper
from cardiacnets.data.sources import SubjectFiles, scan_ukb, scan_wfdb
from cardiacnets.data.splits import SplitConfig, assign_split
from cardiacnets.data.store import DATASET_YAML, FAILURES, MANIFEST, REPORT, ArraySpec, create_arrays, open_arrays
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.ecg.leads import STANDARD_LEADS
from cardiacnets.errors import CardiacNetsError, ConfigError, InputError

FORMAT_VERSION = 1
STATUS_PENDING, STATUS_DONE = 0, 1
_RECORDS = "records.jsonl"  # per-row results, appended as rows finish (resume state)
_STATUS = "status.npy"


@dataclass
class PreprocessConfig:
    """Everything that decides the content of a training set.

    Attributes:
        ecg: the standard ECG representation.
        cmr: the standard CMR representation (UK Biobank sources only).
        split: patient-level split (sources with official folds use those).
        icd10: disease label → ICD-10 codes, categories or ranges.
        storage_dtype: dtype of the float arrays on disk.
        ecg_instance: UK Biobank instance of the ECG (2 = first imaging visit).
        ptbxl_records: PTB-XL resolution to read, ``hr`` (500 Hz) or ``lr`` (100 Hz).
    """

    ecg: ECGConfig = field(default_factory=ECGConfig)
    cmr: CMRConfig = field(default_factory=CMRConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    icd10: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ICD10_MAP.items()})
    storage_dtype: Literal["float16", "float32"] = "float16"
    ecg_instance: int = 2
    ptbxl_records: Literal["hr", "lr"] = "hr"

    def validate(self) -> None:
        try:
            ICD10Mapper(self.icd10)
        except ValueError as err:
            raise ConfigError(f"icd10: {err}") from None


@dataclass
class PreprocessResult:
    """What a run did: counts, timings and where the outputs are."""

    out: Path
    n_subjects: int
    n_processed: int
    n_skipped_done: int
    n_failed_records: int
    seconds: float
    failures: list[dict]
    counts: dict


def array_specs(source: str, config: PreprocessConfig) -> list[ArraySpec]:
    """The arrays a training set of this source and config holds."""
    dtype = config.storage_dtype
    specs = [
        ArraySpec("ecg", (len(STANDARD_LEADS), config.ecg.n_samples), dtype),
        ArraySpec("ecg_lead_mask", (len(STANDARD_LEADS),), "bool"),
    ]
    if source == "ukb":
        c = config.cmr
        for view in c.views:
            n_slices = c.n_slices_out if view == "sa" else 1
            shape = (n_slices, c.n_frames, c.crop_size, c.crop_size)
            specs.append(ArraySpec(f"cmr_{view}", shape, dtype))
            specs.append(ArraySpec(f"seg_{view}", shape, "uint8"))
    return specs


# --------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _init_worker(out: str, source: str, config: PreprocessConfig, specs: list[ArraySpec]) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; MONAI transforms must not oversubscribe
    _WORKER.clear()
    _WORKER.update(out=Path(out), source=source, config=config, arrays=open_arrays(Path(out), specs, mode="r+"))


def _failure(subject: SubjectFiles, modality: str, path: Path | None, err: Exception) -> dict:
    reason = err.problem if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
    return {"subject_id": subject.subject_id, "modality": modality, "file": str(path) if path else "", "reason": reason}


def _process_ecg(row: int, subject: SubjectFiles, info: dict, failures: list) -> None:
    from cardiacnets.ecg.standardize import standardize_ecg
    from cardiacnets.io.ecg import read_ecg

    config: PreprocessConfig = _WORKER["config"]
    arrays = _WORKER["arrays"]
    info["has_ecg"] = False
    if subject.ecg is None:
        return
    info["ecg_file"] = str(subject.ecg)
    try:
        record = read_ecg(subject.ecg)
        std = standardize_ecg(record, config.ecg)
    except Exception as err:  # CardiacNetsError, or an unforeseen reader crash: skip and list it
        failures.append(_failure(subject, "ecg", subject.ecg, err))
        return
    valid = np.flatnonzero(std.sample_mask)
    arrays["ecg"][row] = std.signal.astype(arrays["ecg"].dtype)
    arrays["ecg_lead_mask"][row] = std.lead_mask
    info.update(
        has_ecg=True,
        ecg_valid_start=int(valid[0]) if valid.size else 0,
        ecg_valid_end=int(valid[-1]) + 1 if valid.size else 0,
        ecg_n_leads=int(std.lead_mask.sum()),
        ecg_source_rate_hz=float(record.sampling_rate_hz),
        ecg_quality=";".join(sorted({f.code for f in std.findings})),
    )
    for key, value in (record.measurements or {}).items():
        info[f"ecg_{key}"] = value
    for key in ("age_years", "sex_male"):
        if key in record.metadata and key not in info:
            info[key] = record.metadata[key]


def _process_cmr(row: int, subject: SubjectFiles, info: dict, failures: list) -> None:
    from cardiacnets.cmr.indices import function_indices
    from cardiacnets.cmr.standardize import standardize_cine
    from cardiacnets.io.cmr import read_cmr

    config: PreprocessConfig = _WORKER["config"]
    arrays = _WORKER["arrays"]
    for view in config.cmr.views:
        info[f"has_{view}"] = False
        info[f"has_seg_{view}"] = False
        path = subject.cmr.get(view)
        if path is None:
            continue
        info[f"{view}_file"] = str(path)
        seg_path = subject.seg.get(view)
        seg = None
        try:
            image = read_cmr(path, view=view)
            if seg_path is not None:
                info[f"seg_{view}_file"] = str(seg_path)
                try:
                    seg = read_cmr(seg_path, view=view)
                except Exception as err:  # the cine is still usable; the crop falls back to its variance map
                    failures.append(_failure(subject, f"seg_{view}", seg_path, err))
            std = standardize_cine(image, config.cmr, seg=seg)
        except Exception as err:  # CardiacNetsError, or an unforeseen crash: skip and list it
            failures.append(_failure(subject, view, path, err))
            continue
        arrays[f"cmr_{view}"][row] = std.frames.astype(arrays[f"cmr_{view}"].dtype)
        info[f"has_{view}"] = True
        if seg is not None and std.seg is not None:
            arrays[f"seg_{view}"][row] = std.seg
            info[f"has_seg_{view}"] = True
            if view == "sa":
                try:
                    for key, value in function_indices(seg).items():
                        info[f"seg_{key}"] = value
                except CardiacNetsError as err:
                    failures.append(_failure(subject, "seg_sa", seg_path, err))


def _process_rows(rows: list[tuple[int, SubjectFiles]]) -> list[tuple[int, dict, list[dict]]]:
    results = []
    for row, subject in rows:
        info: dict = {}
        failures: list[dict] = []
        _process_ecg(row, subject, info, failures)
        if _WORKER["source"] == "ukb":
            _process_cmr(row, subject, info, failures)
        results.append((row, info, failures))
    for arr in _WORKER["arrays"].values():
        arr.flush()
    return results


# --------------------------------------------------------------------------- driver

def _check_out(raw: Path, out: Path) -> None:
    raw_r, out_r = raw.resolve(), out.resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        raise InputError(out, f"output folder lies inside the raw tree {raw}; the raw tree is never written to")


def _prepare_out(out: Path, source: str, raw: Path, config: PreprocessConfig, n: int, subject_ids: list[str], specs: list[ArraySpec]) -> bool:
    """Create the output folder or check that it matches; return True when resuming."""
    header = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "raw": str(raw.resolve()),
        "n_subjects": n,
        "config": to_dict(config),
        "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs],
        "lead_order": list(STANDARD_LEADS),
    }
    yaml_path = out / DATASET_YAML
    ids_path = out / "subject_ids.txt"
    if yaml_path.is_file():
        existing = yaml.safe_load(yaml_path.read_text())
        for key in ("format_version", "source", "n_subjects", "config", "arrays"):
            if existing.get(key) != header[key]:
                raise InputError(out, f"already holds a training set made with a different {key.replace('_', ' ')}; choose a new --out (or delete it)")
        if ids_path.read_text().split() != subject_ids:
            raise InputError(out, "already holds a training set of other subjects (the raw tree changed); choose a new --out")
        return True
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "output folder exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    create_arrays(out, n, specs)
    np.save(out / _STATUS, np.zeros(n, dtype=np.uint8))
    ids_path.write_text("\n".join(subject_ids) + "\n")
    yaml_path.write_text(yaml.safe_dump(header, sort_keys=False))
    return False


def _load_records(out: Path) -> dict[int, dict]:
    records: dict[int, dict] = {}
    path = out / _RECORDS
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                records[entry["row"]] = entry
    return records


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def preprocess(source: Literal["ukb", "wfdb"], raw: str | Path, out: str | Path, config: PreprocessConfig | None = None,
               workers: int | None = None, chunk_size: int = 8, progress: bool = False) -> PreprocessResult:
    """Build (or resume) a training set from a raw tree.

    Args:
        source: ``"ukb"`` (ECG XML + CMR + tabular CSVs) or ``"wfdb"`` (ECG-only trees).
        raw: the raw tree; never written to.
        out: the training set folder to create or resume.
        config: preprocessing config (defaults when None).
        workers: processes; 0 runs in this process, None uses every CPU.
        chunk_size: subjects per task sent to a worker.
        progress: show a progress bar.

    Returns:
        A `PreprocessResult`; ``manifest.csv``, ``failures.csv`` and
        ``report.json`` are written in `out`.
    """
    config = config or PreprocessConfig()
    raw, out = Path(raw), Path(out)
    _check_out(raw, out)
    started = time.perf_counter()
    if source == "ukb":
        subjects, tables = scan_ukb(raw, config.ecg_instance, tuple(config.cmr.views))
        notes = {"tabular_files": [str(t) for t in tables]}
    elif source == "wfdb":
        subjects, notes = scan_wfdb(raw, config.ptbxl_records)
        tables = []
    else:
        raise ConfigError(f"unknown source {source!r}; use ukb or wfdb")
    if not subjects:
        raise InputError(raw, f"no {source} records found (see the README's raw layouts)")
    n = len(subjects)
    specs = array_specs(source, config)
    resuming = _prepare_out(out, source, raw, config, n, [s.subject_id for s in subjects], specs)
    status = np.load(out / _STATUS, mmap_mode="r+")
    todo = [(row, s) for row, s in enumerate(subjects) if status[row] != STATUS_DONE]
    n_skipped = n - len(todo)
    records = _load_records(out) if resuming else {}
    workers = default_workers() if workers is None else workers
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"preprocess {source}", unit="subject")
    with open(out / _RECORDS, "a") as log:
        def consume(results):
            for row, info, failures in results:
                entry = {"row": row, "info": info, "failures": failures}
                records[row] = entry
                log.write(json.dumps(entry, default=float) + "\n")
                status[row] = STATUS_DONE if not failures else STATUS_PENDING
            log.flush()
            status.flush()
            if bar is not None:
                bar.update(len(results))

        if workers == 0 or len(chunks) <= 1:
            _init_worker(str(out), source, config, specs)
            for chunk in chunks:
                consume(_process_rows(chunk))
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(out), source, config, specs)) as pool:
                for results in pool.map(_process_rows, chunks):
                    consume(results)
    if bar is not None:
        bar.close()

    manifest, failures = _build_manifest(source, subjects, records, tables, config)
    manifest.to_csv(out / MANIFEST, index=False)
    pd.DataFrame(failures, columns=["subject_id", "modality", "file", "reason"]).to_csv(out / FAILURES, index=False)
    counts = {col: int(manifest[col].sum()) for col in manifest.columns if col.startswith("has_")}
    counts.update({f"split_{k}": int(v) for k, v in manifest["split"].value_counts().items()})
    seconds = time.perf_counter() - started
    result = PreprocessResult(out=out, n_subjects=n, n_processed=len(todo), n_skipped_done=n_skipped,
                              n_failed_records=len(failures), seconds=seconds, failures=failures, counts=counts)
    report = {"source": source, "raw": str(raw), "n_subjects": n, "n_in_manifest": len(manifest),
              "n_processed_this_run": len(todo), "n_skipped_already_done": n_skipped,
              "n_failed_records": len(failures), "seconds": round(seconds, 3),
              "subjects_per_s": round(len(todo) / seconds, 2) if seconds > 0 else None,
              "workers": workers, "counts": counts, **notes}
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return result


def _build_manifest(source: str, subjects: list[SubjectFiles], records: dict[int, dict], tables: list[Path],
                    config: PreprocessConfig) -> tuple[pd.DataFrame, list[dict]]:
    rows, failures = [], []
    for row, subject in enumerate(subjects):
        entry = records.get(row, {"info": {}, "failures": []})
        failures.extend(entry["failures"])
        info = dict(entry["info"])
        split = subject.extra.get("split") or assign_split(subject.patient_id, config.split)
        base = {"row": row, "subject_id": subject.subject_id, "patient_id": subject.patient_id, "split": split}
        base.update({k: v for k, v in subject.extra.items() if k != "split"})
        base.update(info)
        rows.append(base)
    manifest = pd.DataFrame(rows)
    has_cols = [c for c in manifest.columns if c.startswith("has_") and not c.startswith("has_seg_")]
    for col in [c for c in manifest.columns if c.startswith("has_")]:
        manifest[col] = manifest[col].fillna(False).astype(bool)
    # A subject stays when any modality was read; those with none are only in failures.csv.
    manifest = manifest[manifest[has_cols].any(axis=1)] if has_cols else manifest
    if source == "ukb" and tables:
        from cardiacnets.data.tabular import read_ukb_tabular

        tab = read_ukb_tabular(tables, ICD10Mapper(config.icd10))
        tab.index = tab.index.astype(str)
        tab = tab.drop(columns=[c for c in tab.columns if c in manifest.columns and c not in ("age_years", "sex_male")])
        manifest = manifest.drop(columns=[c for c in ("age_years", "sex_male") if c in manifest.columns and c in tab.columns])
        manifest = manifest.merge(tab, left_on="subject_id", right_index=True, how="left")
        for col in [c for c in tab.columns if c.startswith("label_")]:
            manifest[col] = manifest[col].fillna(False).astype(bool)
    return manifest.reset_index(drop=True), failures
