"""Training as a generator: yields progress at every step, returns the trained network.

One generator, several drivers: the bundled-model script, fine-tuning from the napari widget
(in a worker thread, which may stop iterating at any yield to cancel) and the command line.
Training never modifies the arrays it is given.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .options import TrainConfig
from .predict import autocast_dtype, resolve_device
from .targets import make_targets, make_weights
from .unet import UNet, in_memory_format

#: Planes up to this many pixels get their targets computed once, whole (4 float32 maps each).
CACHE_PIXELS = 2**23
#: Pixels past its outline that an object's dimming reaches (fading out there).
DIM_REACH = 3
#: Object pixels kept per image for object-centred crops.
OBJECT_PIXELS = 4096


@dataclass(frozen=True)
class Sample:
    """One training image: normalised plane, instance labels, optional reviewed mask.

    ``weight`` scales how often the image is drawn (to balance rare imaging modalities).
    """

    image: np.ndarray
    labels: np.ndarray
    reviewed: np.ndarray | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.image.shape != self.labels.shape:
            raise ValueError(f"image {self.image.shape} and labels {self.labels.shape} differ in shape")
        if self.reviewed is not None and self.reviewed.shape != self.labels.shape:
            raise ValueError(f"reviewed mask {self.reviewed.shape} and labels {self.labels.shape} differ")
        if not self.weight > 0:
            raise ValueError(f"sample weight must be positive, got {self.weight}")


@dataclass(frozen=True)
class TrainProgress:
    step: int
    steps: int
    loss: float
    seconds: float
    validation: dict = field(default_factory=dict)


def _lr_factor(step: int, config: TrainConfig) -> float:
    assert config.steps is not None  # train_iter refuses a config without steps
    warm = max(1, int(config.warmup * config.steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, config.steps - warm)))


class CropSampler:
    """Random crops (with scale, flips, rotations, intensity jitter) and their targets."""

    def __init__(self, samples: Sequence[Sample], config: TrainConfig, rng: np.random.Generator) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples = samples
        self.config = config
        self.rng = rng
        supervised = np.array(
            [s.labels.size if s.reviewed is None else float(s.reviewed.sum()) for s in samples], float
        )
        if supervised.sum() <= 0:
            raise ValueError("no reviewed pixels to learn from")
        draws = np.sqrt(supervised) * np.array([s.weight for s in samples], float)
        self.p = draws / draws.sum()
        self.object_pixels: list[np.ndarray | None] = [None] * len(samples)
        self.reviewed_coords = [None if s.reviewed is None else np.argwhere(s.reviewed) for s in samples]
        # Targets and weights of whole images, computed once (per crop they were a tenth of a
        # fine-tune step) and exact where objects cross a crop's edge. Planes too big
        # to hold 4 float maps of (the bundled-model script's large images) keep per-crop targets.
        whole = tuple(config.scale_range) == (1.0, 1.0) and config.object_dimming == 1.0
        self.maps = [
            _whole_maps(s, config) if whole and s.labels.size <= CACHE_PIXELS else None for s in samples
        ]

    def _window(self, index: int, size: int) -> tuple[int, int]:
        h, w = self.samples[index].labels.shape
        coords = self.reviewed_coords[index]
        if coords is not None and len(coords):
            cy, cx = coords[self.rng.integers(len(coords))] + self.rng.integers(-size // 4, size // 4 + 1, 2)
            y0, x0 = cy - size // 2, cx - size // 2
        elif (
            self.config.object_crops
            and self.rng.uniform() < self.config.object_crops
            and (centre := self._object_pixel(index)) is not None
        ):
            y0, x0 = centre[0] - size // 2, centre[1] - size // 2
        else:
            y0, x0 = self.rng.integers(0, max(1, h - size + 1)), self.rng.integers(0, max(1, w - size + 1))
        return int(np.clip(y0, 0, max(0, h - size))), int(np.clip(x0, 0, max(0, w - size)))

    def _object_pixel(self, index: int) -> tuple[int, int] | None:
        """A random object pixel (windows around them: sparse images otherwise give mostly
        background), or None in an image without objects."""
        pixels = self.object_pixels[index]
        if pixels is None:  # found once, then kept: a bounded sample per image
            labels = self.samples[index].labels
            found = np.flatnonzero(labels)
            keep = (
                self.rng.choice(found, min(len(found), OBJECT_PIXELS), replace=False) if len(found) else found
            )
            pixels = self.object_pixels[index] = np.stack(np.unravel_index(keep, labels.shape), axis=1)
        if not len(pixels):
            return None
        cy, cx = pixels[self.rng.integers(len(pixels))]
        return int(cy), int(cx)

    def crop(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        index = int(self.rng.choice(len(self.samples), p=self.p))
        sample = self.samples[index]
        scale = float(np.exp(self.rng.uniform(*np.log(cfg.scale_range))))
        size = max(8, round(cfg.crop / scale))
        y0, x0 = self._window(index, size)
        window = np.s_[y0 : y0 + size, x0 : x0 + size]
        cached = self.maps[index]
        if cached is not None:
            return self._cached_crop(sample.image[window], cached[(slice(None), *window)], size)
        image = sample.image[window].astype(np.float32)
        labels = sample.labels[window]
        valid = (
            np.ones(labels.shape, np.float32)
            if sample.reviewed is None
            else sample.reviewed[window].astype(np.float32)
        )
        if image.shape != (size, size):  # image smaller than the crop: pad, weigh padding zero
            ph, pw = size - image.shape[0], size - image.shape[1]
            image = np.pad(
                image, ((0, ph), (0, pw)), mode="reflect" if min(image.shape) > max(ph, pw) else "edge"
            )
            labels = np.pad(labels, ((0, ph), (0, pw)))
            valid = np.pad(valid, ((0, ph), (0, pw)))
        if cfg.object_dimming < 1.0:
            image = _dim_objects(image, labels, cfg.object_dimming, self.rng)
        if size != cfg.crop:
            image, labels, valid = _resize(image, labels, valid, cfg.crop)
        if cfg.elastic > 0:
            image, labels, valid = _elastic(image, labels, valid, cfg.elastic, self.rng)
        targets = make_targets(labels)
        weights = make_weights(labels, small_boost=cfg.small_boost, rim_weight=cfg.rim_weight) * valid
        return self._finish(image, targets, weights)

    def _cached_crop(self, image: np.ndarray, maps: np.ndarray, size: int):
        """A crop from the cached whole-image maps (scale 1): pad, warp, orient, jitter."""
        image = image.astype(np.float32)
        if image.shape != (size, size):  # image smaller than the crop: pad, weigh padding zero
            ph, pw = size - image.shape[0], size - image.shape[1]
            image = np.pad(
                image, ((0, ph), (0, pw)), mode="reflect" if min(image.shape) > max(ph, pw) else "edge"
            )
            maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)))
        if self.config.elastic > 0:
            grid = _warp_grid(size, size, self.config.elastic, self.rng)
            smooth = _grid_sample(np.stack([image, maps[2]]), grid, "bilinear")
            sharp = _grid_sample(maps[[0, 1, 3]], grid, "nearest")
            image, maps = smooth[0], np.stack([sharp[0], sharp[1], smooth[1], sharp[2]])
        return self._finish(image, np.ascontiguousarray(maps[:3]), maps[3])

    def _finish(self, image: np.ndarray, targets: np.ndarray, weights: np.ndarray):
        cfg = self.config
        k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
        image, targets, weights = (_orient(a, k, flip) for a in (image, targets, weights))
        image = _degrade(image, cfg, self.rng)
        gain = 1 + self.rng.uniform(-cfg.intensity_jitter, cfg.intensity_jitter)
        offset = self.rng.uniform(-cfg.intensity_jitter, cfg.intensity_jitter) / 2
        image = image * gain + offset + self.rng.normal(0, cfg.noise * self.rng.uniform(), image.shape)
        targets, weights = targets.astype(np.float32, copy=False), weights.astype(np.float32, copy=False)
        return image.astype(np.float32), targets, weights

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops = [self.crop() for _ in range(self.config.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*crops, strict=True))
        return (
            torch.from_numpy(images[:, None]),
            torch.from_numpy(targets),
            torch.from_numpy(weights[:, None]),
        )


def _whole_maps(sample: Sample, config: TrainConfig) -> np.ndarray:
    """(4, H, W) float32: foreground, boundary, distance, loss weight (0 where not reviewed)."""
    weights = make_weights(sample.labels, sample.reviewed, config.small_boost, config.rim_weight)
    return np.concatenate([make_targets(sample.labels), weights[None]])


def _dim_objects(image: np.ndarray, labels: np.ndarray, darkest: float, rng: np.random.Generator):
    """On half the crops, scale each object's contrast above the background by its own factor in
    [``darkest``, 1] (log-uniform): fields where nuclei differ 5-10x in brightness. The factor
    reaches a few pixels past each outline and fades there, so an object's blurred rim dims with
    it (a rim left bright would be a cue no real dim nucleus has)."""
    if rng.uniform() < 0.5 or not labels.any():
        return image
    from scipy.ndimage import gaussian_filter
    from skimage.segmentation import expand_labels

    background = float(np.median(image[labels == 0])) if (labels == 0).any() else 0.0
    ids = np.unique(labels)
    factors = np.ones(int(ids[-1]) + 1, np.float32)
    factors[ids[1:]] = np.exp(rng.uniform(np.log(darkest), 0.0, len(ids) - 1))
    reach = gaussian_filter(factors[expand_labels(labels, DIM_REACH)], DIM_REACH / 2)
    return (background + (image - background) * reach).astype(np.float32)


def _degrade(image: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Gamma, saturation and blur as other microscopes give them (each off at 0)."""
    if cfg.gamma > 0:
        gamma = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        image = np.where(image > 0, np.abs(image) ** gamma, image)
    if cfg.saturation > 0 and rng.uniform() < cfg.saturation:
        level = float(rng.uniform(0.4, 0.9))
        image = np.minimum(image, level) / level
    if cfg.blur > 0 and rng.uniform() < 1 / 3:
        from scipy.ndimage import gaussian_filter

        image = gaussian_filter(image, float(rng.uniform(0.5, cfg.blur)))
    return image.astype(np.float32, copy=False)


def _orient(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    array = np.rot90(array, k, axes=(-2, -1))
    return np.ascontiguousarray(array[..., ::-1] if flip else array)


def _resize(image: np.ndarray, labels: np.ndarray, valid: np.ndarray, size: int):
    t = torch.from_numpy
    image_t = F.interpolate(t(image)[None, None], size=(size, size), mode="bilinear", align_corners=False)
    labels_t = F.interpolate(
        t(labels.astype(np.int64)).double()[None, None], size=(size, size), mode="nearest"
    )
    valid_t = F.interpolate(t(valid)[None, None], size=(size, size), mode="nearest")
    return image_t[0, 0].numpy(), labels_t[0, 0].numpy().astype(np.int64), valid_t[0, 0].numpy()


def _elastic(image, labels, valid, strength: float, rng: np.random.Generator):
    """Smooth random deformation (Simard et al. 2003): displacements on a coarse 5x5 grid,
    interpolated to full size; labels and masks follow with nearest-neighbour sampling.

    torch's grid_sample releases the GIL (scipy's map_coordinates held it for tens of
    milliseconds per crop, which stalled napari's GUI thread during fine-tuning).
    """
    height, width = image.shape
    grid = _warp_grid(height, width, strength, rng, torch.float64)  # float64: exact label ids
    return (
        _grid_sample(image[None], grid, "bilinear")[0].astype(np.float32),
        _grid_sample(labels[None], grid, "nearest")[0].astype(np.int64),
        _grid_sample(valid[None], grid, "nearest")[0].astype(np.float32),
    )


def _warp_grid(height: int, width: int, strength: float, rng: np.random.Generator, dtype=torch.float32):
    """A (1, H, W, 2) sampling grid for :func:`torch.nn.functional.grid_sample`, (x, y) in [-1, 1]."""
    coarse = torch.from_numpy(rng.normal(0, strength, (1, 2, 5, 5)))
    shift = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    grid = torch.stack(
        [2 * (xx + shift[1]) / max(width - 1, 1) - 1, 2 * (yy + shift[0]) / max(height - 1, 1) - 1], dim=-1
    )[None]
    return grid.to(dtype)


def _grid_sample(arrays: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    """Warp (C, H, W) arrays with ``grid`` (reflection at the border); same dtype as the grid."""
    source = torch.from_numpy(np.ascontiguousarray(arrays)).to(grid.dtype)[None]
    out = F.grid_sample(source, grid, mode=mode, padding_mode="reflection", align_corners=True)
    return out[0].numpy()


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted binary cross-entropy over all maps; zero-weight pixels teach nothing."""
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (per_pixel * weights).sum() / (weights.sum() * logits.shape[1]).clamp_min(1.0)


def _averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights, or None with ``decay`` 0: on images
    from other labs a model's scores swing between nearby steps (benchmarks/results/
    bundled-recipes.md), and an average along the path smooths that swing (Izmailov et al. 2018)."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def kept_weights(state: dict) -> dict[str, torch.Tensor]:
    """The weights of a training state that :func:`train_iter` would return: the moving average's
    when it keeps one, else the model's."""
    if "ema" not in state:
        return state["model"]
    prefix = "module."
    return {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}


def train_iter(
    net: UNet,
    samples: Sequence[Sample],
    config: TrainConfig = TrainConfig(),
    validate: Callable[[UNet], dict] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    checkpoint_every: float | None = None,
) -> Generator[TrainProgress, None, UNet]:
    """Fine-tune a copy of ``net``; yield progress every step; return the trained copy (eval, CPU).

    With ``config.ema``, validation scores a moving average of the weights (the last step's as
    ``validation["raw"]`` beside it) and the average is returned.

    ``checkpoint`` receives the full training state (model, optimizer, schedule, both RNGs, step,
    the average if kept)
    after each validation and, with ``checkpoint_every``, once that many seconds have passed since
    the last (0: every step). Passing such a state as ``resume`` continues exactly where it was
    taken: the same crops, rates and updates as a run never stopped (the bundled-model script
    uses this to survive the end of a session; ``core.checkpoint`` writes it to disk).
    """
    if config.steps is None or config.steps < 1:
        raise ValueError(f"training needs a number of steps >= 1, got {config.steps}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sampler = CropSampler(samples, config, rng)
    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    model = in_memory_format(copy.deepcopy(net).to(device), torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    averaged = _averaged(model, config.ema)
    kept: UNet = model if averaged is None else averaged.module  # type: ignore[assignment]
    first = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        if averaged is not None:
            averaged.load_state_dict(resume["ema"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        rng.bit_generator.state = resume["rng"]
        if "torch_rng" in resume:
            torch.set_rng_state(resume["torch_rng"])
        first = int(resume["step"])
    start = saved = time.perf_counter()
    for step in range(first, config.steps):
        model.train()
        if config.freeze_norm:
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        images, targets, weights = (t.to(device) for t in sampler.batch())
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = weighted_loss(logits, targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if averaged is not None:
            averaged.update_parameters(model)
        validation: dict = {}
        last = step + 1 == config.steps
        validated = bool(
            validate is not None
            and config.validate_every
            and ((step + 1) % config.validate_every == 0 or last)
        )
        if validate is not None and validated:
            model.eval()
            kept.eval()
            validation = validate(kept)
            if averaged is not None:
                validation["raw"] = validate(model)
        due = checkpoint_every is not None and time.perf_counter() - saved >= checkpoint_every
        if checkpoint is not None and (validated or due):
            checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "step": step + 1,
                    **({"ema": averaged.state_dict()} if averaged is not None else {}),
                }
            )
            saved = time.perf_counter()
        yield TrainProgress(
            step + 1, config.steps, float(loss.detach()), time.perf_counter() - start, validation
        )
    return in_memory_format(kept.eval().to("cpu"), torch.contiguous_format)
