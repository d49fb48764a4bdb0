"""The Segment dock widget: pick image layers, click Segment, get ``<image> labels`` layers.

All compute runs in a napari worker over :func:`napari_loopseg.core.segment.segment_iter`; the
GUI thread only validates input, updates the progress bar and puts results into layers.
"""

from __future__ import annotations

from napari.layers import Image
from napari.qt.threading import GeneratorWorker
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

from ..core.cpu_features import PRECISIONS
from ..core.normalize import InputError
from ..core.options import AUTO_SIZE, DEFAULT_TILE, DEVICES, SegmentOptions
from .active_model import active_model
from .layer_identity import same_layer
from .layer_results import is_overlay
from .model_selector import ModelSelector
from .precision_tip import PRECISION_TIP
from .segment_jobs import make_job, warm_up
from .segment_runner import SegmentRunner

ALL_PLANES, CURRENT_PLANE = "All planes", "Current plane only"
SIZE_AS_IS, SIZE_AUTO, SIZE_GIVEN = "As is", "Estimate", "Diameter"


class SegmentWidget(QWidget):
    """Segment one or several image layers with the selected model."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer

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
        # one click segments nuclei of any size, as the command line does by default
        self.size_mode.setCurrentText(SIZE_AUTO if SegmentOptions.object_size == AUTO_SIZE else SIZE_AS_IS)
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
        self.device.addItems(DEVICES)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip(PRECISION_TIP)
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
        advanced_form.addRow("Precision", self.precision)
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

        self.runner = SegmentRunner(self.viewer, self.models.active)
        self.runner.progress.connect(self._on_progress)
        self.runner.status.connect(self.status.setText)
        self.runner.done.connect(self._on_done)
        self.segment_button.clicked.connect(self._on_segment)
        self.cancel_button.clicked.connect(self.runner.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._on_layers_changed)
        self._on_layers_changed()
        warm_up()

    # layer list -------------------------------------------------------------------------
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and not is_overlay(layer)]

    def _on_layers_changed(self, event=None) -> None:
        selected = set(self.selected_names())
        active = self.viewer.layers.selection.active
        self.layer_list.clear()
        for layer in self._image_layers():
            item = QListWidgetItem(layer.name)
            self.layer_list.addItem(item)
            if layer.name in selected or (not selected and same_layer(layer, active)):
                item.setSelected(True)
        first = self.layer_list.item(0)  # None when the list is empty
        if not self.layer_list.selectedItems() and first is not None:
            first.setSelected(True)
        if event is not None and getattr(event, "value", None) is not None:
            event.value.events.name.connect(self._on_layers_changed)

    def selected_names(self) -> list[str]:
        return [item.text() for item in self.layer_list.selectedItems()]

    def select(self, *names: str) -> None:
        """Select image layers by name (used by tests and scripts)."""
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            assert item is not None  # i < count
            item.setSelected(item.text() in names)

    # segmentation -----------------------------------------------------------------------
    @property
    def worker(self) -> GeneratorWorker | None:
        """The running segmentation worker, if any."""
        return self.runner.worker

    def _on_segment(self) -> None:
        if self.runner.busy:
            return
        layers = [self.viewer.layers[name] for name in self.selected_names() if name in self.viewer.layers]
        try:
            if not layers:
                raise InputError("select at least one image layer to segment")
            jobs = []
            for layer in layers:
                try:
                    jobs.append(make_job(self.viewer, layer, self.planes.currentText() == CURRENT_PLANE))
                except InputError as err:
                    raise InputError(f"cannot segment '{layer.name}': {err}") from None
            blockwise = [job.layer.name for job in jobs if job.by_blocks]
            if blockwise and self.size_mode.currentText() == SIZE_GIVEN:
                raise InputError("a diameter is not supported yet for large images segmented block by block")
        except InputError as err:
            show_error(f"LoopSeg: {err}")
            self.status.setText(str(err)[0].upper() + str(err)[1:])
            return
        if blockwise and self.size_mode.currentText() == SIZE_AUTO:
            show_info(
                f"LoopSeg: {', '.join(map(repr, blockwise))} is segmented block by block, "
                "at its own scale (no object-size estimate for such large images yet)"
            )
        options = SegmentOptions(
            device=self.device.currentText(),
            precision=self.precision.currentText(),
            tile_size=self.tile_size.value(),
            object_size=self.object_size_option(),
        )
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.runner.run(jobs, self.models.model_name, options)

    def object_size_option(self) -> float | str | None:
        mode = self.size_mode.currentText()
        return None if mode == SIZE_AS_IS else "auto" if mode == SIZE_AUTO else self.object_size.value()

    def _on_progress(self, fraction: float) -> None:
        self.progress.setValue(int(1000 * fraction))

    def _on_done(self) -> None:
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
