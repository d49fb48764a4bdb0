"""Segmentation speed on synthetic grey uint16 nuclei images: network only vs end to end.

    loopseg bench --sizes 512 2048 --out benchmarks/results/speed-cpu.json
    (or: python benchmarks/speed.py ...)

Reports seconds and megapixels per second for (1) one whole-image network forward (skipped on a
CPU above 4096^2, where it takes longer than a benchmark should), (2) tiled
prediction at default settings, (3) MONAI's ``sliding_window_inference`` with the same network and
the same overlap (when MONAI is installed: ``pip install monai``, for the benchmark only), (4)
end-to-end ``segment`` (normalise, tiles, decode), with peak host memory, the device, the CPU model
and its bf16 flags, thread count and library versions, as JSON; each row names its precision.
``--precision both`` measures fp32 and, where ``auto`` would use it, bf16 (fp16 on older GPUs) side
by side. The command line prints each row as it is measured. No timing is asserted anywhere.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

# torch and the predictor load in run(): the command line imports this module to build its parser


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _peak_host_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _monai_runner(predictor, plane: np.ndarray):
    """MONAI sliding window over the same network, same tile and overlap, same precision."""
    import torch

    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return None
    tile = predictor.tile_size
    overlap = 2 * predictor.halo / tile
    x = torch.from_numpy(plane)[None, None].to(predictor.device)

    @torch.inference_mode()
    def run() -> None:
        dtype = predictor.dtype or torch.float32
        with torch.autocast(predictor.device.type, dtype=dtype, enabled=predictor.dtype is not None):
            sliding_window_inference(x, (tile, tile), predictor.batch_size, predictor.net, overlap=overlap)

    return run


#: On a CPU, one whole-image forward of a larger side did not finish in 10 minutes (8192^2).
CPU_WHOLE_MAX = 4096


def _synthetic(size: int) -> np.ndarray:
    """Grey uint16 nuclei; sides over 2048 tile a 2048^2 image (generating one that large takes
    minutes), which keeps the density of objects the same."""
    from .synthetic import make_nuclei

    side = min(size, 2048)
    image, _ = make_nuclei((side, side), seed=side)
    reps = -(-size // side)
    return np.tile(image, (reps, reps))[:size, :size]


def precisions(choice: str, device) -> list[str]:
    """The precisions to measure: ``both`` is fp32 and, where ``auto`` picks one (a GPU, a CPU
    with native bf16), that mixed precision beside it."""
    from .predict import autocast_dtype, precision_name

    if choice != "both":
        return [choice]
    mixed = autocast_dtype(device, "auto")
    return ["fp32"] if mixed is None else ["fp32", precision_name(mixed)]


def _measure(size: int, image: np.ndarray, plane: np.ndarray, tiled, whole, model, repeats: int) -> dict:
    """One size in one precision: seconds and throughputs of each way to predict."""
    from .instances import decode
    from .normalize import normalize_plane
    from .predict import precision_name

    tiled.predict(plane[:256, :256])  # warm-up: kernels, allocator
    megapixels = size * size / 1e6
    skip_whole = whole.device.type == "cpu" and size > CPU_WHOLE_MAX
    t_whole = None if skip_whole else _best_of(repeats, lambda: whole.predict(plane))
    t_tiled = _best_of(repeats, lambda: tiled.predict(plane))
    maps = tiled.predict(plane)
    t_decode = _best_of(repeats, lambda: decode(maps, model.decode_params))
    monai = _monai_runner(tiled, plane)
    t_monai = _best_of(repeats, monai) if monai is not None else None

    def end_to_end() -> None:
        decode(tiled.predict(normalize_plane(image, norm=model.normalization)), model.decode_params)

    t_e2e = _best_of(repeats, end_to_end)
    row = {
        "size": size,
        "precision": precision_name(tiled.dtype),
        "megapixels": megapixels,
        "whole_forward_s": t_whole,
        "tiled_predict_s": t_tiled,
        "decode_s": t_decode,
        "monai_sliding_window_s": t_monai,
        "end_to_end_s": t_e2e,
        "end_to_end_mpx_per_s": megapixels / t_e2e,
        "tiled_over_whole_throughput": None if t_whole is None else t_whole / t_tiled,
        "tiled_over_monai_throughput": None if t_monai is None else t_monai / t_tiled,
        "end_to_end_over_tiled_throughput": t_tiled / t_e2e,
    }
    return row


def row_text(row: dict) -> str:
    """One measured row as a line for people (the command line prints it as soon as it is measured)."""
    monai = "n/a" if row["monai_sliding_window_s"] is None else f"{row['monai_sliding_window_s']:7.2f}s"
    whole = "skipped" if row["whole_forward_s"] is None else f"{row['whole_forward_s']:7.2f}s"
    return (
        f"{row['size']:>6}^2 {row['precision']}  whole {whole}  tiled {row['tiled_predict_s']:7.2f}s  "
        f"MONAI {monai}  decode {row['decode_s']:6.2f}s  end-to-end {row['end_to_end_s']:7.2f}s "
        f"= {row['end_to_end_mpx_per_s']:.2f} Mpx/s"
    )


def run(
    sizes: list[int],
    model_name: str,
    device: str,
    repeats: int,
    precision: str = "auto",
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Measure every size in every precision; ``on_row`` sees each row as soon as it is measured."""
    import torch

    from .cpu_features import cpu_info
    from .normalize import normalize_plane
    from .predict import Predictor, resolve_device
    from .registry import load_model

    model = load_model(model_name)
    predictors = [
        (
            Predictor(model.net, device=device, precision=name),
            Predictor(model.net, device=device, precision=name, tile_size=10**6),
        )
        for name in precisions(precision, resolve_device(device))
    ]
    rows = []
    for size in sizes:
        image = _synthetic(size)
        plane = normalize_plane(image, norm=model.normalization)
        for tiled, whole in predictors:
            rows.append(_measure(size, image, plane, tiled, whole, model, repeats))
            if on_row is not None:
                on_row(rows[-1])
    tiled = predictors[0][0]
    return {
        "benchmark": "speed",
        "model": model.name,
        "device": str(tiled.device),
        "precision_option": precision,
        "precisions": list(dict.fromkeys(row["precision"] for row in rows)),
        "tile_size": tiled.tile_size,
        "halo": tiled.halo,
        "threads": torch.get_num_threads(),
        "machine": {
            "cpu": cpu_info().as_dict(),
            "arch": platform.machine(),
            "system": platform.platform(),
        },
        "gpu": torch.cuda.get_device_name() if tiled.device.type == "cuda" else None,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "repeats": repeats,
        "peak_host_memory_mb": _peak_host_mb(),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
        "results": rows,
    }
