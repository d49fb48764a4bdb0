"""The Segment dock widget: pick image layers, click Segment, get ``<image> labels`` layers.

All compute runs in a napari worker over :func:`napari_loopseg.core.segment.segment_iter`; the
GUI thread only validates input, updates the progress bar and puts results into layers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from napari.layers import Image
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info
from napari.viewer import Viewer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.normalize import InputError
from ..core.tiling import DEFAULT_TILE
from .active_model import active_model
from .layer_identity import same_layer
from .layer_results import put_result, put_stored_result
from .model_selector import ModelSelector
from .segment_jobs import Job, StoredResult, make_job, run_jobs, warm_up

ALL_PLANES, CURRENT_PLANE = "All planes", "Current plane only"
SIZE_AS_IS, SIZE_AUTO, SIZE_GIVEN = "As is", "Estimate", "Diameter"


class SegmentWidget(QWidget):
    """Segment one or several image layers with the selected model."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: GeneratorWorker | None = None
        self._jobs: list[Job] = []
        self._stores: list[Path] = []  # label stores the running worker is writing
        self._model_name = ""

        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.layer_list.setToolTip("Image layers to segment (Ctrl/Shift-click for several)")
        self.layer_list.setMaximumHeight(120)
        self.models = ModelSelector(active_model(napari_viewer))
        self.planes = QComboBox()
        self.planes.addItems([ALL_PLANES, CURRENT_PLANE])
        self.planes.setToolTip("For time-lapses and Z stacks: every plane, or the one on screen")
        self.size_mode = QComboBox()
        self.size_mode.addItems([SIZE_AS_IS, SIZE_AUTO, SIZE_GIVEN])
        self.size_mode.setToolTip(
            "Nuclei much larger or smaller than the model's training data: give their diameter "
            "(measure one with a Shapes line) or let LoopSeg estimate it from a first pass"
        )
        self.object_size = QDoubleSpinBox()
        self.object_size.setRange(1.0, 2000.0)
        self.object_size.setDecimals(1)
        self.object_size.setSuffix(" px")
        self.object_size.setValue(20.0)
        self.object_size.setEnabled(False)
        self.size_mode.currentTextChanged.connect(
            lambda mode: self.object_size.setEnabled(mode == SIZE_GIVEN)
        )
        self.tile_size = QSpinBox()
        self.tile_size.setRange(64, 8192)
        self.tile_size.setSingleStep(128)
        self.tile_size.setValue(DEFAULT_TILE)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.segment_button = QPushButton("Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Images", self.layer_list)
        form.addRow("Model", self.models)
        form.addRow("Stacks", self.planes)
        size_row = QHBoxLayout()
        size_row.addWidget(self.size_mode)
        size_row.addWidget(self.object_size)
        form.addRow("Object size", size_row)
        advanced = QCollapsible("Advanced")
        advanced_body = QWidget()
        advanced_form = QFormLayout(advanced_body)
        advanced_form.addRow("Tile size", self.tile_size)
        advanced_form.addRow("Device", self.device)
        advanced.addWidget(advanced_body)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch()

        self.segment_button.clicked.connect(self._on_segment)
        self.cancel_button.clicked.connect(self._on_cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._on_layers_changed)
        self._on_layers_changed()
        self._warm_up = create_worker(warm_up, _start_thread=False)
        self._warm_up.start()

    # layer list -------------------------------------------------------------------------
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, event=None) -> None:
        selected = set(self.selected_names())
        active = self.viewer.layers.selection.active
        self.layer_list.clear()
        for layer in self._image_layers():
            item = QListWidgetItem(layer.name)
            self.layer_list.addItem(item)
            if layer.name in selected or (not selected and same_layer(layer, active)):
                item.setSelected(True)
        if not self.layer_list.selectedItems() and self.layer_list.count():
            self.layer_list.item(0).setSelected(True)
        if event is not None and getattr(event, "value", None) is not None:
            event.value.events.name.connect(self._on_layers_changed)

    def selected_names(self) -> list[str]:
        return [item.text() for item in self.layer_list.selectedItems()]

    def select(self, *names: str) -> None:
        """Select image layers by name (used by tests and scripts)."""
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setSelected(item.text() in names)

    # segmentation -----------------------------------------------------------------------
    def _on_segment(self) -> None:
        if self.worker is not None:
            return
        layers = [self.viewer.layers[name] for name in self.selected_names() if name in self.viewer.layers]
        if not layers:
            show_error("LoopSeg: select at least one image layer to segment")
            return
        jobs = []
        for layer in layers:
            try:
                jobs.append(make_job(self.viewer, layer, self.planes.currentText() == CURRENT_PLANE))
            except InputError as err:
                show_error(f"LoopSeg cannot segment '{layer.name}': {err}")
                return
        self._jobs, self._stores = jobs, []
        self._model_name = self.models.model_name
        if self.object_size_option() is not None and any(job.by_blocks for job in jobs):
            show_error("LoopSeg: object size is not supported yet for large images segmented block by block")
            return
        options = {
            "device": self.device.currentText(),
            "tile_size": self.tile_size.value(),
            "object_size": self.object_size_option(),
        }
        self.worker = create_worker(run_jobs, jobs, self._model_name, options, _start_thread=False)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("Loading model...")
        self.worker.start()

    def object_size_option(self) -> float | str | None:
        mode = self.size_mode.currentText()
        return None if mode == SIZE_AS_IS else "auto" if mode == SIZE_AUTO else self.object_size.value()

    def _on_yielded(self, item: tuple) -> None:
        kind, index, value = item
        job = self._jobs[index]
        if kind == "store":
            self._stores.append(value)
            return
        if kind == "progress":
            total = (index + value.fraction) / len(self._jobs)
            self.progress.setValue(int(1000 * total))
            self.status.setText(f"{job.layer.name}: {value.stage}")
            return
        if job.layer not in self.viewer.layers:
            show_info(f"LoopSeg: '{job.layer.name}' was removed while it was being segmented")
            return
        self.progress.setValue(int(1000 * (index + 1) / len(self._jobs)))
        if isinstance(value, StoredResult):
            self._stores.remove(value.path)  # complete: the layer owns it now
            layer = put_stored_result(self.viewer, job.layer, value.levels, value.path, self._model_name)
            self.status.setText(
                f"{job.layer.name}: {value.objects} objects in '{layer.name}', "
                f"read from {value.path} (deleted with the layer: save it to keep it)"
            )
            return
        layer = put_result(self.viewer, job.layer, value, self._model_name, job.plane, job.window)
        self.status.setText(f"{job.layer.name}: {int(value.max())} objects in '{layer.name}'")

    def _on_error(self, err: Exception) -> None:
        show_error(f"LoopSeg segmentation failed: {err}")
        self.status.setText(f"Failed: {err}")

    def _on_cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling...")

    def _on_finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self.status.setText("Cancelled")
            self.progress.setValue(0)
            for store in self._stores:  # half-written: delete, off the GUI thread
                create_worker(shutil.rmtree, store, ignore_errors=True).start()
        self.worker = None
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
