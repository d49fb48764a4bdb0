"""The Fine-tune widget's re-segmentation goes through the shared SegmentRunner (issue 14, defects 1-4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.layers import Labels

from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.widgets.pairs_panel import PairsPanel


@pytest.fixture
def finetune(viewer, open_widget, tiny_model):
    widget = open_widget(viewer, "Fine-tune")
    widget.active.set("tiny")
    return widget


@pytest.fixture
def large_planes(monkeypatch):
    """Planes over 256^2 count as large: re-segmented visible area first, and block by block."""
    import napari_loopseg.widgets.finetune_widget as finetune_module
    import napari_loopseg.widgets.segment_jobs as jobs

    monkeypatch.setattr(jobs, "BLOCKWISE_PLANE", 256 * 256)
    monkeypatch.setattr(jobs, "BLOCK_SIZE", 128)
    monkeypatch.setattr(finetune_module, "LARGE_PLANE", 256 * 256)
    monkeypatch.setattr("napari_loopseg.core.normalize.STATS_SAMPLE", 128 * 128)
    return jobs


def resegment(viewer, finetune, qtbot, name="big"):
    finetune.resegment([finetune.viewer.layers[name]])
    qtbot.waitUntil(lambda: finetune.segment_worker is None, timeout=60_000)
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def test_zoomed_in_on_a_large_image(viewer, finetune, qtbot, large_planes, tracebacks):
    """Defect 1: the visible-window job ran block by block, came back whole and failed to fit."""
    image = make_nuclei((600, 500), seed=5)[0]
    viewer.add_image(image, name="big")
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 6
    (layer,) = resegment(viewer, finetune, qtbot)
    assert layer.data.shape == image.shape and layer.data.max() > 10
    assert not tracebacks


def test_result_too_large_for_memory(viewer, finetune, qtbot, large_planes, monkeypatch, tmp_path):
    """Defect 2: a stored result reached put_result, which expects an array."""
    monkeypatch.setattr(large_planes, "result_fits_in_memory", lambda shape: False)
    monkeypatch.setattr(large_planes, "results_dir", lambda: tmp_path / "results")
    viewer.add_image(make_nuclei((600, 500), seed=5)[0], name="big")
    layers = resegment(viewer, finetune, qtbot)
    (stored,) = [layer for layer in layers if "store" in layer.metadata["loopseg"]]
    assert type(stored.data).__module__.startswith("zarr") and stored.data.shape == (600, 500)
    assert int(stored.data.attrs["max_label"]) > 10


def test_a_failure_is_a_segmentation_message(viewer, finetune, qtbot, monkeypatch, notifications, tracebacks):
    """Defect 4: segmentation errors were reported as 'fine-tuning failed', with a traceback."""
    from napari_loopseg.core.errors import InputError

    def failing(*args, **kwargs):
        raise InputError("the image is unusable")
        yield  # a generator, like segment_iter

    monkeypatch.setattr("napari_loopseg.core.segment.segment_iter", failing)
    viewer.add_image(make_nuclei((64, 64), seed=1)[0], name="cells")
    assert resegment(viewer, finetune, qtbot, "cells") == []
    assert any("cannot segment 'cells'" in m and "unusable" in m for m in notifications)
    assert not any("fine-tuning" in m for m in notifications) and not tracebacks


def test_cancelling_a_resegmentation_says_cancelled(viewer, finetune, qtbot, monkeypatch):
    """Defect 4: after cancelling a re-segmentation the status stayed 'Cancelling...'."""
    from napari_loopseg.core.segment import SegmentProgress

    def slow(data, model, options):
        for i in range(500):
            time.sleep(0.02)
            yield SegmentProgress(i / 500, "slow")
        return np.zeros(data.shape, np.uint16)

    monkeypatch.setattr("napari_loopseg.core.segment.segment_iter", slow)
    viewer.add_image(make_nuclei((64, 64), seed=1)[0], name="cells")
    finetune.resegment([finetune.viewer.layers["cells"]])
    qtbot.waitUntil(lambda: "slow" in finetune.status.text(), timeout=60_000)
    finetune.cancel_button.click()
    qtbot.waitUntil(lambda: finetune.segment_worker is None, timeout=60_000)
    assert finetune.status.text() == "Cancelled"
    assert finetune.finetune_button.isEnabled() and not finetune.cancel_button.isEnabled()


def test_reviewed_refresh_is_debounced(viewer, open_widget, tiny_model, qtbot, monkeypatch):
    """Defect 3: every paint event scheduled its own refresh of every pair's reviewed mask."""
    refreshes = []
    original = PairsPanel._refresh_reviewed
    monkeypatch.setattr(PairsPanel, "_refresh_reviewed", lambda self: refreshes.append(1) or original(self))
    finetune = open_widget(viewer, "Fine-tune")
    image, truth = make_nuclei((96, 112), seed=3)
    viewer.add_image(image, name="cells")
    labels = viewer.add_labels(truth, name="mine")
    finetune.pairs.add_pair(finetune.viewer.layers["cells"], finetune.viewer.layers["mine"])
    refreshes.clear()
    for x in range(10, 90, 4):  # a burst of 20 brush dabs
        labels.paint((40, x), 5, refresh=False)
    qtbot.wait(600)
    assert len(refreshes) == 1
    assert finetune.pairs.table.item(0, 2).text() not in ("", "0.0%")


def test_a_window_keeps_ids_and_new_objects_avoid_those_outside_it():
    """The visible window goes in first: a nucleus found again keeps its id, and a new one must
    not take the id of a nucleus outside the window (they would become one object)."""
    from napari_loopseg.core.normalize import Layout
    from napari_loopseg.widgets.segment_jobs import Job, keep_ids

    previous = np.zeros((40, 40), np.uint16)
    previous[2:8, 2:8], previous[30:36, 30:36] = 1, 2  # 2 lies outside the window
    new = np.zeros((20, 20), np.uint16)
    new[2:8, 3:9], new[12:16, 12:16] = 7, 8  # 7 is nucleus 1 again; 8 is new
    job = Job(None, None, Layout(), window=(slice(0, 20), slice(0, 20)), previous=previous)  # type: ignore[arg-type]
    out = keep_ids(job, new)
    assert (out[2:8, 3:9] == 1).all()
    assert (out[12:16, 12:16] == 3).all()
