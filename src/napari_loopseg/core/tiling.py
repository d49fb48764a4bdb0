"""Overlap-tile plan (Ronneberger et al. 2015): mirror-pad, cut tiles with a halo, keep centres.

With a halo at least the network's receptive radius and tile origins on the network's pooling
grid, each kept centre is bit-for-bit what whole-image prediction computes there (up to float
summation order), so the stitched maps equal whole-image prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis: ``count`` tiles of ``tile`` pixels whose centres of ``core`` abut."""

    size: int
    halo: int
    tile: int
    core: int
    count: int

    @property
    def padded(self) -> int:
        return self.count * self.core + 2 * self.halo


def plan_axis(size: int, tile: int, halo: int, multiple: int) -> AxisPlan:
    """Fewest tiles of at most ``tile`` pixels, balanced so the last one is not mostly padding.

    One tile when the whole axis fits. Otherwise ``n`` tiles share the axis evenly: 2048 px with
    1024 px tiles and a 112 px halo gives 3 tiles of 912, not 3 of 1024 (25% less compute).
    """
    halo = round_up(halo, multiple)
    whole = round_up(size + 2 * halo, multiple)
    tile = max(tile // multiple * multiple, 2 * halo + multiple)
    if whole <= tile:
        return AxisPlan(size, halo, whole, whole - 2 * halo, 1)
    count = math.ceil(size / (tile - 2 * halo))
    core = round_up(math.ceil(size / count), multiple)
    return AxisPlan(size, halo, core + 2 * halo, core, count)


@dataclass(frozen=True)
class TilePlan:
    """Where tiles come from in the mirror-padded plane and where their centres go."""

    y: AxisPlan
    x: AxisPlan

    @classmethod
    def make(cls, shape: tuple[int, int], tile: int, halo: int, multiple: int) -> TilePlan:
        return cls(plan_axis(shape[0], tile, halo, multiple), plan_axis(shape[1], tile, halo, multiple))

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.y.tile, self.x.tile

    def __len__(self) -> int:
        return self.y.count * self.x.count

    def pad(self, plane: np.ndarray) -> np.ndarray:
        """Mirror-pad a (C, H, W) plane so every tile lies inside it."""
        pad_y = (self.y.halo, self.y.padded - self.y.halo - self.y.size)
        pad_x = (self.x.halo, self.x.padded - self.x.halo - self.x.size)
        mode = "reflect" if min(plane.shape[-2:]) > 1 else "edge"
        return np.pad(plane, ((0, 0), pad_y, pad_x), mode=mode)

    def origins(self) -> Iterator[tuple[int, int]]:
        """Top-left corner of each tile in padded coordinates (= its centre's in the image)."""
        for i in range(self.y.count):
            for j in range(self.x.count):
                yield i * self.y.core, j * self.x.core

    def place(self, out: np.ndarray, tile_out: np.ndarray, origin: tuple[int, int]) -> None:
        """Copy a predicted tile's centre into the (C, H, W) output."""
        oy, ox = origin
        h = min(self.y.core, self.y.size - oy)
        w = min(self.x.core, self.x.size - ox)
        out[:, oy : oy + h, ox : ox + w] = tile_out[
            :, self.y.halo : self.y.halo + h, self.x.halo : self.x.halo + w
        ]
