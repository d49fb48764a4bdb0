"""The segmentation pipeline shared by the widget, the command line and the Python API.

normalise (once per plane) -> overlap-tile prediction -> global instance decoding, plane by
plane for time-lapses and Z stacks. ``segment_iter`` yields progress and returns the labels,
so a napari worker and a plain loop drive the very same code.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .instances import decode
from .normalize import InputError, Layout, check_image, iter_planes, normalize_plane
from .options import AUTO_SIZE, DEFAULT_MODEL, SegmentOptions
from .predict import Predictor
from .progress import drive, relay
from .registry import Model, load_model
from .sizing import (
    MAX_PASSES,
    MIN_PROBE_SIDE,
    PROBE_FACTOR,
    Diameters,
    factor_for,
    median_diameter,
    probed_factor,
    refined_factor,
    resize_maps,
    resize_plane,
    scaled_params,
    uncertainty,
)

log = logging.getLogger(__name__)

#: An earlier estimating pass replaces the refinements' last one only when the network was surer
#: of its foreground there by this much (:func:`.sizing.uncertainty`); closer calls are noise.
SURER_BY = 0.02


@dataclass(frozen=True)
class SegmentProgress:
    """Fraction done, with a short human-readable stage."""

    fraction: float
    stage: str


def output_dtype(max_objects: int) -> np.dtype:
    return np.dtype(np.uint16 if max_objects <= np.iinfo(np.uint16).max else np.uint32)


def _scaled(gen, base: float, n_planes: int):
    """Re-yield tile progress as overall progress; return the maps."""
    return relay(
        gen, lambda step: SegmentProgress(base + 0.8 * step.done / step.total / n_planes, "predicting")
    )


def segment_iter(
    image, model: Model, options: SegmentOptions = SegmentOptions()
) -> Generator[SegmentProgress, None, np.ndarray]:
    """Segment every plane of ``image``; returns labels shaped (stack..., H, W)."""
    lead, (height, width) = check_image(image, options.layout)
    size = options.object_size
    if size == AUTO_SIZE and model.diameters is None:
        log.warning("model '%s' does not record its training object size: no estimate", model.name)
        size = None
    factor = None if size in (None, AUTO_SIZE) else _given_factor(model, size)
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
        name = f"plane {done + 1}/{n_planes}: " if lead else ""
        normalized = normalize_plane(plane, options.layout.rgb, norm)
        labels = None
        if factor is None and size == AUTO_SIZE:
            factor, labels = yield from _estimate(predictor, normalized, params, model, base, n_planes, name)
        if labels is None:
            yield SegmentProgress(base, f"{name}predicting")
            labels, _ = yield from _segment_plane(
                predictor, normalized, params, factor or 1.0, base, n_planes
            )
        planes.append((index, labels))
    largest = max(int(labels.max()) for _, labels in planes)
    out = np.zeros((*lead, height, width), output_dtype(largest))
    for index, labels in planes:
        out[index] = labels
    yield SegmentProgress(1.0, "done")
    return out


def _segment_plane(
    predictor: Predictor, plane: np.ndarray, params, factor: float, base: float, n_planes: int
):
    """Labels of one normalised plane, predicted at ``factor`` times its size, and how unsure the
    network was of its foreground there (:func:`.sizing.uncertainty`)."""
    if factor == 1.0:
        maps = small = yield from _scaled(predictor.predict_iter(plane), base, n_planes)
    else:
        small = yield from _scaled(predictor.predict_iter(resize_plane(plane, factor)), base, n_planes)
        maps, params = resize_maps(small, plane.shape), scaled_params(params, factor)
    yield SegmentProgress(base + 0.8 / n_planes, "finding objects")
    return decode(maps, params), uncertainty(small)


def _estimate(predictor, plane, params, model: Model, base: float, n_planes: int, name: str):
    """(factor, labels at it): a pass on the plane shrunk by half finds nuclei too large for the
    network (at their own size they fragment, and fragments look like nuclei of the right size);
    otherwise a pass at the original size; then up to two refinements. Of the passes that found
    objects (the half-size one only where it called for shrinking), one where the network was
    clearly surer of its foreground than in the last one wins: a size measured on fragments or on
    merged crowds sends the refinements the wrong way, and the network is surest at the scale it
    learned. Where the half-size pass calls for shrinking nuclei that still lie within the training
    range, a pass at the original size is made too, and it wins unless the resized one is surer:
    a model whose median lies low in its range would otherwise shrink nuclei it segments well."""
    reference, factor, labels, unsure = _diameters(model), 1.0, None, 0.0
    passes: list[tuple[float, float, np.ndarray]] = []  # (uncertainty, factor, labels)
    as_is: tuple[float, float, np.ndarray] | None = None  # the original size, beside a shrink
    yield SegmentProgress(base, f"{name}estimating object size")
    if min(plane.shape) * PROBE_FACTOR >= MIN_PROBE_SIDE:
        probe, probe_unsure = yield from _segment_plane(
            predictor, plane, params, PROBE_FACTOR, base, n_planes
        )
        shrink = probed_factor(probe, reference)
        if shrink is not None:
            labels, unsure = yield from _segment_plane(predictor, plane, params, shrink, base, n_planes)
            if median_diameter(labels) is not None:
                factor = shrink
                passes.append((probe_unsure, PROBE_FACTOR, probe))
                if shrink >= reference.median / reference.high:  # nuclei within the learned sizes
                    yield SegmentProgress(base, f"{name}estimating object size (x1)")
                    full, full_unsure = yield from _segment_plane(
                        predictor, plane, params, 1.0, base, n_planes
                    )
                    if median_diameter(full) is not None:
                        as_is = (full_unsure, 1.0, full)
            else:  # the nuclei vanished: they were not large after all (merged crowds in the probe)
                labels = None
    if labels is None:
        labels, unsure = yield from _segment_plane(predictor, plane, params, 1.0, base, n_planes)
    passes.append((unsure, factor, labels))
    for _ in range(MAX_PASSES - 1):
        refined = refined_factor(labels, reference, factor)
        if refined is None:
            break
        factor = refined
        yield SegmentProgress(base, f"{name}estimating object size (x{factor:.2f})")
        labels, unsure = yield from _segment_plane(predictor, plane, params, factor, base, n_planes)
        passes.append((unsure, factor, labels))
    found = [p for p in passes if median_diameter(p[2]) is not None] or passes[-1:]
    surest = min(found, key=lambda p: p[0])
    chosen = surest if surest[0] < found[-1][0] - SURER_BY else found[-1]
    if as_is is not None and as_is[0] <= chosen[0]:
        chosen = as_is
    return chosen[1], chosen[2]


def _diameters(model: Model) -> Diameters:
    if model.diameters is None:
        raise InputError(
            f"model '{model.name}' does not record its training object size; segment without one"
        )
    return model.diameters


def _given_factor(model: Model, size) -> float:
    try:
        diameter = float(size)
    except (TypeError, ValueError):
        raise InputError(f"object size must be a number of pixels or 'auto', not {size!r}") from None
    if not diameter > 0:
        raise InputError(f"object size must be positive, got {size}")
    return factor_for(diameter, _diameters(model))


def segment(image, model: str | Model = DEFAULT_MODEL, **options) -> np.ndarray:
    """Instance labels for ``image`` (numpy or dask; 2D, stack, RGB or multichannel).

    ``options``: device, precision, tile_size, overlap, batch_size, object_size (default "auto":
    estimated from a first pass; None: the image as it is), rgb, channel_axis, channel.
    """
    layout = Layout(
        rgb=bool(options.pop("rgb", False)),
        channel_axis=options.pop("channel_axis", None),
        channel=int(options.pop("channel", 0)),
    )
    loaded = model if isinstance(model, Model) else load_model(model)
    opts = SegmentOptions(layout=layout, **options)
    return drive(segment_iter(image, loaded, opts))
