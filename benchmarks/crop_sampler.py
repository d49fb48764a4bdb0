"""How fast the bundled-model recipe's crops come, sampled here or in worker processes.

    python benchmarks/crop_sampler.py --workers 0 1 2 --out benchmarks/results/crop-sampler-cpu.json
    # on a lent GPU machine (data from scripts/pack_training_data.py):
    PYTHONPATH=src python benchmarks/crop_sampler.py --data packed/dsb2018_train \
        --bbbc039 packed/bbbc039 --workers 0 4 8 12

On a GPU the training step takes a fraction of the time one batch of crops takes to sample, so the
sampler sets a run's pace: this says how many worker processes (``train_bundled.py --workers``)
keep up. Same images, recipe and batches as ``scripts/train_bundled.py``'s defaults (DSB2018
minus the held-out groups and ``val``, plus BBBC039; batch 8, crop 256, zoom 0.75-1.33).
Writes JSON (with the CPU and its core count) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import torch
from results_files import save

from napari_loopseg.core.cpu_features import cpu_info
from napari_loopseg.core.crops import batches
from napari_loopseg.core.datasets import DEFAULT_GROUPS, Groups, load_samples, training_entries
from napari_loopseg.core.normalize import Normalization
from napari_loopseg.core.options import TrainConfig


def measure(samples, config: TrainConfig, count: int) -> dict:
    """Seconds to the first batch (workers starting), then batches per second after it."""
    started = time.perf_counter()
    stream = batches(samples, config, steps=count + 1)
    next(stream)
    first = time.perf_counter() - started
    started = time.perf_counter()
    made = sum(1 for _ in islice(stream, count))
    seconds = time.perf_counter() - started
    return {
        "workers": config.workers,
        "first_batch_s": round(first, 2),
        "batches": made,
        "seconds_per_batch": round(seconds / made, 4),
        "batches_per_s": round(made / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--bbbc039", type=Path, default=Path("../shared/data/bbbc039"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=60, help="batches timed per setting")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    entries = training_entries(args.data, Groups.read(DEFAULT_GROUPS), args.bbbc039, exclude_val=True)
    samples, _ = load_samples(entries, Normalization(), kind_balance=0.5)
    recipe = TrainConfig(batch_size=8, crop=256, scale_range=(0.75, 1.33))
    rows = []
    for workers in args.workers:
        rows.append(measure(samples, replace(recipe, workers=workers), args.batches))
        print(rows[-1], flush=True)
    result = {
        "benchmark": "crop sampler",
        "images": len(samples),
        "batch_size": recipe.batch_size,
        "crop": recipe.crop,
        "scale_range": list(recipe.scale_range),
        "machine": {"cpu": cpu_info().as_dict(), "cores": os.cpu_count(), "system": platform.platform()},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "results": rows,
    }
    table = [
        "| workers | first batch (s) | s per batch | batches per s |",
        "|---|---|---|---|",
        *(
            f"| {r['workers']} | {r['first_batch_s']} | {r['seconds_per_batch']} | {r['batches_per_s']} |"
            for r in rows
        ),
        "",
        f"- {len(samples)} images, batch {recipe.batch_size}, crop {recipe.crop}, zoom "
        f"{recipe.scale_range[0]}-{recipe.scale_range[1]}; {cpu_info().model}, {os.cpu_count()} cores.",
    ]
    save(args.out, result, "\n".join(table))


if __name__ == "__main__":
    main()
