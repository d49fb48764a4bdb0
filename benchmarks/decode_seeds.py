"""Seeding rules compared on the same probability maps: threshold seeds against maxima by dynamic.

    python benchmarks/decode_seeds.py --model benchmarks/models/nuclei-r3-2.safetensors \\
        --out benchmarks/results/decode-seeds-r3-2.json

Each set's maps are predicted once (at the images' own size, as ``loopseg segment`` does); then
every point of ``core.decode_tuning.dynamic_grid`` is scored on the held-out groups, the best one
(AP@0.5 + mean AP, as checkpoints are chosen) is picked there, and it is reported beside the
model card's own thresholds on every set. Only the held-out groups choose: ``val`` and
``bbbc039`` (leave-one-source-out for a model trained without it) are scored with what they chose.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from heldout import add_set_arguments
from results_files import save

from napari_loopseg.core.datasets import Groups, evaluation_sets
from napari_loopseg.core.decode_tuning import dynamic_grid, selection_score, tune_decode
from napari_loopseg.core.instances import DecodeParams, decode
from napari_loopseg.core.metrics import scorecard, scorecard_table
from napari_loopseg.core.normalize import normalize_plane
from napari_loopseg.core.predict import Predictor, autocast_dtype, precision_name, resolve_device
from napari_loopseg.core.registry import load_model


def described(params: DecodeParams) -> str:
    if params.seed_dynamic > 0:
        return (
            f"maxima rising {params.seed_dynamic:g} (smoothing {params.seed_smoothing:g} px), "
            f"foreground {params.foreground:g}, min area {params.min_area}"
        )
    return f"threshold {params.seed:g}, foreground {params.foreground:g}, min area {params.min_area}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_set_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()

    model = load_model(args.model)
    sets = evaluation_sets(
        args.data, Groups.read(args.groups), args.bbbc039 if args.bbbc039.exists() else None
    )
    predictor = Predictor(model.net, device=args.device)
    maps, truths, kinds, started = {}, {}, {}, time.perf_counter()
    for name, entries in sets.items():
        maps[name], truths[name], kinds[name] = [], [], []
        for entry in entries:
            image, truth = entry.read()
            plane = normalize_plane(image, rgb=image.ndim == 3, norm=model.normalization)
            maps[name].append(predictor.predict(plane))
            truths[name].append(truth)
            kinds[name].append(entry.kind)
        print(f"{name}: {len(entries)} images predicted", flush=True)
    predict_seconds = time.perf_counter() - started

    grid_rows = []

    def report(params: DecodeParams, scores: dict[str, float]) -> None:
        grid_rows.append({"decode": params.to_dict(), "heldout": scores})
        print(f"{described(params)}: {scores}", flush=True)

    card = model.decode_params
    chosen, _ = tune_decode(maps["heldout"], truths["heldout"], [card, *dynamic_grid()], report)
    cards, seconds = {}, {}
    for rule, params in (("card", card), ("chosen", chosen)):
        for name in sets:
            started = time.perf_counter()
            labels = [decode(m, params) for m in maps[name]]
            seconds[f"{rule} {name}"] = round(time.perf_counter() - started, 1)
            cards[f"{name}, {rule}"] = scorecard(zip(truths[name], labels, kinds[name], strict=True))

    device = resolve_device(args.device)
    precision = precision_name(autocast_dtype(device, "auto"))
    top = sorted(grid_rows, key=lambda r: -selection_score(r["heldout"]))[:10]
    lines = [
        f"Model `{model.name}`; card: {described(card)}; chosen on the held-out groups: {described(chosen)}.",
        "",
        scorecard_table(cards),
        "",
        "Best grid points on the held-out groups (AP@0.5 + mean AP):",
        "",
        "| seeds | AP@0.5 | AP@0.75 | mean AP |",
        "|---|---|---|---|",
        *(
            f"| {described(DecodeParams.from_dict(r['decode']))} | {r['heldout']['ap50']:.3f} | "
            f"{r['heldout']['ap75']:.3f} | {r['heldout']['map']:.3f} |"
            for r in top
        ),
        "",
        f"- Maps predicted once in {predict_seconds:.0f} s ({precision} on {device}, "
        f"{torch.get_num_threads()} threads); decoding seconds per set: "
        + ", ".join(f"{k} {v}" for k, v in seconds.items()),
    ]
    result = {
        "benchmark": "decode_seeds",
        "model": model.name,
        "card_decode": card.to_dict(),
        "chosen_decode": chosen.to_dict(),
        "scores": cards,
        "grid": grid_rows,
        "decode_seconds": seconds,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    text = "\n".join(lines) + "\n"
    print(text)
    save(args.out, result, text)


if __name__ == "__main__":
    main()
