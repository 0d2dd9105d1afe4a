"""Exponential moving average of model weights, on torch's ``AveragedModel``.

``ema = decay * ema + (1 - decay) * weights`` after every optimiser step (the
first update copies the weights); buffers (batch-norm statistics) are averaged
too. torch's ``torch.optim.swa_utils`` already implements this with fused
``_foreach`` updates, so this module only fixes how the trainer builds it.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def create_ema(model: torch.nn.Module, decay: float, device: torch.device | str | None = None) -> AveragedModel:
    """An EMA copy of `model`.

    Build it from the plain model, before ``accelerator.prepare`` wraps the
    model's ``forward`` (a deep copy would share that wrapper with the original).

    Args:
        model: the model being trained.
        decay: weight of the old average per update, in (0, 1).
        device: where the copy lives (default: the model's device).

    Returns:
        The ``AveragedModel``; call ``update_parameters(model)`` after each optimiser step
        and use ``.module`` as the averaged model.
    """
    ema = AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
