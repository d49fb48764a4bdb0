import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_loopseg.core.registry import model_paths
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.widgets.finetune_widget import FinetuneWidget
from napari_loopseg.widgets.pairs_panel import WHOLE_IMAGE
from napari_loopseg.widgets.review_tracking import tracker_for
from napari_loopseg.widgets.segment_widget import SegmentWidget


@pytest.fixture
def widgets(make_napari_viewer, open_widget, tiny_model, qtbot):
    """The raw viewer (what the user acts on) and both widgets, opened as the Plugins menu does."""
    viewer = make_napari_viewer()
    segment = open_widget(viewer, "Segment")
    finetune = open_widget(viewer, "Fine-tune")
    assert isinstance(segment, SegmentWidget) and isinstance(finetune, FinetuneWidget)
    segment.models.active.set("tiny")
    assert finetune.models.model_name == "tiny"  # one active model per viewer, shared
    finetune.steps.setValue(4)
    finetune.batch.setValue(2)
    finetune.device.setCurrentText("cpu")
    return viewer, segment, finetune


def segmented(viewer, segment, qtbot, shape=(96, 112)):
    viewer.add_image(make_nuclei(shape, seed=3)[0], name="cells")
    qtbot.mouseClick(segment.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    return viewer.layers["cells labels"]


def wait_idle(finetune, qtbot, timeout=120_000):
    qtbot.waitUntil(lambda: finetune.worker is None and finetune.segment_worker is None, timeout=timeout)


def test_segment_correct_finetune_resegment(widgets, qtbot):
    """The whole loop: segment, paint a fix, fine-tune, new version active, labels recomputed."""
    viewer, segment, finetune = widgets
    labels = segmented(viewer, segment, qtbot)
    assert [row.labels for row in finetune.pairs.rows] == [labels]  # LoopSeg's result pairs itself
    labels.paint((40, 40), 77, refresh=True)  # the brush, through the layer's API: fires paint
    assert tracker_for(labels).touched.any()
    # the reviewed-area refresh is debounced
    qtbot.waitUntil(lambda: finetune.pairs.table.item(0, 2).text() != "0.0%", timeout=2000)
    qtbot.mouseClick(finetune.finetune_button, Qt.MouseButton.LeftButton)
    statuses: list[str] = []
    finetune.worker.yielded.connect(lambda progress: statuses.append(finetune.status.text()))
    wait_idle(finetune, qtbot)
    assert statuses and all("elapsed" in text and "left" in text for text in statuses)  # time left shown
    assert finetune.active.name == "tiny-ft-1"
    assert segment.models.model_name == "tiny-ft-1"  # the Segment widget follows
    assert "tiny-ft-1" in model_paths()
    assert labels.data[40, 40] == 77  # the user's edited layer is untouched
    fresh = [
        layer for layer in viewer.layers if layer.metadata.get("loopseg", {}).get("model") == "tiny-ft-1"
    ]
    assert len(fresh) == 1 and fresh[0] is not labels and fresh[0].data.shape == labels.data.shape
    assert finetune.plot.steps == [1, 2, 3, 4]


def test_cancel_changes_nothing(widgets, qtbot):
    viewer, segment, finetune = widgets
    labels = segmented(viewer, segment, qtbot)
    labels.paint((40, 40), 77, refresh=True)
    finetune.steps.setValue(10_000)
    before = {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}
    models_before = set(model_paths())
    qtbot.mouseClick(finetune.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(finetune.plot.steps) > 0, timeout=60_000)
    started = time.monotonic()
    qtbot.mouseClick(finetune.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(finetune, qtbot)
    assert time.monotonic() - started < 10  # generous: cancel takes effect at the next step
    assert set(model_paths()) == models_before
    assert finetune.active.name == "tiny"
    assert {layer.name for layer in viewer.layers} == set(before)
    for layer in viewer.layers:
        assert np.array_equal(layer.data, before[layer.name]), layer.name
    assert "Cancelled" in finetune.status.text()


def test_nothing_reviewed_is_a_message(widgets, qtbot, notifications):
    viewer, segment, finetune = widgets
    segmented(viewer, segment, qtbot)
    qtbot.mouseClick(finetune.finetune_button, Qt.MouseButton.LeftButton)
    assert finetune.worker is None
    assert any("nothing to learn from" in m for m in notifications)


def test_whole_image_mode_and_overlay(widgets, qtbot):
    viewer, segment, finetune = widgets
    labels = segmented(viewer, segment, qtbot)
    finetune.pairs.set_use(labels, WHOLE_IMAGE)
    assert finetune.pairs.table.item(0, 2).text() == "100.0%"
    (pair,) = finetune.pairs.collect_pairs()
    assert pair["reviewed"] is None and np.array_equal(pair["labels"], labels.data)
    labels.paint((10, 10), 5, refresh=True)
    finetune.pairs.set_use(labels, "My edits")
    finetune.pairs.show_reviewed.setChecked(True)
    overlay = viewer.layers["cells labels reviewed"]
    assert overlay.data[10, 10] == 1 and overlay.data.sum() < overlay.data.size
    # the overlay is an Image layer, but not an image to segment or to pair
    images = [segment.layer_list.item(i).text() for i in range(segment.layer_list.count())]
    choices = [finetune.pairs.image_choice.itemText(i) for i in range(finetune.pairs.image_choice.count())]
    assert images == ["cells"] and choices == ["cells"]


def test_edit_kinds_are_tracked_and_own_writes_are_not(widgets, qtbot):
    viewer, segment, _ = widgets
    labels = segmented(viewer, segment, qtbot)
    tracker = tracker_for(labels)
    assert not tracker.edited  # LoopSeg's own result is not a user edit
    labels.data_setitem((np.array([3, 4]), np.array([5, 5])), 9)  # (indices, old, new) history atom
    assert tracker.touched[3, 5] and tracker.touched[4, 5] and not tracker.touched[6, 5]
    labels.fill((50, 60), 123)  # flood fill: a _MaskedPaintAtom
    assert tracker.touched[50, 60]


def test_corrupted_model_import_is_a_message(widgets, qtbot, notifications, tmp_path):
    _, _, finetune = widgets
    bad = tmp_path / "colleague.safetensors"
    bad.write_bytes(b"\x00" * 100)
    models_before, active_before = set(model_paths()), finetune.active.name
    finetune.versions.import_file(str(bad))
    assert set(model_paths()) == models_before and finetune.active.name == active_before
    assert any("colleague.safetensors" in m and "cannot import" in m for m in notifications)


def test_versions_rename_use_delete(widgets, qtbot):
    viewer, segment, finetune = widgets
    labels = segmented(viewer, segment, qtbot)
    finetune.pairs.set_use(labels, WHOLE_IMAGE)
    qtbot.mouseClick(finetune.finetune_button, Qt.MouseButton.LeftButton)
    wait_idle(finetune, qtbot)
    finetune.versions.rename("tiny-ft-1", "my-cells")
    assert finetune.active.name == "my-cells" and "tiny-ft-1" not in model_paths()
    finetune.versions.delete("my-cells")
    assert finetune.active.name == "nuclei" and "my-cells" not in model_paths()
    assert "my-cells" not in finetune.versions.names()


def test_gui_stays_responsive_while_training(widgets, qtbot):
    """A QTimer probe: the longest gap between 10 ms ticks while fine-tuning runs."""
    viewer, segment, finetune = widgets
    labels = segmented(viewer, segment, qtbot, shape=(256, 256))
    finetune.pairs.set_use(labels, WHOLE_IMAGE)
    finetune.steps.setValue(30)
    finetune.batch.setValue(4)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    qtbot.mouseClick(finetune.finetune_button, Qt.MouseButton.LeftButton)
    wait_idle(finetune, qtbot)
    timer.stop()
    longest = max(np.diff(ticks))
    print(f"longest GUI stall during fine-tuning: {1000 * longest:.0f} ms over {len(ticks)} ticks")
    assert longest < 0.5  # a frozen GUI (training on the GUI thread) stalls for many seconds
