"""Does the object-size option rescue nuclei far smaller or larger than in training?

    python benchmarks/object_size.py --data ../shared/data/dsb2018_train --split val \
        --out benchmarks/results/object-size-dsb-val.json

Every image of the split (and its labels, nearest-neighbour) is resized by each --scales factor,
then segmented three ways: as it is; with ``object_size`` set to its objects' true median
diameter (what a user measures with napari's line tool); and with ``object_size="auto"``
(estimated from a first pass). AP is scored at the rescaled image's own resolution.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from results_files import save

from napari_loopseg.core.datasets import read_folder, rescaled
from napari_loopseg.core.metrics import Counts
from napari_loopseg.core.normalize import Layout
from napari_loopseg.core.options import SegmentOptions
from napari_loopseg.core.progress import drive
from napari_loopseg.core.registry import load_model
from napari_loopseg.core.segment import segment_iter
from napari_loopseg.core.sizing import object_diameters

MODES = ("as is", "given size", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    model = load_model(args.model)
    rows = read_folder(args.data, args.split)
    counts = {(s, m): Counts() for s in args.scales for m in args.modes}
    seconds = {(s, m): 0.0 for s in args.scales for m in args.modes}
    for n, row in enumerate(rows):
        image, truth = row.read()
        for scale in args.scales:
            img, lab = rescaled(image, truth, scale)
            given = float(np.median(object_diameters(lab)))
            for mode, size in zip(MODES, (None, given, "auto"), strict=True):
                if mode not in args.modes:
                    continue
                options = SegmentOptions(layout=Layout(rgb=img.ndim == 3), object_size=size)
                started = time.perf_counter()
                labels = drive(segment_iter(img, model, options))
                seconds[scale, mode] += time.perf_counter() - started
                counts[scale, mode].add(lab, labels)
        print(f"{n + 1}/{len(rows)} {row.id[:12]}", flush=True)

    table = [
        {
            "scale": s,
            "mode": m,
            **{k: round(v, 4) for k, v in counts[s, m].summary().items()},
            "seconds": round(seconds[s, m], 1),
        }
        for s in args.scales
        for m in args.modes
    ]
    result = {
        "benchmark": "object_size",
        "data": str(args.data),
        "split": args.split,
        "images": len(rows),
        "model": model.name,
        "model_diameters": model.diameters.to_dict() if model.diameters else None,
        "results": table,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": {"torch": torch.__version__},
    }
    lines = ["| scale | mode | AP@0.5 | AP@0.75 | mean AP | seconds |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['scale']} | {r['mode']} | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['map']:.3f} "
        f"| {r['seconds']} |"
        for r in table
    ]
    print("\n".join(lines))
    save(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
