"""The torch data pipeline: a ``Dataset`` over a `TrainingSet`, augmentations, demographics and a resumable sampler.

`CardiacTorchDataset` turns the memory-mapped samples of a `TrainingSet`
into dicts of tensors with the fixed keys used from the dataset to the loss:

    ecg                 (12, T) float32, mV
    ecg_lead_mask       (12,) bool, lead recorded and usable
    ecg_sample_mask     (T,) bool, sample inside the recorded window
    cmr_<view>          (slices, frames, H, W) float32 in [0, 1] (zeros where absent)
    has_<view>          bool, the subject has this view
    demographics        (n,) float32, standardised (see `DemographicsNormalizer`), 0 where missing
    demographics_mask   (n,) bool, False where the value is missing
    targets             {column: float32 scalar}, NaN where missing
    subject_id          str
    index               int, position in the dataset

Augmentations are MONAI dictionary transforms (`cardiacnets.data.transforms`:
``RandScaleIntensityd``, ``RandGaussianNoised`` on the ECG; ``RandAdjustContrastd``,
``RandAffined`` on the cines). Their randomness is seeded per sample from ``(seed, epoch,
index)``, so a sample is augmented identically whatever the number of loader
workers, the process count or whether the run was resumed.

`EpochBatchSampler` fixes the sample order of every epoch from the seed
(one permutation per epoch, shared by all processes, which take consecutive
slices of each global batch) and can start at any batch: that is what makes a
resumed run see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cardiacnets.data.store import TrainingSet
from cardiacnets.data.transforms import AugmentConfig, build_augmentation
from cardiacnets.errors import InputError

DEFAULT_DEMOGRAPHICS: tuple[str, ...] = ("age_years", "sex_male", "bmi")


@dataclass
class DemographicsNormalizer:
    """Standardisation of the demographics vector, fitted on the training split only.

    ``z = (x - mean) / std`` per column with the mean and (population) standard
    deviation of the subjects of the training split that have a value; binary
    columns (``sex_male``) are standardised the same way. A missing value
    becomes 0 (the training mean) with its mask entry False, so a model can
    tell "average" from "unknown". Saved as JSON with every run
    (``RUN/demographics.json``) so inference normalises identically.

    Attributes:
        columns: manifest columns, in vector order.
        mean: training mean per column.
        std: training standard deviation per column (1 for a constant column).
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, manifest: pd.DataFrame, columns: Sequence[str],
            source: str | os.PathLike = "manifest") -> DemographicsNormalizer:
        """Fit on the rows of a (training split) manifest.

        Args:
            manifest: the training subjects' manifest rows.
            columns: demographic columns to use.
            source: file or folder named in errors.

        Returns:
            The fitted normaliser.

        Raises:
            InputError: a column is absent or has no value in the training split.
        """
        means, stds = [], []
        for column in columns:
            if column not in manifest.columns:
                raise InputError(source, f"manifest has no demographic column {column!r}")
            values = pd.to_numeric(manifest[column], errors="coerce").astype(float).to_numpy()
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise InputError(source, f"demographic column {column!r} has no value in the training split")
            std = float(values.std())
            means.append(float(values.mean()))
            stds.append(std if std > 0 else 1.0)
        return cls(tuple(columns), tuple(means), tuple(stds))

    def transform(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise one subject's raw values.

        Args:
            values: (n_columns,) raw values, NaN where missing.

        Returns:
            ``(z, present)``: (n_columns,) float32 standardised values with 0 where
            missing, and the (n_columns,) bool mask of present values.
        """
        values = np.asarray(values, dtype=np.float64)
        present = np.isfinite(values)
        z = (values - np.asarray(self.mean)) / np.asarray(self.std)
        return np.where(present, z, 0.0).astype(np.float32), present

    def to_config(self) -> dict[str, list]:
        """``{"columns", "mean", "std"}`` as lists: the form pipelines and read-outs keep in their config."""
        return {k: list(v) for k, v in asdict(self).items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the normaliser as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DemographicsNormalizer:
        """Read a normaliser written by `save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            norm = cls(tuple(data["columns"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"not a demographics normaliser ({err})") from None
        if not len(norm.columns) == len(norm.mean) == len(norm.std):
            raise InputError(path, "columns, mean and std differ in length")
        return norm


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class CardiacTorchDataset(Dataset):
    """A `TrainingSet` as a torch ``Dataset`` of tensor dicts (keys in the module docstring).

    Args:
        training_set: the opened training set (one split).
        demographics: normaliser for the ``demographics`` vector; ``None`` leaves it out.
        augment: training augmentations; ``None`` for none (validation).
        seed: run seed; a sample's augmentation is seeded by ``(seed, epoch, index)``.
        views: CMR views to return (default: every stored view).
        segmentations: also return ``seg_<view>`` (uint8) where stored.
    """

    def __init__(self, training_set: TrainingSet, demographics: DemographicsNormalizer | None = None,
                 augment: AugmentConfig | None = None, seed: int = 0, views: Sequence[str] | None = None,
                 segmentations: bool = False):
        self.training_set = training_set
        self.demographics = demographics
        self.views = list(training_set.views if views is None else views)
        unknown = [v for v in self.views if v not in training_set.views]
        if unknown:
            raise InputError(training_set.root,
                             f"training set has no CMR view(s) {unknown}; stored: {training_set.views}")
        self.segmentations = segmentations
        self.seed = seed
        self.augmentation = build_augmentation(augment, self.views) if augment is not None else None
        if demographics is not None:
            missing = [c for c in demographics.columns if c not in training_set.manifest.columns]
            if missing:
                raise InputError(training_set.root, f"manifest has no demographic column(s) {missing}")
            # (N, n_columns) raw values, NaN where missing; read once instead of per sample.
            self._demographics = training_set.manifest[list(demographics.columns)].apply(
                pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.training_set)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """One sample; `key` is an index or ``(epoch, index)`` (the epoch seeds its augmentation)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        raw = self.training_set[index]
        sample: dict = {"index": index, "subject_id": raw["subject_id"]}
        if "ecg" in raw:
            sample["ecg"] = torch.from_numpy(raw["ecg"])
            sample["ecg_lead_mask"] = torch.tensor(raw["ecg_lead_mask"])  # copies: the memory map is read-only
            sample["ecg_sample_mask"] = torch.from_numpy(raw["ecg_sample_mask"])
        for view in self.views:
            sample[f"cmr_{view}"] = torch.from_numpy(raw[f"cmr_{view}"])
            sample[f"has_{view}"] = torch.tensor(raw[f"has_{view}"])
            if self.segmentations and f"seg_{view}" in raw:
                sample[f"seg_{view}"] = torch.tensor(raw[f"seg_{view}"])
        if self.demographics is not None:
            z, present = self.demographics.transform(self._demographics[index])
            sample["demographics"] = torch.from_numpy(z)
            sample["demographics_mask"] = torch.from_numpy(present)
        sample["targets"] = {name: torch.tensor(value, dtype=torch.float32) for name, value in raw["targets"].items()}
        if self.augmentation is not None:
            sample = self._augment(sample, sample_seed(self.seed, epoch, index))
        return sample

    def _augment(self, sample: dict, seed: int) -> dict:
        from monai.utils import convert_to_tensor

        self.augmentation.set_random_state(seed=seed)
        # MONAI image transforms want channel-first arrays: the cine's slices x frames become channels.
        cine_shapes = {}
        data = dict(sample)
        for view in self.views:
            key = f"cmr_{view}"
            cine_shapes[key] = data[key].shape
            data[key] = rearrange(data[key], "s f h w -> (s f) h w")
        data = self.augmentation(data)
        out = dict(sample)
        out["ecg"] = convert_to_tensor(data["ecg"], dtype=torch.float32, track_meta=False)
        for key, shape in cine_shapes.items():
            cine = convert_to_tensor(data[key], dtype=torch.float32, track_meta=False)
            out[key] = rearrange(cine, "(s f) h w -> s f h w", s=shape[0]).clamp(0.0, 1.0)
        return out


def collate_samples(samples: list[dict]) -> dict:
    """Stack samples into a batch: tensors gain a leading batch axis, ``subject_id`` becomes a list."""
    return default_collate(samples)


def move_to_device(batch, device: torch.device):
    """Move every tensor of a (nested) batch to `device`; other values stay as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    return batch


def batches_per_epoch(n_items: int, batch_size: int, num_replicas: int = 1) -> int:
    """Complete global batches (of ``batch_size × num_replicas`` samples) in one epoch."""
    return n_items // (batch_size * num_replicas)


@dataclass
class EpochBatchSampler(Sampler):
    """Per-process training batches of ``(epoch, index)`` keys in a seeded, per-epoch order.

    Epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(n)`` (or
    ``0..n-1`` without shuffling) in global batches of ``batch_size ×
    num_replicas``; process ``rank`` takes the ``rank``-th slice of each. The
    incomplete last global batch is dropped, so every process gets the same
    number of equally sized batches (the contrastive gather needs that).

    Attributes:
        n_items: dataset size (indices ``0..n_items-1`` are used).
        batch_size: samples per process per batch.
        seed: run seed.
        epoch: which epoch's order to yield.
        shuffle: permute per epoch.
        num_replicas: number of processes.
        rank: this process.
        start_batch: first batch to yield (resuming inside an epoch).
        max_batches: stop after this many batches of the epoch (``None``: all complete ones).
    """

    n_items: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    shuffle: bool = True
    num_replicas: int = 1
    rank: int = 0
    start_batch: int = 0
    max_batches: int | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch`."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        return np.arange(self.n_items)

    def _stop(self) -> int:
        total = batches_per_epoch(self.n_items, self.batch_size, self.num_replicas)
        return total if self.max_batches is None else min(total, self.max_batches)

    def __len__(self) -> int:
        return max(0, self._stop() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        for b in range(self.start_batch, self._stop()):
            start = (b * self.num_replicas + self.rank) * self.batch_size
            yield [(self.epoch, int(i)) for i in order[start:start + self.batch_size]]


def shard_batches(n_items: int, batch_size: int, num_replicas: int = 1, rank: int = 0) -> list[list[int]]:
    """Evaluation batches of one process: a contiguous share of ``0..n_items-1`` in dataset order.

    Every sample is visited once over all processes, none is repeated (shares
    differ by at most one sample; a process gets none only when ``n_items`` <
    ``num_replicas``).

    Args:
        n_items: dataset size.
        batch_size: samples per batch.
        num_replicas: number of processes.
        rank: this process.

    Returns:
        The batches (lists of indices) of process `rank`.
    """
    start, stop = rank * n_items // num_replicas, (rank + 1) * n_items // num_replicas
    return [list(range(i, min(i + batch_size, stop))) for i in range(start, stop, batch_size)]


def make_loader(dataset: Dataset, sampler: EpochBatchSampler | list[list[int]], workers: int = 0,
                pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over `dataset` with the batches of `sampler`.

    The loader gets its own generator, so creating it never consumes the global
    torch random stream (which would make a resumed run diverge).

    Args:
        dataset: a `CardiacTorchDataset`.
        sampler: yields the per-process batches (an `EpochBatchSampler` or a list from `shard_batches`).
        workers: loader worker processes (0 = load in the main process).
        pin_memory: pin host memory (for GPU training).
        seed: seed of the loader's own generator (worker seeds; the samples seed their augmentation themselves).

    Returns:
        The ``DataLoader``.
    """
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_samples,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)
