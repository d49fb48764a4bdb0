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
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .instances import decode
from .normalize import IntensityMap, intensity_map, strided_sample, to_grey
from .options import DEFAULT_BLOCK, DEFAULT_MODEL
from .progress import drive, relay
from .registry import Model, load_model, load_model_once
from .segment import SegmentProgress
from .tiling import round_up

DEFAULT_LINK = 96  # wider than the nuclei the bundled model finds
#: Blocks segmented at a time in this process: torch already uses every core within one block;
#: a second overlaps its reading and decoding. More would only multiply memory.
LOCAL_BLOCKS = 2


@dataclass(frozen=True)
class Block:
    """One block: its core (written), link region (decoded) and read region (predicted)."""

    index: tuple[int, int]
    core: tuple[slice, ...]
    link: tuple[slice, ...]
    read: tuple[slice, ...]


def plan_blocks(shape: tuple[int, int], block: int, link: int, halo: int) -> list[Block]:
    """Blocks covering ``shape``; regions are clipped at the image border."""
    blocks = []
    for by, bx in itertools.product(range(-(-shape[0] // block)), range(-(-shape[1] // block))):
        core = tuple(slice(b * block, min((b + 1) * block, n)) for b, n in zip((by, bx), shape, strict=True))

        def grow(margin: int, core=core) -> tuple[slice, ...]:
            return tuple(
                slice(max(0, s.start - margin), min(n, s.stop + margin))
                for s, n in zip(core, shape, strict=True)
            )

        blocks.append(Block((by, bx), core, grow(link), grow(link + halo)))
    return blocks


def _local(slices: tuple[slice, ...], within: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(slices, within, strict=True))


def segment_block(
    region: np.ndarray, block: Block, model: Model | str, stats: IntensityMap, rgb: bool, options: dict
) -> np.ndarray:
    """Labels (int32, ids from 1) over ``block.link`` from the image over ``block.read``.

    ``model`` is the loaded model, or (for tasks on other processes) its file, loaded once there."""
    from .predict import Predictor

    if isinstance(model, str):
        model = load_model_once(model)
    plane = stats.apply(to_grey(region, rgb, model.normalization.colour))
    predictor = Predictor(model.net, **options)
    maps = predictor.predict(plane)[(slice(None), *_local(block.link, block.read))]
    return decode(maps, model.decode_params).astype(np.int32)


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
    size_a = dict(zip(*np.unique(a[a > 0], return_counts=True), strict=True))
    size_b = dict(zip(*np.unique(b[b > 0], return_counts=True), strict=True))
    best_a: dict[int, tuple[int, int]] = {}
    best_b: dict[int, tuple[int, int]] = {}
    for (i, j), n in zip(pairs.T, counts, strict=True):
        if n > best_a.get(i, (0, 0))[0]:
            best_a[i] = (n, j)
        if n > best_b.get(j, (0, 0))[0]:
            best_b[j] = (n, i)
    return [
        (int(i), int(j))
        for i, (n, j) in best_a.items()
        if best_b[j][1] == i and n > 0.5 * min(size_a[i], size_b[j])
    ]


def _border_strip(shared: tuple[slice, ...], step: tuple[int, int], link: int) -> tuple[slice, ...]:
    """The middle of two blocks' shared region, ``link // 2`` either side of their border: far
    from both link edges, where each block decodes objects exactly as the whole image would."""
    strip = []
    for s, d in zip(shared, step, strict=True):
        if d == 0:
            strip.append(s)
        else:
            middle = (s.start + s.stop) // 2
            strip.append(slice(max(s.start, middle - link // 2), min(s.stop, middle + link // 2)))
    return tuple(strip)


@dataclass
class BlockResult:
    """What a block sends back: its id count, the labels in its border ring (for linking), and
    its core's labels only when the output is in the client's memory (otherwise written there)."""

    count: int
    ring: list[tuple[tuple[slice, ...], np.ndarray]]
    in_core: np.ndarray
    core: np.ndarray | None


def _ring(block: Block, link: int) -> list[tuple[slice, ...]]:
    """Four rectangles of the link region within ``link // 2`` of the core edge or outside it."""
    (ly, lx), (cy, cx), half = block.link, block.core, link // 2
    return [
        (slice(ly.start, min(ly.stop, cy.start + half)), lx),
        (slice(max(ly.start, cy.stop - half), ly.stop), lx),
        (ly, slice(lx.start, min(lx.stop, cx.start + half))),
        (ly, slice(max(lx.start, cx.stop - half), lx.stop)),
    ]


def run_block(
    source, block: Block, model: Model | str, stats, rgb: bool, options: dict, link: int, out
) -> BlockResult:
    """Stage 1 on a worker: segment, keep the ring, write local ids to ``out`` if it is on disk.

    ``source`` is the image, read here over ``block.read`` only (zarr, numpy), or that region
    already computed by dask (a numpy array of the region's shape, which is the image's shape
    only when the region is the whole image).
    """
    read_shape = tuple(s.stop - s.start for s in block.read)
    computed = isinstance(source, np.ndarray) and source.shape[:2] == read_shape
    region = source if computed else source[block.read]
    labels = segment_block(np.asarray(region), block, model, stats, rgb, options)
    ring = [(r, labels[_local(r, block.link)].copy()) for r in _ring(block, link)]
    core = labels[_local(block.core, block.link)]
    in_core = np.flatnonzero(np.bincount(core.ravel(), minlength=1))
    if out is not None:
        out[block.core] = core.astype(np.uint32)
        return BlockResult(int(labels.max()), ring, in_core[in_core > 0], None)
    return BlockResult(int(labels.max()), ring, in_core[in_core > 0], core)


def relabel_block(out, block: Block, lut: np.ndarray) -> None:
    """Stage 2 on a worker: local ids in ``out`` -> global ids."""
    out[block.core] = lut[np.asarray(out[block.core])]


def _from_ring(ring, region: tuple[slice, ...]) -> np.ndarray:
    """Assemble a block's labels over ``region`` (inside its ring) from the ring rectangles."""
    result = np.zeros([s.stop - s.start for s in region], np.int32)
    for slices, values in ring:
        inter = tuple(
            slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(slices, region, strict=True)
        )
        if all(i.start < i.stop for i in inter):
            result[_local(inter, region)] = values[_local(inter, slices)]
    return result


def link_blocks(blocks: list[Block], results: list[BlockResult], link: int) -> list[np.ndarray]:
    """Unify ids across blocks; returns per block a table: local id -> global consecutive id."""
    offsets = np.cumsum([0] + [r.count for r in results])
    union = _UnionFind(int(offsets[-1]) + 1)
    by_index = {b.index: k for k, b in enumerate(blocks)}
    for k, block in enumerate(blocks):
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            other = by_index.get((block.index[0] + dy, block.index[1] + dx))
            if other is None:
                continue
            shared = tuple(
                slice(max(s.start, t.start), min(s.stop, t.stop))
                for s, t in zip(block.link, blocks[other].link, strict=True)
            )
            shared = _border_strip(shared, (dy, dx), link)
            if any(s.start >= s.stop for s in shared):
                continue
            a, b = _from_ring(results[k].ring, shared), _from_ring(results[other].ring, shared)
            for i, j in _link_pairs(a, b):
                union.union(offsets[k] + i, offsets[other] + j)
    roots = np.array([union.find(i) for i in range(len(union.parent))])
    shown = np.unique(np.concatenate([roots[offsets[k] + r.in_core] for k, r in enumerate(results)] + [[0]]))
    final = np.zeros(len(roots), np.uint32)  # roots that appear in some core -> 1..n
    final[shown[shown > 0]] = np.arange(1, int((shown > 0).sum()) + 1, dtype=np.uint32)
    tables = []
    for k, r in enumerate(results):
        table = final[roots[offsets[k] + np.arange(r.count + 1)]]
        table[0] = 0  # background stays background
        tables.append(table)
    return tables


def run_tasks(tasks: list, scheduler=None) -> Generator[int, None, list]:
    """Compute dask ``tasks``, yielding how many are done; returns their results in order.

    With a ``dask.distributed.Client``, progress comes from futures as they complete (closing
    the generator cancels those not yet run); otherwise tasks go to ``dask.compute`` (threads by
    default, :data:`LOCAL_BLOCKS` at a time) in small batches, so a caller can report progress
    and stop between batches.
    """
    import dask

    if scheduler is not None and hasattr(scheduler, "compute"):  # a distributed Client
        from distributed import as_completed

        futures = scheduler.compute(tasks)
        try:
            for done, _ in enumerate(as_completed(futures), 1):
                yield done
        except GeneratorExit:
            scheduler.cancel(futures)
            raise
        return scheduler.gather(futures)
    scheduler = scheduler or "threads"
    local = scheduler in ("threads", "threading")
    batch = 2 * LOCAL_BLOCKS if local else 1
    options = {"num_workers": LOCAL_BLOCKS} if local else {}
    results: list = []
    for start in range(0, len(tasks), batch):
        results += dask.compute(*tasks[start : start + batch], scheduler=scheduler, **options)
        yield len(results)
    return results


def _reported(tasks: list, scheduler, base: float, span: float, what: str):
    """:func:`run_tasks` with its counts as progress; closing this cancels the tasks not run."""
    return relay(
        run_tasks(tasks, scheduler),
        lambda done: SegmentProgress(base + span * done / len(tasks), f"{what} {done}/{len(tasks)}"),
    )


def segment_large_iter(
    image,
    model: Model | str = DEFAULT_MODEL,
    block_size: int = DEFAULT_BLOCK,
    link: int = DEFAULT_LINK,
    rgb: bool = False,
    scheduler=None,
    out=None,
    **options,
) -> Generator[SegmentProgress, None, Any]:
    """Segment a 2D numpy, dask or zarr image block by block; yields progress, returns labels.

    With a zarr ``out``, workers write their blocks there and send back only the border rings,
    so memory is bounded by block size and worker count, not image size; ``out`` is returned,
    with the object count in ``out.attrs["max_label"]``.
    ``scheduler`` is anything ``dask.compute`` accepts ("threads", "sync") or a
    ``dask.distributed.Client``. ``model``: a loaded model (or a name or file, loaded here); tasks
    in this process share it, tasks on a cluster get its file and load it once per worker.
    ``options`` go to the Predictor (device, tile_size, ...).
    """
    import dask
    import dask.array as da

    from .unet import receptive_radius

    loaded = load_model(model) if isinstance(model, str) else model
    on_cluster = scheduler is not None and not isinstance(scheduler, str)
    shipped: Model | str = str(loaded.path) if on_cluster and loaded.path is not None else loaded
    halo = round_up(receptive_radius(loaded.net.config), loaded.net.multiple)
    shape = (int(image.shape[0]), int(image.shape[1]))
    norm = loaded.normalization
    yield SegmentProgress(0.0, "reading intensity statistics")
    stats = intensity_map(to_grey(np.asarray(strided_sample(image)), rgb, norm.colour), norm)
    blocks = plan_blocks(shape, round_up(block_size, loaded.net.multiple), link, halo)
    on_disk = out is not None and not isinstance(out, np.ndarray)
    target = out if on_disk else None
    # a dask image as an argument would be computed whole for every task: pass each task its
    # region instead (dask computes only the chunks it touches); zarr arrays are read in the task
    lazy = isinstance(image, da.Array)
    task = dask.delayed(run_block)
    stage1 = [
        task(image[b.read] if lazy else image, b, shipped, stats, rgb, options, link, target) for b in blocks
    ]
    results = yield from _reported(stage1, scheduler, 0.0, 0.9, "block")
    yield SegmentProgress(0.9, "linking objects across blocks")
    tables = link_blocks(blocks, results, link)
    if on_disk:
        stage2 = [dask.delayed(relabel_block)(out, b, t) for b, t in zip(blocks, tables, strict=True)]
        yield from _reported(stage2, scheduler, 0.9, 0.1, "writing unified ids, block")
        out.attrs["max_label"] = int(max(int(t.max()) for t in tables))  # ids are 1..max_label
        return out
    if out is None:
        out = np.zeros(shape, np.uint32)
    for block, result, table in zip(blocks, results, tables, strict=True):
        out[block.core] = table[result.core]
    return out


def segment_large(image, model: Model | str = DEFAULT_MODEL, **kwargs):
    """:func:`segment_large_iter` run to completion (for scripts and the API)."""
    return drive(segment_large_iter(image, model, **kwargs))
