"""Accuracy of a model and of the classical baseline on a labelled folder, per modality.

    python benchmarks/accuracy.py --data ../shared/data/dsb2018_train --split val \
        --out benchmarks/results/accuracy-dsb-val.json

The folder holds ``images/<id>.tif`` and ``labels/<id>.tif``; an optional ``manifest.csv``
(image_id or id, kind, split) groups the table by modality and selects a split. The classical baseline
(what users reach for without deep learning: Gaussian smoothing, Otsu threshold, distance-transform
seeds, watershed, all from scikit-image) runs in the same pass on the same normalised images.
Writes JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from results_files import save
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from napari_loopseg.core.datasets import read_folder
from napari_loopseg.core.instances import decode, relabel_sequential
from napari_loopseg.core.metrics import scorecard, scorecard_table, weak_spots
from napari_loopseg.core.normalize import normalize_plane
from napari_loopseg.core.predict import Predictor
from napari_loopseg.core.registry import load_model


def classical(plane: np.ndarray, min_distance: int = 4, min_area: int = 12) -> np.ndarray:
    """Otsu + seeded watershed on a normalised (foreground bright) plane."""
    smooth = gaussian(plane, sigma=1.0)
    mask = smooth > threshold_otsu(smooth)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=ndi.label(mask)[0], exclude_border=False
    )
    markers = np.zeros(plane.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    areas = np.bincount(labels.ravel())
    labels[(areas < min_area)[labels]] = 0
    return relabel_sequential(labels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--split", default="val", help="manifest split to score ('' for all)")
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()

    model = load_model(args.model)
    predictor = Predictor(model.net, device=args.device)
    items: dict[str, list] = {"loopseg": [], "classical": []}
    seconds = {"loopseg": 0.0, "classical": 0.0}
    for entry in read_folder(args.data, args.split or None):
        image, truth = entry.read()
        kind = entry.kind
        plane = normalize_plane(image, rgb=image.ndim == 3, norm=model.normalization)
        start = time.perf_counter()
        ours = decode(predictor.predict(plane), model.decode_params)
        seconds["loopseg"] += time.perf_counter() - start
        start = time.perf_counter()
        baseline = classical(plane)
        seconds["classical"] += time.perf_counter() - start
        items["loopseg"].append((truth, ours, kind))
        items["classical"].append((truth, baseline, kind))
    scores = {method: scorecard(triples) for method, triples in items.items()}
    result = {
        "benchmark": "accuracy",
        "data": str(args.data),
        "split": args.split,
        "model": model.name,
        "scores": scores,
        "weak_spots": weak_spots(scores["loopseg"]),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "device": str(predictor.device),
        "machine": platform.platform(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    table = scorecard_table(scores)
    print(table)
    print("\n".join(result["weak_spots"]))
    save(args.out, result, table)


if __name__ == "__main__":
    main()
