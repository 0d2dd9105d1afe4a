"""Training losses. Each loss module returns a dict of named terms; the training step sums them."""

from cardiacnets.losses.contrastive import ClipLoss, gather_with_grad, symmetric_info_nce

__all__ = ["ClipLoss", "gather_with_grad", "symmetric_info_nce"]
