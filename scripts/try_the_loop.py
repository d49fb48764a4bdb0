"""Walk the loop as a user does, through the Plugins menu path, and screenshot each stage.

    xvfb-run -a python scripts/try_the_loop.py docs/loop

Opens the bundled sample, docks Segment from the plugin (napari hands it the viewer proxy), clicks
Segment, paints three brush strokes with the mouse on the canvas, then opens Fine-tune (the
README's order), checks that the pair shows the reviewed share, fine-tunes (a short run), and
checks that the edited layer is intact and a new result layer appeared. Writes
``<prefix>-1-reviewed.png`` and ``<prefix>-2-after.png`` and prints what it saw.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication


def settle(condition=lambda: True, seconds: float = 0.5, timeout: float = 1800) -> None:
    """Let the GUI run until ``condition`` holds, then for ``seconds`` more."""
    started = time.monotonic()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - started > timeout:
            raise TimeoutError("the GUI did not get there in time")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def stroke(canvas, start: tuple[int, int], end: tuple[int, int]) -> None:
    """A brush stroke: press, drag in small steps, release (canvas pixel coordinates)."""
    points = [QPoint(int(x), int(y)) for x, y in np.linspace(start, end, 12)]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
    for point in points[1:]:
        QTest.mouseMove(canvas, point)
        settle(seconds=0.02)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[-1])
    settle(seconds=0.1)


def main(prefix: Path) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    image, _truth = viewer.open_sample("napari-loopseg", "nuclei")
    _truth.visible = False
    _, segment = viewer.window.add_plugin_dock_widget("napari-loopseg", "Segment")
    segment.select(image.name)
    segment.segment_button.click()
    settle(lambda: segment.worker is None)
    labels = viewer.layers[f"{image.name} labels"]
    print("segment:", segment.status.text())

    viewer.reset_view()
    settle()
    labels.mode = "paint"
    labels.brush_size = 12
    labels.selected_label = int(labels.data.max()) + 1
    canvas = viewer.window._qt_viewer.canvas.native
    width, height = canvas.width(), canvas.height()
    before = np.array(labels.data, copy=True)
    for y in (0.35, 0.5, 0.65):
        stroke(canvas, (0.4 * width, y * height), (0.6 * width, y * height))
    edited = np.array(labels.data, copy=True)
    print(f"painted pixels: {int((edited != before).sum())}")

    _, finetune = viewer.window.add_plugin_dock_widget("napari-loopseg", "Fine-tune")
    finetune.steps.setValue(30)
    finetune.pairs.show_reviewed.setChecked(True)
    settle(seconds=1.0)
    print("reviewed column:", finetune.pairs.table.item(0, 2).text())
    prefix.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(prefix.with_name(prefix.name + "-1-reviewed.png")), canvas_only=False)

    finetune.finetune_button.click()
    settle(lambda: finetune.worker is None and finetune.segment_worker is None, seconds=1.0)
    print("fine-tune:", finetune.status.text())
    intact = np.array_equal(np.asarray(labels.data), edited)
    results = [layer.name for layer in viewer.layers if layer.metadata.get("loopseg")]
    print(f"edited layer intact: {intact}; LoopSeg layers: {results}; active: {finetune.active.name}")
    finetune.pairs.show_reviewed.setChecked(False)
    settle(seconds=1.0)
    viewer.screenshot(str(prefix.with_name(prefix.name + "-2-after.png")), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/loop"))
