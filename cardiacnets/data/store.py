"""Memory-mapped training sets on disk, and the dataset that reads them.

A training set folder holds:

    manifest.csv        one row per subject: ids, split, which modalities exist,
                        targets, demographics, file provenance
    dataset.yaml        resolved preprocessing config, array shapes and dtypes
    ecg.npy             (N, 12, T) standard ECGs          (float16 by default)
    ecg_lead_mask.npy   (N, 12) bool, lead present and usable
    cmr_<view>.npy      (N, slices, frames, H, W) cines in [0, 1]
    seg_<view>.npy      (N, slices, frames, H, W) uint8 labels, when segmented
    failures.csv        records skipped, with the reason
    report.json         counts and timings of the last run

Arrays are ``.npy`` files opened with ``mmap_mode``: reading a sample touches
only its pages, so RAM stays flat however many subjects the set holds, and
writers fill rows in place from several processes (`RowWriter`: positioned
writes, no memory map, so a writer's memory does not grow with the set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cardiacnets.errors import InputError

MANIFEST = "manifest.csv"
DATASET_YAML = "dataset.yaml"
FAILURES = "failures.csv"
#: The settings and ceiling of the simulated cohort a demo or reference build made this set from (kept so the
#: cohort itself, about 6 MB a subject, can be deleted; see cardiacnets.demo.run).
COHORT_RECORD = "demo_cohort.json"
REPORT = "report.json"


@dataclass(frozen=True)
class ArraySpec:
    """One per-subject array: its file stem, per-row shape and dtype."""

    name: str
    row_shape: tuple[int, ...]
    dtype: str

    def path(self, root: Path) -> Path:
        return Path(root) / f"{self.name}.npy"


def create_arrays(root: Path, n_rows: int, specs: list[ArraySpec]) -> None:
    """Create zero-filled (sparse) ``.npy`` arrays of ``n_rows`` rows."""
    for spec in specs:
        arr = np.lib.format.open_memmap(spec.path(root), mode="w+", dtype=np.dtype(spec.dtype), shape=(n_rows, *spec.row_shape))
        del arr


def open_arrays(root: Path, specs: list[ArraySpec], mode: str = "r") -> dict[str, np.memmap]:
    """Open existing arrays as memory maps (``mode`` "r" or "r+")."""
    return {spec.name: np.load(spec.path(root), mmap_mode=mode) for spec in specs}


class RowWriter:
    """Writes whole rows of existing ``.npy`` arrays in place, with positioned writes.

    Unlike a writable memory map, this keeps nothing of the array mapped, so a
    worker's address space and resident memory stay small however large the
    training set is (which lets a worker run under a memory limit).

    Args:
        root: the training set folder.
        specs: the arrays to write; each file must exist with its spec's dtype
            and row shape (C order).
    """

    def __init__(self, root: Path, specs: list[ArraySpec]):
        self._files: dict[str, tuple[int, int, int, np.dtype, tuple[int, ...]]] = {}
        try:
            for spec in specs:
                path = spec.path(root)
                fd = os.open(path, os.O_RDWR)
                with open(path, "rb") as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, fortran_order, dtype = read_header(stream)
                    offset = stream.tell()
                if fortran_order or dtype != np.dtype(spec.dtype) or tuple(shape[1:]) != tuple(spec.row_shape):
                    os.close(fd)
                    raise InputError(path, f"array does not match its spec {spec}; the training set is damaged")
                row_bytes = int(np.prod(spec.row_shape)) * dtype.itemsize
                self._files[spec.name] = (fd, offset, row_bytes, dtype, tuple(spec.row_shape))
        except BaseException:
            self.close()
            raise

    def write(self, name: str, row: int, values: np.ndarray) -> None:
        """Store `values` (cast to the array's dtype, shape = the row shape) as row `row` of array `name`."""
        fd, offset, row_bytes, dtype, row_shape = self._files[name]
        block = np.ascontiguousarray(values, dtype=dtype)
        if block.shape != row_shape:
            raise ValueError(f"{name}: row of shape {block.shape}, the array's rows are {row_shape}")
        data = block.tobytes()
        position = offset + row * row_bytes
        while data:  # pwrite may write less than asked
            written = os.pwrite(fd, data, position)
            data, position = data[written:], position + written

    def sync(self) -> None:
        """Make the rows written so far durable (fdatasync each file)."""
        for fd, *_ in self._files.values():
            (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)

    def close(self) -> None:
        for fd, *_ in self._files.values():
            os.close(fd)
        self._files = {}


def specs_from_yaml(info: dict) -> list[ArraySpec]:
    return [ArraySpec(a["name"], tuple(a["row_shape"]), a["dtype"]) for a in info.get("arrays", [])]


def read_dataset_info(root: str | os.PathLike) -> dict:
    """A training set's ``dataset.yaml``: the resolved preprocessing config (``config``), the arrays and the raw folder.

    Raises:
        InputError: the folder has no ``dataset.yaml``.
    """
    path = Path(root) / DATASET_YAML
    if not path.is_file():
        raise InputError(root, f"not a cardiacnets training set (no {DATASET_YAML})")
    return yaml.safe_load(path.read_text()) or {}


class TrainingSet:
    """A preprocessed training set, read lazily from its memory-mapped arrays.

    Samples are dicts with fixed keys: ``subject_id``, ``split``, ``ecg``
    (12, T) float32, ``ecg_lead_mask`` (12,) bool, ``ecg_sample_mask`` (T,) bool,
    ``cmr_<view>`` (slices, frames, H, W) float32 for each stored view (zeros
    and ``has_<view>`` False where absent), ``seg_<view>`` when stored, and
    ``targets``: a dict of the numeric manifest columns named in `targets`.

    Args:
        root: the training set folder.
        split: keep only this split (``"train"``, ``"val"``, ``"test"``) or all.
        require: modalities a subject must have (``"ecg"``, ``"sa"``, ``"la_4ch"``...).
        targets: manifest columns returned under ``targets`` (NaN where missing).
    """

    def __init__(self, root: str | Path, split: str | None = None, require: tuple[str, ...] = (), targets: tuple[str, ...] = ()):
        self.root = Path(root)
        self.split = split
        manifest_path = self.manifest_path
        if not manifest_path.is_file():
            raise InputError(self.root, f"not a cardiacnets training set (no {MANIFEST}); run 'cardiacnets preprocess' first")
        self.info = read_dataset_info(self.root)
        manifest = pd.read_csv(manifest_path, dtype={"subject_id": str, "patient_id": str, "ecg_quality": str})
        if split is not None:
            manifest = manifest[manifest["split"] == split]
        for modality in require:
            col = f"has_{modality}"
            if col not in manifest.columns:
                raise InputError(self.root, f"training set has no modality {modality!r}")
            manifest = manifest[manifest[col].astype(bool)]
        missing = [t for t in targets if t not in manifest.columns]
        if missing:
            raise InputError(self.root, f"manifest has no target column(s) {missing}")
        self.manifest = manifest.reset_index(drop=True)
        self.targets = tuple(targets)
        self.arrays = open_arrays(self.root, specs_from_yaml(self.info), mode="r")
        self.views = [name[len("cmr_"):] for name in self.arrays if name.startswith("cmr_")]

    @property
    def manifest_path(self) -> Path:
        """The set's ``manifest.csv`` (named in errors about its columns)."""
        return self.root / MANIFEST

    @property
    def config(self) -> dict:
        """The resolved preprocessing config of ``dataset.yaml`` (``ecg``, ``cmr`` ... sections; empty if absent)."""
        return self.info.get("config") or {}

    def row_shape(self, name: str) -> tuple[int, ...] | None:
        """Per-subject shape of a stored array (``"ecg"``, ``"cmr_sa"``, ``"seg_sa"`` ...), ``None`` if not stored."""
        shapes = {spec.name: spec.row_shape for spec in specs_from_yaml(self.info)}
        return shapes.get(name)

    def segmentations(self, view: str, positions) -> np.ndarray:
        """The stored label cines of some subjects of this set.

        Args:
            view: the CMR view (``"sa"``, ``"la_4ch"`` ...).
            positions: positions in `manifest` (not array rows).

        Returns:
            (len(positions), slices, frames, H, W) uint8 labels in the `SEG_LABELS` convention.

        Raises:
            InputError: the set stores no segmentations of `view`.
        """
        name = f"seg_{view}"
        if name not in self.arrays:
            raise InputError(self.root, f"the training set stores no segmentations of view {view!r} ({name}.npy)")
        rows = self.manifest["row"].to_numpy()[np.asarray(positions, dtype=int)].astype(int)
        return np.asarray(self.arrays[name][rows])

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict:
        row = self.manifest.iloc[index]
        r = int(row["row"])
        sample = {"subject_id": str(row["subject_id"]), "split": str(row["split"])}
        if "ecg" in self.arrays:
            n_samples = self.arrays["ecg"].shape[-1]
            mask = np.zeros(n_samples, dtype=bool)
            mask[int(row["ecg_valid_start"]):int(row["ecg_valid_end"])] = True
            sample["ecg"] = np.asarray(self.arrays["ecg"][r], dtype=np.float32)
            sample["ecg_lead_mask"] = np.asarray(self.arrays["ecg_lead_mask"][r], dtype=bool)
            sample["ecg_sample_mask"] = mask
            sample["has_ecg"] = bool(row["has_ecg"])
        for view in self.views:
            sample[f"cmr_{view}"] = np.asarray(self.arrays[f"cmr_{view}"][r], dtype=np.float32)
            sample[f"has_{view}"] = bool(row[f"has_{view}"])
            if f"seg_{view}" in self.arrays:
                sample[f"seg_{view}"] = np.asarray(self.arrays[f"seg_{view}"][r])
        sample["targets"] = {t: float(row[t]) if pd.notna(row[t]) else float("nan") for t in self.targets}
        return sample
