"""A short-axis frame phantom with hand-computable statistics."""

from __future__ import annotations

import numpy as np

from cardiacnets.cmr.frame_statistics import LV, MYO


def disc_phantom(size=64, radius=8.0, wall=4.0, blood=1.0, myocardium=0.5, outside=0.5):
    """A disc of blood in a ring of myocardium: (image, labels)."""
    rows, cols = np.indices((size, size))
    dist = np.hypot(rows - size / 2, cols - size / 2)
    labels = np.where(dist <= radius, LV, np.where(dist <= radius + wall, MYO, 0)).astype(np.uint8)
    image = np.select([labels == LV, labels == MYO], [blood, myocardium], outside).astype(np.float64)
    return image, labels
