"""Options shared by the widgets, the command line and core, without torch (widgets import this
on napari's GUI thread at start-up): one place for every default, so none is written twice."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .normalize import Layout

if TYPE_CHECKING:
    from .instances import DecodeParams

#: The bundled model, used wherever no other is chosen.
DEFAULT_MODEL = "nuclei"

#: Where to compute: ``auto`` is CUDA, then Apple MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")

#: Side of the blocks large images are segmented in (dask chunks, zarr chunks of the output).
DEFAULT_BLOCK = 2048

#: ``object_size`` value that estimates the objects' size from a first pass.
AUTO_SIZE = "auto"

#: Largest tile side: just below the tile size where the network's throughput per pixel drops (a
#: cache cliff, measured in benchmarks/README.md); the plan evens tiles out below this bound.
DEFAULT_TILE = 1008


@dataclass(frozen=True)
class SegmentOptions:
    """How to run the model; which model is a separate argument."""

    device: str = "auto"
    precision: str = "auto"
    tile_size: int = DEFAULT_TILE
    overlap: int | None = None
    batch_size: int | None = None
    layout: Layout = field(default_factory=Layout)
    decode: DecodeParams | None = None
    #: Typical object diameter in pixels (the image is rescaled to the model's training size),
    #: "auto" to estimate it from a first pass, or None to use the image as it is. "auto" by
    #: default everywhere, so one click, ``loopseg segment`` and ``segment()`` agree and nuclei
    #: 3x the training size come out whole (benchmarks/results/object-size-*.md).
    object_size: float | str | None = AUTO_SIZE


@dataclass(frozen=True)
class TrainConfig:
    """Defaults work without touching them; the rest is for those who want it."""

    steps: int | None = 300  # None: fine-tuning picks it from the reviewed area (finetune.auto_steps)
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    scale_range: tuple[float, float] = (1.0, 1.0)
    intensity_jitter: float = 0.2
    noise: float = 0.03
    elastic: float = 0.0
    #: Robustness to other labs' images (the bundled model's recipe; 0 = off). ``gamma``: log-range
    #: of a random gamma; ``blur``: largest Gaussian sigma (pixels), on a third of crops;
    #: ``saturation``: share of crops clipped below their brightest level (saturated nuclei);
    #: ``object_dimming``: darkest factor each object's contrast is scaled by, drawn per object
    #: (dim nuclei beside bright ones); ``object_crops``: share of crops centred on an object.
    gamma: float = 0.0
    blur: float = 0.0
    saturation: float = 0.0
    object_dimming: float = 1.0
    object_crops: float = 0.0
    #: Loss weight of the smallest objects, relative to those of targets.SMALL_DIAMETER px (1 = off).
    small_boost: float = 1.0
    #: Loss weight of pixels within 2 px of an object's outline (1 = off).
    rim_weight: float = 1.0
    #: Weight of a soft Dice loss on the foreground and outline maps, added to the cross-entropy
    #: (0 = off): Dice counts each map's overlap, not its pixels, so thin outlines and small
    #: objects are not outvoted by background.
    dice: float = 0.0
    freeze_norm: bool = False
    #: > 0: decay of an exponential moving average of the weights (buffers included), which is
    #: what validation scores and training returns (0: off, the last step's weights).
    ema: float = 0.0
    validate_every: int = 0
    seed: int = 0
    #: Processes that sample crops ahead of the training step (0: sampled in the training
    #: thread, as in napari). The crops are the same for any number (core.crops).
    workers: int = 0
    device: str = "auto"
    precision: str = "auto"


#: Defaults for fine-tuning from a few corrected images, chosen by measurement in fp32
#: (benchmarks/finetune_usiigaci.py; every recipe tried is in benchmarks/results/finetune-recipes.md):
#: small crops (they train more pixels per second than large ones), a higher rate with cosine decay,
#: elastic augmentation on. ``steps=None``: as many as the reviewed area calls for (:func:`auto_steps`).
FINETUNE_DEFAULTS = TrainConfig(
    steps=None, batch_size=4, crop=192, lr=3e-3, warmup=0.05, elastic=6.0, validate_every=100
)

#: ``auto_steps``: STEPS_PER_SQRT_MPX * sqrt(reviewed megapixels), within [MIN_STEPS, MAX_STEPS].
STEPS_PER_SQRT_MPX, MIN_STEPS, MAX_STEPS = 700, 500, 1500


def auto_steps(reviewed_pixels: int) -> int:
    """Training steps for this many reviewed pixels: a few edited objects get MIN_STEPS, three fully
    corrected 1024^2 images about 1,250 (round times in benchmarks/results/finetune-*.json)."""
    steps = STEPS_PER_SQRT_MPX * math.sqrt(max(reviewed_pixels, 0) / 1e6)
    return int(min(max(round(steps / 50) * 50, MIN_STEPS), MAX_STEPS))
