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
from napari.layers import Image
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error
from napari.viewer import Viewer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.cpu_features import PRECISIONS
from ..core.errors import InputError, LoopSegError
from ..core.options import DEVICES, FINETUNE_DEFAULTS, MAX_STEPS, MIN_STEPS, SegmentOptions
from ..core.registry import check_writable
from ..progress_log import duration
from .active_model import active_model
from .layer_results import labels_shape
from .loss_plot import LossPlot
from .model_selector import ModelSelector
from .pairs_panel import PairsPanel
from .precision_tip import PRECISION_TIP
from .segment_jobs import LARGE_PLANE, make_job, visible_window, warm_up
from .segment_runner import SegmentRunner
from .versions_panel import VersionsPanel

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
    from ..core.finetune import Pair, finetune_iter

    try:
        config = replace(FINETUNE_DEFAULTS, **settings)
        return (yield from finetune_iter([Pair(**p) for p in pairs], base, config))
    except LoopSegError as err:
        return Refused(str(err))


class FinetuneWidget(QWidget):
    """Collect corrected pairs, fine-tune in the background, manage model versions."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.active = active_model(napari_viewer)
        self.worker: GeneratorWorker | None = None
        self.runner = SegmentRunner(napari_viewer, self.active)
        self._last_shown = 0.0

        self.pairs = PairsPanel(napari_viewer)
        # model and settings
        self.models = ModelSelector(self.active)
        self.steps = QSpinBox()
        self.steps.setRange(0, 100_000)
        self.steps.setSpecialValueText("auto")  # 0: as many as the reviewed area calls for
        self.steps.setToolTip(
            f"auto: {MIN_STEPS} for a few edited objects, up to {MAX_STEPS} for whole images"
        )
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
        warm_up()

    def _layout_widgets(self) -> None:
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
        layout.addWidget(self.pairs)
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
        self.finetune_button.clicked.connect(self._on_finetune)
        self.cancel_button.clicked.connect(self._on_cancel)
        self.runner.status.connect(self.status.setText)
        self.runner.done.connect(self._update_buttons)

    @property
    def segment_worker(self) -> GeneratorWorker | None:
        """The running re-segmentation worker, if any."""
        return self.runner.worker

    def _on_finetune(self) -> None:
        if self.worker is not None or self.runner.busy:
            return
        try:
            check_writable()  # an unusable model folder fails now, not after training
            pairs = self.pairs.collect_pairs()
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
        self._pair_images = self.pairs.training_images()
        self.worker = create_worker(_finetune, pairs, self._base, settings, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_trained)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.plot.clear()
        self.progress.setRange(0, self.steps.value())  # 0, auto: the range comes with the first step
        self.progress.setValue(0)
        self.finetune_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Fine-tuning {self._base} on {len(pairs)} image(s)...")
        self.worker.start()

    def _on_progress(self, progress) -> None:
        """Record every step; show them a few times a second (a progress bar repaints at once, and
        repainting at every step was a measured source of GUI stalls)."""
        self.plot.add(progress.step, progress.loss, progress.validation, progress.steps)
        now = time.monotonic()
        if (
            now - self._last_shown < SHOW_INTERVAL_S
            and progress.step != progress.steps
            and not progress.validation
        ):
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
            height, width = labels_shape(layer)[-2:]
            plane_shape = (height, width)
            if job.plane is None and layer.ndim == 2 and np.prod(plane_shape) > LARGE_PLANE:
                window = visible_window(self.viewer, layer, plane_shape)
                if window is not None:
                    jobs.append(replace(job, window=window, by_blocks=False))
            jobs.append(job)
        options = SegmentOptions(device=self.device.currentText(), precision=self.precision.currentText())
        self.runner.run(jobs, self.active.name, options)
        self._update_buttons()
