"""Probability maps -> instance labels, decoded once on the whole stitched plane.

Decoding globally (never per tile) is what keeps a nucleus that crosses a tile edge in one piece.
Seeds are the confident centres (high distance, low boundary); a watershed on the distance map
grows them over the foreground, which separates touching nuclei along their shared contour.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed


@dataclass(frozen=True)
class DecodeParams:
    """Post-processing thresholds; tuned on validation data and stored in the model card."""

    foreground: float = 0.5
    seed: float = 0.4
    min_seed_area: int = 4
    min_area: int = 12

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecodeParams:
        params = cls(
            foreground=float(data.get("foreground", cls.foreground)),
            seed=float(data.get("seed", cls.seed)),
            min_seed_area=int(data.get("min_seed_area", cls.min_seed_area)),
            min_area=int(data.get("min_area", cls.min_area)),
        )
        if not (0 < params.foreground < 1 and 0 < params.seed < 1):
            raise ValueError(f"decode thresholds must lie in (0, 1): {data}")
        return params


def _remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1 or labels.max() == 0:
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    return labels


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n in the smallest unsigned dtype that holds them (uint16, else uint32).

    A lookup table over the id range (linear time) rather than np.unique (a sort): on a
    2048^2 plane this halved decoding time.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 4 * labels.size):  # sparse or odd ids
        _, inverse = np.unique(labels, return_inverse=True)
        labels = inverse.reshape(labels.shape) + (labels.min() != 0)
    present = np.bincount(labels.ravel().astype(np.int64, copy=False), minlength=1) > 0
    present[0] = False
    count = int(present.sum())
    dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32
    lut = np.zeros(present.size, dtype)
    lut[present] = np.arange(1, count + 1, dtype=np.int64)
    return lut[labels]


#: Foreground regions are flooded in groups of about this many pixels (by where they start).
WATERSHED_TILE = 1024


def watershed_by_region(
    landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray, tile: int = WATERSHED_TILE
) -> np.ndarray:
    """``watershed(landscape, markers, mask=mask)``, computed apart for groups of the mask's
    connected regions, on threads.

    Regions never exchange water, so each can be flooded on its own crop: the same result (up to
    the order in which exact ties are settled) but with small, cache-friendly priority queues.
    One global flood of an 8192^2 plane took 12.9 s; by region 3.0 s on one thread, 2.0 on two.
    """
    if mask.size <= 2 * tile * tile:
        return watershed(landscape, markers=markers, mask=mask)
    regions, count = ndi.label(mask)
    if count == 0:
        return np.zeros(mask.shape, np.int32)
    boxes = ndi.find_objects(regions)
    starts = np.array([(b[0].start, b[1].start) for b in boxes])
    stops = np.array([(b[0].stop, b[1].stop) for b in boxes])
    columns = -(-mask.shape[1] // tile)
    group = starts[:, 0] // tile * columns + starts[:, 1] // tile
    groups = np.unique(group)
    index = np.searchsorted(groups, group)
    low = np.full((len(groups), 2), np.iinfo(np.int64).max)
    high = np.zeros((len(groups), 2), np.int64)
    np.minimum.at(low, index, starts)
    np.maximum.at(high, index, stops)
    region_group = np.concatenate([[-1], index])  # region id -> group number (background -1)
    out = np.zeros(mask.shape, np.int32)

    def flood(k: int) -> None:
        crop = np.s_[low[k, 0] : high[k, 0], low[k, 1] : high[k, 1]]
        mine = region_group[regions[crop]] == k
        result = watershed(landscape[crop], markers=np.where(mine, markers[crop], 0), mask=mine)
        np.copyto(out[crop], result, where=mine)  # groups own disjoint pixels

    threads = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(flood, range(len(groups))))
    return out


def decode(maps: np.ndarray, params: DecodeParams = DecodeParams()) -> np.ndarray:
    """(3, H, W) probabilities (foreground, boundary, distance) -> (H, W) uint16/uint32 labels."""
    if maps.ndim != 3 or maps.shape[0] < 3:
        raise ValueError(f"expected (3, H, W) maps, got {maps.shape}")
    foreground, boundary, distance = maps[0], maps[1], maps[2]
    mask = foreground > params.foreground
    seeds_mask = mask & (distance * (1.0 - boundary) > params.seed)
    seeds, _ = ndi.label(seeds_mask)
    seeds = _remove_small(seeds, params.min_seed_area)
    labels = watershed_by_region(-distance, seeds, mask)
    orphans, _ = ndi.label(mask & (labels == 0))  # foreground blobs that got no seed
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    labels = _remove_small(labels, params.min_area)
    return relabel_sequential(labels)


def carry_ids(new: np.ndarray, old: np.ndarray, reserved: np.ndarray | None = None) -> np.ndarray:
    """Renumber ``new`` labels so that objects also in ``old`` keep their ``old`` ids.

    Why: a re-segmentation (after a fine-tune, say) mostly finds the same nuclei again. With their
    ids kept, they keep their colours on screen, and writing the result changes (and napari's
    undo history stores) only the pixels that really changed, not every object's.

    A new object is the same as an old one when more than half of each lies in the other (so a
    match is one-to-one). Other new objects take the smallest ids neither matched nor in
    ``reserved`` (ids in use elsewhere, e.g. outside a re-segmented window). Result: uint16 if its
    ids fit, else uint32.
    """
    new = np.asarray(new)
    old = np.asarray(old)
    if new.shape != old.shape:
        raise ValueError(f"labels of shape {new.shape} cannot keep the ids of labels of shape {old.shape}")
    top_new, top_old = int(new.max(initial=0)), int(old.max(initial=0))
    area_new = np.bincount(new.ravel().astype(np.int64, copy=False), minlength=top_new + 1)
    area_old = np.bincount(old.ravel().astype(np.int64, copy=False), minlength=top_old + 1)
    both = (new > 0) & (old > 0)
    pairs, overlap = np.unique(
        new[both].astype(np.int64) * (top_old + 1) + old[both].astype(np.int64), return_counts=True
    )
    new_id, old_id = np.divmod(pairs, top_old + 1)
    same = (2 * overlap > area_new[new_id]) & (2 * overlap > area_old[old_id])
    lut = np.zeros(top_new + 1, np.int64)
    lut[new_id[same]] = old_id[same]
    unmatched = np.flatnonzero((area_new > 0) & (lut == 0))
    unmatched = unmatched[unmatched > 0]
    taken = np.union1d(old_id[same], reserved if reserved is not None else [])
    candidates = np.arange(1, unmatched.size + taken.size + 1)
    lut[unmatched] = candidates[~np.isin(candidates, taken)][: unmatched.size]
    dtype = np.uint16 if lut.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    return lut.astype(dtype)[new]
