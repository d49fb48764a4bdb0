"""Instance labels -> the network's training targets and per-pixel loss weights.

Three maps, decoded back to instances by :mod:`.instances`:

* foreground: 1 inside any object;
* boundary: each object's inner contour, which also separates touching objects;
* distance: distance to the object's own border, scaled to 1 at its centre (seeds for watershed).

Weights follow the U-Net paper's idea: pixels where two objects nearly touch weigh more, and
pixels the user has not reviewed weigh zero, so fine-tuning learns only from what was checked.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

N_MAPS = 3
TOUCH_WEIGHT = 4.0
_BIG = np.iinfo(np.int64).max


def _touching_zone(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of two different objects (where merges happen)."""
    size = 2 * radius + 1
    lab = labels.astype(np.int64, copy=False)
    high = ndi.maximum_filter(lab, size=size)
    low = ndi.minimum_filter(np.where(lab > 0, lab, _BIG), size=size)
    return (high > 0) & (low < _BIG) & (high != low)


def make_targets(labels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 targets: foreground, boundary, normalised distance."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D, got shape {labels.shape}")
    foreground = labels > 0
    boundary = find_boundaries(labels, mode="inner") & foreground
    distance = ndi.distance_transform_edt(foreground & ~boundary).astype(np.float32)
    if foreground.any():
        ids, inverse = np.unique(labels, return_inverse=True)
        peak = ndi.maximum(distance, labels, ids).astype(np.float32)
        scale = np.where(peak > 0, peak, 1.0)[inverse.reshape(labels.shape)]
        distance = distance / scale
    return np.stack([foreground, boundary, distance]).astype(np.float32)


def make_weights(labels: np.ndarray, reviewed: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 loss weights: 1, more where objects touch, 0 where not reviewed."""
    weights = np.ones(labels.shape, np.float32)
    weights[_touching_zone(labels)] = TOUCH_WEIGHT
    if reviewed is not None:
        if reviewed.shape != labels.shape:
            raise ValueError(f"reviewed mask shape {reviewed.shape} != labels shape {labels.shape}")
        weights *= reviewed.astype(bool)
    return weights
