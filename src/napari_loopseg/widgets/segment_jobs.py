"""Segmentation jobs for napari workers, shared by the Segment and Fine-tune widgets.

Jobs are made on the GUI thread (reading layer state), run in a worker (compute only, through
:func:`napari_loopseg.core.segment.segment_iter`), and their results go back to layers on the
GUI thread via :func:`.layer_results.put_result`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import threading
from collections.abc import Container, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from napari.layers import Image
from napari.viewer import Viewer

from ..core.errors import InputError
from ..core.normalize import Layout, check_image
from ..core.options import DEFAULT_BLOCK, SegmentOptions
from ..core.progress import relay
from .layer_results import labels_shape, own_result

#: Planes larger than this are re-segmented in the visible field of view first.
LARGE_PLANE = 2048 * 2048
#: Planes larger than this are segmented block by block: lazy ones (dask, zarr) are never loaded
#: whole, and in-memory ones never need whole-plane probability maps (3 floats a pixel).
BLOCKWISE_PLANE = 4096 * 4096
BLOCK_SIZE = DEFAULT_BLOCK

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class Job:
    """One image layer (or one plane, or one window of it) to segment, and where the result goes."""

    layer: Image
    data: Any  # numpy or dask array: the layer's data or one plane of it
    layout: Layout
    plane: tuple[int, ...] | None = None
    window: tuple[slice, slice] | None = None
    by_blocks: bool = False
    #: LoopSeg's unedited earlier result for the layer (all planes), whose ids the new one keeps;
    #: the worker only reads it (if the user paints in it meanwhile, the result gets a new layer)
    previous: np.ndarray | None = None


def make_job(viewer: Viewer, layer: Image, current_plane_only: bool) -> Job:
    """Validate ``layer`` (raises InputError) and describe what to segment."""
    layout = Layout(rgb=bool(layer.rgb))
    data = layer.data[0] if layer.multiscale else layer.data  # full resolution
    lead, (height, width) = check_image(data, layout)
    large = height * width > BLOCKWISE_PLANE
    plane = current_plane(viewer, layer, lead) if lead and current_plane_only else None
    pixels = data if plane is None else data[plane]
    # cheap enough for the GUI thread up to the block-by-block size; the worker checks larger ones
    small = isinstance(pixels, np.ndarray) and pixels.size <= BLOCKWISE_PLANE
    if small and pixels.dtype.kind == "f" and not np.isfinite(pixels).any():
        raise InputError("the image has no finite pixel values (all NaN or infinite)")
    earlier = own_result(viewer, layer)
    previous = earlier.data if earlier is not None and isinstance(earlier.data, np.ndarray) else None
    if previous is not None and previous.shape != labels_shape(layer):
        previous = None
    if plane is not None:
        return Job(layer, pixels, layout, plane, by_blocks=large, previous=previous)
    return Job(layer, data, layout, by_blocks=large and not lead, previous=previous)


def current_plane(viewer: Viewer, layer, lead: tuple[int, ...]) -> tuple[int, ...]:
    point = layer.world_to_data(viewer.dims.point)
    return tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(point[: len(lead)], lead, strict=True))


def visible_window(viewer: Viewer, layer: Image, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The part of a 2D plane on screen, or None if the whole plane is (nearly) visible."""
    # napari >= 0.9: viewer.canvas.size and viewer.scene.camera; before: _canvas_size, camera
    canvas = getattr(getattr(viewer, "canvas", None), "size", None) or getattr(viewer, "_canvas_size", None)
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None else viewer.camera
    if not canvas or min(canvas) <= 1:
        return None
    height, width = canvas
    zoom = camera.zoom
    centre = np.asarray(camera.center[-2:])
    half = np.array([height, width]) / zoom / 2
    world = np.zeros(layer.ndim)
    corners = []
    for corner in (centre - half, centre + half):
        world[-2:] = corner
        corners.append(np.asarray(layer.world_to_data(world))[-2:])
    lo = np.clip(np.floor(np.minimum(*corners)).astype(int), 0, shape)
    hi = np.clip(np.ceil(np.maximum(*corners)).astype(int), 0, shape)
    if np.prod(hi - lo) >= 0.8 * np.prod(shape) or np.any(hi - lo < 16):
        return None
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


@dataclass(frozen=True)
class JobEvent:
    """What the worker reports about job ``index`` (-1: the whole run). ``kind`` and ``value``:

    - "progress": a :class:`~napari_loopseg.core.segment.SegmentProgress`;
    - "store": the path of a label store too large for memory, as its writing starts;
    - "result": the labels, a :class:`LabelsResult` or a :class:`StoredResult`;
    - "failed": LoopSeg's message for a job that cannot be segmented (the others go on);
    - "skipped": None; the job's layer was removed while it ran;
    - "model_failed": the message; the model cannot be loaded and nothing else runs.
    """

    kind: Literal["progress", "store", "result", "failed", "skipped", "model_failed"]
    index: int
    value: Any = None


@dataclass(frozen=True)
class LabelsResult:
    """Labels in memory; ``objects`` counts them (their ids need not run 1..n: see ``keep_ids``)."""

    labels: np.ndarray
    objects: int


@dataclass(frozen=True)
class StoredResult:
    """Labels too large for memory: an OME-Zarr store on disk, full resolution first."""

    levels: list
    path: Path
    objects: int


def result_fits_in_memory(shape: tuple[int, int]) -> bool:
    """Whether uint32 labels of ``shape`` fit comfortably: under 1/8 of physical memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume 8 GB
        memory = 8 * 2**30
    return 4 * shape[0] * shape[1] < memory / 8


def results_dir() -> Path:
    """Where label stores too large for memory live while their layer is open."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-loopseg")) / "results"


def _segment_blocks(
    job: Job, index: int, model, options: SegmentOptions
) -> Generator[JobEvent, None, object]:
    """Block-wise segmentation of a large plane; to a zarr store when the result is too large."""
    from ..core.bigdata import segment_large_iter
    from ..core.segment import SegmentProgress
    from ..core.zarr_io import add_pyramid, create_labels, ome_meta

    _, shape = check_image(job.data, job.layout)
    store = out = None
    if not result_fits_in_memory(shape):
        results_dir().mkdir(parents=True, exist_ok=True)
        store = Path(tempfile.mkdtemp(prefix=f"{_safe(job.layer.name)}-", suffix=".zarr", dir=results_dir()))
        shutil.rmtree(store)  # a unique name; zarr creates the store itself
        meta = ome_meta(tuple(job.layer.scale[-2:]), tuple(job.layer.translate[-2:]))
        out = create_labels(store, shape, BLOCK_SIZE, meta)
        yield JobEvent("store", index, store)  # napari never closes a cancelled worker: the GUI cleans up
    gen = segment_large_iter(
        job.data,
        model,
        block_size=BLOCK_SIZE,
        rgb=job.layout.rgb,
        out=out,
        device=options.device,
        tile_size=options.tile_size,
        precision=options.precision,
    )
    try:
        labels = yield from _tagged(gen, index)
        if store is None:
            return labels
        yield JobEvent("progress", index, SegmentProgress(1.0, "writing overview levels"))
        return StoredResult(add_pyramid(store), store, int(labels.attrs["max_label"]))
    except BaseException:  # failed (or closed): leave no half-written store behind
        gen.close()
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)
        raise


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "image"


def _tagged(gen: Generator[Any, None, _Result], index: int) -> Generator[JobEvent, None, _Result]:
    """Tag a core generator's progress items for job ``index``; return its result."""
    return relay(gen, lambda progress: JobEvent("progress", index, progress))


def _unless_skipped(
    gen: Generator[Any, None, object], index: int, skipped: Container[int]
) -> Generator[JobEvent, None, object]:
    """Relay ``gen`` until job ``index`` lands in ``skipped`` (its layer was removed): then close
    it (which deletes any half-written store) and return :data:`SKIPPED`."""
    while True:
        if index in skipped:
            gen.close()
            return SKIPPED
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        yield item


SKIPPED = object()


def run_jobs(
    jobs: list[Job], model_name: str, options: SegmentOptions, skipped: Container[int] = frozenset()
) -> Generator[JobEvent, None, None]:
    """Worker body: yields a :class:`JobEvent` for each thing the GUI should know.

    LoopSeg's own errors never escape as exceptions (napari would show them with a traceback).
    """
    from ..core.errors import LoopSegError
    from ..core.registry import load_model
    from ..core.segment import segment_iter

    try:
        model = load_model(model_name)
    except LoopSegError as err:
        yield JobEvent("model_failed", -1, str(err))
        return
    for index, job in enumerate(jobs):
        if index in skipped:
            continue
        try:
            if job.by_blocks and job.window is None:
                gen = _segment_blocks(job, index, model, options)
            else:
                data = job.data if job.window is None else job.data[job.window]  # a window: of one 2D plane
                gen = _tagged(segment_iter(data, model, replace(options, layout=job.layout)), index)
            labels = yield from _unless_skipped(gen, index, skipped)
        except (LoopSegError, OSError) as err:
            yield JobEvent("failed", index, str(err))
            continue
        if labels is SKIPPED:
            yield JobEvent("skipped", index)
        elif isinstance(labels, np.ndarray):
            objects = int(np.count_nonzero(np.bincount(labels.ravel().astype(np.int64, copy=False))[1:]))
            yield JobEvent("result", index, LabelsResult(keep_ids(job, labels), objects))
        else:
            yield JobEvent("result", index, labels)


def keep_ids(job: Job, labels: np.ndarray) -> np.ndarray:
    """``labels`` with the ids of the job's earlier result wherever they are the same objects
    (:func:`~napari_loopseg.core.instances.carry_ids`); in a window, new ids avoid every id of
    the plane, as the objects outside the window keep theirs."""
    from ..core.instances import carry_ids

    if job.previous is None:
        return labels
    old = np.asarray(job.previous[job.plane] if job.plane is not None else job.previous)
    if job.window is None:
        return carry_ids(labels, old)
    in_use = np.flatnonzero(np.bincount(old.ravel().astype(np.int64, copy=False)))
    return carry_ids(labels, old[job.window], reserved=in_use)


_warm_up_thread: threading.Thread | None = None
#: Seconds from opening a widget to importing torch, so that napari lays out and paints the new
#: widget first: loading torch's C extension holds the GIL, and the two together made one long
#: pause (benchmarks/README.md).
WARM_UP_DELAY_S = 0.5


def _import_compute_modules() -> None:
    # torch, sympy and napari leave about a million long-lived objects. A full garbage collection
    # walks them all while holding the GIL, and the GUI thread waits: during these imports such
    # collections paused it several times (benchmarks/README.md). So none runs during the
    # imports, and afterwards the objects are frozen: later collections skip them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from ..core import finetune, segment  # noqa: F401

        with contextlib.suppress(ImportError):  # builds without dynamo: nothing to warm up
            import torch._dynamo  # noqa: F401
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def warm_up() -> None:
    """Import torch and the compute modules off the GUI thread, once per process, when a widget
    opens; including ``torch._dynamo``, which torch's optimisers import on their first step (with
    sympy: hundreds of modules, whose garbage collection stalled the GUI).

    A plain thread, not a Qt worker: it touches no Qt object, so closing the viewer (or the
    script ending) while it runs cannot hit a deleted widget or destroy a running QThread; the
    interpreter waits for it at exit, so no import is cut in half.
    """
    global _warm_up_thread
    if _warm_up_thread is None:
        _warm_up_thread = threading.Timer(WARM_UP_DELAY_S, _import_compute_modules)
        _warm_up_thread.name = "loopseg-warm-up"
        _warm_up_thread.start()
