import threading

import numpy as np
import pytest
from napari.layers import Labels
from qtpy.QtCore import Qt

from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.widgets.segment_widget import CURRENT_PLANE, SegmentWidget


@pytest.fixture
def image():
    return make_nuclei((128, 144), seed=11)[0]


@pytest.fixture
def widget(viewer, open_widget, tiny_model, qtbot):
    widget = open_widget(viewer, "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.models.refresh()
    widget.models.active.set("tiny")
    assert widget.models.model_name == "tiny"
    return widget


def click_segment(widget, qtbot):
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def labels_layers(viewer):
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def test_click_segment_adds_labels(widget, viewer, image, qtbot):
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    widget.select("cells")
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.name == "cells labels"
    assert layer.data.shape == image.shape and layer.data.max() > 0
    assert tuple(layer.scale) == (0.5, 0.5)
    assert widget.progress.value() == widget.progress.maximum()


def test_second_click_replaces_own_result_undoably(widget, viewer, image, qtbot):
    layer_image = viewer.add_image(image, name="cells")
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    first = layer.data.copy()
    layer_image.data = np.ascontiguousarray(image[::-1])  # a different image: a different result
    click_segment(widget, qtbot)
    assert labels_layers(viewer) == [layer]  # replaced, not piled up
    assert not np.array_equal(layer.data, first)
    layer.undo()
    assert np.array_equal(layer.data, first)


def test_a_new_result_keeps_the_ids_of_the_same_objects(widget, viewer, image, qtbot, monkeypatch):
    """Re-segmenting (after a fine-tune, say) finds mostly the same nuclei: they keep their ids,
    so only pixels that really changed are written (and kept for undo)."""
    from napari_loopseg.core import segment as core_segment

    viewer.add_image(image, name="cells")
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    first = layer.data.copy()
    count = int(first.max())
    reversed_ids = np.where(first > 0, count + 1 - first.astype(np.int64), 0)
    reversed_ids[:3, :3] = count + 1  # and one object that was not there before
    assert (first[:3, :3] == 0).all()

    def renumbered(*args, **kwargs):
        yield from ()
        return reversed_ids.astype(first.dtype)

    monkeypatch.setattr(core_segment, "segment_iter", renumbered)
    click_segment(widget, qtbot)
    assert labels_layers(viewer) == [layer]
    expected = first.copy()
    expected[:3, :3] = count + 1  # the smallest id no kept object has
    assert np.array_equal(layer.data, expected)
    assert f"{count + 1} objects" in widget.status.text()


def test_edited_result_is_never_overwritten(widget, viewer, image, qtbot):
    viewer.add_image(image, name="cells")
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    layer.paint((5, 5), 999, refresh=True)  # the user's brush: fires the paint event
    edited = layer.data.copy()
    click_segment(widget, qtbot)
    layers = labels_layers(viewer)
    assert len(layers) == 2
    assert np.array_equal(layer.data, edited) and layer.data[5, 5] == 999
    assert layers[1].data[5, 5] != 999


def test_several_layers_at_once(widget, viewer, image, qtbot):
    viewer.add_image(image, name="a")
    viewer.add_image(image[::-1].copy(), name="b")
    widget.select("a", "b")
    click_segment(widget, qtbot)
    assert sorted(layer.name for layer in labels_layers(viewer)) == ["a labels", "b labels"]
    from napari_loopseg.core.segment import segment

    for name in ("a", "b"):  # each result is its own image's, not the other's (default: size estimated)
        expected = segment(viewer.layers[name].data, model="tiny", object_size="auto")
        assert expected.max() >= 5 and np.array_equal(viewer.layers[f"{name} labels"].data, expected)


def test_results_go_into_layers_one_event_loop_turn_apart(widget, viewer, image, qtbot, monkeypatch):
    """Adding a Labels layer is napari's slowest GUI step: results that arrive together (here all
    at once, from a worker that does no work) are put into layers apart, so the canvas redraws in
    between, and the run ends only after the last one."""
    import time

    from napari_loopseg.widgets import segment_runner

    def instant_results(jobs, model_name, options, skipped):
        for index, job in enumerate(jobs):
            labels = (job.data > job.data.mean()).astype(np.uint16)
            yield segment_runner.JobEvent("result", index, segment_runner.LabelsResult(labels, 1))

    placed, original = [], segment_runner.put_result
    monkeypatch.setattr(segment_runner, "run_jobs", instant_results)
    monkeypatch.setattr(
        segment_runner,
        "put_result",
        lambda *a, **k: (placed.append(time.perf_counter()), original(*a, **k))[1],
    )
    for name in "abc":
        viewer.add_image(image, name=name)
    widget.select("a", "b", "c")
    click_segment(widget, qtbot)
    assert sorted(layer.name for layer in labels_layers(viewer)) == ["a labels", "b labels", "c labels"]
    assert min(np.diff(placed)) >= 0.9 * segment_runner.PUT_SPACING_MS / 1000
    assert widget.progress.value() == widget.progress.maximum()


def test_rgb_image(widget, viewer, image, qtbot):
    grey = (image / image.max() * 255).astype(np.uint8)
    rgb = np.stack([255 - grey] * 3, axis=-1)  # dark nuclei on bright: brightfield-like
    viewer.add_image(rgb, name="stain", rgb=True)
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.data.shape == image.shape
    # dark-on-bright is inverted automatically: most nuclei of the fluorescence original are found
    # (the tiny test model is weaker on 8-bit input than on the original)
    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.segment import segment

    counts = Counts()
    counts.add(segment(image, model="tiny"), np.asarray(layer.data))
    assert layer.data.max() >= 5 and counts.ap(0.5) >= 0.5


def test_current_plane_only(widget, viewer, image, qtbot):
    viewer.add_image(np.stack([image, image[::-1], image]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget.planes.setCurrentText(CURRENT_PLANE)
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.data.shape == (3, *image.shape)
    assert layer.data[1].max() > 0 and layer.data[0].max() == 0 and layer.data[2].max() == 0


def test_bad_input_notifies_and_changes_nothing(widget, viewer, qtbot, notifications):
    viewer.add_image(np.zeros((3, 3), np.float32), name="speck")
    before = list(viewer.layers)
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    assert widget.worker is None
    assert list(viewer.layers) == before
    assert any("too small" in message and "speck" in message for message in notifications)


def test_window_result_replaces_only_that_window(widget, viewer, image, qtbot):
    """Re-segmenting the visible part first: only the window changes, undoably."""
    from napari_loopseg.widgets.layer_results import put_result

    layer_image = viewer.add_image(image, name="cells")
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    before = layer.data.copy()
    window = (slice(10, 40), slice(20, 70))
    patch = np.full((30, 50), 7, before.dtype)
    image_seen_by_plugin = widget.viewer.layers[layer_image.name]  # a proxy, as the widget has it
    assert put_result(widget.viewer, image_seen_by_plugin, patch, "tiny", window=window) == layer
    assert (layer.data[window] == 7).all()
    outside = np.ones(before.shape, bool)
    outside[window] = False
    assert np.array_equal(layer.data[outside], before[outside])
    layer.undo()
    assert np.array_equal(layer.data, before)


def test_visible_window_follows_the_camera(widget, viewer, image):
    from napari_loopseg.widgets.segment_jobs import visible_window

    viewer.add_image(np.zeros((1000, 1200), np.uint16), name="big")
    viewer.reset_view()
    seen, layer = widget.viewer, widget.viewer.layers["big"]  # as the plugin sees them
    assert visible_window(seen, layer, (1000, 1200)) is None  # everything is on screen
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 8
    window = visible_window(seen, layer, (1000, 1200))
    assert window is not None
    height, width = window[0].stop - window[0].start, window[1].stop - window[1].start
    assert 0 < height * width < 0.2 * 1000 * 1200


def test_active_model_is_remembered(make_napari_viewer, open_widget, tiny_model):
    first = open_widget(make_napari_viewer(), "Segment")
    first.models.active.set("tiny")
    second = open_widget(make_napari_viewer(), "Segment")
    assert second.models.model_name == "tiny"


class _ChunkLog:
    """The storage behind a dask array: records every chunk read off napari's main thread."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.worker_reads: list[int] = []

    def __getitem__(self, key):
        out = self.array[key]
        if threading.current_thread() is not threading.main_thread():
            self.worker_reads.append(int(np.size(out)))
        return out


@pytest.fixture
def lazy_setup(widget, viewer, monkeypatch):
    """A 900x800 dask-backed layer, "large" with blocks scaled down for a test; records the
    chunks the worker reads and the largest array it materialises from the dask layer."""
    import dask.array as da

    import napari_loopseg.widgets.segment_jobs as jobs

    monkeypatch.setattr(jobs, "BLOCKWISE_PLANE", 256 * 256)
    monkeypatch.setattr(jobs, "BLOCK_SIZE", 128)
    monkeypatch.setattr("napari_loopseg.core.normalize.STATS_SAMPLE", 128 * 128)
    image = make_nuclei((900, 800), seed=21)[0]
    storage = _ChunkLog(image)
    materialised: list[int] = []
    to_numpy = da.Array.__array__

    def logged(self, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            materialised.append(int(np.prod(self.shape)))
        return to_numpy(self, *args, **kwargs)

    monkeypatch.setattr(da.Array, "__array__", logged)
    lazy = da.from_array(storage, chunks=100, asarray=False)
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, int(image.max())))
    return image, storage, materialised


def _same_objects(image: np.ndarray, labels: np.ndarray) -> None:
    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.segment import segment

    counts = Counts()
    counts.add(segment(image, model="tiny"), labels)
    assert labels.max() > 10 and counts.ap(0.9) >= 0.99


def test_dask_layer_is_segmented_block_by_block(widget, viewer, qtbot, lazy_setup):
    """The worker reads the dask layer chunk by chunk and block by block, never all of it at once."""
    image, storage, materialised = lazy_setup
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert materialised and max(materialised) < image.size / 4  # one block (with margins) at a time
    assert storage.worker_reads and max(storage.worker_reads) <= 100 * 100  # dask chunks
    # each chunk is read by the few blocks whose margins reach it, plus the strided statistics
    assert sum(storage.worker_reads) < 12 * image.size
    _same_objects(image, np.asarray(layer.data))


def test_result_too_large_for_memory_goes_to_zarr(widget, viewer, qtbot, lazy_setup, monkeypatch, tmp_path):
    import napari_loopseg.widgets.segment_jobs as jobs

    image, _, _ = lazy_setup
    monkeypatch.setattr(jobs, "result_fits_in_memory", lambda shape: False)
    monkeypatch.setattr(jobs, "results_dir", lambda: tmp_path / "results")
    monkeypatch.setattr("napari_loopseg.core.zarr_io.add_pyramid.__defaults__", (256,))
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    (store,) = (tmp_path / "results").iterdir()
    assert layer.multiscale and [level.shape for level in layer.data] == [(900, 800), (450, 400), (225, 200)]
    assert type(layer.data[0]).__module__.startswith("zarr")  # read lazily from disk
    assert f"{layer.data[0].attrs['max_label']} objects" in widget.status.text()
    _same_objects(image, np.asarray(layer.data[0]))
    np.testing.assert_array_equal(layer.data[1], np.asarray(layer.data[0])[::2, ::2])
    viewer.layers.remove(layer)
    assert not store.exists()


def test_cancel_leaves_no_store(widget, viewer, qtbot, lazy_setup, monkeypatch, tmp_path):
    import napari_loopseg.widgets.segment_jobs as jobs

    monkeypatch.setattr(jobs, "result_fits_in_memory", lambda shape: False)
    monkeypatch.setattr(jobs, "results_dir", lambda: tmp_path / "results")
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "block" in widget.status.text(), timeout=60_000)
    assert any((tmp_path / "results").iterdir())  # the store is being written
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.text() == "Cancelled" and not labels_layers(viewer)
    qtbot.waitUntil(lambda: not any((tmp_path / "results").iterdir()), timeout=10_000)


def test_object_size_rescales_and_keeps_the_grid(widget, viewer, image, qtbot):
    from napari_loopseg.core.registry import load_model
    from napari_loopseg.core.segment import segment
    from napari_loopseg.widgets.segment_widget import SIZE_AUTO, SIZE_GIVEN

    big = np.kron(image, np.ones((2, 2), image.dtype))
    viewer.add_image(big, name="big")
    widget.select("big")
    widget.size_mode.setCurrentText(SIZE_GIVEN)
    assert widget.object_size.isEnabled()
    median = load_model("tiny").diameters.median
    widget.object_size.setValue(2 * median)
    click_segment(widget, qtbot)
    (layer,) = labels_layers(viewer)
    expected = segment(big, model="tiny", object_size=2 * median)
    assert layer.data.shape == big.shape and layer.data.max() > 5
    np.testing.assert_array_equal(layer.data, expected)
    widget.size_mode.setCurrentText(SIZE_AUTO)
    assert not widget.object_size.isEnabled() and widget.object_size_option() == "auto"


def test_object_size_is_estimated_by_default(widget):
    from napari_loopseg.widgets.segment_widget import SIZE_AUTO

    assert widget.size_mode.currentText() == SIZE_AUTO and widget.object_size_option() == "auto"


def test_a_diameter_with_a_block_by_block_layer_is_refused(widget, viewer, qtbot, lazy_setup, notifications):
    from napari_loopseg.widgets.segment_widget import SIZE_GIVEN

    widget.size_mode.setCurrentText(SIZE_GIVEN)
    click_segment(widget, qtbot)
    assert not labels_layers(viewer)
    assert any("a diameter is not supported yet" in message for message in notifications)


def test_the_default_estimate_leaves_block_by_block_layers_at_their_scale(
    widget, viewer, qtbot, lazy_setup, notifications
):
    """The estimate is the default, so it must not stop a large image: it is segmented as it is,
    and the user is told."""
    click_segment(widget, qtbot)
    assert len(labels_layers(viewer)) == 1
    assert any("block by block, at its own scale" in message for message in notifications)


def test_large_numpy_layer_also_goes_block_by_block(widget, viewer, qtbot, monkeypatch):
    import napari_loopseg.widgets.segment_jobs as jobs

    monkeypatch.setattr(jobs, "BLOCKWISE_PLANE", 256 * 256)
    monkeypatch.setattr(jobs, "BLOCK_SIZE", 128)
    image = make_nuclei((600, 500), seed=5)[0]
    viewer.add_image(image, name="big")
    stages = []
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    widget.worker.yielded.connect(lambda event: stages.append(getattr(event.value, "stage", "")))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    (layer,) = labels_layers(viewer)
    assert any(stage.startswith("block ") for stage in stages)
    _same_objects(image, np.asarray(layer.data))
