"""Object size: rescale images so objects reach the network at the size it learned.

Nuclei far larger or smaller than in training are a classic failure of a fixed-scale network.
A model card records the diameters of its training objects (median and the 5th-95th percentile
range of images' medians); given the objects' diameter in an image (or estimated from passes of
the model itself), the plane is resized so they match the median, predicted, and the maps
resized back, so labels keep the original pixel grid and smooth outlines.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .instances import DecodeParams

#: A first pass finding fewer objects than this cannot estimate their size.
MIN_OBJECTS_TO_ESTIMATE = 5
#: Estimated sizes within this ratio of the training median are left as they are.
TOLERANCE = 1.25
#: Passes at most when estimating: one at the original size, then refinements (a first pass on
#: nuclei far too large finds fragments, so one estimate undershoots).
MAX_PASSES = 3
#: Rescaling factors are kept to this range (beyond it, the image carries too little detail).
FACTOR_RANGE = (0.125, 8.0)
#: Estimating starts with a pass on the plane shrunk by this factor: nuclei too large for the
#: network come out whole there, where at their own size they fragment into pieces that look like
#: nuclei of the right size (benchmarks/results/object-size-*.md); it costs a quarter of a pass.
PROBE_FACTOR = 0.5
#: Planes whose shorter side would shrink below this many pixels skip that first pass.
MIN_PROBE_SIDE = 64


@dataclass(frozen=True)
class Diameters:
    """Training-object diameters in pixels, as stored in a model card."""

    median: float
    low: float  # 5th percentile of images' median diameters (at most median / 1.5)
    high: float  # 95th percentile (at least median * 1.5)

    def to_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict) -> Diameters:
        values = cls(float(data["median"]), float(data["low"]), float(data["high"]))
        if not 0 < values.low <= values.median <= values.high:
            raise ValueError(f"object diameters must satisfy 0 < low <= median <= high: {data}")
        return values

    @classmethod
    def measure(cls, label_images: list[np.ndarray]) -> Diameters | None:
        """From instance label images (None when they hold no objects). The range is at least
        1.5x either side of the median: training's scale jitter covers that much even when a
        few corrected images all show one size."""
        per_object, per_image = [], []
        for labels in label_images:
            d = object_diameters(labels)
            if d.size:
                per_object.append(d)
                per_image.append(float(np.median(d)))
        if not per_object:
            return None
        median = float(np.median(np.concatenate(per_object)))
        low, high = np.percentile(per_image, [5, 95])
        low, high = min(float(low), median / 1.5), max(float(high), median * 1.5)
        return cls(round(median, 2), round(low, 2), round(high, 2))


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-circle diameter of every object (pixels)."""
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """Median object diameter, or None when too few objects were found to tell."""
    diameters = object_diameters(labels)
    return float(np.median(diameters)) if diameters.size >= MIN_OBJECTS_TO_ESTIMATE else None


def factor_for(diameter: float, reference: Diameters) -> float:
    """Resize factor that brings objects of ``diameter`` pixels to the training median."""
    if not diameter > 0:
        raise ValueError(f"object size must be positive, got {diameter}")
    return float(np.clip(reference.median / diameter, *FACTOR_RANGE))


def refined_factor(labels: np.ndarray, reference: Diameters, factor: float) -> float | None:
    """The factor to try next, from ``labels`` found at ``factor`` (in the original pixels), or
    None when it would change by less than :data:`TOLERANCE` or there are too few objects.

    At the original size (``factor`` 1), nuclei within the training range stay as they are:
    the network learned those sizes, and resizing them only adds the estimate's own errors."""
    median = median_diameter(labels)
    if median is None:
        return None
    if factor == 1.0 and reference.low <= median <= reference.high:
        return None
    proposed = factor_for(median, reference)
    return None if abs(np.log(proposed / factor)) <= np.log(TOLERANCE) else proposed


def probed_factor(labels: np.ndarray, reference: Diameters) -> float | None:
    """The factor to segment at, from ``labels`` of the shrunk first pass (in the original pixels),
    only when it calls for shrinking further than :data:`TOLERANCE` (nuclei too large for the
    network); otherwise None, and a pass at the original size decides (the shrunk pass loses
    small nuclei and merges crowded ones, so it cannot tell how far to enlarge)."""
    median = median_diameter(labels)
    if median is None:
        return None
    proposed = factor_for(median, reference)
    return proposed if proposed < 1 / TOLERANCE else None


def uncertainty(maps: np.ndarray) -> float:
    """How unsure the network is of its foreground: the mean of min(p, 1 - p) of the foreground
    map (channel 0) where p > 0.1. Lowest at the scale the network learned; on images too small
    for a decision, the most unsure value, 0.5."""
    foreground = np.asarray(maps[0], np.float32)
    candidate = foreground[foreground > 0.1]
    return float(np.minimum(candidate, 1 - candidate).mean()) if candidate.size else 0.5


def resize_plane(plane: np.ndarray, factor: float) -> np.ndarray:
    """A float32 (H, W) plane resized by ``factor`` (antialiased when shrinking)."""
    shape = tuple(max(1, round(n * factor)) for n in plane.shape)
    return _resize(plane[None], shape, antialias=factor < 1)[0]


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, h, w) probability maps back to the original plane's (H, W)."""
    return _resize(maps, shape, antialias=maps.shape[1] > shape[0])


def _resize(stack: np.ndarray, shape: tuple[int, ...], antialias: bool) -> np.ndarray:
    import torch  # not at import time: model cards are read on napari's GUI thread
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(stack, np.float32))[None]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=antialias)
    return out[0].numpy()


def scaled_params(params: DecodeParams, factor: float) -> DecodeParams:
    """Area thresholds and the seed smoothing (set at the model's scale) in the original image's
    pixels."""
    area = 1.0 / factor**2
    return replace(
        params,
        min_seed_area=max(1, round(params.min_seed_area * area)),
        min_area=max(1, round(params.min_area * area)),
        seed_smoothing=params.seed_smoothing / factor,
    )
