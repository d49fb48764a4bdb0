"""The segmentation pipeline shared by the widget, the command line and the Python API.

normalise (once per plane) -> overlap-tile prediction -> global instance decoding, plane by
plane for time-lapses and Z stacks. ``segment_iter`` yields progress and returns the labels,
so a napari worker and a plain loop drive the very same code.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from .instances import DecodeParams, decode
from .models import Model, load_model
from .normalize import Layout, check_image, iter_planes, normalize_plane
from .predict import DEFAULT_TILE, Predictor
from .progress import drive


@dataclass(frozen=True)
class SegmentProgress:
    """Fraction done, with a short human-readable stage."""

    fraction: float
    stage: str


@dataclass(frozen=True)
class SegmentOptions:
    """How to run the model; which model is a separate argument."""

    device: str = "auto"
    precision: str = "auto"
    tile_size: int = DEFAULT_TILE
    overlap: int | None = None
    batch_size: int | None = None
    layout: Layout = field(default_factory=Layout)
    decode: DecodeParams | None = None


def output_dtype(max_objects: int) -> np.dtype:
    return np.dtype(np.uint16 if max_objects <= np.iinfo(np.uint16).max else np.uint32)


def _scaled(gen, base: float, n_planes: int):
    """Re-yield tile progress as overall progress; return the maps."""
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        yield SegmentProgress(base + 0.8 * step.done / step.total / n_planes, "predicting")


def segment_iter(
    image, model: Model, options: SegmentOptions = SegmentOptions()
) -> Generator[SegmentProgress, None, np.ndarray]:
    """Segment every plane of ``image``; returns labels shaped (stack..., H, W)."""
    lead, (height, width) = check_image(image, options.layout)
    predictor = Predictor(
        model.net,
        device=options.device,
        precision=options.precision,
        tile_size=options.tile_size,
        halo=options.overlap,
        batch_size=options.batch_size,
    )
    params = options.decode or model.decode_params
    norm = model.normalization
    n_planes = int(np.prod(lead)) if lead else 1
    planes: list[tuple[tuple[int, ...], np.ndarray]] = []
    for done, (index, plane) in enumerate(iter_planes(image, options.layout)):
        base = done / n_planes
        yield SegmentProgress(base, f"plane {done + 1}/{n_planes}: predicting" if lead else "predicting")
        maps = yield from _scaled(
            predictor.predict_iter(normalize_plane(plane, options.layout.rgb, norm)), base, n_planes
        )
        yield SegmentProgress(base + 0.8 / n_planes, "finding objects")
        planes.append((index, decode(maps, params)))
    largest = max(int(labels.max()) for _, labels in planes)
    out = np.zeros((*lead, height, width), output_dtype(largest))
    for index, labels in planes:
        out[index] = labels
    yield SegmentProgress(1.0, "done")
    return out


def segment(image, model: str | Model = "nuclei", **options) -> np.ndarray:
    """Instance labels for ``image`` (numpy or dask; 2D, stack, RGB or multichannel).

    ``options``: device, precision, tile_size, overlap, batch_size, rgb, channel_axis, channel.
    """
    layout = Layout(
        rgb=bool(options.pop("rgb", False)),
        channel_axis=options.pop("channel_axis", None),
        channel=int(options.pop("channel", 0)),
    )
    loaded = model if isinstance(model, Model) else load_model(model)
    opts = SegmentOptions(layout=layout, **options)
    return drive(segment_iter(image, loaded, opts))
