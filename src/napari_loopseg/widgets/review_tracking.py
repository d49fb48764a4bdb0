"""Which pixels of a Labels layer the user has edited, from the layer's own ``paint`` event.

napari >= 0.8 reports brush, fill and polygon edits as ``_MaskedPaintAtom`` items (a bounding box
and a mask); ``data_setitem`` and older napari report ``(indices, old, new)`` tuples. Both arrive
through ``events.paint`` and both are handled. LoopSeg's own writes are not edits: they happen
inside :meth:`ReviewTracker.suspended`.

Trackers are kept per layer itself, not per reference to it: widgets see layers through napari's
plugin proxy, a new object on every access (see :mod:`.layer_identity`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from napari.layers import Labels

from ..core.review import DEFAULT_MARGIN, reviewed_from_edits
from .layer_identity import underlying

_trackers: weakref.WeakKeyDictionary[Labels, ReviewTracker] = weakref.WeakKeyDictionary()


class ReviewTracker:
    """Accumulates a per-pixel "touched by the user" mask for one Labels layer."""

    def __init__(self, layer: Labels) -> None:
        layer = underlying(layer)
        self._layer = weakref.ref(layer)
        self.touched = np.zeros(layer.data.shape, bool)
        self._suspended = False
        self.listeners: list[Callable[[], None]] = []
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)

    @property
    def layer(self) -> Labels | None:
        return self._layer()

    @property
    def edited(self) -> bool:
        return bool(self.touched.any())

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """LoopSeg's own writes inside this block are not recorded as user edits."""
        self._suspended = True
        try:
            yield
        finally:
            self._suspended = False

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def _on_paint(self, event) -> None:
        if self._suspended:
            return
        for atom in event.value:
            if hasattr(atom, "slice_key"):  # _MaskedPaintAtom (napari >= 0.8)
                region = self.touched[atom.slice_key]
                if atom.mask is None:
                    region[...] = True
                else:
                    region |= atom.mask
            else:  # (indices, old values, new values)
                self.touched[atom[0]] = True
        self._notify()

    def _on_data(self, event) -> None:
        """The whole array was replaced: start over (old edits no longer describe it)."""
        layer = self.layer
        if layer is not None and not self._suspended:
            self.touched = np.zeros(layer.data.shape, bool)
            self._notify()

    def edited_planes(self) -> list[tuple[int, ...]]:
        """Leading indices (empty tuple for 2D) of planes with edits."""
        lead = self.touched.shape[:-2]
        if not lead:
            return [()] if self.touched.any() else []
        return [i for i in np.ndindex(*lead) if self.touched[i].any()]

    def reviewed(self, plane: tuple[int, ...] = (), margin: int = DEFAULT_MARGIN) -> np.ndarray:
        """Reviewed mask of one plane: the edited objects plus a margin."""
        layer = self.layer
        labels = np.asarray(layer.data[plane]) if layer is not None else np.zeros(self.touched[plane].shape)
        return reviewed_from_edits(labels, self.touched[plane], margin)

    def reviewed_fraction(self) -> float:
        """Share of the layer's pixels that supervise training."""
        reviewed = sum(int(self.reviewed(plane).sum()) for plane in self.edited_planes())
        return reviewed / max(1, self.touched.size)


def tracker_for(layer: Labels) -> ReviewTracker:
    """The layer's tracker, created (and listening) on first use; it lives as long as the layer."""
    layer = underlying(layer)
    tracker = _trackers.get(layer)
    if tracker is None:
        tracker = _trackers[layer] = ReviewTracker(layer)
    return tracker
