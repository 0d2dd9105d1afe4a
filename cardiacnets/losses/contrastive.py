"""CLIP-style symmetric InfoNCE between ECG and CMR embeddings, gathered across processes.

CardiacNets (arXiv 2411.13602) aligns the ECG embedding with the embedding of
each cine view (short axis, 4-chamber) by the contrastive loss of CLIP: for a
batch of B pairs, the B x B matrix of scaled cosine similarities is read as B
classification problems in both directions (ECG -> CMR and CMR -> ECG), the
true partner being the class; the two cross-entropies are averaged, and the
per-view losses are summed by the training step.

Under data parallelism every process holds B of the global batch. The
embeddings of all processes are gathered *with gradients*
(``torch.distributed.nn.functional.all_gather``), each process scores its own
B rows against all global columns, and the gradient averaging of data
parallelism then gives exactly the loss and gradients of one process on the
global batch (the local rows of all processes together are the global rows).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# CLIP clamps the learned logit scale at 100 (temperature 0.01) for stability.
MAX_LOGIT_SCALE = 100.0


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate `features` of every process along the batch axis, keeping gradients.

    The backward pass sums the gradients that all processes send to a
    process's slice, so it receives the gradient of the sum of every
    process's loss.

    Args:
        features: (B, ...) this process's part; B must be equal on every process.

    Returns:
        (world_size * B, ...), process r's rows at ``r * B``; `features` itself
        without a process group.
    """
    _, world_size = world_info()
    if world_size == 1:
        return features
    import torch.distributed.nn.functional as dist_fn

    with warnings.catch_warnings():
        # torch 2.15 points to a private successor (_functional_collectives); this public autograd
        # all_gather still works and is what the gradient equivalence test checks.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        parts = dist_fn.all_gather(features)
    return torch.cat(parts, dim=0)


def gather_no_grad(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor without gradient (a mask) of every process along axis 0."""
    _, world_size = world_info()
    if world_size == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world_size)]
    torch.distributed.all_gather(parts, values.contiguous())
    return torch.cat(parts, dim=0)


def symmetric_info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    logit_scale: torch.Tensor | float,
    valid: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE of paired embeddings: mean of query->key and key->query cross-entropy.

    Row i of `query` and row i of `key` are a positive pair; every other row
    of the (global) batch is a negative. Logits are ``logit_scale * q @ k.T``
    computed in float32; embeddings are expected L2-normalised (cosine similarity).

    Args:
        query: (B, D) embeddings of one modality (e.g. ECG) on this process.
        key: (B, D) embeddings of the paired modality (e.g. one CMR view).
        logit_scale: inverse temperature (``1 / 0.1`` = 10 in the paper); a
            learnable scalar tensor receives gradients.
        valid: optional (B,) bool; pairs with False (a subject without this
            view) are neither queries nor negatives.
        gather: gather embeddings across processes (when a process group exists).

    Returns:
        Scalar loss. On one process it is the mean over valid pairs of the two
        directions' mean; with several processes it is this process's share,
        scaled so that the average over processes (what data parallelism
        optimises) is the global-batch loss.
    """
    if query.shape != key.shape or query.ndim != 2:
        raise ValueError(f"query and key must both be (B, D); got {tuple(query.shape)} and {tuple(key.shape)}")
    rank, world_size = world_info() if gather else (0, 1)
    batch_size = query.shape[0]
    if valid is None:
        valid = torch.ones(batch_size, dtype=torch.bool, device=query.device)
    valid = valid.to(device=query.device, dtype=torch.bool)
    all_query = gather_with_grad(query) if world_size > 1 else query
    all_key = gather_with_grad(key) if world_size > 1 else key
    all_valid = gather_no_grad(valid) if world_size > 1 else valid
    n_valid_global = all_valid.sum()
    if int(n_valid_global) == 0:
        # Nothing to contrast; a zero that still depends on the inputs keeps every parameter in the graph.
        return (query.sum() + key.sum()) * 0.0

    scale = logit_scale if isinstance(logit_scale, torch.Tensor) else torch.tensor(float(logit_scale))
    scale = scale.float().to(query.device)
    labels = torch.arange(batch_size, device=query.device) + rank * batch_size
    # (B, world*B): this process's rows against every column of the global batch.
    logits_q = scale * (query.float() @ all_key.float().T)
    logits_k = scale * (key.float() @ all_query.float().T)
    # A column without this view is no negative; exp(-inf) = 0 in the softmax.
    column_absent = ~all_valid
    logits_q = logits_q.masked_fill(column_absent[None, :], float("-inf"))
    logits_k = logits_k.masked_fill(column_absent[None, :], float("-inf"))
    ce_q = F.cross_entropy(logits_q[valid], labels[valid], reduction="sum")
    ce_k = F.cross_entropy(logits_k[valid], labels[valid], reduction="sum")
    # Sum over this process's valid rows / global count x world size: the process average is the global mean.
    return 0.5 * (ce_q + ce_k) * world_size / n_valid_global.float()


class ClipLoss(nn.Module):
    """Symmetric InfoNCE between the ECG embedding and each CMR view's embedding.

    Args:
        views: CMR views to align with the ECG; embeddings are read from
            ``outputs["cmr_<view>"]``.
        temperature: fixed softmax temperature (0.1 in the paper); ``None``
            takes the model's ``outputs["logit_scale"]`` (an inverse
            temperature, learnable or not), clamped at `MAX_LOGIT_SCALE`.
        gather: gather embeddings across processes so every process contrasts
            against the global batch.
    """

    def __init__(self, views: Sequence[str] = ("sa", "la_4ch"), temperature: float | None = None, gather: bool = True):
        super().__init__()
        if not views:
            raise ValueError("ClipLoss needs at least one CMR view")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.views = tuple(views)
        self.temperature = temperature
        self.gather = gather

    def logit_scale(self, outputs: dict) -> torch.Tensor | float:
        """The inverse temperature used for these outputs."""
        if self.temperature is not None:
            return 1.0 / self.temperature
        if "logit_scale" not in outputs:
            raise KeyError("ClipLoss without a fixed temperature needs outputs['logit_scale']")
        return outputs["logit_scale"].clamp(max=MAX_LOGIT_SCALE)

    def forward(self, outputs: dict, valid: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per-view losses.

        Args:
            outputs: ``{"ecg": (B, D), "cmr_<view>": (B, D), "logit_scale": scalar}``
                with L2-normalised embeddings (the output of `CardiacCLIP`).
            valid: optional ``{view: (B,) bool}``, False where a subject lacks the view
                (the batch's ``has_<view>``).

        Returns:
            ``{"loss_clip_<view>": scalar}`` for each view.
        """
        scale = self.logit_scale(outputs)
        valid = valid or {}
        return {
            f"loss_clip_{view}": symmetric_info_nce(outputs["ecg"], outputs[f"cmr_{view}"], scale,
                                                    valid=valid.get(view), gather=self.gather)
            for view in self.views
        }
