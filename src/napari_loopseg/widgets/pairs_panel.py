"""The Fine-tune widget's pairs: (image, labels) layers, how much of each is reviewed, and how each
supervises training (My edits / Whole image correct / Validation).

LoopSeg's own results pair themselves with their image; other pairs are added by hand. The
reviewed share follows the user's edits (debounced: strokes come in bursts), and an optional
overlay shows what will supervise training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from napari.viewer import Viewer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError
from .layer_identity import same_layer
from .layer_results import KEY, is_overlay, labels_shape, source_image
from .review_tracking import tracker_for
from .segment_jobs import current_plane

MY_EDITS, WHOLE_IMAGE, VALIDATION = "My edits", "Whole image correct", "Validation"


@dataclass
class PairRow:
    image: Image
    labels: Labels


class PairsPanel(QWidget):
    """The table of pairs with Add pair / Remove and the reviewed-areas overlay."""

    def __init__(self, viewer: Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.rows: list[PairRow] = []
        self._overlays: dict[object, Image] = {}  # by the labels layer's unique_id
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(250)
        self._refresh_timer.timeout.connect(self._refresh_reviewed)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Image", "Labels", "Reviewed", "Use as"])
        header = self.table.horizontalHeader()
        assert header is not None  # a table has one; Qt's signature allows none
        header.setStretchLastSection(True)
        self.table.setMaximumHeight(150)
        self.image_choice, self.labels_choice = QComboBox(), QComboBox()
        self.add_button, self.remove_button = QPushButton("Add pair"), QPushButton("Remove")
        self.show_reviewed = QCheckBox("Show reviewed areas")
        pick = QHBoxLayout()
        for w in (self.image_choice, self.labels_choice, self.add_button, self.remove_button):
            pick.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(pick)
        layout.addWidget(self.show_reviewed)
        self.add_button.clicked.connect(self._on_add_clicked)
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.show_reviewed.toggled.connect(self._refresh_overlays)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._refresh_choices()
        for layer in self.viewer.layers:
            self._auto_add(layer)

    def training_images(self) -> list[Image]:
        """The images of the pairs that supervise training (not those held out for validation)."""
        return [row.image for i, row in enumerate(self.rows) if self.use_of(i) != VALIDATION]

    def _refresh_choices(self) -> None:
        for combo, kind in ((self.image_choice, Image), (self.labels_choice, Labels)):
            current = combo.currentText()
            combo.clear()
            names = [
                layer.name
                for layer in self.viewer.layers
                if isinstance(layer, kind) and not is_overlay(layer)
            ]
            combo.addItems(names)
            combo.setCurrentText(current)

    def _on_layer_inserted(self, event) -> None:
        self._refresh_choices()
        self._auto_add(event.value)

    def _on_layer_removed(self, event) -> None:
        self._refresh_choices()
        gone = [
            i
            for i, row in enumerate(self.rows)
            if any(same_layer(event.value, x) for x in (row.image, row.labels))
        ]
        for index in reversed(gone):
            self._remove_row(index)

    def _auto_add(self, layer) -> None:
        """LoopSeg's own results pair themselves with their image."""
        source = source_image(layer) if isinstance(layer, Labels) else None
        if source and source in self.viewer.layers:
            self.add_pair(self.viewer.layers[source], layer)

    def _on_add_clicked(self) -> None:
        names = self.image_choice.currentText(), self.labels_choice.currentText()
        if not all(name in self.viewer.layers for name in names):
            show_error("LoopSeg: choose an image layer and a labels layer to pair")
            return
        self.add_pair(self.viewer.layers[names[0]], self.viewer.layers[names[1]])

    def add_pair(self, image: Image, labels: Labels, use_as: str = MY_EDITS) -> None:
        """Pair an image with its (corrected) labels; shapes must agree."""
        if labels_shape(image) != tuple(labels.data.shape):
            show_error(
                f"LoopSeg: '{image.name}' {labels_shape(image)} and '{labels.name}' "
                f"{tuple(labels.data.shape)} differ in shape"
            )
            return
        if any(same_layer(row.labels, labels) for row in self.rows):
            return
        self.rows.append(PairRow(image, labels))
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(image.name))
        self.table.setItem(row, 1, QTableWidgetItem(labels.name))
        self.table.setItem(row, 2, QTableWidgetItem(""))
        use = QComboBox()
        use.addItems([MY_EDITS, WHOLE_IMAGE, VALIDATION])
        use.setCurrentText(use_as)
        use.currentTextChanged.connect(lambda text: self._refresh_reviewed())
        self.table.setCellWidget(row, 3, use)
        tracker_for(labels).listeners.append(self._schedule_reviewed_refresh)
        self._refresh_reviewed()

    def set_use(self, labels: Labels, use_as: str) -> None:
        """Mark how a pair supervises training (My edits / Whole image correct / Validation)."""
        for index, row in enumerate(self.rows):
            if same_layer(row.labels, labels):
                self._use_box(index).setCurrentText(use_as)

    def use_of(self, index: int) -> str:
        return self._use_box(index).currentText()

    def _use_box(self, index: int) -> QComboBox:
        return cast(QComboBox, self.table.cellWidget(index, 3))  # set by add_pair

    def _on_remove_clicked(self) -> None:
        for index in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self._remove_row(index)

    def _remove_row(self, index: int) -> None:
        row = self.rows.pop(index)
        listeners = tracker_for(row.labels).listeners
        if self._schedule_reviewed_refresh in listeners:
            listeners.remove(self._schedule_reviewed_refresh)
        self.table.removeRow(index)
        overlay = self._overlays.pop(row.labels.unique_id, None)
        if overlay is not None and overlay in self.viewer.layers:
            self.viewer.layers.remove(overlay)

    def _schedule_reviewed_refresh(self) -> None:
        """Paint strokes come in bursts: refresh once, 250 ms after the last one."""
        self._refresh_timer.start()

    def _refresh_reviewed(self) -> None:
        for index, row in enumerate(self.rows):
            use = self.use_of(index)
            fraction = 1.0 if use != MY_EDITS else tracker_for(row.labels).reviewed_fraction()
            item = self.table.item(index, 2)
            if item is not None:
                item.setText("validation" if use == VALIDATION else f"{100 * fraction:.1f}%")
        self._refresh_overlays()

    def _refresh_overlays(self) -> None:
        for row in self.rows:
            key = row.labels.unique_id
            overlay = self._overlays.get(key)
            if not self.show_reviewed.isChecked():
                if overlay is not None and overlay in self.viewer.layers:
                    overlay.visible = False
                continue
            tracker = tracker_for(row.labels)
            mask = np.zeros(tracker.touched.shape, np.uint8)
            for plane in tracker.edited_planes():
                mask[plane] = tracker.reviewed(plane)
            if overlay is None or overlay not in self.viewer.layers:
                self._overlays[key] = self.viewer.add_image(
                    mask,
                    name=f"{row.labels.name} reviewed",
                    colormap="green",
                    opacity=0.25,
                    blending="additive",
                    contrast_limits=(0, 1),
                    scale=row.labels.scale,
                    translate=row.labels.translate,
                    metadata={KEY: {"overlay": True}},
                )
                self.viewer.layers.selection.active = row.labels  # keep painting where the user was
            else:
                overlay.data, overlay.visible = mask, True

    def collect_pairs(self) -> list[dict]:
        """Snapshot every pair on the GUI thread (painting may go on while training runs).

        Plain dicts (the keyword arguments of ``core.finetune.Pair``): torch, which that module
        needs, is first imported in the worker, never on the GUI thread.
        """
        pairs = []
        for index, row in enumerate(self.rows):
            if labels_shape(row.image) != tuple(row.labels.data.shape):
                raise InputError(
                    f"'{row.image.name}' {labels_shape(row.image)} and '{row.labels.name}' "
                    f"{tuple(row.labels.data.shape)} no longer have the same shape; remove the pair"
                )
            use = self.use_of(index)
            tracker = tracker_for(row.labels)
            lead = tuple(row.labels.data.shape[:-2])
            planes = tracker.edited_planes() if use == MY_EDITS else [self._current_plane(row.labels, lead)]
            for plane in planes:
                reviewed = None if use != MY_EDITS else tracker.reviewed(plane)
                image = np.asarray(row.image.data[plane])
                labels = np.array(row.labels.data[plane], copy=True)
                pairs.append(
                    {
                        "image": image,
                        "labels": labels,
                        "reviewed": reviewed,
                        "rgb": bool(row.image.rgb),
                        "validation": use == VALIDATION,
                    }
                )
        return pairs

    def _current_plane(self, layer, lead: tuple[int, ...]) -> tuple[int, ...]:
        return current_plane(self.viewer, layer, lead) if lead else ()
