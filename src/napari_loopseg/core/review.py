"""Which pixels a user's corrections vouch for: the edited objects plus a margin.

Painting over part of a nucleus says the whole nucleus is now right, and that its immediate
surroundings are background or other correct objects; beyond the margin nothing was checked.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

DEFAULT_MARGIN = 4


def reviewed_from_edits(labels: np.ndarray, touched: np.ndarray, margin: int = DEFAULT_MARGIN) -> np.ndarray:
    """Touched pixels, every object they now belong to, dilated by ``margin`` pixels."""
    if labels.shape != touched.shape:
        raise ValueError(f"labels {labels.shape} and edit mask {touched.shape} differ in shape")
    if not touched.any():
        return np.zeros(labels.shape, bool)
    ids = np.unique(labels[touched])
    region = touched | np.isin(labels, ids[ids != 0])
    if margin > 0:
        box = ndi.find_objects(region.astype(np.uint8))[0]
        lo = [max(0, s.start - margin) for s in box]
        hi = [min(n, s.stop + margin) for s, n in zip(box, labels.shape, strict=True)]
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        region[window] = ndi.binary_dilation(region[window], iterations=margin)
    return region
