"""Probability maps -> instance labels, decoded once on the whole stitched plane.

Decoding globally (never per tile) is what keeps a nucleus that crosses a tile edge in one piece.
Seeds are the confident centres (high distance, low boundary); a watershed on the distance map
grows them over the foreground, which separates touching nuclei along their shared contour.

Seeds come either from a threshold on the centre map or, when ``seed_dynamic`` is set, from its
maxima that stand out by at least that much (h-maxima, found by merging watershed basins): a
threshold merges touching nuclei whose saddle stays above it and splits a textured nucleus with two
dips, while a maximum's height above its saddle asks how distinct a centre is, whatever its level.
On held-out acquisitions this took AP@0.5 from 0.673 to 0.715 (benchmarks/results/decode-seeds.md).
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
    #: > 0: seeds are the maxima of the (smoothed) centre map rising this far above their saddle
    #: (``seed`` and ``min_seed_area`` then unused); 0: seeds are where it exceeds ``seed``.
    seed_dynamic: float = 0.0
    #: Gaussian sigma (pixels) smoothing the centre map before its maxima are taken.
    seed_smoothing: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecodeParams:
        params = cls(
            foreground=float(data.get("foreground", cls.foreground)),
            seed=float(data.get("seed", cls.seed)),
            min_seed_area=int(data.get("min_seed_area", cls.min_seed_area)),
            min_area=int(data.get("min_area", cls.min_area)),
            seed_dynamic=float(data.get("seed_dynamic", cls.seed_dynamic)),
            seed_smoothing=float(data.get("seed_smoothing", cls.seed_smoothing)),
        )
        if not (0 < params.foreground < 1 and 0 < params.seed < 1):
            raise ValueError(f"decode thresholds must lie in (0, 1): {data}")
        if not (0 <= params.seed_dynamic < 1 and 0 <= params.seed_smoothing <= 10):
            raise ValueError(f"seed_dynamic must lie in [0, 1) and seed_smoothing in [0, 10]: {data}")
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
    centres = distance * (1.0 - boundary)
    if params.seed_dynamic > 0:
        if params.seed_smoothing > 0:
            centres = ndi.gaussian_filter(centres.astype(np.float32, copy=False), params.seed_smoothing)
        labels = watershed_by_dynamics(centres, mask, params.seed_dynamic)
    else:
        seeds, _ = ndi.label(mask & (centres > params.seed))
        labels = watershed_by_region(-distance, _remove_small(seeds, params.min_seed_area), mask)
    orphans, _ = ndi.label(mask & (labels == 0))  # foreground blobs that got no seed
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    labels = _remove_small(labels, params.min_area)
    return relabel_sequential(labels)


def watershed_by_dynamics(height: np.ndarray, mask: np.ndarray, dynamic: float) -> np.ndarray:
    """Instance labels inside ``mask``, one per maximum of ``height`` whose dynamic (its rise above
    the highest saddle leading to a higher maximum) is at least ``dynamic``, the highest maximum
    of each connected part of the mask always counting: a watershed of ``height`` from those
    maxima (skimage.morphology.h_maxima's seeds, restricted to the mask).

    Found from one watershed of all maxima and two passes of a union-find over the basins' saddles,
    highest first (the watershed as a maximum spanning forest on the basin graph): h_maxima's grey
    reconstruction alone took 3.5 s on a 2048^2 plane, this whole function about a tenth of that.
    """
    peaks = mask & (ndi.maximum_filter(height, size=3) == height) & (height > 0)
    markers, count = ndi.label(peaks)
    if count <= 1:
        return watershed_by_region(-height, markers, mask) if count else markers
    basins = watershed_by_region(-height, markers, mask)
    top = np.zeros(count + 1)
    top[markers[peaks]] = height[peaks]  # a basin's highest pixel is its maximum
    first, second, saddle = _saddles(height, basins)
    edges = list(zip(first.tolist(), second.tolist(), saddle.tolist(), strict=True))

    # Pass 1, the component tree: when two components meet at a saddle, the lower summit's
    # dynamic is known (its summit minus the saddle).
    parent, summit = np.arange(count + 1), np.arange(count + 1)
    seed = np.ones(count + 1, bool)
    for a, b, level in edges:
        ra, rb = _root(parent, a), _root(parent, b)
        if ra == rb:
            continue
        if top[summit[ra]] > top[summit[rb]]:
            ra, rb = rb, ra
        seed[summit[ra]] = top[summit[ra]] - level >= dynamic
        parent[ra] = rb
    # Pass 2, flooding: a basin joins the seeded region that reaches it over the highest saddle;
    # two seeded regions never join.
    parent = np.arange(count + 1)
    for a, b, _ in edges:
        ra, rb = _root(parent, a), _root(parent, b)
        if ra != rb and not (seed[ra] and seed[rb]):
            if seed[ra]:
                ra, rb = rb, ra
            parent[ra] = rb
    owner = np.array([_root(parent, i) for i in range(count + 1)])
    owner[0] = 0
    return owner[basins]


def _root(parent: np.ndarray, i: int) -> int:
    """Union-find root, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return int(i)


def _saddles(height: np.ndarray, basins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basin a, basin b, saddle) for every pair of touching basins, highest saddle first: the
    highest of the lower heights of two 4-neighbours, one in each basin."""
    keys, levels = [], []
    for axis in (0, 1):
        here = basins[:-1] if axis == 0 else basins[:, :-1]
        there = basins[1:] if axis == 0 else basins[:, 1:]
        low = np.minimum(height[:-1], height[1:]) if axis == 0 else np.minimum(height[:, :-1], height[:, 1:])
        cross = (here != there) & (here > 0) & (there > 0)
        a, b = here[cross].astype(np.int64), there[cross].astype(np.int64)
        keys.append(np.minimum(a, b) * (int(basins.max()) + 1) + np.maximum(a, b))
        levels.append(low[cross])
    key, level = np.concatenate(keys), np.concatenate(levels).astype(np.float64)
    if key.size == 0:
        return key, key, level
    order = np.lexsort((-level, key))  # by pair, highest saddle first within each pair
    key, level = key[order], level[order]
    first_of_pair = np.concatenate([[True], key[1:] != key[:-1]])
    key, level = key[first_of_pair], level[first_of_pair]
    by_level = np.argsort(-level, kind="stable")
    a, b = np.divmod(key[by_level], int(basins.max()) + 1)
    return a, b, level[by_level]


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
