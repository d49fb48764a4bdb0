"""Images larger than memory: segment block by block with dask, then link objects across blocks.

Each block is read with a margin: the network's receptive field (so its probability maps equal
whole-image prediction) plus a linking overlap. Instances are decoded per block over the block
and its linking overlap; neighbouring blocks then decode the same objects in the strips they
share, where objects are matched (overlap > half of the smaller) and their ids unified with a
union-find. Every block's core is finally written with the unified, consecutive ids, so no
object is cut at a block border and no id repeats. Works with any dask scheduler: threads, a
local cluster, or a dask.distributed cluster.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .instances import DecodeParams, decode
from .normalize import IntensityMap, Normalization, intensity_map, to_grey
from .tiling import round_up

DEFAULT_BLOCK = 2048
DEFAULT_LINK = 96  # wider than the nuclei the bundled model finds


@dataclass(frozen=True)
class Block:
    """One block: its core (written), link region (decoded) and read region (predicted)."""

    index: tuple[int, int]
    core: tuple[slice, slice]
    link: tuple[slice, slice]
    read: tuple[slice, slice]


def plan_blocks(shape: tuple[int, int], block: int, link: int, halo: int) -> list[Block]:
    """Blocks covering ``shape``; regions are clipped at the image border."""
    blocks = []
    for by, bx in itertools.product(range(-(-shape[0] // block)), range(-(-shape[1] // block))):
        core = tuple(slice(b * block, min((b + 1) * block, n)) for b, n in zip((by, bx), shape))

        def grow(margin: int, core=core) -> tuple[slice, slice]:
            return tuple(
                slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(core, shape)
            )

        blocks.append(Block((by, bx), core, grow(link), grow(link + halo)))
    return blocks


@lru_cache(maxsize=4)
def _cached_model(name: str):
    """One model per worker process, loaded on first use (tasks ship a name, not weights)."""
    from .models import load_model

    return load_model(name)


def _local(slices: tuple[slice, slice], within: tuple[slice, slice]) -> tuple[slice, slice]:
    return tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(slices, within))


def segment_block(
    source, block: Block, model_name: str, stats: IntensityMap, rgb: bool, options: dict
) -> np.ndarray:
    """Labels (int32, ids from 1) over ``block.link``; runs on any dask worker."""
    from .predict import Predictor

    model = _cached_model(model_name)
    region = np.asarray(source[block.read])
    plane = stats.apply(to_grey(region, rgb))
    predictor = Predictor(model.net, **options)
    maps = predictor.predict(plane)[(slice(None), *_local(block.link, block.read))]
    params = DecodeParams.from_dict(model.card.get("decode", {}))
    return decode(maps, params).astype(np.int32)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = np.arange(size, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _link_pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Objects two blocks decoded in the strip along their shared border that are the same:
    each is the other's best match and they share more than half of the smaller."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    size_a = dict(zip(*np.unique(a[a > 0], return_counts=True)))
    size_b = dict(zip(*np.unique(b[b > 0], return_counts=True)))
    best_a: dict[int, tuple[int, int]] = {}
    best_b: dict[int, tuple[int, int]] = {}
    for (i, j), n in zip(pairs.T, counts):
        if n > best_a.get(i, (0, 0))[0]:
            best_a[i] = (n, j)
        if n > best_b.get(j, (0, 0))[0]:
            best_b[j] = (n, i)
    return [
        (int(i), int(j))
        for i, (n, j) in best_a.items()
        if best_b[j][1] == i and n > 0.5 * min(size_a[i], size_b[j])
    ]


def _border_strip(shared: tuple[slice, slice], step: tuple[int, int], link: int) -> tuple[slice, slice]:
    """The middle of two blocks' shared region, ``link // 2`` either side of their border: far
    from both link edges, where each block decodes objects exactly as the whole image would."""
    strip = []
    for s, d in zip(shared, step):
        if d == 0:
            strip.append(s)
        else:
            middle = (s.start + s.stop) // 2
            strip.append(slice(max(s.start, middle - link // 2), min(s.stop, middle + link // 2)))
    return tuple(strip)


def link_blocks(blocks: list[Block], labels: list[np.ndarray], link: int) -> list[np.ndarray]:
    """Unify ids across blocks; returns each block's core with global, consecutive ids."""
    offsets = np.cumsum([0] + [int(lab.max()) for lab in labels])
    union = _UnionFind(int(offsets[-1]) + 1)
    by_index = {b.index: k for k, b in enumerate(blocks)}
    for k, block in enumerate(blocks):
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            other = by_index.get((block.index[0] + dy, block.index[1] + dx))
            if other is None:
                continue
            shared = tuple(
                slice(max(s.start, t.start), min(s.stop, t.stop))
                for s, t in zip(block.link, blocks[other].link)
            )
            shared = _border_strip(shared, (dy, dx), link)
            if any(s.start >= s.stop for s in shared):
                continue
            a = labels[k][_local(shared, block.link)]
            b = labels[other][_local(shared, blocks[other].link)]
            for i, j in _link_pairs(a, b):
                union.union(offsets[k] + i, offsets[other] + j)
    roots = np.array([union.find(i) for i in range(len(union.parent))])
    cores = []
    for k, block in enumerate(blocks):
        local = labels[k][_local(block.core, block.link)]
        cores.append(np.where(local > 0, roots[local + offsets[k]], 0))
    present = np.unique(np.concatenate([np.unique(c) for c in cores]))
    present = present[present > 0]
    lut = np.zeros(int(offsets[-1]) + 1, np.uint32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return [lut[c] for c in cores]


def segment_large(
    image,
    model: str = "nuclei",
    block_size: int = DEFAULT_BLOCK,
    link: int = DEFAULT_LINK,
    rgb: bool = False,
    scheduler=None,
    out=None,
    **options,
):
    """Segment a 2D numpy, dask or zarr image block by block; returns (or fills ``out``) labels.

    ``scheduler`` is anything ``dask.compute`` accepts ("threads", "processes", "sync") or a
    ``dask.distributed.Client``. ``options`` go to the Predictor (device, tile_size, ...).
    """
    import dask

    from .models import load_model
    from .unet import receptive_radius

    loaded = load_model(model)
    name = str(loaded.path) if loaded.path is not None else model
    halo = round_up(receptive_radius(loaded.net.config), loaded.net.multiple)
    shape = tuple(int(n) for n in image.shape[:2])
    norm = Normalization.from_dict(loaded.card.get("normalization", {}))
    stats = intensity_map(to_grey(_strided(image, rgb), rgb), norm)
    blocks = plan_blocks(shape, round_up(block_size, loaded.net.multiple), link, halo)
    tasks = [dask.delayed(segment_block)(image, b, name, stats, rgb, options) for b in blocks]
    if scheduler is not None and hasattr(scheduler, "compute"):  # a distributed Client
        labels = scheduler.gather(scheduler.compute(tasks))
    else:
        labels = list(dask.compute(*tasks, scheduler=scheduler))
    cores = link_blocks(blocks, labels, link)
    if out is None:
        out = np.zeros(shape, np.uint32)
    for block, core in zip(blocks, cores):
        out[block.core] = core
    return out


def _strided(image, rgb: bool, pixels: int = 4_000_000):
    """A strided sample of a (possibly lazy) image for the intensity statistics."""
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / pixels))))
    return np.asarray(image[::step, ::step])
