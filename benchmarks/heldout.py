"""How a model does on images from acquisitions it never trained on: the scores to choose on.

    python benchmarks/heldout.py --model nuclei --out benchmarks/results/heldout-nuclei.json

Scores, all with default settings (what one click gives a user):

- ``heldout``: the DSB2018 acquisition groups held out in ``benchmarks/dsb2018_groups.json``
  (``scripts/acquisition_groups.py``), per modality and per group: the figure to choose
  checkpoints, thresholds and recipes on;
- ``val``: the manifest's random ``split == val``, beside it for comparison with earlier figures
  (it overestimates: tiles of one experiment sit on both sides of a random split);
- ``bbbc039``: every BBBC039 image, a leave-one-source-out score only for a model trained without
  BBBC039 *and* without the DSB group from its screen (the groups file marks it);
- ``val xN``: the val images (and labels) upscaled N times: nuclei of 30-150 px, as from a higher
  magnification, against the same images at 1x.

Writes JSON (with seconds and megapixels per set, device, precision and threads) and a Markdown
table beside it.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from results_files import save

from napari_loopseg.core.datasets import DEFAULT_GROUPS, Entry, Groups, evaluation_sets, rescaled
from napari_loopseg.core.metrics import scorecard, scorecard_table, weak_spots
from napari_loopseg.core.normalize import Layout
from napari_loopseg.core.options import SegmentOptions
from napari_loopseg.core.predict import autocast_dtype, precision_name, resolve_device
from napari_loopseg.core.progress import drive
from napari_loopseg.core.registry import Model, load_model
from napari_loopseg.core.segment import segment_iter


def segment_entries(
    model: Model,
    entries: list[Entry],
    scale: float = 1.0,
    device: str = "auto",
    label=None,
    object_size: str | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], dict]:
    """(truth, prediction, kind) per image, at ``scale``; and the time and megapixels it took.

    ``label`` maps an entry to the name it is tallied under (default: its modality);
    ``object_size="auto"`` estimates each image's nucleus size first (Segment's *Estimate*)."""
    triples, seconds, pixels = [], 0.0, 0
    for entry in entries:
        image, truth = entry.read()
        image, truth = rescaled(image, truth, scale)
        options = SegmentOptions(device=device, layout=Layout(rgb=image.ndim == 3), object_size=object_size)
        started = time.perf_counter()
        pred = drive(segment_iter(image, model, options))
        seconds += time.perf_counter() - started
        pixels += truth.size
        triples.append((truth, pred, label(entry) if label else entry.kind))
    cost = {"seconds": round(seconds, 1), "megapixels": round(pixels / 1e6, 2)}
    cost["megapixels_per_second"] = round(pixels / 1e6 / max(seconds, 1e-9), 2)
    return triples, cost


def add_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, grouping, model and device options of every benchmark scored on these sets."""
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--bbbc039", type=Path, default=Path("../shared/data/bbbc039"))
    parser.add_argument("--groups", type=Path, default=DEFAULT_GROUPS)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--device", default="auto")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_set_arguments(parser)
    parser.add_argument("--scales", type=float, nargs="*", default=[3.0], help="upscaled val checks")
    parser.add_argument(
        "--object-size", choices=("auto",), default=None, help="estimate each image's object size first"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()

    model = load_model(args.model)
    groups = Groups.read(args.groups)
    sets = evaluation_sets(args.data, groups, args.bbbc039 if args.bbbc039.exists() else None)
    group_of = groups.group_of()
    cards, costs, done = {}, {}, {}
    for name, entries in sets.items():
        # held-out and val share a few images: segment each once
        todo = [e for e in entries if (e.folder, e.id) not in done]
        triples, costs[name] = segment_entries(model, todo, device=args.device, object_size=args.object_size)
        done |= {(e.folder, e.id): t for e, t in zip(todo, triples, strict=True)}
        triples = [done[e.folder, e.id] for e in entries]
        cards[name] = scorecard(triples)
        if name == "heldout":
            cards["heldout by group"] = scorecard(
                (truth, pred, group_of[e.id]) for e, (truth, pred, _) in zip(entries, triples, strict=True)
            )
            # the only held-out images a model trained on ``split == train`` has not seen
            cards["heldout, val images only"] = scorecard(
                t for e, t in zip(entries, triples, strict=True) if e.split == "val"
            )
        print(f"{name}: {len(entries)} images, AP@0.5 {cards[name]['ap50']:.3f}", flush=True)
    for scale in args.scales:
        triples, costs[f"val x{scale:g}"] = segment_entries(
            model, sets["val"], scale, args.device, object_size=args.object_size
        )
        cards[f"val x{scale:g}"] = scorecard(triples)
        print(f"val x{scale:g}: AP@0.5 {cards[f'val x{scale:g}']['ap50']:.3f}", flush=True)

    table = scorecard_table({k: v for k, v in cards.items() if k != "heldout by group"})
    groups_table = scorecard_table({"held-out groups": cards["heldout by group"]})
    same_source = sorted(n for n, src in groups.sources.items() if src == "bbbc039")
    device = resolve_device(args.device)
    precision = precision_name(autocast_dtype(device, "auto"))
    timing = ", ".join(f"{k} {c['seconds']} s ({c['megapixels_per_second']} Mpx/s)" for k, c in costs.items())
    notes = [
        f"Model `{model.name}`, "
        + ("object size estimated per image" if args.object_size else "default settings")
        + f", {precision} on {device}, torch threads: {torch.get_num_threads()}.",
        f"heldout = DSB groups {', '.join(groups.held_out)} ({args.groups.name}).",
        (
            "bbbc039 is leave-one-source-out only for a model trained without BBBC039 and without DSB "
            f"group(s) {', '.join(same_source) or '-'} (its screen)."
        ),
        f"Seconds per set: {timing} (images shared by sets are segmented once).",
    ]
    result = {
        "benchmark": "heldout",
        "model": model.name,
        "model_training_data": model.card.get("training", {}).get("data"),
        "object_size": args.object_size,
        "data": {"dsb2018": str(args.data), "bbbc039": str(args.bbbc039), "groups": str(args.groups)},
        "held_out_groups": groups.held_out,
        "scores": cards,
        "weak_spots": weak_spots(cards["heldout"]),
        "cost": costs,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    text = "\n".join([table, "", groups_table, "", *(f"- {n}" for n in notes)]) + "\n"
    print(text)
    print("\n".join(result["weak_spots"]))
    save(args.out, result, text)


if __name__ == "__main__":
    main()
