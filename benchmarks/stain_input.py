"""Which single plane an RGB (stained) image should become: luminance or haematoxylin density.

    python benchmarks/stain_input.py --out benchmarks/results/stain-input-dsb.json

For every colour image of DSB2018 (H&E and similar stains), normalised as the network sees it
(percentiles, bright-background images flipped), the area under the ROC curve of pixel values for
nucleus against background pixels: 1 when every nucleus pixel is brighter than every background
pixel, 0.5 when the plane says nothing, below 0.5 when it is upside down. No network involved: it
asks how much of the answer the input plane still holds.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
from results_files import save
from scipy.stats import mannwhitneyu

from napari_loopseg.core.datasets import read_folder
from napari_loopseg.core.normalize import Normalization, normalize_plane

COLOURS = ("luminance", "haematoxylin")


def separation(plane: np.ndarray, labels: np.ndarray, step: int = 2) -> float:
    """ROC AUC of nucleus against background pixel values (every ``step``-th pixel each way)."""
    plane, labels = plane[::step, ::step], labels[::step, ::step]
    inside, outside = plane[labels > 0], plane[labels == 0]
    u = mannwhitneyu(inside, outside).statistic
    return float(u / (inside.size * outside.size))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    scores: dict[str, list[float]] = {c: [] for c in COLOURS}
    for entry in read_folder(args.data):
        image, labels = entry.read()
        if image.ndim != 3 or not (labels > 0).any() or not (labels == 0).any():
            continue
        for colour in COLOURS:
            plane = normalize_plane(image, rgb=True, norm=Normalization(colour=colour))
            scores[colour].append(separation(plane, labels))
    summary = {
        colour: {
            "images": len(values),
            "mean_auc": round(float(np.mean(values)), 4),
            "min_auc": round(float(np.min(values)), 4),
            "images_below_0.9": int(np.sum(np.array(values) < 0.9)),
        }
        for colour, values in scores.items()
    }
    result = {
        "benchmark": "stain_input",
        "data": str(args.data),
        "summary": summary,
        "machine": platform.platform(),
    }
    lines = [
        "| input plane | images | mean AUC | worst AUC | images with AUC < 0.9 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {s['images']} | {s['mean_auc']:.3f} | {s['min_auc']:.3f} | {s['images_below_0.9']} |"
        for c, s in summary.items()
    ]
    print("\n".join(lines))
    save(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
