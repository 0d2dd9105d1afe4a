"""What the downstream heads predict: which manifest columns, their units, masks and training subsets.

Three kinds of target, all read from a training set's ``manifest.csv``:

- **regression**: the UK Biobank CMR indices (fields 24100–24181, named in
  `cardiacnets.data.ukb_fields`: ``lvedv_ml``, ``lvef_pct``, ``lvm_g``, ...,
  ``wt_global``), or the indices measured on the segmentations (``seg_lvedv_ml``
  ...); by default every one of them the manifest has. Missing values are NaN
  and are masked in the loss. Each target is standardised with the mean and
  standard deviation of the training subjects (`TargetStandardizer`), which
  the model saves.
- **binary**: the disease labels (``label_*`` columns, from the ICD-10 mapping
  for UK Biobank sources or the PTB-XL statements): coronary artery disease,
  cardiomyopathy, pericardial disease, heart failure, pulmonary hypertension,
  myocarditis; ``label_LVH``, ``label_HYP``, ``label_MI`` ... on PTB-XL.
- **multiclass**: the cardiomyopathy subtype from the ``icd10`` column
  (`cardiomyopathy_subtype`): none / dilated (I42.0) / hypertrophic (I42.1–I42.2)
  / restrictive (I42.5); other cardiomyopathies (I42.8, I43, I25.5 ...) and
  subjects with codes of two subtypes have no subtype label (masked).

Training subsets: `select_label_fraction` draws a seeded, stratified fraction
of the labelled training subjects (the label-fraction experiments), and
`match_case_control` keeps the cases of one label with as many matched
controls (same sex, nearest age).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cardiacnets.data.labels import normalize_icd10
from cardiacnets.data.store import TrainingSet
from cardiacnets.data.ukb_fields import CMR_FIELD_BY_NAME, CMR_FIELDS
from cardiacnets.errors import InputError

LABEL_PREFIX = "label_"
SEG_PREFIX = "seg_"
ICD10_COLUMN = "icd10"
CARDIOMYOPATHY_SUBTYPE = "cardiomyopathy_subtype"
#: Subtype classes in output order, with the ICD-10 codes (no dot) that mean each; "none" = no cardiomyopathy code.
CARDIOMYOPATHY_SUBTYPES: dict[str, tuple[str, ...]] = {
    "none": (),
    "dilated": ("I420",),
    "hypertrophic": ("I421", "I422"),
    "restrictive": ("I425",),
}
#: Codes of a cardiomyopathy without one of the subtypes above (the subject's subtype is unknown).
OTHER_CARDIOMYOPATHY_PREFIXES: tuple[str, ...] = ("I42", "I43", "I255")
#: Units of the segmentation-measured indices (``seg_<name>``), where the name is not a UK Biobank field.
_SEG_UNITS = {"ed_frame": "frame", "es_frame": "frame"}
#: The simulator's ceiling (``ceiling.json``) names indices by these keys; manifest columns that differ map here.
CEILING_KEYS: dict[str, str] = {"wt_global": "lv_wall_thickness_mm"}


@dataclass
class HeadTargets:
    """The resolved targets of a heads model.

    Attributes:
        regression: manifest columns of the regression targets.
        units: unit of each regression target (``ml``, ``%``, ``g``, ``mm`` ...).
        binary: manifest columns of the binary targets (``label_heart_failure`` ...).
        multiclass: name of the multiclass target (``cardiomyopathy_subtype``) or ``None``.
        classes: its class names, in output order.
    """

    regression: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    binary: list[str] = field(default_factory=list)
    multiclass: str | None = None
    classes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Every manifest column a sample's ``targets`` must carry (the multiclass one is derived)."""
        return [*self.regression, *self.binary, *([self.multiclass] if self.multiclass else [])]

    def is_empty(self) -> bool:
        return not (self.regression or self.binary or self.multiclass)


def display_name(column: str) -> str:
    """A target's short name: ``label_heart_failure`` → ``heart_failure``; other names unchanged."""
    return column[len(LABEL_PREFIX):] if column.startswith(LABEL_PREFIX) else column


def target_unit(column: str) -> str:
    """Unit of a regression target column (``lvedv_ml`` → ``ml``, ``seg_lvef_pct`` → ``%``).

    Raises:
        KeyError: a column that names no known index.
    """
    name = column[len(SEG_PREFIX):] if column.startswith(SEG_PREFIX) else column
    if name in CMR_FIELD_BY_NAME:
        return CMR_FIELD_BY_NAME[name].unit
    if column.startswith(SEG_PREFIX) and name in _SEG_UNITS:
        return _SEG_UNITS[name]
    raise KeyError(f"{column!r} is not a known cardiac index (cardiacnets.data.ukb_fields)")


def ceiling_key(column: str) -> str:
    """The key of a regression target in the simulator's ``ceiling.json`` (``seg_lvedv_ml`` → ``lvedv_ml``)."""
    name = column[len(SEG_PREFIX):] if column.startswith(SEG_PREFIX) else column
    return CEILING_KEYS.get(name, name)


def cardiomyopathy_subtype(codes: str | float | None) -> float:
    """The cardiomyopathy subtype class of one subject's ICD-10 codes.

    Args:
        codes: the manifest's ``icd10`` cell: codes joined by ``;`` (``"I420;I500"``), or
            empty/NaN for a subject without diagnoses.

    Returns:
        The index into `CARDIOMYOPATHY_SUBTYPES` (0 = none), or NaN when the subtype is
        unknown (another cardiomyopathy code, or codes of two subtypes).
    """
    if codes is None or (isinstance(codes, float) and math.isnan(codes)):
        return 0.0
    clean = [normalize_icd10(c) for c in str(codes).split(";") if c.strip()]
    found = {index for index, subtype_codes in enumerate(CARDIOMYOPATHY_SUBTYPES.values())
             for c in clean if any(c.startswith(s) for s in subtype_codes)}
    if len(found) == 1:
        return float(found.pop())
    if found or any(c.startswith(p) for c in clean for p in OTHER_CARDIOMYOPATHY_PREFIXES):
        return math.nan
    return 0.0


def with_derived_targets(manifest: pd.DataFrame) -> pd.DataFrame:
    """A copy of `manifest` with the derived target columns added (`CARDIOMYOPATHY_SUBTYPE` from ``icd10``)."""
    out = manifest.copy()
    if ICD10_COLUMN in out.columns:
        out[CARDIOMYOPATHY_SUBTYPE] = out[ICD10_COLUMN].map(cardiomyopathy_subtype).astype(float)
    return out


def available_regression_targets(manifest: pd.DataFrame) -> list[str]:
    """The UK Biobank CMR index columns (`CMR_FIELDS` order) the manifest has with at least one value."""
    return [f.name for f in CMR_FIELDS if f.name in manifest.columns and manifest[f.name].notna().any()]


def available_binary_targets(manifest: pd.DataFrame) -> list[str]:
    """The ``label_*`` columns of the manifest, in manifest order."""
    return [c for c in manifest.columns if c.startswith(LABEL_PREFIX)]


def resolve_targets(manifest: pd.DataFrame, regression: list[str] | None, binary: list[str] | None,
                    multiclass: bool, source: str | os.PathLike) -> tuple[HeadTargets, list[str]]:
    """Decide the targets of a model from a (training split) manifest.

    Explicit lists must name existing columns that have both classes (binary) or at least
    two values (regression) among `manifest`'s rows; with ``None`` every available column
    is used and those without enough labels are dropped and reported.

    Args:
        manifest: the training subjects' manifest rows (with `with_derived_targets` columns).
        regression: regression columns, or ``None`` for `available_regression_targets`.
        binary: binary label columns, or ``None`` for `available_binary_targets`.
        multiclass: predict the cardiomyopathy subtype (when the manifest has ``icd10``).
        source: file named in errors.

    Returns:
        ``(targets, dropped)``: the `HeadTargets` and ``"column: reason"`` for each
        automatically chosen column that was dropped.

    Raises:
        InputError: an explicit column is missing, not numeric, or has too few labels; no target at all.
    """
    dropped: list[str] = []

    def usable(column: str, kind: str, explicit: bool) -> bool:
        if column not in manifest.columns:
            raise InputError(source, f"manifest has no target column {column!r}")
        values = pd.to_numeric(manifest[column], errors="coerce")
        if kind == "regression" and explicit:
            try:
                target_unit(column)
            except KeyError as err:
                raise InputError(source, str(err).strip("'\"")) from None
        present = values.dropna()
        if kind == "regression":
            problem = None if present.nunique() >= 2 else "fewer than two distinct values among the training subjects"
        else:
            problem = None if set(present.unique()) >= {0.0, 1.0} else \
                "needs cases and controls among the training subjects"
        if problem is None:
            return True
        if explicit:
            raise InputError(source, f"target {column!r}: {problem}")
        dropped.append(f"{column}: {problem}")
        return False

    reg = [c for c in (regression if regression is not None else available_regression_targets(manifest))
           if usable(c, "regression", regression is not None)]
    binary_columns = [c for c in (binary if binary is not None else available_binary_targets(manifest))
                      if usable(c, "binary", binary is not None)]
    targets = HeadTargets(regression=reg, units=[target_unit(c) for c in reg], binary=binary_columns)
    if multiclass and CARDIOMYOPATHY_SUBTYPE in manifest.columns:
        present = manifest[CARDIOMYOPATHY_SUBTYPE].dropna()
        if present.nunique() >= 2:
            targets.multiclass, targets.classes = CARDIOMYOPATHY_SUBTYPE, list(CARDIOMYOPATHY_SUBTYPES)
        else:
            dropped.append(f"{CARDIOMYOPATHY_SUBTYPE}: fewer than two subtypes among the training subjects")
    elif multiclass:
        dropped.append(f"{CARDIOMYOPATHY_SUBTYPE}: the manifest has no {ICD10_COLUMN!r} column")
    if targets.is_empty():
        raise InputError(source, "no target to train: no regression, binary or multiclass column has labels "
                                 f"({'; '.join(dropped) or 'none requested'})")
    return targets, dropped


def target_matrix(manifest: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """(n, len(columns)) float64 values of the columns, NaN where missing (booleans as 0/1)."""
    if not columns:
        return np.zeros((len(manifest), 0))
    return np.stack([pd.to_numeric(manifest[c], errors="coerce").to_numpy(dtype=np.float64) for c in columns], axis=1)


def labelled_rows(manifest: pd.DataFrame, targets: HeadTargets) -> np.ndarray:
    """(n,) bool: the subject has a value for at least one target."""
    return np.isfinite(target_matrix(manifest, targets.columns)).any(axis=1)


def stratum_keys(manifest: pd.DataFrame, targets: HeadTargets) -> np.ndarray:
    """(n,) strings: each subject's pattern of binary and multiclass labels (``"0,1,-,2"``), for stratification."""
    columns = [*targets.binary, *([targets.multiclass] if targets.multiclass else [])]
    values = target_matrix(manifest, columns)
    return np.array([",".join("-" if not np.isfinite(v) else str(int(v)) for v in row) for row in values]) \
        if columns else np.full(len(manifest), "", dtype=object)


def select_label_fraction(manifest: pd.DataFrame, targets: HeadTargets, fraction: float, seed: int) -> np.ndarray:
    """A seeded, stratified subset of the labelled subjects.

    Subjects are ordered by their label pattern (`stratum_keys`), randomly within a
    pattern, and every (1 / fraction)-th is taken from a random start (systematic
    sampling): each pattern keeps its share of the subset to within one subject.

    Args:
        manifest: the training split's rows (with derived target columns).
        targets: the model's targets.
        fraction: in (0, 1]; the subset has ``round(fraction × labelled)`` subjects (at least 1).
        seed: seed of the draw.

    Returns:
        (n,) bool mask of the chosen rows (unlabelled rows are never chosen).

    Raises:
        ValueError: `fraction` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labelled = np.flatnonzero(labelled_rows(manifest, targets))
    keep = np.zeros(len(manifest), dtype=bool)
    if fraction == 1.0 or len(labelled) == 0:
        keep[labelled] = True
        return keep
    rng = np.random.default_rng([seed, 7253])
    n_keep = max(1, int(round(fraction * len(labelled))))
    _, key_codes = np.unique(stratum_keys(manifest.iloc[labelled], targets), return_inverse=True)
    order = labelled[np.lexsort((rng.random(len(labelled)), key_codes))]  # by pattern, random within
    step = len(labelled) / n_keep
    positions = np.floor(rng.random() * step + np.arange(n_keep) * step).astype(int)
    keep[order[np.minimum(positions, len(order) - 1)]] = True
    return keep


def match_case_control(manifest: pd.DataFrame, label: str, seed: int, source: str | os.PathLike = "manifest"
                       ) -> np.ndarray:
    """Every case of `label` and one matched control per case.

    Cases are visited in a seeded random order; each takes the unused control of the
    same sex (``sex_male``) with the nearest age (``age_years``), ties broken at random.
    Without those columns (or when a sex runs out of controls) the nearest age over
    both sexes, or a random control, is taken. Subjects without the label are dropped.

    Args:
        manifest: candidate rows.
        label: a binary label column.
        seed: seed of the case order and tie breaks.
        source: file named in errors.

    Returns:
        (n,) bool mask of the cases and their controls.

    Raises:
        InputError: the label column is missing or there are more cases than controls.
    """
    if label not in manifest.columns:
        raise InputError(source, f"cannot balance on {label!r}: the manifest has no such column")
    y = pd.to_numeric(manifest[label], errors="coerce").to_numpy(dtype=np.float64)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(cases) > len(controls):
        raise InputError(source, f"cannot match {len(cases)} cases of {label!r} with only {len(controls)} controls")
    rng = np.random.default_rng([seed, 4099])
    sex = (pd.to_numeric(manifest["sex_male"], errors="coerce").to_numpy(dtype=np.float64)
           if "sex_male" in manifest.columns else np.full(len(manifest), np.nan))
    age = (pd.to_numeric(manifest["age_years"], errors="coerce").to_numpy(dtype=np.float64)
           if "age_years" in manifest.columns else np.full(len(manifest), np.nan))
    jitter = rng.random(len(manifest)) * 1e-6  # random tie break between equal ages
    unused = np.ones(len(manifest), dtype=bool)
    keep = np.zeros(len(manifest), dtype=bool)
    keep[cases] = True
    for case in rng.permutation(cases):
        pool = controls[unused[controls]]
        same_sex = pool[sex[pool] == sex[case]] if np.isfinite(sex[case]) else pool[:0]
        pool = same_sex if len(same_sex) else pool
        distance = np.abs(age[pool] - age[case]) if np.isfinite(age[case]) else np.zeros(len(pool))
        distance = np.where(np.isfinite(distance), distance, np.inf) + jitter[pool]
        chosen = pool[int(np.argmin(distance))]
        unused[chosen] = False
        keep[chosen] = True
    return keep


@dataclass
class TargetStandardizer:
    """Standardisation of the regression targets, fitted on the training subjects only.

    Attributes:
        mean: per target, the mean of the training subjects that have a value (unit of the target).
        std: per target, their (population) standard deviation; 1 for a constant target.
    """

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, values: np.ndarray) -> TargetStandardizer:
        """Fit on (n, k) training values (NaN = missing; every column needs a value)."""
        mean, std = [], []
        for column in np.asarray(values, dtype=np.float64).T:
            present = column[np.isfinite(column)]
            if present.size == 0:
                raise ValueError("a regression target has no value among the training subjects")
            spread = float(present.std())
            mean.append(float(present.mean()))
            std.append(spread if spread > 1e-12 else 1.0)
        return cls(mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """(n, k) values in their units → standardised (NaN stays NaN)."""
        return (np.asarray(values, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """(n, k) standardised values → their units."""
        return np.asarray(z, dtype=np.float64) * np.asarray(self.std) + np.asarray(self.mean)


def restrict_training_set(training_set: TrainingSet, columns: list[str], keep: np.ndarray | None = None
                          ) -> TrainingSet:
    """A view of a `TrainingSet` for the heads: derived target columns, chosen rows, no cines.

    The original is not changed; the view shares its memory-mapped arrays.

    Args:
        training_set: an opened split.
        columns: target columns the samples carry under ``targets`` (derived ones included).
        keep: (len(training_set),) bool rows to keep, in order; ``None`` keeps all.

    Returns:
        The view: its samples hold the ECG and ``targets``; the CMR views are not read.

    Raises:
        InputError: a target column the manifest lacks.
    """
    manifest = with_derived_targets(training_set.manifest)
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise InputError(training_set.root, f"manifest has no target column(s) {missing}")
    if keep is not None:
        manifest = manifest[np.asarray(keep, dtype=bool)]
    view = copy.copy(training_set)
    view.manifest = manifest.reset_index(drop=True)
    view.targets = tuple(columns)
    view.views = []  # the heads read the ECG only: skip the cines
    return view


def open_heads_split(root: str | os.PathLike, split: str | None, columns: list[str]) -> TrainingSet:
    """The subjects of `split` with an ECG, as a `restrict_training_set` view carrying `columns`.

    Raises:
        InputError: not a training set, a missing column, or no subject with an ECG in the split.
    """
    training_set = TrainingSet(root, split=split, require=("ecg",))
    if len(training_set) == 0:
        raise InputError(root, f"no subjects with an ECG in split {split!r}")
    return restrict_training_set(training_set, columns)
