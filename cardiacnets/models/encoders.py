"""Which models are encoders of which modality, and the encoder held by a saved folder.

An ECG encoder is an `ECGViT` or a `ResNet1D` (both map ``(B, leads, samples)``
to an embedding, with ``forward_features`` and ``forward_head``); a CMR encoder
is a `CMREncoder`. Stages that start from a saved encoder accept a folder of the
encoder itself or of the pretraining model around it (an `ECGMAE`, a
`CMRMaskedModel`); `load_saved_encoder` unwraps it and says clearly when the
folder holds another kind of model.
"""

from __future__ import annotations

import os

from torch import nn

from cardiacnets.errors import InputError
from cardiacnets.models.cmr_encoder import CMREncoder
from cardiacnets.models.cmr_mim import CMRMaskedModel
from cardiacnets.models.ecg_mae import ECGMAE
from cardiacnets.models.ecg_resnet import ResNet1D
from cardiacnets.models.ecg_vit import ECGViT
from cardiacnets.models.pretrained import load_pretrained

#: The ECG encoder classes.
ECG_ENCODERS: tuple[type[nn.Module], ...] = (ECGViT, ResNet1D)


def is_ecg_encoder(model) -> bool:
    """Whether `model` is an ECG encoder (`ECG_ENCODERS`)."""
    return isinstance(model, ECG_ENCODERS)


def load_saved_encoder(folder: str | os.PathLike, kind: str, view: str | None = None,
                       where: str | None = None) -> nn.Module:
    """The encoder held by a saved folder, unwrapping a pretraining model.

    Args:
        folder: a ``save_pretrained`` folder.
        kind: ``ecg`` (an `ECGViT`/`ResNet1D`, or the encoder of an `ECGMAE` or a `CardiacCLIP`) or ``cmr``
            (a `CMREncoder`, or the `view` encoder of a `CMRMaskedModel` or a `CardiacCLIP`).
        view: the CMR view (``kind="cmr"``).
        where: what the encoder is for, named in errors (e.g. ``"cmr.sa"`` of a config).

    Returns:
        The encoder module with its weights.

    Raises:
        InputError: the folder holds another kind of model, or no encoder of `view`.
    """
    purpose = f" (for {where})" if where else ""
    from cardiacnets.models.clip import CardiacCLIP  # (clip builds its encoders with this module)

    saved = load_pretrained(folder)
    if isinstance(saved, CardiacCLIP):
        saved = saved.ecg_encoder if kind == "ecg" else _view_encoder(folder, saved.cmr_encoders, view, "CardiacCLIP")
    if kind == "ecg":
        saved = saved.encoder if isinstance(saved, ECGMAE) else saved
        if not is_ecg_encoder(saved):
            raise InputError(folder, f"holds a {type(saved).__name__}, not an ECG encoder{purpose}")
        return saved
    if isinstance(saved, CMRMaskedModel):
        return _view_encoder(folder, saved.encoders, view, "CMRMaskedModel")
    if not isinstance(saved, CMREncoder):
        raise InputError(folder, f"holds a {type(saved).__name__}, not a CMR encoder{purpose}")
    return saved


def _view_encoder(folder, encoders, view: str | None, owner: str) -> nn.Module:
    if view not in encoders:
        raise InputError(folder, f"the saved {owner} has no encoder for view {view!r} (it has {', '.join(encoders)})")
    return encoders[view]
