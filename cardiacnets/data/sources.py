"""Finding the records of a raw tree: UK Biobank-style bulk files and WFDB trees.

UK Biobank layout (see README, "Raw layouts"):

    RAW/ecg/{eid}_20205_{instance}_{array}.xml    resting ECG, CardioSoft XML
    RAW/cmr/{eid}/sa.nii.gz, seg_sa.nii.gz,        short-axis cine and segmentation
                  la_4ch.nii.gz, la_2ch.nii.gz ... long-axis cines (pipeline output)
    RAW/cmr/{eid}_20209_2_0.zip                   short-axis DICOM bulk (raw download)
    RAW/cmr/{eid}_20208_2_0.zip                   long-axis DICOM bulk
    RAW/*.csv                                     tabular exports (eid, field-instance.array)

The ``ecg/`` and ``cmr/`` folder names are conventions; files are found by
name anywhere under RAW. WFDB trees are any folder of ``.hea`` headers
(PTB-XL, MIMIC-IV-ECG ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/``, CinC ``.mat``),
joined with their label tables when present.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cardiacnets.data.splits import ptbxl_split
from cardiacnets.errors import InputError

UKB_ECG_RE = re.compile(r"^(\d+)_20205_(\d+)_(\d+)\.xml$")
UKB_DICOM_RE = re.compile(r"^(\d+)_(20208|20209)_(\d+)_(\d+)\.zip$")
NIFTI_VIEWS = {"sa": "sa", "la_4ch": "la_4ch", "la_2ch": "la_2ch", "la_3ch": "la_3ch"}


@dataclass
class SubjectFiles:
    """The raw files of one subject (any may be missing)."""

    subject_id: str
    patient_id: str
    ecg: Path | None = None
    cmr: dict[str, Path] = field(default_factory=dict)  # view -> file (NIfTI or DICOM zip)
    seg: dict[str, Path] = field(default_factory=dict)  # view -> segmentation
    extra: dict = field(default_factory=dict)  # label-table columns for WFDB sources


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def scan_ukb(raw: Path, ecg_instance: int = 2, views: tuple[str, ...] = ("sa", "la_4ch")) -> tuple[list[SubjectFiles], list[Path]]:
    """Find each subject's ECG and CMR files and the tabular CSVs.

    Args:
        raw: the raw tree (read only).
        ecg_instance: UK Biobank instance of the ECG to take (2: first imaging visit).
        views: CMR views to look for.

    Returns:
        (subjects sorted by eid, tabular CSV paths).
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise InputError(raw, "raw folder does not exist")
    subjects: dict[str, SubjectFiles] = {}

    def subject(eid: str) -> SubjectFiles:
        return subjects.setdefault(eid, SubjectFiles(subject_id=eid, patient_id=eid))

    tables = []
    for path in _walk(raw):
        name = path.name
        m = UKB_ECG_RE.match(name)
        if m:
            if int(m.group(2)) == ecg_instance and int(m.group(3)) == 0:
                subject(m.group(1)).ecg = path
            continue
        m = UKB_DICOM_RE.match(name)
        if m:
            if int(m.group(3)) == 2:  # imaging visit
                zip_views = ("sa",) if m.group(2) == "20209" else ("la_4ch", "la_2ch", "la_3ch")
                for view in zip_views:
                    if view in views:
                        subject(m.group(1)).cmr.setdefault(view, path)
            continue
        if name.endswith((".nii.gz", ".nii")) and path.parent.name.isdigit():
            stem = name.split(".nii")[0]
            eid = path.parent.name
            if stem.startswith("seg_") and stem[4:] in views:
                subject(eid).seg[stem[4:]] = path
            elif stem in views:
                subject(eid).cmr[stem] = path  # a pipeline's NIfTI wins over a DICOM zip
            continue
        if name.endswith(".csv") and path.parent == raw:
            tables.append(path)
    ordered = sorted(subjects.values(), key=lambda s: int(s.subject_id))
    return ordered, tables


def _read_label_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read label table ({err})") from None


def ptbxl_labels(raw: Path, table: pd.DataFrame) -> pd.DataFrame:
    """PTB-XL superclass and selected statement labels from ``scp_codes``.

    A record has a statement when ``scp_codes`` lists it, whatever its likelihood, and a diagnostic
    superclass when one of its statements belongs to it (``scp_statements.csv``'s
    ``diagnostic_class``), as the PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021) aggregates them.

    Args:
        raw: the PTB-XL folder (its ``scp_statements.csv`` maps statements to superclasses; without it
            every superclass label is False).
        table: ``ptbxl_database.csv`` rows.

    Returns:
        Bool columns ``label_NORM``, ``label_MI``, ``label_STTC``, ``label_CD``, ``label_HYP`` and
        ``label_LVH`` (the LVH statement), on ``table``'s index.
    """
    statements_path = raw / "scp_statements.csv"
    superclass = {}
    if statements_path.is_file():
        st = pd.read_csv(statements_path, index_col=0)
        if "diagnostic_class" in st.columns:
            superclass = {code: cls for code, cls in st["diagnostic_class"].dropna().items()}
    rows = []
    for text in table["scp_codes"].fillna("{}"):
        try:
            codes = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            codes = {}
        present = {c for c in codes}
        classes = {superclass[c] for c in present if c in superclass}
        row = {f"label_{cls}": cls in classes for cls in ("NORM", "MI", "STTC", "CD", "HYP")}
        row["label_LVH"] = "LVH" in present
        rows.append(row)
    return pd.DataFrame(rows, index=table.index)


def scan_wfdb(raw: Path, ptbxl_records: str = "hr") -> tuple[list[SubjectFiles], dict]:
    """Find the WFDB records of a tree and join known label tables.

    PTB-XL (``ptbxl_database.csv`` at the root) gives patient ids, official
    ``strat_fold`` splits, age, sex and labels (superclasses NORM/MI/STTC/CD/HYP,
    and LVH); MIMIC-IV-ECG (``record_list.csv``) gives subject ids; any other
    tree uses the record name as subject and patient id.

    Returns:
        (subjects, notes) where notes says which table was used and how many
        table rows had no file.
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise InputError(raw, "raw folder does not exist")
    headers = {p.with_suffix("").relative_to(raw).as_posix(): p.with_suffix("") for p in _walk(raw) if p.suffix == ".hea"}
    notes: dict = {"label_table": None, "table_rows_without_file": 0}
    subjects: list[SubjectFiles] = []
    ptbxl = raw / "ptbxl_database.csv"
    mimic = raw / "record_list.csv"
    if ptbxl.is_file():
        table = _read_label_table(ptbxl)
        column = "filename_hr" if ptbxl_records == "hr" else "filename_lr"
        for col in ("ecg_id", "patient_id", "strat_fold", column):
            if col not in table.columns:
                raise InputError(ptbxl, f"missing column {col!r}")
        labels = ptbxl_labels(raw, table)
        notes["label_table"] = "ptbxl_database.csv"
        for i, rec in table.iterrows():
            key = str(rec[column])
            if key not in headers:
                notes["table_rows_without_file"] += 1
                continue
            extra = {"split": ptbxl_split(rec["strat_fold"]), "strat_fold": int(rec["strat_fold"])}
            if "age" in table.columns:
                extra["age_years"] = rec["age"]
            if "sex" in table.columns:  # PTB-XL: 0 male, 1 female
                extra["sex_male"] = float(rec["sex"] == 0) if pd.notna(rec["sex"]) else float("nan")
            extra.update({k: bool(v) for k, v in labels.loc[i].items()})
            pid = rec["patient_id"]
            subjects.append(SubjectFiles(
                subject_id=str(int(rec["ecg_id"])),
                patient_id=str(int(pid)) if pd.notna(pid) else f"ecg{int(rec['ecg_id'])}",
                ecg=headers[key], extra=extra,
            ))
        return subjects, notes
    if mimic.is_file():
        table = _read_label_table(mimic)
        for col in ("subject_id", "study_id", "path"):
            if col not in table.columns:
                raise InputError(mimic, f"missing column {col!r}")
        notes["label_table"] = "record_list.csv"
        for _, rec in table.iterrows():
            key = str(rec["path"]).strip("/")
            if key not in headers:
                notes["table_rows_without_file"] += 1
                continue
            subjects.append(SubjectFiles(subject_id=str(rec["study_id"]), patient_id=str(rec["subject_id"]), ecg=headers[key]))
        return subjects, notes
    for key, path in sorted(headers.items()):
        name = key.replace("/", "_")
        subjects.append(SubjectFiles(subject_id=name, patient_id=name, ecg=path))
    return subjects, notes
