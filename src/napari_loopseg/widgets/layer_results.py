"""Putting segmentation results into Labels layers without ever losing a user's edits.

LoopSeg's own result for an image is marked in the layer's metadata. While nobody has edited
it, a new result replaces its data through ``Labels.data_setitem`` (so Ctrl+Z brings the old
result back); once the user paints, fills or erases in it, it is theirs and a new layer is made.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.viewer import Viewer

KEY = "loopseg"


def _info(layer: Labels) -> dict:
    return layer.metadata.get(KEY, {})


def is_edited(layer: Labels) -> bool:
    return bool(_info(layer).get("edited"))


def _on_user_edit(layer: Labels) -> None:
    info = _info(layer)
    if info and not info.get("writing"):
        info["edited"] = True


def own_result(viewer: Viewer, image: Image) -> Labels | None:
    """LoopSeg's unedited result layer for ``image``, if there is one."""
    for layer in viewer.layers:
        if isinstance(layer, Labels) and _info(layer).get("source") == image.name and not is_edited(layer):
            return layer
    return None


def _track_edits(layer: Labels) -> None:
    layer.events.paint.connect(lambda event: _on_user_edit(layer))
    layer.events.data.connect(lambda event: _on_user_edit(layer))


def labels_shape(image: Image) -> tuple[int, ...]:
    return tuple(image.data.shape[:-1] if image.rgb else image.data.shape)


def put_result(
    viewer: Viewer,
    image: Image,
    labels: np.ndarray,
    model: str,
    plane: tuple[int, ...] | None = None,
) -> Labels:
    """Show ``labels`` (all planes, or one ``plane`` of a stack) as ``<image> labels``.

    Replaces LoopSeg's own unedited previous result undoably; otherwise adds a new layer.
    """
    shape = labels_shape(image)
    target = own_result(viewer, image)
    if target is not None and (target.data.shape != shape or np.dtype(target.data.dtype).itemsize < labels.dtype.itemsize):
        target = None
    if target is None:
        data = np.zeros(shape, labels.dtype) if plane is not None else labels
        if plane is not None:
            data[plane] = labels
        target = viewer.add_labels(
            data,
            name=f"{image.name} labels",
            scale=image.scale[: len(shape)],
            translate=image.translate[: len(shape)],
            metadata={KEY: {"source": image.name, "model": model, "edited": False}},
        )
        _track_edits(target)
        return target
    region = np.s_[plane] if plane is not None else np.s_[...]
    old = np.asarray(target.data[region])
    changed = np.nonzero(old != labels)
    if plane is not None:
        changed = tuple(np.full(changed[0].shape, i) for i in plane) + changed
    info = _info(target)
    info["writing"] = True
    try:
        new_values = labels[np.nonzero(old != labels)]
        target.data_setitem(changed, new_values.astype(target.data.dtype))
    finally:
        info["writing"] = False
    info["model"] = model
    return target
