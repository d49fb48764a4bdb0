"""Take the README screenshot from a real run: open the sample, dock Segment, click it, save.

xvfb-run -a python scripts/make_screenshot.py docs/screenshot.png
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def main(out: Path) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 850)
    image, _truth = viewer.open_sample("napari-loopseg", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-loopseg", "Segment")
    widget.segment_button.click()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.layers[f"{image.name} labels"].contour = 0
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"{out}: {widget.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
