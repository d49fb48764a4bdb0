"""Model versions: list with lineage, use, rename, delete, export to one file, import."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.options import DEFAULT_MODEL
from ..core.registry import (
    ModelError,
    bundled_dir,
    delete_model,
    export_model,
    import_model,
    read_card,
    readable_models,
    rename_model,
)
from .active_model import ActiveModel


class VersionsPanel(QWidget):
    """Every model with its parent; the active one marked. Bundled models are read-only."""

    def __init__(self, active: ActiveModel) -> None:
        super().__init__()
        self.active = active
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        buttons = QHBoxLayout()
        for text, slot in (
            ("Use", self._on_use),
            ("Rename", self._on_rename_clicked),
            ("Delete", self._on_delete_clicked),
            ("Export", self._on_export_clicked),
            ("Import", self._on_import_clicked),
        ):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        active.registry_changed.connect(self.refresh)
        active.changed.connect(lambda name: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        self.list.clear()
        for name, path in readable_models().items():
            bundled = path.parent == bundled_dir()
            card = {} if bundled else read_card(path)
            label = f"{name} (bundled)" if bundled else name
            if card.get("parent"):
                label += f"  \u2190 {card['parent']}"
            if name == self.active.name:
                label += "  [active]"
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.list.addItem(item)

    def names(self) -> list[str]:
        items = (self.list.item(i) for i in range(self.list.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item is not None]

    def selected(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def rename(self, old: str, new: str) -> None:
        try:
            rename_model(old, new)
        except ModelError as err:
            show_error(f"LoopSeg: {err}")
            return
        if self.active.name == old:
            self.active.set(new)
        self.active.registry_changed.emit()

    def delete(self, name: str) -> None:
        try:
            delete_model(name)
        except ModelError as err:
            show_error(f"LoopSeg: {err}")
            return
        if self.active.name == name:
            self.active.set(DEFAULT_MODEL)
        self.active.registry_changed.emit()

    def import_file(self, path: str) -> None:
        try:
            name = read_card(import_model(path))["name"]
        except ModelError as err:
            show_error(f"LoopSeg cannot import the model: {err}")
            return
        self.active.registry_changed.emit()
        show_info(f"LoopSeg: imported model {name}")

    def _on_use(self) -> None:
        name = self.selected()
        if name:
            self.active.set(name)

    def _on_rename_clicked(self) -> None:
        old = self.selected()
        if old:
            new, ok = QInputDialog.getText(self, "Rename model", f"New name for {old}:", text=old)
            if ok and new and new != old:
                self.rename(old, new)

    def _on_delete_clicked(self) -> None:
        name = self.selected()
        if (
            name
            and QMessageBox.question(self, "Delete model", f"Delete {name}?")
            == QMessageBox.StandardButton.Yes
        ):
            self.delete(name)

    def _on_export_clicked(self) -> None:
        name = self.selected()
        if not name:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export model", f"{name}.safetensors", "Models (*.safetensors)"
        )
        if path:
            try:
                show_info(f"LoopSeg: exported to {export_model(name, path)}")
            except ModelError as err:
                show_error(f"LoopSeg: {err}")

    def _on_import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import model", "", "Models (*.safetensors)")
        if path:
            self.import_file(path)
