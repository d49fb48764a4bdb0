"""The active model of a viewer, shared by its LoopSeg widgets and remembered across sessions.

One :class:`ActiveModel` per viewer (not a global singleton: every test's viewer gets its own).
The choice is saved next to the user models, so napari reopens with the last model used.
"""

from __future__ import annotations

import json
import weakref

from napari.viewer import Viewer
from qtpy.QtCore import QObject, Signal

from ..core.models import DEFAULT_MODEL, model_paths, user_dir
from .layer_identity import underlying

_by_viewer: weakref.WeakKeyDictionary[Viewer, ActiveModel] = weakref.WeakKeyDictionary()


def _settings_file():
    return user_dir() / "active.json"


class ActiveModel(QObject):
    """Holds the active model's name; ``changed`` fires on a new choice, ``registry_changed``
    when versions are added, renamed or deleted."""

    changed = Signal(str)
    registry_changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        try:
            name = json.loads(_settings_file().read_text()).get("active", DEFAULT_MODEL)
        except (OSError, ValueError, AttributeError):
            name = DEFAULT_MODEL
        self._name = name if name in model_paths() else DEFAULT_MODEL

    @property
    def name(self) -> str:
        return self._name

    def set(self, name: str) -> None:
        if name == self._name:
            return
        self._name = name
        try:
            _settings_file().parent.mkdir(parents=True, exist_ok=True)
            _settings_file().write_text(json.dumps({"active": name}))
        except OSError:
            pass  # remembering the choice is a convenience, not a requirement
        self.changed.emit(name)


def active_model(viewer: Viewer) -> ActiveModel:
    """The viewer's active model; every widget of one viewer (each with its own proxy) shares it."""
    viewer = underlying(viewer)
    model = _by_viewer.get(viewer)
    if model is None:
        model = _by_viewer[viewer] = ActiveModel()
    return model
