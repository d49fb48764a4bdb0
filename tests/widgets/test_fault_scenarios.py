"""Faults found by using LoopSeg as napari really runs it (issue 11, items 1-8).

Widgets are opened from the plugin path, so they see the viewer through napari's
``PublicOnlyProxy``; user actions go to the raw viewer, as napari's own GUI does them. Every
fault must end in LoopSeg's message (no traceback notification) and change nothing.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from napari.layers import Labels
from qtpy.QtCore import Qt

from napari_loopseg.cli import main
from napari_loopseg.core.registry import model_paths
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.widgets.pairs_panel import WHOLE_IMAGE
from napari_loopseg.widgets.review_tracking import tracker_for


@pytest.fixture
def segment(viewer, open_widget, tiny_model):
    widget = open_widget(viewer, "Segment")
    widget.models.active.set("tiny")
    return widget


def small_finetune(widget):
    widget.steps.setValue(2)
    widget.batch.setValue(2)
    widget.device.setCurrentText("cpu")
    return widget


def click(button, qtbot):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def segmented(viewer, segment, qtbot, name="cells", shape=(96, 112)):
    viewer.add_image(make_nuclei(shape, seed=3)[0], name=name)
    segment.select(name)
    click(segment.segment_button, qtbot)
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    return viewer.layers[f"{name} labels"]


def labels_layers(viewer):
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def wait_idle(finetune, qtbot):
    qtbot.waitUntil(lambda: finetune.worker is None and finetune.segment_worker is None, timeout=120_000)


# 1. edits survive a second Segment ----------------------------------------------------------
def test_tracker_outlives_the_proxy_it_was_made_from(viewer):
    """The issue's reproduction: a tracker registered through a proxy still sees later edits."""
    from napari.utils._proxies import PublicOnlyProxy

    proxy = PublicOnlyProxy(viewer)
    layer = proxy.add_labels(np.zeros((64, 64), np.uint16))
    tracker_for(layer)
    del layer
    gc.collect()
    viewer.layers[0].paint((5, 5), 3, refresh=True)
    assert tracker_for(proxy.layers[0]).edited


@pytest.mark.parametrize(
    "edit",
    [
        lambda layer: layer.paint((40, 40), 999, refresh=True),
        lambda layer: layer.fill((40, 40), 999),
        lambda layer: layer.data_setitem((np.array([40, 41]), np.array([40, 40])), 999),
    ],
    ids=["paint", "fill", "data_setitem"],
)
def test_second_segment_never_overwrites_edits(viewer, segment, qtbot, edit):
    labels = segmented(viewer, segment, qtbot)
    edit(labels)
    edited = np.array(labels.data, copy=True)
    click(segment.segment_button, qtbot)
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    assert np.array_equal(labels.data, edited) and labels.data[40, 40] == 999
    assert len(labels_layers(viewer)) == 2  # the new result went to a new layer
    assert labels_layers(viewer)[1].data[40, 40] != 999


# 2. edits made before the Fine-tune panel opens count ---------------------------------------
def test_finetune_opened_after_edits_sees_them(viewer, segment, open_widget, qtbot):
    labels = segmented(viewer, segment, qtbot)
    for y in (20, 40, 60):  # three brush strokes, README order: segment, correct, open Fine-tune
        labels.paint((y, 50), 77, refresh=True)
    finetune = small_finetune(open_widget(viewer, "Fine-tune"))
    assert finetune.pairs.table.item(0, 2).text() not in ("", "0.0%")
    click(finetune.finetune_button, qtbot)
    assert finetune.worker is not None  # it trains: no "nothing to learn from yet"
    wait_idle(finetune, qtbot)
    assert finetune.active.name == "tiny-ft-1"
    assert labels.data[40, 50] == 77  # the edited layer is intact; the re-segmentation is new
    assert any(
        layer.metadata.get("loopseg", {}).get("model") == "tiny-ft-1" for layer in labels_layers(viewer)
    )


# 3. an unusable model folder fails before training -------------------------------------------
@pytest.fixture
def unusable_model_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "models"
    monkeypatch.setenv("LOOPSEG_MODEL_DIR", str(folder))
    return folder


def test_unusable_model_folder_is_refused_before_training_gui(
    viewer, open_widget, qtbot, unusable_model_dir, notifications, tracebacks
):
    finetune = small_finetune(open_widget(viewer, "Fine-tune"))
    assert finetune.active.name == "nuclei"
    image, truth = make_nuclei((96, 112), seed=3)
    viewer.add_image(image, name="cells")
    labels = viewer.add_labels(truth, name="truth")
    finetune.pairs.add_pair(viewer.layers["cells"], labels, WHOLE_IMAGE)
    click(finetune.finetune_button, qtbot)
    assert finetune.worker is None  # refused at once: no training
    assert any(str(unusable_model_dir) in m and "cannot save model versions" in m for m in notifications)
    assert "cannot save model versions" in finetune.status.text()
    assert not tracebacks


def test_unusable_model_folder_is_refused_before_training_cli(tmp_path, unusable_model_dir, capsys):
    image, truth = make_nuclei((96, 112), seed=3)
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "a_lab.tif", truth)
    argv = ["finetune", "--images", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "a_lab.tif")]
    assert main([*argv, "--steps", "100000"]) == 1  # would run for hours if it trained first
    err = capsys.readouterr().err
    assert "cannot save model versions" in err and str(unusable_model_dir) in err
    assert "Traceback" not in err and "step" not in err


# 4. a corrupt model file is never offered, and never sticks ----------------------------------
def test_corrupt_model_file_is_not_listed_and_not_kept_active(
    make_napari_viewer, open_widget, model_dir, tiny_model, notifications
):
    (model_dir / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    (model_dir / "active.json").write_text(json.dumps({"active": "junk"}))  # chosen in an older session
    viewer = make_napari_viewer()
    segment = open_widget(viewer, "Segment")
    assert segment.models.model_name == "nuclei"  # fell back, with a message
    assert any("'junk'" in m and "nuclei" in m for m in notifications)
    assert json.loads((model_dir / "active.json").read_text()) == {"active": "nuclei"}
    listed = [segment.models.itemData(i) for i in range(segment.models.count())]
    assert "junk" not in listed and "tiny" in listed
    segment.models.active.set("junk")
    assert segment.models.active.name == "nuclei"
    finetune = open_widget(viewer, "Fine-tune")
    assert "junk" not in finetune.versions.names() and "junk" not in [
        finetune.models.itemData(i) for i in range(finetune.models.count())
    ]


def test_active_model_that_stops_loading_falls_back(
    viewer, segment, model_dir, qtbot, notifications, tracebacks
):
    """A model whose header reads but whose weights do not: Segment says so and goes back to nuclei."""
    from safetensors.numpy import save_file

    from napari_loopseg.core.registry import CARD_KEY, read_card

    card = {**read_card(model_dir / "tiny.safetensors"), "name": "broken"}
    save_file(
        {"x": np.zeros(3, np.float32)}, str(model_dir / "broken.safetensors"), {CARD_KEY: json.dumps(card)}
    )
    segment.models.refresh()
    segment.models.active.set("broken")
    assert segment.models.model_name == "broken"
    viewer.add_image(make_nuclei((64, 64), seed=1)[0], name="cells")
    click(segment.segment_button, qtbot)
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    assert segment.models.active.name == "nuclei" and segment.models.model_name == "nuclei"
    assert any("broken" in m and "back to 'nuclei'" in m for m in notifications)
    assert not labels_layers(viewer) and not tracebacks


# 5. --out that cannot be a folder --------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_segment_out_that_is_a_file_is_an_error(tmp_path, capsys, where):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, make_nuclei((64, 64), seed=1)[0])
    blocker = tmp_path / "results.txt"
    blocker.write_text("")
    out = blocker if where == "file" else blocker / "sub"
    assert main(["segment", str(image), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "Traceback" not in err
    assert blocker.read_text() == ""


# 6. errors found in a worker are LoopSeg's messages ------------------------------------------
def test_all_nan_image_is_refused_before_the_worker(viewer, segment, qtbot, notifications, tracebacks):
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="void")
    click(segment.segment_button, qtbot)
    assert segment.worker is None
    assert any("void" in m and "no finite pixel values" in m for m in notifications)
    assert not labels_layers(viewer) and not tracebacks


def test_failure_inside_the_worker_is_a_message(viewer, segment, qtbot, notifications, tracebacks):
    """One NaN plane in a stack is only found by the worker: a message, no traceback, no layer."""
    stack = np.stack([make_nuclei((64, 64), seed=1)[0].astype(np.float32)] * 3)
    stack[1] = np.nan
    viewer.add_image(stack, name="stack")
    click(segment.segment_button, qtbot)
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    assert any("stack" in m and "no finite pixel values" in m for m in notifications)
    assert not tracebacks and not labels_layers(viewer)
    assert "failed" in segment.status.text()


def test_pair_reshaped_after_pairing_is_refused(
    viewer, segment, open_widget, qtbot, notifications, tracebacks
):
    labels = segmented(viewer, segment, qtbot)
    finetune = small_finetune(open_widget(viewer, "Fine-tune"))
    finetune.pairs.set_use(labels, WHOLE_IMAGE)
    viewer.layers["cells"].data = make_nuclei((80, 80), seed=4)[0]
    click(finetune.finetune_button, qtbot)
    assert finetune.worker is None
    assert any("no longer have the same shape" in m for m in notifications) and not tracebacks


def test_refusal_inside_the_finetune_worker_is_a_message(
    viewer, segment, open_widget, qtbot, notifications, tracebacks
):
    finetune = small_finetune(open_widget(viewer, "Fine-tune"))
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="void")
    labels = viewer.add_labels(make_nuclei((64, 64), seed=1)[1], name="truth")
    finetune.pairs.add_pair(viewer.layers["void"], labels, WHOLE_IMAGE)
    models_before = set(model_paths())
    click(finetune.finetune_button, qtbot)
    wait_idle(finetune, qtbot)
    assert any("cannot fine-tune" in m and "no finite pixel values" in m for m in notifications)
    assert not tracebacks and set(model_paths()) == models_before


# 7. labels without objects ---------------------------------------------------------------------
def test_finetune_on_labels_without_objects_is_refused(tiny_model, tmp_path, capsys):
    image = make_nuclei((96, 112), seed=3)[0]
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros(image.shape, np.uint16))
    models_before = set(model_paths())
    argv = ["finetune", "--images", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "empty.tif")]
    assert main([*argv, "--base", "tiny", "--steps", "2", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no objects" in err[0]
    assert set(model_paths()) == models_before


def test_an_empty_image_beside_others_with_objects_is_fine(tiny_model):
    from napari_loopseg.core.finetune import finetune

    image, truth = make_nuclei((96, 112), seed=3)
    empty = np.zeros_like(truth)
    model = finetune([image, image], [truth, empty], base="tiny", steps=2, batch_size=2, device="cpu")
    assert model.card["training"]["pairs"] == 2


# 8. smaller ones ----------------------------------------------------------------------------------
def test_finetune_on_stacks_trains_plane_by_plane(tiny_model, tmp_path, capsys):
    planes = [make_nuclei((64, 64), seed=s) for s in range(3)]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([p[0] for p in planes]), photometric="minisblack")
    tifffile.imwrite(tmp_path / "stack_lab.tif", np.stack([p[1] for p in planes]), photometric="minisblack")
    argv = ["finetune", "--images", str(tmp_path / "stack.tif"), "--labels", str(tmp_path / "stack_lab.tif")]
    assert main([*argv, "--base", "tiny", "--steps", "2", "--device", "cpu"]) == 0
    name = capsys.readouterr().out.split()[0]
    from napari_loopseg.core.registry import load_model

    assert load_model(name).card["training"]["pairs"] == 3


def test_refused_image_replaces_the_status_line(viewer, segment, qtbot):
    segmented(viewer, segment, qtbot)
    assert "objects" in segment.status.text()
    viewer.add_image(np.zeros((3, 3), np.float32), name="speck")
    segment.select("speck")
    click(segment.segment_button, qtbot)
    assert "speck" in segment.status.text() and "too small" in segment.status.text()


def test_image_removed_mid_run_stops_its_job(viewer, segment, qtbot, notifications):
    frames = 60
    viewer.add_image(np.stack([make_nuclei((96, 96), seed=s % 4)[0] for s in range(frames)]), name="movie")
    viewer.add_image(make_nuclei((64, 64), seed=9)[0], name="other")
    segment.select("movie", "other")
    fractions = []
    click(segment.segment_button, qtbot)
    segment.worker.yielded.connect(
        lambda event: event.kind == "progress" and event.index == 0 and fractions.append(event.value.fraction)
    )
    qtbot.waitUntil(lambda: len(fractions) > 0, timeout=60_000)
    viewer.layers.remove("movie")
    qtbot.waitUntil(lambda: segment.worker is None, timeout=60_000)
    assert max(fractions) < 0.5  # stopped, not computed to the end
    assert [layer.name for layer in labels_layers(viewer)] == ["other labels"]  # the other image still ran
    assert "removed" in segment.status.text() and "movie" in segment.status.text()
    assert any("'movie' was removed" in m for m in notifications)


def test_exit_while_warming_up_is_quiet():
    """A script that opens a widget and quits at once: no 'deleted C/C++ object' traceback, no abort."""
    code = (
        "import napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.window.add_plugin_dock_widget('napari-loopseg', 'Segment')\n"
        "viewer.window.add_plugin_dock_widget('napari-loopseg', 'Fine-tune')\n"
        "viewer.close()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "has been deleted" not in run.stderr
