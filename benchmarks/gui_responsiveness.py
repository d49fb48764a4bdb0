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
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np


class StallTracer:
    """Samples the GUI thread's stack while a tick is late (``--trace-stalls``): what the GUI
    thread was doing during each stall, innermost frames first."""

    def __init__(self, ticks: list[float], late_ms: float = 40.0) -> None:
        self.ticks, self.late = ticks, late_ms / 1000
        self.gui = threading.get_ident()
        self.stalls: dict[float, Counter] = {}
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            time.sleep(0.005)
            if not self.ticks or time.perf_counter() - self.ticks[-1] < self.late:
                continue
            frame = sys._current_frames().get(self.gui)
            stack = traceback.extract_stack(frame)[-8:] if frame is not None else []
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
            self.stalls.setdefault(self.ticks[-1], Counter())[where] += 1

    def report(self) -> list[dict]:
        self.running = False
        self.thread.join()
        out = []
        for start, stacks in self.stalls.items():
            later = [t for t in self.ticks if t > start]
            gap_ms = ((later[0] if later else time.perf_counter()) - start) * 1000
            out.append({"stall_ms": round(gap_ms), "stacks": stacks.most_common(3)})
        return sorted(out, key=lambda s: -s["stall_ms"])[:5]


def _probe(run, is_done, trace: bool = False) -> dict:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    tracer = StallTracer(ticks) if trace else None
    started = time.perf_counter()
    ticks.append(started)
    ran: list[bool] = []
    # run inside the event loop, as a click would: its own time counts as a stall too
    QTimer.singleShot(0, lambda: (run(), ran.append(True)))
    while not (ran and is_done()):
        QApplication.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = np.diff(ticks) * 1000
    result = {
        "seconds": round(time.perf_counter() - started, 2),
        "ticks": len(ticks),
        "longest_stall_ms": round(float(gaps.max()), 1),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
    }
    if tracer is not None:
        for stall in tracer.report():
            print(f"  stall {stall['stall_ms']} ms:")
            for where, samples in stall["stacks"]:
                print(f"    {samples} x {where}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--precision", default="auto", help="the widgets' Precision (auto, fp32, bf16)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--trace-stalls", action="store_true", help="print what the GUI thread did in each stall"
    )
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

    result["open_widgets"] = _probe(
        open_widgets, lambda: not segment_jobs._warm_up_thread.is_alive(), args.trace_stalls
    )
    print("open widgets (background imports):", result["open_widgets"])
    segment, finetune = docked["Segment"], docked["Fine-tune"]
    segment.precision.setCurrentText(args.precision)
    finetune.precision.setCurrentText(args.precision)
    segment.select(large.name)
    result["segment_2048"] = _probe(
        segment.segment_button.click, lambda: segment.worker is None, args.trace_stalls
    )
    print("segment 2048^2:", result["segment_2048"])

    small, truth = viewer.open_sample("napari-loopseg", "nuclei")
    pair_labels = viewer.add_labels(np.asarray(truth.data), name="corrected")
    finetune.pairs.add_pair(small, pair_labels, WHOLE_IMAGE)
    finetune.steps.setValue(args.steps)
    result["finetune"] = _probe(
        finetune.finetune_button.click,
        lambda: finetune.worker is None and finetune.segment_worker is None,
        args.trace_stalls,
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
