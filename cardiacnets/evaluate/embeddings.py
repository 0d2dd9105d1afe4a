"""Embed a training-set split with an aligned ECG–CMR model, and save the embeddings.

`load_alignment_model` opens a training run (``RUN/model/``) or a saved model
folder and checks it can embed both modalities (a CardiacCLIP, CardiacNets
arXiv 2411.13602). `embed_split` runs it over one split of a memory-mapped
training set in batches under ``torch.inference_mode`` (eval mode, optional
bf16 autocast): only the current batch is read from disk, so a large split
never loads into RAM; only the (n, dim) embeddings are kept. `save_embeddings`
and `load_embeddings` write and read them as plain ``.npy`` files:

    embeddings_ecg.npy          (n, dim) float32, one row per subject
    embeddings_cmr_<view>.npy   (n, dim) float32, NaN rows where the subject has no such view
    subject_ids.txt             the n subject ids, in row order
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiacnets.errors import InputError

PRECISIONS = ("fp32", "bf16")
ECG_FILE = "embeddings_ecg.npy"
SUBJECTS_FILE = "subject_ids.txt"


def cmr_file(view: str) -> str:
    """File name of a view's CMR embeddings."""
    return f"embeddings_cmr_{view}.npy"


@dataclass
class SplitEmbeddings:
    """Embeddings of one split: row ``i`` of every array is ``subject_ids[i]``.

    Attributes:
        subject_ids: subject ids in row order.
        ecg: (n, dim) float32 ECG embeddings.
        cmr: view → (n, dim) float32 CMR embeddings, NaN rows where `has` is False.
        has: view → (n,) bool, subject has that view.
        seconds: wall-clock time spent embedding (0 when loaded from files).
    """

    subject_ids: list[str]
    ecg: np.ndarray
    cmr: dict[str, np.ndarray] = field(default_factory=dict)
    has: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def paired(self, view: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The ECG and `view` embeddings of the subjects who have both, and their ids."""
        rows = np.flatnonzero(self.has[view])
        return self.ecg[rows], self.cmr[view][rows], [self.subject_ids[r] for r in rows]


def load_alignment_model(run: str | os.PathLike):
    """Load the aligned ECG–CMR model of a run.

    Args:
        run: a training run folder (uses ``RUN/model/``) or a saved model folder.

    Returns:
        ``(model, model_dir)``: the model in eval mode on the CPU, and the folder it came from.

    Raises:
        InputError: no saved model there, unreadable weights, or a model that
            cannot embed both ECG and CMR.
    """
    from cardiacnets.models.pretrained import load_pretrained, resolve_model_dir

    model_dir = resolve_model_dir(run)
    model = load_pretrained(model_dir)
    if not (callable(getattr(model, "encode_ecg", None)) and callable(getattr(model, "encode_cmr", None))):
        raise InputError(model_dir, f"holds a {type(model).__name__}, which cannot embed both ECG and CMR "
                                    "(retrieval needs an aligned model such as CardiacCLIP)")
    model.eval()
    return model, model_dir


def model_views(model) -> tuple[str, ...] | None:
    """The CMR views a model has encoders for (``config.views``), or None when it does not say."""
    views = getattr(getattr(model, "config", None), "views", None)
    return None if views is None else tuple(views)


def autocast_context(device, precision: str):
    """``torch.autocast`` for bf16 on `device`, a no-op context for fp32."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def collate_samples(samples: list[dict]) -> dict:
    """Collate sample dicts into a batch dict of CPU tensors.

    Arrays and tensors are stacked with ``numpy.stack`` and wrapped with
    ``torch.from_numpy`` (no copy): on this project's 2-core CPU, stacking 64
    short-axis cines (64 × 1 × 25 × 64 × 64 float32) took 2-38 ms this way
    against 70-1200 ms with ``torch.stack`` (what ``default_collate`` uses; the
    slow end when the cores are shared with other processes). Segmentations
    (``seg_*``) are left out: no encoder reads them. Strings become lists,
    Python numbers and bools tensors, nested dicts (``targets``) are collated
    key by key.

    Args:
        samples: sample dicts with the same keys (`TrainingSet` or
            `cardiacnets.data.torch_data.CardiacTorchDataset` samples).

    Returns:
        The batch dict.
    """
    import torch

    batch = {}
    for key, first in samples[0].items():
        if key.startswith("seg_"):
            continue
        values = [sample[key] for sample in samples]
        if isinstance(first, dict):
            batch[key] = collate_samples(values)
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.from_numpy(np.stack([v.numpy() for v in values]))
        elif isinstance(first, np.ndarray):
            batch[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, str):
            batch[key] = values
        else:  # bool, int, float
            batch[key] = torch.as_tensor(values)
    return batch


def _select(batch, rows):
    """The sub-batch of `rows` (a bool tensor) from a collated batch dict."""
    import torch

    if isinstance(batch, dict):
        return {key: _select(value, rows) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor) and batch.ndim > 0 and batch.shape[0] == rows.shape[0]:
        return batch[rows]
    if isinstance(batch, (list, tuple)) and len(batch) == rows.shape[0]:
        keep = rows.tolist()
        return [item for item, k in zip(batch, keep) if k]
    return batch


def _to_device(batch, device):
    import torch

    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


def embed_split(model, dataset, views: tuple[str, ...], batch_size: int = 64, device: str = "cpu",
                precision: str = "fp32", num_workers: int = 0, collate_fn=None, progress: bool = False) -> SplitEmbeddings:
    """Embed every subject of `dataset` (ECG) and its CMR `views`.

    Args:
        model: an aligned model with ``encode_ecg(batch)`` and ``encode_cmr(batch, view)``
            returning (B, dim) embeddings.
        dataset: a map-style dataset of sample dicts (a `CardiacTorchDataset` or
            `TrainingSet` over one split's subjects with an ECG) with ``subject_id``,
            ``ecg``... (what the model reads) and ``cmr_<view>`` / ``has_<view>``
            for each view.
        views: the CMR views to embed.
        batch_size: subjects per forward pass.
        device: torch device to run on.
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        num_workers: DataLoader worker processes (0 reads in this process).
        collate_fn: batch collation (`collate_samples` when None).
        progress: show a progress bar.

    Returns:
        The `SplitEmbeddings`, float32 (CMR rows NaN where the view is absent).
    """
    import torch
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn or collate_samples)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="embedding", unit="batch")
    subject_ids: list[str] = []
    ecg_chunks: list[np.ndarray] = []
    cmr_chunks: dict[str, list[np.ndarray]] = {view: [] for view in views}
    has_chunks: dict[str, list[np.ndarray]] = {view: [] for view in views}
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(device, precision):
        for batch in loader:
            batch = _to_device(batch, device)
            subject_ids.extend(str(s) for s in batch["subject_id"])
            ecg = model.encode_ecg(batch).float()  # (batch, dim)
            ecg_chunks.append(ecg.cpu().numpy())
            for view in views:
                has = batch[f"has_{view}"].bool()  # (batch,)
                cmr = torch.full_like(ecg, float("nan"))
                if has.all():
                    cmr = model.encode_cmr(batch, view).float()
                elif has.any():
                    cmr[has] = model.encode_cmr(_select(batch, has), view).float()
                cmr_chunks[view].append(cmr.cpu().numpy())
                has_chunks[view].append(has.cpu().numpy())
    seconds = time.perf_counter() - started
    if not subject_ids:
        raise ValueError("the dataset holds no subjects to embed")
    return SplitEmbeddings(
        subject_ids=subject_ids,
        ecg=np.concatenate(ecg_chunks).astype(np.float32, copy=False),
        cmr={view: np.concatenate(chunks).astype(np.float32, copy=False) for view, chunks in cmr_chunks.items()},
        has={view: np.concatenate(chunks) for view, chunks in has_chunks.items()},
        seconds=seconds,
    )


def save_embeddings(embeddings: SplitEmbeddings, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``embeddings_ecg.npy``, ``embeddings_cmr_<view>.npy`` and ``subject_ids.txt``.

    Args:
        embeddings: what `embed_split` returned.
        out_dir: folder to write into (created).

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / ECG_FILE, out_dir / SUBJECTS_FILE]
    np.save(written[0], embeddings.ecg)
    written[1].write_text("".join(f"{s}\n" for s in embeddings.subject_ids))
    for view, array in embeddings.cmr.items():
        path = out_dir / cmr_file(view)
        np.save(path, array)
        written.append(path)
    return written


def load_embeddings(out_dir: str | os.PathLike) -> SplitEmbeddings:
    """Read embeddings written by `save_embeddings` (every ``embeddings_cmr_*.npy`` found).

    Raises:
        InputError: missing files or row counts that disagree.
    """
    out_dir = Path(out_dir)
    ecg_path, ids_path = out_dir / ECG_FILE, out_dir / SUBJECTS_FILE
    for path in (ecg_path, ids_path):
        if not path.is_file():
            raise InputError(path, "missing; not an embedding export folder")
    subject_ids = ids_path.read_text().splitlines()
    ecg = np.load(ecg_path)
    if len(ecg) != len(subject_ids):
        raise InputError(ecg_path, f"{len(ecg)} rows but {ids_path.name} lists {len(subject_ids)} subjects")
    cmr, has = {}, {}
    prefix = "embeddings_cmr_"
    for path in sorted(out_dir.glob(f"{prefix}*.npy")):
        view = path.stem[len(prefix):]
        cmr[view] = np.load(path)
        if cmr[view].shape != ecg.shape:
            raise InputError(path, f"shape {cmr[view].shape} does not match the ECG embeddings {ecg.shape}")
        has[view] = np.isfinite(cmr[view]).all(axis=1)
    return SplitEmbeddings(subject_ids=subject_ids, ecg=ecg, cmr=cmr, has=has)
