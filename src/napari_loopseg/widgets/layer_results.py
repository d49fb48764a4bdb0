"""Putting segmentation results into Labels layers without ever losing a user's edits.

LoopSeg's own result for an image is marked in the layer's metadata. While nobody has edited
it, a new result replaces its data through ``Labels.data_setitem`` (so Ctrl+Z brings the old
result back); once the user paints, fills or erases in it (see :mod:`.review_tracking`), it is
theirs and a new layer is made.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.viewer import Viewer

from .layer_identity import same_layer
from .review_tracking import tracker_for

KEY = "loopseg"


def source_image(layer: Labels) -> str | None:
    """Name of the image a LoopSeg result was computed from (None for other layers)."""
    return layer.metadata.get(KEY, {}).get("source")


def is_overlay(layer) -> bool:
    """LoopSeg's "reviewed areas" overlay: an Image layer, but not an image to segment or pair."""
    return bool(layer.metadata.get(KEY, {}).get("overlay"))


def own_result(viewer: Viewer, image: Image) -> Labels | None:
    """LoopSeg's unedited in-memory result layer for ``image``, if there is one."""
    for layer in viewer.layers:
        if (
            isinstance(layer, Labels)
            and source_image(layer) == image.name
            and "store" not in layer.metadata[KEY]
            and not tracker_for(layer).edited
        ):
            return layer
    return None


def labels_shape(image: Image) -> tuple[int, ...]:
    return tuple(image.data.shape[:-1] if image.rgb else image.data.shape)


def put_result(
    viewer: Viewer,
    image: Image,
    labels: np.ndarray,
    model: str,
    plane: tuple[int, ...] | None = None,
    window: tuple[slice, slice] | None = None,
) -> Labels:
    """Show ``labels`` (all planes, one ``plane`` of a stack, or a ``window`` of it) as ``<image> labels``.

    Replaces LoopSeg's own unedited previous result undoably; otherwise adds a new layer.
    """
    shape = labels_shape(image)
    region = (*(plane or ()), *(window or ()))
    target = own_result(viewer, image)
    if target is not None and (
        target.data.shape != shape or (labels.size and labels.max() > np.iinfo(target.data.dtype).max)
    ):
        target = None  # another grid, or more objects than its dtype holds: a new layer
    if target is None:
        data = np.zeros(shape, labels.dtype) if region else labels
        if region:
            data[region] = labels
        target = viewer.add_labels(
            data,
            name=f"{image.name} labels",
            scale=image.scale[: len(shape)],
            translate=image.translate[: len(shape)],
            metadata={KEY: {"source": image.name, "model": model}},
        )
        tracker_for(target)
        return target
    old = np.asarray(target.data[region])
    changed = np.nonzero(old != labels)
    offsets = [*(plane or ()), *(w.start for w in window or ())]
    lead = len(plane or ())
    changed = tuple(np.full(changed[0].shape, i) for i in offsets[:lead]) + tuple(
        index + (offsets[lead + k] if window else 0) for k, index in enumerate(changed)
    )
    with tracker_for(target).suspended():
        target.data_setitem(changed, labels[old != labels].astype(target.data.dtype))
    target.metadata[KEY]["model"] = model
    return target


def put_stored_result(viewer: Viewer, image: Image, levels: list, path: Path, model: str) -> Labels:
    """Show labels too large for memory, read lazily from their OME-Zarr store (``levels``: full
    resolution first) as a new multiscale layer (one level: a plain layer, which napari needs).
    The store is deleted when the layer is removed."""
    layer = viewer.add_labels(
        levels if len(levels) > 1 else levels[0],
        multiscale=len(levels) > 1,
        name=f"{image.name} labels",
        scale=image.scale[-2:],
        translate=image.translate[-2:],
        metadata={KEY: {"source": image.name, "model": model, "store": str(path)}},
    )
    tracker_for(layer)

    def forget(event) -> None:
        if same_layer(event.value, layer):
            viewer.layers.events.removed.disconnect(forget)
            shutil.rmtree(path, ignore_errors=True)

    viewer.layers.events.removed.connect(forget)
    return layer
