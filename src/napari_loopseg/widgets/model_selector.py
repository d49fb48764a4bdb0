"""A combo box of available models, bound to the viewer's active model (shared by all widgets)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget

from ..core.registry import bundled_dir, readable_models
from .active_model import ActiveModel


class ModelSelector(QComboBox):
    """Lists bundled and user models that read; choosing one makes it the viewer's active model."""

    def __init__(self, active: ActiveModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.active = active
        self.setToolTip("Active model (bundled, or one of your fine-tuned versions)")
        self.refresh()
        self.currentIndexChanged.connect(self._on_index_changed)
        active.changed.connect(self._on_active_changed)
        active.registry_changed.connect(self.refresh)

    def refresh(self) -> None:
        self.blockSignals(True)
        self.clear()
        for name, path in readable_models().items():
            source = "bundled" if path.parent == bundled_dir() else "yours"
            self.addItem(f"{name} ({source})", name)
        self.setCurrentIndex(max(self.findData(self.active.name), 0))
        self.blockSignals(False)

    def _on_index_changed(self, index: int) -> None:
        if index >= 0:
            self.active.set(self.itemData(index))
            if self.active.name != self.itemData(index):  # refused (the file went bad meanwhile)
                self.refresh()

    def _on_active_changed(self, name: str) -> None:
        index = self.findData(name)
        if index < 0:
            self.refresh()
        else:
            self.blockSignals(True)
            self.setCurrentIndex(index)
            self.blockSignals(False)

    @property
    def model_name(self) -> str:
        return self.currentData() or self.active.name
