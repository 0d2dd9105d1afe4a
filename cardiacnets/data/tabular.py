"""UK Biobank tabular exports: demographics, CMR phenotypes and ICD-10 labels.

Exports have one row per participant (``eid``) and columns named
``field-instance.array``. Only the needed columns are read (`usecols`), so a
main-dataset CSV with thousands of columns costs little memory. Several files
are merged on ``eid``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cardiacnets.data.labels import ICD10Mapper
from cardiacnets.data.ukb_fields import CMR_FIELDS, DEMOGRAPHIC_FIELDS, ICD10_FIELD, IMAGING_INSTANCE, column
from cardiacnets.errors import InputError

_COLUMN = re.compile(r"^(\d+)-(\d+)\.(\d+)$")


def _wanted(name: str) -> bool:
    if name == "eid":
        return True
    m = _COLUMN.match(name)
    if not m:
        return False
    field_id, instance = int(m.group(1)), int(m.group(2))
    if field_id == ICD10_FIELD:
        return True
    if field_id == DEMOGRAPHIC_FIELDS["sex_male"]:
        return True
    cmr_ids = {f.field_id for f in CMR_FIELDS}
    return instance == IMAGING_INSTANCE and (field_id in cmr_ids or field_id in DEMOGRAPHIC_FIELDS.values())


def read_ukb_tabular(paths: Sequence[str | Path], mapper: ICD10Mapper | None = None) -> pd.DataFrame:
    """Read and merge UK Biobank tabular CSVs into named columns.

    Args:
        paths: CSV files with an ``eid`` column and ``field-instance.array`` columns.
        mapper: ICD-10 → disease label mapping (default mapping when None).

    Returns:
        DataFrame indexed by ``eid`` (int) with ``sex_male``, ``age_years``,
        ``height_cm``, ``weight_kg``, ``bmi``, every CMR phenotype present by
        short name (``lvedv_ml``...), ``icd10`` (codes joined by ``;``) and one
        boolean column per disease label (``label_<name>``). Columns absent from
        every file are absent from the result.

    Raises:
        InputError: a file without ``eid``, with duplicated eids, or unreadable.
    """
    mapper = mapper or ICD10Mapper()
    frames = []
    for path in paths:
        path = Path(path)
        try:
            df = pd.read_csv(path, usecols=_wanted, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise InputError(path, f"cannot read tabular CSV ({err})") from None
        if "eid" not in df.columns:
            raise InputError(path, "no 'eid' column; UK Biobank exports have one row per participant with eid")
        eids = pd.to_numeric(df["eid"], errors="coerce")
        if eids.isna().any():
            bad = df["eid"][eids.isna()].iloc[0]
            raise InputError(path, f"eid {bad!r} is not an integer")
        df.index = eids.astype(np.int64)
        df = df.drop(columns="eid")
        if df.index.duplicated().any():
            raise InputError(path, f"eid {int(df.index[df.index.duplicated()][0])} appears twice")
        frames.append(df)
    if not frames:
        return pd.DataFrame(index=pd.Index([], name="eid", dtype=np.int64))
    raw = frames[0]
    for other in frames[1:]:
        raw = raw.combine_first(other)  # columns from every file, earlier files win on overlap
    raw.index.name = "eid"
    return _named_columns(raw.fillna(""), mapper)


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series.replace("", np.nan), errors="coerce")


def _named_columns(raw: pd.DataFrame, mapper: ICD10Mapper) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for name, field_id in DEMOGRAPHIC_FIELDS.items():
        candidates = [column(field_id)] + ([column(field_id, 0)] if name == "sex_male" else [])
        for col in candidates:
            if col in raw.columns:
                out[name] = _numeric(raw[col])
                break
    for f in CMR_FIELDS:
        col = column(f.field_id)
        if col in raw.columns:
            out[f.name] = _numeric(raw[col])
    icd_cols = sorted(
        (c for c in raw.columns if c.startswith(f"{ICD10_FIELD}-")),
        key=lambda c: tuple(int(x) for x in _COLUMN.match(c).groups()[1:]),
    )
    codes = raw[icd_cols].apply(lambda row: [c for c in row if c], axis=1) if icd_cols else pd.Series([[]] * len(raw), index=raw.index)
    out["icd10"] = codes.map(";".join) if len(raw) else pd.Series(dtype=str)
    labels = pd.DataFrame([mapper(c) for c in codes], index=raw.index, columns=mapper.labels)
    for label in mapper.labels:
        out[f"label_{label}"] = labels[label].astype(bool) if len(raw) else pd.Series(dtype=bool)
    return out
