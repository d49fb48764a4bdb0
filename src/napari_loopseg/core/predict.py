"""Predictor: runs a network over a normalised plane by overlap tiles, in batches, on a device.

Device ``auto`` picks CUDA, then Apple MPS, then the CPU. Precision ``auto`` uses bf16 autocast on
GPUs with bf16 (fp16 on older ones) and on CPUs with native bf16 instructions (see
:mod:`.cpu_features`: emulated bf16 is 2-9x slower than fp32), fp32 elsewhere; always with
channels-last memory. On a GPU, the batch is sized from free memory, tiles go up from pinned
memory and are stitched on the device. Out of memory, the predictor halves the batch, then the
tile, then stops with a clear message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from . import cpu_features
from .errors import DeviceError
from .options import DEFAULT_TILE
from .progress import drive
from .tiling import TilePlan, round_up
from .unet import UNet, fused_for_inference, in_memory_format, receptive_radius

log = logging.getLogger(__name__)

#: Bytes of live activations per tile pixel, per unit of network width, per byte of precision.
ACTIVATION_FACTOR = 12


@dataclass(frozen=True)
class Progress:
    """Tiles done out of total, for progress bars."""

    done: int
    total: int


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    name = (name or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was requested but no CUDA GPU is available")
    if name == "mps" and not has_mps:
        raise DeviceError("device 'mps' was requested but Apple MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or mps") from err


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype for ``device``, or None for plain fp32.

    ``auto`` (replaced by $LOOPSEG_PRECISION when set) picks what the device runs fastest; an
    explicit bf16 or fp16 the device cannot run at all is a :class:`DeviceError`.
    """
    choices = ", ".join(cpu_features.PRECISIONS)
    precision = (precision or "auto").lower()
    if precision == "auto":
        precision = os.environ.get(cpu_features.PRECISION_ENV, "").lower() or "auto"
        if precision not in cpu_features.PRECISIONS:
            raise DeviceError(f"${cpu_features.PRECISION_ENV} is {precision!r}: use {choices}")
    if precision not in cpu_features.PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {choices}")
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return torch.bfloat16 if native else torch.float16
        if device.type == "cpu" and cpu_features.native_bf16():
            return torch.bfloat16
        return None
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    _check_supported(device, dtype)
    return dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """'fp32', 'bf16' or 'fp16': how benchmarks and model cards record an :func:`autocast_dtype`."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _check_supported(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a dtype the device cannot run at all; warn (once) where it only emulates it."""
    bf16 = dtype == torch.bfloat16
    if device.type == "cuda" and bf16:
        if not torch.cuda.is_bf16_supported():
            gpu = torch.cuda.get_device_name(device)
            raise DeviceError(f"this GPU ({gpu}) cannot run bf16: use fp16 or fp32")
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            _warn_slow("bf16 on this GPU is emulated: fp16 is faster")
    elif device.type == "mps" and bf16 and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise DeviceError("bf16 on Apple MPS needs macOS 14 or newer: use fp16 or fp32")
    elif device.type == "cpu" and not (bf16 and cpu_features.native_bf16()):
        model = cpu_features.cpu_info().model
        _warn_slow(f"{precision_name(dtype)} on this CPU ({model}) is emulated: slower than fp32")


@cache
def _warn_slow(message: str) -> None:
    """Once per process: a Predictor is made per image, and one warning is enough."""
    log.warning("%s; precision auto picks the faster one", message)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class Predictor:
    """Overlap-tile inference of a :class:`UNet`; outputs sigmoid probability maps."""

    def __init__(
        self,
        net: UNet,
        device: str = "auto",
        precision: str = "auto",
        tile_size: int = DEFAULT_TILE,
        halo: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.net = in_memory_format(fused_for_inference(net).to(self.device), torch.channels_last)
        self.multiple = net.multiple
        self.halo = round_up(halo if halo is not None else receptive_radius(net.config), self.multiple)
        if self.halo < receptive_radius(net.config):
            log.warning("overlap %d is below the receptive radius: tiles may show seams", self.halo)
        self.tile_size = max(int(tile_size), self.multiple)
        self.batch_size = batch_size or self._batch_for_free_memory()

    def _batch_for_free_memory(self) -> int:
        """Tiles per batch: on a GPU, as many as half its free memory holds (at most 32); one on
        a CPU, where a batch gains nothing. The per-tile figure is a generous estimate of the
        live activations; if it is wrong, out-of-memory back-off halves the batch."""
        if self.device.type != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info(self.device)
        per_tile = ACTIVATION_FACTOR * self.net.config.width * self.tile_size**2 * (2 if self.dtype else 4)
        return int(np.clip(free // 2 // per_tile, 1, 32))

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":  # pinned memory: the copy runs while the CPU tiles on
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> torch.Tensor:
        """Probabilities of a batch of tiles, left on the device (no synchronisation)."""
        x = self._to_device(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            y = self.net(x)
        return torch.sigmoid(y.float())

    def predict_iter(self, plane: np.ndarray) -> Generator[Progress, None, np.ndarray]:
        """Yield progress per batch of tiles; return (C, H, W) float32 probabilities."""
        tile, batch = self.tile_size, self.batch_size
        while True:
            try:
                return (yield from self._run(plane, tile, batch))
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not _is_oom(err):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch //= 2
                elif tile // 2 >= 2 * self.halo + self.multiple:
                    tile //= 2
                else:
                    raise DeviceError(
                        f"out of memory on {self.device} even with one {tile}px tile at a time; "
                        "try --device cpu or close other programs using the GPU"
                    ) from err
                log.warning("out of memory: retrying with batch %d, tile %d", batch, tile)
                self.tile_size, self.batch_size = tile, batch

    def _run(self, plane: np.ndarray, tile: int, batch: int) -> Generator[Progress, None, np.ndarray]:
        plane = np.asarray(plane, dtype=np.float32)
        if plane.ndim == 2:
            plane = plane[None]
        plan = TilePlan.make(plane.shape[-2:], tile, self.halo, self.multiple)
        padded = plan.pad(plane)
        # stitched where the network runs: one copy back at the end, not one per batch
        out = torch.empty((self.net.config.out_channels, *plane.shape[-2:]), device=self.device)
        origins = list(plan.origins())
        th, tw = plan.tile_shape
        for start in range(0, len(origins), batch):
            chunk = origins[start : start + batch]
            tiles = np.stack([padded[:, y : y + th, x : x + tw] for y, x in chunk])
            for origin, pred in zip(chunk, self._forward(tiles), strict=True):
                plan.place(out, pred, origin)
            yield Progress(start + len(chunk), len(origins))
        return out.cpu().numpy()

    def predict(self, plane: np.ndarray) -> np.ndarray:
        """Run :meth:`predict_iter` to completion."""
        return drive(self.predict_iter(plane))
