"""The latent cache of the direct generator's training: cine latents and ECG conditions, computed once per split.

The autoencoder and the aligned ECG encoder are frozen while the denoiser
trains, so the latents of every cine's middle slice (the slice the generator
makes) and the ECG condition (tokens and pooled embedding) of every subject are
computed once per split and kept in memory; with a cache folder they are also
kept on disk as safetensors beside a JSON key (data set, split, autoencoder, ECG
encoder, view, scaling factor), and read back when the key matches. A training
step then runs the denoiser only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cardiacnets.errors import InputError


@dataclass
class LatentCache:
    """The frozen encoders' outputs for one split, row by subject.

    Attributes:
        subject_ids: subject of each row.
        latents: (N, C, frames, h, w) scaled cine latents.
        tokens: (N, T', width) ECG encoder tokens.
        embedding: (N, embed_dim) pooled aligned ECG embeddings.
        seconds: time taken to build (or read) it.
    """

    subject_ids: list[str]
    latents: torch.Tensor
    tokens: torch.Tensor
    embedding: torch.Tensor
    seconds: float = 0.0

    def __post_init__(self):
        self.row_of = {s: i for i, s in enumerate(self.subject_ids)}

    def rows(self, subject_ids, where: str) -> torch.Tensor:
        """Rows of `subject_ids` (raises `InputError` naming `where` for an unknown subject)."""
        missing = [s for s in subject_ids if s not in self.row_of]
        if missing:
            raise InputError(where, f"subject(s) {missing[:3]} are not in the latent cache of the split")
        return torch.tensor([self.row_of[s] for s in subject_ids])

    def to(self, device: torch.device) -> LatentCache:
        """Move the tensors to `device` (in place) and return the cache."""
        if self.latents.device != device:
            self.latents, self.tokens, self.embedding = (x.to(device) for x in (self.latents, self.tokens, self.embedding))
        return self


def middle_slice(cines: torch.Tensor) -> torch.Tensor:
    """(B, slices, frames, H, W) → (B, frames, H, W): the middle slice (the one the generator makes)."""
    return cines[:, cines.shape[1] // 2]


@torch.no_grad()
def build_latent_cache(training_set, view: str, vae, condition_encoder, device: torch.device,
                       batch_size: int = 64, bf16: bool = False) -> LatentCache:
    """Encode every subject of a split.

    Args:
        training_set: the split (`cardiacnets.data.store.TrainingSet`) with ECGs and `view` cines.
        view: the CMR view whose middle slice is encoded.
        vae: the frozen ``AutoencoderKL`` (latents scaled by its ``scaling_factor``).
        condition_encoder: the frozen `ECGConditionEncoder`.
        device: where to encode.
        batch_size: subjects per pass.
        bf16: encode the cines under bf16 autocast (the ECG condition stays float32: it is the
            model's input at inference too).

    Returns:
        The `LatentCache` (``seconds`` not set).
    """
    from cardiacnets.generation.vae import encode_cines

    if len(training_set) == 0:
        raise InputError(training_set.root, f"no subjects in split {training_set.split!r} to encode")
    vae, encoder = vae.to(device), condition_encoder.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    ids, latents, tokens, embeddings = [], [], [], []
    for start in range(0, len(training_set), batch_size):
        samples = [training_set[i] for i in range(start, min(len(training_set), start + batch_size))]
        cines = torch.from_numpy(np.stack([s[f"cmr_{view}"] for s in samples])).to(device)
        ecg = torch.from_numpy(np.stack([s["ecg"] for s in samples])).to(device)
        lead_mask = torch.from_numpy(np.stack([s["ecg_lead_mask"] for s in samples])).to(device)
        with autocast:
            latents.append(encode_cines(vae, middle_slice(cines)).float())
        condition = encoder(ecg, lead_mask)
        tokens.append(condition.tokens)
        embeddings.append(condition.embedding)
        ids += [s["subject_id"] for s in samples]
    return LatentCache(ids, torch.cat(latents), torch.cat(tokens), torch.cat(embeddings))


def load_or_build_latent_cache(key: dict, folder: str | Path | None, split: str, build) -> LatentCache:
    """The cache of a split: read from `folder` when its key matches, else built (and written there).

    Args:
        key: what the cache depends on (JSON-serialisable); a stored cache with another key is rebuilt.
        folder: where caches are kept between runs (``None``: in memory only).
        split: the split's name (the files are ``<split>.safetensors`` and ``<split>.json``).
        build: a function of no arguments returning a fresh `LatentCache`.

    Returns:
        The `LatentCache`, with ``seconds`` the time taken.
    """
    started = time.perf_counter()
    folder = Path(folder) if folder else None
    if folder is not None and (folder / f"{split}.json").is_file():
        meta = json.loads((folder / f"{split}.json").read_text())
        if meta.get("key") == key:
            from safetensors.torch import load_file

            tensors = load_file(str(folder / f"{split}.safetensors"))
            return LatentCache(meta["subject_ids"], tensors["latents"], tensors["tokens"], tensors["embedding"],
                               time.perf_counter() - started)
    cache = build()
    cache.seconds = time.perf_counter() - started
    if folder is not None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"latents": cache.latents.cpu().contiguous(), "tokens": cache.tokens.cpu().contiguous(),
                   "embedding": cache.embedding.cpu().contiguous()}, str(folder / f"{split}.safetensors"))
        (folder / f"{split}.json").write_text(json.dumps({"key": key, "subject_ids": cache.subject_ids}) + "\n")
    return cache
