"""Longest GUI stall (a 10 ms QTimer probe) while LoopSeg works in the background, real viewer.

    xvfb-run -a python benchmarks/gui_responsiveness.py --out benchmarks/results/gui-cpu.json

0. Open the Segment and Fine-tune widgets (they import torch in the background).
1. Segment the bundled 2048x2048 sample with the Segment widget.
2. Fine-tune the active model on the 512x512 sample ("whole image correct") for --steps steps.
Fine-tuned versions go to a temporary registry. Reports the longest gap between timer ticks (what a user
feels as a freeze) and the 99th percentile, with the machine. The Qt event loop keeps running; nothing
here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _probe(run, is_done) -> dict:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    started = time.perf_counter()
    run()
    while not is_done():
        QApplication.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = np.diff(ticks) * 1000
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "ticks": len(ticks),
        "longest_stall_ms": round(float(gaps.max()), 1),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--precision", default="auto", help="the widgets' Precision (auto, fp32, bf16)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["LOOPSEG_MODEL_DIR"] = tempfile.mkdtemp(prefix="loopseg-bench-")  # never the user's models

    import napari
    import torch

    from napari_loopseg.core.cpu_features import cpu_info
    from napari_loopseg.core.predict import autocast_dtype, precision_name
    from napari_loopseg.widgets import segment_jobs
    from napari_loopseg.widgets.pairs_panel import WHOLE_IMAGE

    viewer = napari.Viewer(show=True)
    large, _ = viewer.open_sample("napari-loopseg", "nuclei_large")
    result: dict = {"benchmark": "gui_responsiveness"}
    docked = {}

    def open_widgets() -> None:
        for name in ("Segment", "Fine-tune"):
            docked[name] = viewer.window.add_plugin_dock_widget("napari-loopseg", name)[1]

    result["open_widgets"] = _probe(open_widgets, lambda: not segment_jobs._warm_up_thread.is_alive())
    print("open widgets (background imports):", result["open_widgets"])
    segment, finetune = docked["Segment"], docked["Fine-tune"]
    segment.precision.setCurrentText(args.precision)
    finetune.precision.setCurrentText(args.precision)
    segment.select(large.name)
    result["segment_2048"] = _probe(segment.segment_button.click, lambda: segment.worker is None)
    print("segment 2048^2:", result["segment_2048"])

    small, truth = viewer.open_sample("napari-loopseg", "nuclei")
    pair_labels = viewer.add_labels(np.asarray(truth.data), name="corrected")
    finetune.pairs.add_pair(small, pair_labels, WHOLE_IMAGE)
    finetune.steps.setValue(args.steps)
    result["finetune"] = _probe(
        finetune.finetune_button.click, lambda: finetune.worker is None and finetune.segment_worker is None
    )
    result["finetune"]["steps"] = args.steps
    print("fine-tune:", result["finetune"])
    result.update(
        precision_option=args.precision,
        precision=precision_name(autocast_dtype(torch.device("cpu"), args.precision)),
        cpu=cpu_info().as_dict(),
        threads=torch.get_num_threads(),
        machine=platform.platform(),
        processor=platform.processor(),
        versions={"napari": napari.__version__, "torch": torch.__version__},
    )
    viewer.close()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
