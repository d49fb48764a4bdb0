"""Instance labels -> the network's training targets and per-pixel loss weights.

Three maps, decoded back to instances by :mod:`.instances`:

* foreground: 1 inside any object;
* boundary: each object's inner contour, which also separates touching objects;
* distance: distance to the object's own border, scaled to 1 at its centre (seeds for watershed).

Weights follow the U-Net paper's idea: pixels where two objects nearly touch weigh more, and
pixels the user has not reviewed weigh zero, so fine-tuning learns only from what was checked.
Optionally, every object's rim weighs more (outlines are where instances are won or lost), and
small objects weigh more: in a pixel-weighted loss a 6 px nucleus counts for a fiftieth of a
40 px one, and dense fields of small nuclei are where the model under-counts.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

N_MAPS = 3
TOUCH_WEIGHT = 4.0
#: Objects smaller than a circle of this diameter (pixels) may weigh more (``small_boost``).
SMALL_DIAMETER = 16.0


def _touching_zone(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of two different objects (where merges happen).

    Background reads as one id above the largest (not the dtype's maximum: scipy's minimum
    filter passes values through float64, where int64's maximum overflows to its minimum and
    marked the left and right edges of every object as touching)."""
    size = 2 * radius + 1
    lab = labels.astype(np.int64, copy=False)
    background = int(lab.max(initial=0)) + 1
    high = ndi.maximum_filter(lab, size=size)
    low = ndi.minimum_filter(np.where(lab > 0, lab, background), size=size)
    return (high > 0) & (low < background) & (high != low)


def _rim(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of any object's outline, inside and out."""
    size = 2 * radius + 1
    high = ndi.maximum_filter(labels, size=size)
    return (high > 0) & (high != ndi.minimum_filter(labels, size=size))


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


def _small_object_weights(labels: np.ndarray, boost: float) -> np.ndarray:
    """Per-pixel factor: an object of area a under SMALL_DIAMETER weighs (reference area / a),
    at most ``boost``, so that each small object counts about as much as a reference one."""
    areas = np.bincount(labels.ravel().astype(np.int64, copy=False)).astype(np.float32)
    reference = np.pi * SMALL_DIAMETER**2 / 4
    factor = np.clip(reference / np.maximum(areas, 1.0), 1.0, boost)
    factor[0] = 1.0
    return factor[labels]


def make_weights(
    labels: np.ndarray,
    reviewed: np.ndarray | None = None,
    small_boost: float = 1.0,
    rim_weight: float = 1.0,
) -> np.ndarray:
    """(H, W) float32 loss weights: 1, more where objects touch (and on object rims when
    ``rim_weight`` > 1, in small objects when ``small_boost`` > 1), 0 where not reviewed."""
    weights = np.ones(labels.shape, np.float32)
    if rim_weight > 1.0:
        weights[_rim(labels)] = rim_weight
    weights[_touching_zone(labels)] = TOUCH_WEIGHT
    if small_boost > 1.0 and labels.any():
        weights *= _small_object_weights(labels, small_boost)
    if reviewed is not None:
        if reviewed.shape != labels.shape:
            raise ValueError(f"reviewed mask shape {reviewed.shape} != labels shape {labels.shape}")
        weights *= reviewed.astype(bool)
    return weights
