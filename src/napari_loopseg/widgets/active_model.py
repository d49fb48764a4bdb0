"""The active model of a viewer, shared by its LoopSeg widgets and remembered across sessions.

One :class:`ActiveModel` per viewer (not a global singleton: every test's viewer gets its own).
The choice is saved next to the user models, so napari reopens with the last model used; a
saved choice that no longer reads falls back to the bundled model, with a message.
"""

from __future__ import annotations

import json
import weakref

from napari.utils.notifications import show_error, show_warning
from napari.viewer import Viewer
from qtpy.QtCore import QObject, Signal

from ..core.options import DEFAULT_MODEL
from ..core.registry import readable_models, user_dir
from .layer_identity import underlying

_by_viewer: weakref.WeakKeyDictionary[Viewer, ActiveModel] = weakref.WeakKeyDictionary()


def _settings_file():
    return user_dir() / "active.json"


def _saved_choice() -> str:
    try:
        name = json.loads(_settings_file().read_text()).get("active", DEFAULT_MODEL)
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MODEL
    return name if isinstance(name, str) else DEFAULT_MODEL


class ActiveModel(QObject):
    """Holds the active model's name; ``changed`` fires on a new choice, ``registry_changed``
    when versions are added, renamed or deleted."""

    changed = Signal(str)
    registry_changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._name = DEFAULT_MODEL
        saved = _saved_choice()
        if saved in readable_models():
            self._name = saved
        elif saved != DEFAULT_MODEL:
            self._remember(DEFAULT_MODEL)
            show_warning(
                f"LoopSeg: the model used last, '{saved}', is missing or unreadable; "
                f"using the bundled model '{DEFAULT_MODEL}'"
            )

    @property
    def name(self) -> str:
        return self._name

    def set(self, name: str) -> None:
        """Make ``name`` active; a model whose file does not read is refused with a message."""
        if name == self._name:
            return
        if name not in readable_models():
            show_error(f"LoopSeg: model '{name}' is missing or unreadable; keeping '{self._name}'")
            return
        self._name = name
        self._remember(name)
        self.changed.emit(name)

    def fall_back(self, reason: str) -> None:
        """The active model failed to load: back to the bundled model, saying why."""
        show_error(f"LoopSeg cannot load model '{self._name}' ({reason}); back to '{DEFAULT_MODEL}'")
        self._name = DEFAULT_MODEL
        self._remember(DEFAULT_MODEL)
        self.changed.emit(DEFAULT_MODEL)
        self.registry_changed.emit()

    def _remember(self, name: str) -> None:
        try:
            _settings_file().parent.mkdir(parents=True, exist_ok=True)
            _settings_file().write_text(json.dumps({"active": name}))
        except OSError:
            pass  # remembering the choice is a convenience, not a requirement


def active_model(viewer: Viewer) -> ActiveModel:
    """The viewer's active model; every widget of one viewer (each with its own proxy) shares it."""
    viewer = underlying(viewer)
    model = _by_viewer.get(viewer)
    if model is None:
        model = _by_viewer[viewer] = ActiveModel()
    return model
