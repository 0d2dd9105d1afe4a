"""What the generation training stages share: data-set geometry, the frozen autoencoder, pipeline settings.

Used by the direct generator's stages (`cardiacnets.train.vae_task`,
`cardiacnets.train.diffusion_task`) and the anatomy-first generator's
(`cardiacnets.train.anatomy_image_task`, `cardiacnets.train.anatomy_task`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.cmr_image import VIEWS


def check_view(view: str) -> None:
    if view not in VIEWS:
        raise ConfigError(f"options.view must be one of {', '.join(VIEWS)}, got {view!r}")


def load_vae(folder: str):
    """A saved diffusers ``AutoencoderKL`` (frozen, eval mode)."""
    from diffusers import AutoencoderKL

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise InputError(path, "not a saved autoencoder (no config.json); give VAE_RUN/vae")
    return AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)


def pipeline_settings(data_path: str, view: str, train_split: str = "train") -> dict:
    """View, frame interval, pixel spacing and ECG standardisation of a training set, for a pipeline's config."""
    data = TrainingSet(data_path, split=train_split)
    frames = int(data.row_shape(f"cmr_{view}")[1])
    train = data.manifest
    frame_interval_ms = None
    if "ecg_rr_interval_ms" in train.columns:  # one cycle per cine: the typical RR interval over the frames
        rr = pd.to_numeric(train["ecg_rr_interval_ms"], errors="coerce").dropna()
        frame_interval_ms = round(float(rr.median()) / frames, 3) if len(rr) else None
    config = data.config
    return {"view": view, "frame_interval_ms": frame_interval_ms,
            "spacing_mm": (config.get("cmr") or {}).get("spacing_mm"), "ecg_config": config.get("ecg")}


def generation_provenance(ecg_encoder: str, view: str, feature_encoder: str | None, data_path: str,
                          run_dir: Path) -> dict:
    """Where a generation pipeline's parts came from (``provenance.json``; the evaluation reads
    ``alignment_run`` and ``feature_encoder`` from it)."""
    encoder = Path(ecg_encoder).resolve()
    model_dir = encoder / "model" if (encoder / "model").is_dir() else encoder
    alignment_run = model_dir.parent if model_dir.name == "model" else None
    feature = feature_encoder
    if feature is None and alignment_run is not None:
        candidate = alignment_run / f"cmr_{view}_encoder"
        feature = str(candidate) if candidate.is_dir() else None
    return {"run": str(Path(run_dir).resolve()), "ecg_encoder": str(model_dir),
            "alignment_run": str(alignment_run) if alignment_run else None, "feature_encoder": feature,
            "training_set": str(Path(data_path).resolve())}


def load_diffusers_weights(model: nn.Module, cls, folder: str) -> None:
    """Copy the weights of a saved diffusers model of class `cls` into `model` (``init.model``)."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise InputError(folder, f"not a saved {cls.__name__} (no config.json)")
    try:
        saved = cls.from_pretrained(path)
        model.load_state_dict(saved.state_dict())
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(folder, f"weights do not fit the configured {cls.__name__} ({err})") from None
