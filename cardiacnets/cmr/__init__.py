"""Cine CMR images and segmentations, standardisation and function indices."""

from cardiacnets.cmr.image import CMRImage, SEG_LABELS

__all__ = ["CMRImage", "SEG_LABELS"]
