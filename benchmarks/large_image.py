"""A 16384x16384 zarr image segmented block by block on a local dask cluster: speed and memory.

    python benchmarks/large_image.py --size 16384 --workers 1 2 --out benchmarks/results/large-cpu.json

The input (uint16, chunks 1024) tiles the bundled 2048x2048 synthetic sample; it and the labels go
to a temporary folder. Peak memory is the resident memory of this process and all its children
(the dask workers), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile
import zarr


def _tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that exited meanwhile
            total += child.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import distributed

    from napari_loopseg.core.bigdata import segment_large
    from napari_loopseg.core.cluster import local_cluster
    from napari_loopseg.sample_data import sample_path

    folder = Path(tempfile.mkdtemp(prefix="loopseg-large-"))
    tile = tifffile.imread(sample_path("nuclei_large"))
    image = zarr.open_array(
        str(folder / "image.zarr"), mode="w", shape=(args.size,) * 2, chunks=(1024, 1024), dtype="uint16"
    )
    step = tile.shape[0]
    for y in range(0, args.size, step):
        for x in range(0, args.size, step):
            image[y : y + step, x : x + step] = tile[: args.size - y, : args.size - x]
    result: dict = {"benchmark": "large_image", "size": args.size, "block_size": args.block_size, "runs": []}
    for workers in args.workers:
        labels = zarr.open_array(
            str(folder / f"labels_{workers}.zarr"),
            mode="w",
            shape=image.shape,
            chunks=(args.block_size,) * 2,
            dtype="uint32",
        )
        peak, done = [0], [False]

        def sample(peak=peak, done=done) -> None:
            while not done[0]:
                peak[0] = max(peak[0], _tree_rss())
                time.sleep(0.2)

        watcher = threading.Thread(target=sample, daemon=True)
        cluster = local_cluster(workers)
        with cluster, distributed.Client(cluster) as client:
            watcher.start()
            start = time.perf_counter()
            segment_large(image, block_size=args.block_size, scheduler=client, out=labels)
            seconds = time.perf_counter() - start
            done[0] = True
            watcher.join()
        objects = int(max(np.asarray(labels[i : i + 2048, :]).max() for i in range(0, args.size, 2048)))
        run = {
            "workers": workers,
            "seconds": round(seconds, 1),
            "megapixels_per_second": round(args.size**2 / 1e6 / seconds, 2),
            "peak_memory_gb": round(peak[0] / 2**30, 2),
            "objects": objects,
        }
        result["runs"].append(run)
        print(run)
    result.update(
        machine=platform.platform(),
        cpus=psutil.cpu_count(),
        memory_gb=round(psutil.virtual_memory().total / 2**30),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
