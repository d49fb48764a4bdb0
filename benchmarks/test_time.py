"""Averaging the network's maps over transformed copies of each image: what it buys, what it costs.

    python benchmarks/test_time.py --model benchmarks/models/nuclei-r3-2.safetensors \\
        --out benchmarks/results/test-time-r3-2.json

A classic way to gain accuracy without training: predict flipped (and transposed) copies, or the
image at a second scale, undo the transform on the maps and average them before decoding. Every
variant is scored on the held-out groups and the old val split with the model card's decode, so
the only difference is the maps. Its cost is counted in network passes (pixels predicted against
one pass), which does not depend on the CPU; seconds are recorded too.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from heldout import add_set_arguments
from results_files import save

from napari_loopseg.core.datasets import Groups, evaluation_sets
from napari_loopseg.core.instances import decode
from napari_loopseg.core.metrics import scorecard, scorecard_table
from napari_loopseg.core.normalize import normalize_plane
from napari_loopseg.core.predict import Predictor, autocast_dtype, precision_name, resolve_device
from napari_loopseg.core.registry import load_model
from napari_loopseg.core.sizing import resize_maps, resize_plane

#: (quarter turns, mirror) of the dihedral group; the first four are the flips alone.
DIHEDRAL = [(0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True)]


Predict = Callable[[np.ndarray], np.ndarray]


def transformed(predict: Predict, plane: np.ndarray, k: int, mirror: bool) -> np.ndarray:
    """Maps of ``plane`` turned ``k`` quarters (then mirrored), turned back."""
    view = np.rot90(plane, k, axes=(-2, -1))
    view = view[..., ::-1] if mirror else view
    maps = predict(np.ascontiguousarray(view))
    maps = maps[..., ::-1] if mirror else maps
    return np.ascontiguousarray(np.rot90(maps, -k, axes=(-2, -1)))


def variants(predict: Predict, plane: np.ndarray) -> dict[str, np.ndarray]:
    """Averaged maps of every variant, sharing the passes they have in common."""
    passes = [transformed(predict, plane, k, mirror) for k, mirror in DIHEDRAL]
    upscaled = resize_maps(predict(resize_plane(plane, 1.5)), plane.shape)
    return {
        "as is (1 pass)": passes[0],
        "flips (4 passes)": np.mean(passes[:4], axis=0),
        "flips and transposes (8 passes)": np.mean(passes, axis=0),
        "1x and 1.5x (3.25 passes)": (passes[0] + upscaled) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_set_arguments(parser)
    parser.add_argument("--sets", nargs="+", default=["heldout", "val"])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()

    model = load_model(args.model)
    sets = evaluation_sets(args.data, Groups.read(args.groups), None)
    predictor = Predictor(model.net, device=args.device)
    params = model.decode_params
    cards, seconds = {}, {}
    for name in args.sets:
        triples: dict[str, list] = {}
        started = time.perf_counter()
        for entry in sets[name]:
            image, truth = entry.read()
            plane = normalize_plane(image, rgb=image.ndim == 3, norm=model.normalization)
            for variant, maps in variants(predictor.predict, plane).items():
                triples.setdefault(variant, []).append((truth, decode(maps, params), entry.kind))
        seconds[name] = round(time.perf_counter() - started, 1)
        for variant, items in triples.items():
            cards[f"{name}, {variant}"] = scorecard(items)
        print(f"{name}: {len(sets[name])} images, {seconds[name]} s for all variants", flush=True)

    device = resolve_device(args.device)
    precision = precision_name(autocast_dtype(device, "auto"))
    text = "\n".join(
        [
            f"Model `{model.name}`, its card's decode; maps averaged over transformed copies.",
            "",
            scorecard_table(cards),
            "",
            f"- {precision} on {device}, {torch.get_num_threads()} threads; seconds per set for every "
            "variant together (12.25 passes): " + ", ".join(f"{k} {v}" for k, v in seconds.items()),
        ]
    )
    result = {
        "benchmark": "test_time",
        "model": model.name,
        "decode": params.to_dict(),
        "scores": cards,
        "seconds": seconds,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    print(text)
    save(args.out, result, text)


if __name__ == "__main__":
    main()
