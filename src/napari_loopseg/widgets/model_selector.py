"""A combo box of available models, shared by the Segment and Fine-tune widgets."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget

from ..core.models import DEFAULT_MODEL, bundled_dir, model_paths


class ModelSelector(QComboBox):
    """Lists bundled and user models by name; :meth:`refresh` re-reads the registry."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("Model used to segment (bundled or fine-tuned)")
        self.refresh()

    def refresh(self, select: str | None = None) -> None:
        current = select or self.currentData() or DEFAULT_MODEL
        self.blockSignals(True)
        self.clear()
        for name, path in model_paths().items():
            source = "bundled" if path.parent == bundled_dir() else "yours"
            self.addItem(f"{name} ({source})", name)
        index = self.findData(current)
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)

    @property
    def model_name(self) -> str:
        return self.currentData() or DEFAULT_MODEL
