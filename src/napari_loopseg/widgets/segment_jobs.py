"""Segmentation jobs for napari workers, shared by the Segment and Fine-tune widgets.

Jobs are made on the GUI thread (reading layer state), run in a worker (compute only, through
:func:`napari_loopseg.core.segment.segment_iter`), and their results go back to layers on the
GUI thread via :func:`.layer_results.put_result`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.viewer import Viewer

from ..core.normalize import Layout, check_image

#: Planes larger than this are re-segmented in the visible field of view first.
LARGE_PLANE = 2048 * 2048
#: Planes larger than this are segmented block by block: lazy ones (dask, zarr) are never loaded
#: whole, and in-memory ones never need whole-plane probability maps (3 floats a pixel).
BLOCKWISE_PLANE = 4096 * 4096
BLOCK_SIZE = 2048


@dataclass(frozen=True)
class Job:
    """One image layer (or one plane, or one window of it) to segment, and where the result goes."""

    layer: Image
    data: object
    layout: Layout
    plane: tuple[int, ...] | None = None
    window: tuple[slice, slice] | None = None
    by_blocks: bool = False


def make_job(viewer: Viewer, layer: Image, current_plane_only: bool) -> Job:
    """Validate ``layer`` (raises InputError) and describe what to segment."""
    layout = Layout(rgb=bool(layer.rgb))
    data = layer.data[0] if layer.multiscale else layer.data  # full resolution
    lead, (height, width) = check_image(data, layout)
    large = height * width > BLOCKWISE_PLANE
    if lead and current_plane_only:
        plane = current_plane(viewer, layer, lead)
        return Job(layer, data[plane], layout, plane, by_blocks=large)
    return Job(layer, data, layout, by_blocks=large and not lead)


def current_plane(viewer: Viewer, layer, lead: tuple[int, ...]) -> tuple[int, ...]:
    point = layer.world_to_data(viewer.dims.point)
    return tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(point[: len(lead)], lead))


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


def _segment_blocks(job: Job, index: int, model, options: dict) -> Generator[tuple, None, object]:
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
        yield ("store", index, store)  # napari never closes a cancelled worker: the GUI cleans up
    kwargs = {k: v for k, v in options.items() if k in ("device", "tile_size")}
    gen = segment_large_iter(
        job.data, str(model.path or model.name), block_size=BLOCK_SIZE, rgb=job.layout.rgb, out=out, **kwargs
    )
    try:
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                labels = stop.value
                break
            yield ("progress", index, progress)
        if store is None:
            return labels
        yield ("progress", index, SegmentProgress(1.0, "writing overview levels"))
        return StoredResult(add_pyramid(store), store, int(labels.attrs["max_label"]))
    except BaseException:  # failed (or closed): leave no half-written store behind
        gen.close()
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)
        raise


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "image"


def run_jobs(jobs: list[Job], model_name: str, options: dict) -> Generator[tuple, None, None]:
    """Worker body: yields ("progress", index, SegmentProgress) and ("result", index, labels),
    where labels is an array or, for results too large for memory, a :class:`StoredResult`
    (announced by ("store", index, path) when its writing starts)."""
    from ..core.models import load_model
    from ..core.segment import SegmentOptions, segment_iter

    model = load_model(model_name)
    for index, job in enumerate(jobs):
        if job.by_blocks:
            labels = yield from _segment_blocks(job, index, model, options)
            yield ("result", index, labels)
            continue
        data = job.data if job.window is None else job.data[job.window]  # a window is of one 2D plane
        gen = segment_iter(data, model, SegmentOptions(layout=job.layout, **options))
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                yield ("result", index, stop.value)
                break
            yield ("progress", index, progress)


def warm_up() -> None:
    """Worker body run when a widget opens: import torch and the compute modules off the GUI
    thread, including ``torch._dynamo``, which torch's optimisers import on their first step
    (with sympy: hundreds of modules, whose garbage collection stalled the GUI for ~250 ms)."""
    from ..core import finetune, segment  # noqa: F401

    try:
        import torch._dynamo  # noqa: F401
    except ImportError:  # builds without dynamo: nothing to warm up
        pass
