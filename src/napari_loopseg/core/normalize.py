"""Turn whatever array a user has into the network's input: one float32 plane in [0, 1]-ish.

Normalisation is computed once per plane (percentiles over the whole plane, or a strided sample
of it for huge planes), never per tile, so every tile sees the same intensity mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

from .errors import InputError

Invert = Literal["auto", "yes", "no"]
Colour = Literal["luminance", "haematoxylin"]
#: Pixels (strided) the intensity statistics read: the same sample for an in-memory plane and a
#: huge or lazy one segmented block by block, so both are normalised alike.
STATS_SAMPLE = 4_000_000
MIN_SIDE = 4
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


@dataclass(frozen=True)
class Normalization:
    """How raw intensities map to network input; stored in the model card."""

    low: float = 1.0
    high: float = 99.8
    invert: Invert = "auto"
    #: How an RGB image becomes one plane: ``luminance``, or the haematoxylin stain's optical
    #: density (colour deconvolution), which keeps what tells nuclei from eosin-stained tissue.
    colour: Colour = "luminance"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        low, high = float(data.get("low", 1.0)), float(data.get("high", 99.8))
        invert, colour = data.get("invert", "auto"), data.get("colour", "luminance")
        if not (0 <= low < high <= 100) or invert not in ("auto", "yes", "no"):
            raise ValueError(f"invalid normalisation {data}")
        if colour not in get_args(Colour):
            raise ValueError(f"invalid normalisation colour {colour!r}")
        return cls(low, high, invert, colour)


def check_dtype(array: np.ndarray) -> None:
    """Reject data that is not intensities (complex, text, objects)."""
    kind = np.dtype(array.dtype).kind
    if kind not in "biuf":
        raise InputError(f"unsupported pixel type {array.dtype}: expected integers or floats")


def strided_sample(plane):
    """Every n-th row and column of a (H, W, ...) numpy, dask or zarr plane, at most
    ``STATS_SAMPLE`` pixels: percentiles without reading (or sorting) all of a huge plane."""
    step = max(1, int(np.ceil(np.sqrt(plane.shape[0] * plane.shape[1] / STATS_SAMPLE))))
    return plane[::step, ::step]


def to_grey(plane: np.ndarray, rgb: bool, colour: Colour = "luminance") -> np.ndarray:
    """RGB(A) -> luminance or haematoxylin density (alpha dropped); grey stays grey. float32."""
    plane = np.asarray(plane)
    check_dtype(plane)
    if rgb:
        if plane.ndim != 3 or plane.shape[-1] not in (3, 4):
            raise InputError(f"RGB image must be (height, width, 3 or 4), got {plane.shape}")
        if colour == "haematoxylin":
            return haematoxylin(plane[..., :3])
        return (plane[..., :3].astype(np.float32) @ _LUMA).astype(np.float32)
    if plane.ndim != 2:
        raise InputError(f"expected a 2D plane, got shape {plane.shape}")
    return plane.astype(np.float32, copy=False)


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of an RGB image (Ruifrok and Johnston's deconvolution,
    ``skimage.color.rgb2hed``): high where nuclei are, near zero on background and eosin, whatever
    the stain's shade. Integers are scaled by their type's range; floats by a fixed full scale
    (1, 255 or 65535, the smallest their maximum fits), so blocks of one image agree."""
    from skimage.color import rgb2hed

    if rgb.dtype.kind in "ui":
        full = float(np.iinfo(rgb.dtype).max)
    else:
        top = float(np.nanmax(rgb)) if rgb.size else 1.0
        full = next((f for f in (1.0, 255.0, 65535.0) if top <= f), top)
    scaled = np.nan_to_num(rgb.astype(np.float32) / full, nan=0.0)
    return rgb2hed(np.clip(scaled, 0.0, 1.0))[..., 0].astype(np.float32)


@dataclass(frozen=True)
class IntensityMap:
    """The linear map (and flip) that normalises one image; computed once, applied to any part."""

    low: float
    scale: float
    invert: bool

    def apply(self, grey: np.ndarray) -> np.ndarray:
        out = np.nan_to_num(grey, nan=self.low, posinf=self.low + self.scale, neginf=self.low) - self.low
        out = (out / self.scale).astype(np.float32, copy=False)
        return 1.0 - out if self.invert else out


def intensity_map(grey: np.ndarray, norm: Normalization = Normalization()) -> IntensityMap:
    """Percentiles of ``grey`` (a whole plane, or a strided sample of a huge one).

    ``invert="auto"`` flips images whose background is bright (brightfield, H&E stains), judged
    by where the median (the background in sparse images) lies between the percentiles.
    """
    # strided first: a dask array loads only the sample
    sample = np.asarray(strided_sample(grey), dtype=np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise InputError("image has no finite pixel values")
    lo, hi = np.percentile(finite, [norm.low, norm.high])
    scale = float(hi - lo) if hi > lo else 1.0
    invert = norm.invert == "yes" or (norm.invert == "auto" and np.median(finite) > lo + 0.5 * scale)
    return IntensityMap(float(lo), scale, bool(invert))


def normalize_plane(
    plane: np.ndarray, rgb: bool = False, norm: Normalization = Normalization()
) -> np.ndarray:
    """Percentile-normalise one plane to float32 (H, W), foreground bright."""
    grey = to_grey(plane, rgb, norm.colour)
    if min(grey.shape) < 1:
        raise InputError(f"image is empty: shape {grey.shape}")
    return intensity_map(grey, norm).apply(grey)


@dataclass(frozen=True)
class Layout:
    """Which axes of a user's array are planes, channels and colour."""

    rgb: bool = False
    channel_axis: int | None = None
    channel: int = 0


def _without_channel_and_colour(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if layout.channel_axis is not None:
        if not -len(shape) <= layout.channel_axis < len(shape):
            raise InputError(f"channel axis {layout.channel_axis} does not exist in shape {shape}")
        axis = layout.channel_axis % len(shape)
        shape = shape[:axis] + shape[axis + 1 :]
    if layout.rgb:
        if not shape or shape[-1] not in (3, 4):
            raise InputError(f"RGB images need a last axis of 3 or 4, got shape {shape}")
        shape = shape[:-1]
    if len(shape) < 2:
        raise InputError(f"image needs at least 2 spatial dimensions, got shape {shape}")
    return shape


def plane_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, int]:
    """Height and width of each plane an array of ``shape`` yields."""
    spatial = _without_channel_and_colour(shape, layout)
    return spatial[-2], spatial[-1]


def stack_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """Leading (time, Z, ...) axes over which planes are iterated."""
    return _without_channel_and_colour(shape, layout)[:-2]


def select_channel(array, layout: Layout):
    """Drop the channel axis by picking ``layout.channel`` (works on numpy and dask arrays)."""
    if layout.channel_axis is None:
        return array
    axis = layout.channel_axis % array.ndim
    if not 0 <= layout.channel < array.shape[axis]:
        raise InputError(f"channel {layout.channel} does not exist: the channel axis has {array.shape[axis]}")
    index: list[slice | int] = [slice(None)] * array.ndim
    index[axis] = layout.channel
    return array[tuple(index)]


def iter_planes(array, layout: Layout) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Yield ``(index, plane)`` for every 2D (or RGB) plane; ``index`` addresses the output stack."""
    check_dtype(array)
    lead = stack_shape(tuple(array.shape), layout)
    array = select_channel(array, layout)
    for index in np.ndindex(*lead):
        yield index, np.asarray(array[index])


def check_image(image, layout: Layout) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Validate an array against ``layout``; return (stack shape, plane shape) or raise InputError."""
    shape = tuple(int(n) for n in getattr(image, "shape", ()))
    if not shape or not hasattr(image, "dtype"):
        raise InputError("input is not an image array")
    check_dtype(image)
    height, width = plane_shape(shape, layout)
    if min(height, width) < MIN_SIDE:
        raise InputError(f"image plane {height}x{width} is too small (at least {MIN_SIDE}x{MIN_SIDE} pixels)")
    return stack_shape(shape, layout), (height, width)
