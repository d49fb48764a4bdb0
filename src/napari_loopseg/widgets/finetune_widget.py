"""The Fine-tune dock widget: learn from the user's corrections in the background, then re-segment.

Pairs (image layer, labels layer) are listed with how much of each is reviewed. Clicking
Fine-tune snapshots the pairs on the GUI thread, trains in a worker over
:func:`napari_loopseg.core.finetune.finetune_iter` (the GUI keeps painting, panning, zooming),
and on success makes the new version active and re-segments the images with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error
from napari.viewer import Viewer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.cpu_features import PRECISIONS
from ..core.errors import InputError, LoopSegError
from ..core.models import check_writable
from ..core.options import DEVICES, FINETUNE_DEFAULTS, MAX_STEPS, MIN_STEPS
from ..progress_log import duration
from .active_model import active_model
from .layer_identity import same_layer
from .layer_results import KEY, is_overlay, labels_shape, source_image
from .loss_plot import LossPlot
from .model_selector import ModelSelector
from .precision_tip import PRECISION_TIP
from .review_tracking import tracker_for
from .segment_jobs import LARGE_PLANE, current_plane, make_job, visible_window, warm_up
from .segment_runner import SegmentRunner
from .versions_panel import VersionsPanel

MY_EDITS, WHOLE_IMAGE, VALIDATION = "My edits", "Whole image correct", "Validation"
#: Seconds between updates of the progress bar, status and loss curve while training.
SHOW_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Refused:
    """The worker's answer when LoopSeg refuses to train (its message, shown without a traceback)."""

    message: str


def _finetune(pairs: list[dict], base: str, settings: dict):
    """Worker body: build the training pairs and settings, then run the core generator.

    Returns the new model, or :class:`Refused` for LoopSeg's own errors (napari would show an
    exception with a traceback)."""
    from ..core.errors import LoopSegError
    from ..core.finetune import Pair, finetune_iter

    try:
        config = replace(FINETUNE_DEFAULTS, **settings)
        return (yield from finetune_iter([Pair(**p) for p in pairs], base, config))
    except LoopSegError as err:
        return Refused(str(err))


@dataclass
class PairRow:
    image: Image
    labels: Labels


class FinetuneWidget(QWidget):
    """Collect corrected pairs, fine-tune in the background, manage model versions."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.active = active_model(napari_viewer)
        self.rows: list[PairRow] = []
        self.worker: GeneratorWorker | None = None
        self.runner = SegmentRunner(napari_viewer, self.active)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(250)
        self._refresh_timer.timeout.connect(self._refresh_reviewed)
        self._last_shown = 0.0
        self._overlays: dict[object, Image] = {}  # by the labels layer's unique_id

        # pairs
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Image", "Labels", "Reviewed", "Use as"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMaximumHeight(150)
        self.image_choice, self.labels_choice = QComboBox(), QComboBox()
        self.add_button, self.remove_button = QPushButton("Add pair"), QPushButton("Remove")
        self.show_reviewed = QCheckBox("Show reviewed areas")
        # model and settings
        self.models = ModelSelector(self.active)
        self.steps = QSpinBox()
        self.steps.setRange(0, 100_000)
        self.steps.setSpecialValueText("auto")  # 0: as many as the reviewed area calls for
        self.steps.setToolTip(f"auto: {MIN_STEPS} for a few edited objects, up to {MAX_STEPS} for whole images")
        self.steps.setValue(FINETUNE_DEFAULTS.steps or 0)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(FINETUNE_DEFAULTS.lr)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(FINETUNE_DEFAULTS.batch_size)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip(PRECISION_TIP)
        # run
        self.finetune_button, self.cancel_button = QPushButton("Fine-tune"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.status = QLabel("Correct some objects in a labels layer, then fine-tune.")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        self.versions = VersionsPanel(self.active)
        self._layout_widgets()
        self._connect()
        self._refresh_choices()
        for layer in self.viewer.layers:
            self._auto_add(layer)
        warm_up()

    def _layout_widgets(self) -> None:
        pick = QHBoxLayout()
        for w in (self.image_choice, self.labels_choice, self.add_button, self.remove_button):
            pick.addWidget(w)
        advanced = QCollapsible("Advanced")
        body = QWidget()
        form = QFormLayout(body)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        advanced.addWidget(body)
        run = QHBoxLayout()
        run.addWidget(self.finetune_button)
        run.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Corrected images"))
        layout.addWidget(self.table)
        layout.addLayout(pick)
        layout.addWidget(self.show_reviewed)
        base = QFormLayout()
        base.addRow("Start from", self.models)
        layout.addLayout(base)
        layout.addWidget(advanced)
        layout.addLayout(run)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addWidget(QLabel("Model versions"))
        layout.addWidget(self.versions)
        layout.addStretch()

    def _connect(self) -> None:
        self.add_button.clicked.connect(self._on_add_clicked)
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.show_reviewed.toggled.connect(self._refresh_overlays)
        self.finetune_button.clicked.connect(self._on_finetune)
        self.cancel_button.clicked.connect(self._on_cancel)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.runner.status.connect(self.status.setText)
        self.runner.done.connect(self._update_buttons)

    # pairs ------------------------------------------------------------------------------
    def _refresh_choices(self) -> None:
        for combo, kind in ((self.image_choice, Image), (self.labels_choice, Labels)):
            current = combo.currentText()
            combo.clear()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind) and not is_overlay(layer)]
            combo.addItems(names)
            combo.setCurrentText(current)

    def _on_layer_inserted(self, event) -> None:
        self._refresh_choices()
        self._auto_add(event.value)

    def _on_layer_removed(self, event) -> None:
        self._refresh_choices()
        gone = [
            i for i, row in enumerate(self.rows) if any(same_layer(event.value, x) for x in (row.image, row.labels))
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
                self.table.cellWidget(index, 3).setCurrentText(use_as)

    def _use_of(self, index: int) -> str:
        return self.table.cellWidget(index, 3).currentText()

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
            use = self._use_of(index)
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

    # fine-tuning ------------------------------------------------------------------------
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
            use = self._use_of(index)
            tracker = tracker_for(row.labels)
            lead = tuple(row.labels.data.shape[:-2])
            if use == MY_EDITS:
                planes = tracker.edited_planes()
            else:
                planes = [self._current_plane(row.labels, lead)]
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

    @property
    def segment_worker(self) -> GeneratorWorker | None:
        """The running re-segmentation worker, if any."""
        return self.runner.worker

    def _on_finetune(self) -> None:
        if self.worker is not None or self.runner.busy:
            return
        try:
            check_writable()  # an unusable model folder fails now, not after training
            pairs = self.collect_pairs()
            supervised = [p for p in pairs if not p["validation"]]
            if not any(p["reviewed"] is None or p["reviewed"].any() for p in supervised):
                raise InputError(
                    "nothing to learn from yet: paint corrections into a labels layer, "
                    "or mark a pair as 'Whole image correct'"
                )
        except LoopSegError as err:
            show_error(f"LoopSeg cannot fine-tune: {err}")
            self.status.setText(f"Cannot fine-tune: {err}")
            return
        settings = {
            "steps": self.steps.value() or None,
            "lr": self.lr.value(),
            "batch_size": self.batch.value(),
            "device": self.device.currentText(),
            "precision": self.precision.currentText(),
        }
        self._base = self.models.model_name
        self._pair_images = [row.image for i, row in enumerate(self.rows) if self._use_of(i) != VALIDATION]
        self.worker = create_worker(_finetune, pairs, self._base, settings, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_trained)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.plot.clear()
        self.progress.setRange(0, settings["steps"] or 0)  # auto: the range comes with the first step
        self.progress.setValue(0)
        self.finetune_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Fine-tuning {self._base} on {len(pairs)} image(s)...")
        self.worker.start()

    def _on_progress(self, progress) -> None:
        """Record every step; show them a few times a second (a progress bar repaints at once, and
        repainting at every step took ~10 ms of GUI time each on a 2-core CPU)."""
        self.plot.add(progress.step, progress.loss, progress.validation, progress.steps)
        now = time.monotonic()
        if now - self._last_shown < SHOW_INTERVAL_S and progress.step != progress.steps and not progress.validation:
            return
        self._last_shown = now
        self.progress.setMaximum(progress.steps)
        self.progress.setValue(progress.step)
        val = f", val AP@0.5 {progress.validation['ap50']:.3f}" if progress.validation else ""
        left = progress.seconds * (progress.steps - progress.step) / max(progress.step, 1)
        self.status.setText(
            f"step {progress.step}/{progress.steps}, loss {progress.loss:.4f}{val}, "
            f"{duration(progress.seconds)} elapsed, ~{duration(left)} left"
        )
        self.plot.redraw()

    def _on_trained(self, model) -> None:
        if isinstance(model, Refused):
            show_error(f"LoopSeg cannot fine-tune: {model.message}")
            self.status.setText(f"Cannot fine-tune: {model.message}")
            return
        self.active.registry_changed.emit()
        self.active.set(model.name)
        self.status.setText(f"New version {model.name} (from {model.parent}) is active; re-segmenting...")
        self.resegment(self._pair_images)

    def _on_error(self, err: Exception) -> None:
        """An unexpected error (a bug): napari shows its traceback; the status says it failed."""
        self.status.setText(f"Fine-tuning failed: {err}")

    def _on_cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling...")
        self.runner.cancel()

    def _on_finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self.status.setText("Cancelled: no new version; nothing was changed.")
            self.progress.setValue(0)
        self.worker = None
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.worker is not None or self.runner.busy
        self.finetune_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # re-segmentation --------------------------------------------------------------------
    def resegment(self, images: list[Image]) -> None:
        """Segment the pairs' images with the active model; large planes: visible part first."""
        jobs = []
        for layer in dict.fromkeys(images):  # unique, in order
            if layer not in self.viewer.layers:
                continue
            try:
                job = make_job(self.viewer, layer, current_plane_only=layer.ndim > 2)
            except InputError as err:
                show_error(f"LoopSeg cannot re-segment '{layer.name}': {err}")
                continue
            plane_shape = labels_shape(layer)[-2:]
            if job.plane is None and layer.ndim == 2 and np.prod(plane_shape) > LARGE_PLANE:
                window = visible_window(self.viewer, layer, plane_shape)
                if window is not None:
                    jobs.append(replace(job, window=window, by_blocks=False))
            jobs.append(job)
        self.runner.run(jobs, self.active.name, {})
        self._update_buttons()
