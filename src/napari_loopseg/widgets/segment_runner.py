"""One segmentation runner for both widgets: the worker, its label stores, and the results' layers.

The Segment widget and the Fine-tune widget's re-segmentation both go through
:class:`SegmentRunner`: it runs :func:`.segment_jobs.run_jobs` in a napari worker, stops a job
whose image layer is removed, answers LoopSeg's own errors with a message (never a traceback),
deletes half-written stores on cancel, and puts results into layers on the GUI thread.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from pathlib import Path

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info
from napari.viewer import Viewer
from qtpy.QtCore import QObject, QTimer, Signal

from ..core.options import SegmentOptions
from .active_model import ActiveModel
from .layer_identity import same_layer
from .layer_results import put_result, put_stored_result
from .segment_jobs import Job, JobEvent, LabelsResult, StoredResult, run_jobs

#: Seconds between progress updates on screen.
SHOW_INTERVAL_S = 0.25
#: Milliseconds from putting one result into a layer to the next: longer than the canvas redraw
#: that follows a put (benchmarks/README.md), so the event loop gets a turn in between.
PUT_SPACING_MS = 100


class SegmentRunner(QObject):
    """Runs jobs one batch at a time; ``progress`` (0..1), ``status`` (text) and ``done`` report."""

    progress = Signal(float)
    status = Signal(str)
    done = Signal()

    def __init__(self, viewer: Viewer, active: ActiveModel) -> None:
        super().__init__()
        self.viewer = viewer
        self.active = active
        self.worker: GeneratorWorker | None = None
        self._jobs: list[Job] = []
        self._skipped: set[int] = set()  # read by the worker between steps
        self._stores: list[Path] = []  # label stores the running worker is writing
        self._model = ""
        self._problems: list[str] = []
        self._last_shown = 0.0
        self._results: deque[tuple[int, LabelsResult | StoredResult]] = deque()  # not yet in a layer
        self._worker_finished = False
        viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def run(self, jobs: list[Job], model_name: str, options: SegmentOptions) -> None:
        """Start segmenting ``jobs`` with ``model_name`` (ignored while a run is under way)."""
        if self.busy or not jobs:
            return
        self._jobs, self._skipped, self._stores, self._problems = jobs, set(), [], []
        self._model, self._worker_finished = model_name, False
        self.worker = create_worker(run_jobs, jobs, model_name, options, self._skipped, _start_thread=False)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.progress.emit(0.0)
        self.status.emit("Loading model...")
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.emit("Cancelling...")

    # worker events (GUI thread) -----------------------------------------------------------
    def _on_layer_removed(self, event) -> None:
        """An image removed mid-run: stop its job (and the run, if nothing else is left)."""
        if self.worker is None:
            return
        for index, job in enumerate(self._jobs):
            if same_layer(job.layer, event.value) and index not in self._skipped:
                self._skipped.add(index)
        if len(self._skipped) == len(self._jobs):
            self.worker.quit()

    def _on_yielded(self, event: JobEvent) -> None:
        kind, index, value = event.kind, event.index, event.value
        if kind == "model_failed":
            self._model_failed(value)
            return
        job = self._jobs[index]
        name = job.layer.name
        if kind == "store":
            self._stores.append(value)
        elif kind == "progress":
            now = time.monotonic()
            if now - self._last_shown >= SHOW_INTERVAL_S:  # a progress bar repaints at once: not per tile
                self._last_shown = now
                self.progress.emit((index + value.fraction) / len(self._jobs))
                self.status.emit(f"{name}: {value.stage}")
        elif kind == "failed":
            self._problems.append(f"'{name}' failed")
            show_error(f"LoopSeg cannot segment '{name}': {value}")
            self.status.emit(f"{name}: {value}")
        elif kind == "skipped":
            self._removed(name)
        else:
            self._results.append((index, value))
            if len(self._results) == 1:
                QTimer.singleShot(0, self._put_next)

    def _put_next(self) -> None:
        """Put one finished result into its layer per event-loop turn: a new Labels layer is
        napari's slowest GUI step (benchmarks/results/gui-*.json), and several results arriving
        together would otherwise freeze the canvas for all of them at once."""
        index, value = self._results[0]
        job = self._jobs[index]
        if job.layer in self.viewer.layers:
            self.progress.emit((index + 1) / len(self._jobs))
            self.status.emit(self._put(job, value))
        else:
            self._removed(job.layer.name)  # a finished store is deleted at the end
        self._results.popleft()
        if self._results:
            QTimer.singleShot(PUT_SPACING_MS, self._put_next)
        elif self._worker_finished:
            self._finish()

    def _removed(self, name: str) -> None:
        self._problems.append(f"'{name}' stopped (layer removed)")
        show_info(f"LoopSeg: '{name}' was removed, so its segmentation was stopped")

    def _put(self, job: Job, value: LabelsResult | StoredResult) -> str:
        """Put one result into its layer; return the status line."""
        name = job.layer.name
        if isinstance(value, StoredResult):
            self._stores.remove(value.path)  # complete: the layer owns it now
            layer = put_stored_result(self.viewer, job.layer, value.levels, value.path, self._model)
            return (
                f"{name}: {value.objects} objects in '{layer.name}', read from {value.path} "
                "(deleted with the layer: save it to keep it)"
            )
        layer = put_result(self.viewer, job.layer, value.labels, self._model, job.plane, job.window)
        if job.window:
            return f"{name}: visible area re-segmented with {self._model} into '{layer.name}'"
        return f"{name}: {value.objects} objects in '{layer.name}' ({self._model})"

    def _model_failed(self, message: str) -> None:
        self._problems.append("the model could not be loaded")
        if self._model == self.active.name:
            self.active.fall_back(message)
        else:
            show_error(f"LoopSeg cannot load the model: {message}")

    def _on_error(self, err: Exception) -> None:
        """An unexpected error (a bug): napari shows its traceback; the status says it failed."""
        self._problems.append(f"failed: {err}")

    def _on_finished(self) -> None:
        self._worker_finished = True
        if not self._results:
            self._finish()

    def _finish(self) -> None:
        """After the worker has stopped and every result it gave is in a layer."""
        aborted = self.worker is not None and self.worker.abort_requested
        stores = list(self._stores)
        self.worker = None
        for store in stores:  # half-written: delete, off the GUI thread
            create_worker(shutil.rmtree, store, ignore_errors=True).start()
        if aborted and len(self._skipped) < len(self._jobs):
            self.progress.emit(0.0)
            self.status.emit("Cancelled")
        elif self._problems:
            done = len(self._jobs) - len(self._problems)
            self.status.emit(f"Finished: {done} of {len(self._jobs)} done; " + "; ".join(self._problems))
        self.done.emit()
