"""Training crops: random windows of the training images with their targets, augmented.

Batch ``k`` of a run is a pure function of the seed and ``k`` (:class:`CropBatches`): any process
can make it, so crops can be sampled in worker processes (the sampler, not a GPU, sets the pace of
a run on a GPU) and a resumed run gets the same batches as one never stopped, whatever the number
of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .options import TrainConfig
from .targets import make_targets, make_weights

#: Planes up to this many pixels get their targets computed once, whole (4 float32 maps each).
CACHE_PIXELS = 2**23
#: Pixels past its outline that an object's dimming reaches (fading out there).
DIM_REACH = 3
#: Object pixels kept per image for object-centred crops.
OBJECT_PIXELS = 4096
#: Batches each worker process keeps ready.
PREFETCH = 4


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


def area_draws(sample: Sample) -> float:
    """How often a sample is drawn before its ``weight``: the square root of its supervised
    (reviewed) area, so large images count for more, but not in proportion."""
    supervised = sample.labels.size if sample.reviewed is None else float(sample.reviewed.sum())
    return float(np.sqrt(supervised))


class CropSampler:
    """Random crops (with scale, flips, rotations, intensity jitter) and their targets.

    The sampler keeps no random state: each call draws from the generator it is given."""

    def __init__(self, samples: Sequence[Sample], config: TrainConfig) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples = samples
        self.config = config
        draws = np.array([area_draws(s) for s in samples])
        if draws.sum() <= 0:
            raise ValueError("no reviewed pixels to learn from")
        draws *= np.array([s.weight for s in samples], float)
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

    def _window(self, index: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
        h, w = self.samples[index].labels.shape
        coords = self.reviewed_coords[index]
        if coords is not None and len(coords):
            cy, cx = coords[rng.integers(len(coords))] + rng.integers(-size // 4, size // 4 + 1, 2)
            y0, x0 = cy - size // 2, cx - size // 2
        elif (
            self.config.object_crops
            and rng.uniform() < self.config.object_crops
            and (centre := self._object_pixel(index, rng)) is not None
        ):
            y0, x0 = centre[0] - size // 2, centre[1] - size // 2
        else:
            y0, x0 = rng.integers(0, max(1, h - size + 1)), rng.integers(0, max(1, w - size + 1))
        return int(np.clip(y0, 0, max(0, h - size))), int(np.clip(x0, 0, max(0, w - size)))

    def _object_pixel(self, index: int, rng: np.random.Generator) -> tuple[int, int] | None:
        """A random object pixel (windows around them: sparse images otherwise give mostly
        background), or None in an image without objects."""
        pixels = self.object_pixels[index]
        if pixels is None:  # found once, then kept: a bounded sample per image, the same in every process
            labels = self.samples[index].labels
            found = np.flatnonzero(labels)
            keep = np.random.default_rng(index).choice(found, min(len(found), OBJECT_PIXELS), replace=False)
            pixels = self.object_pixels[index] = np.stack(np.unravel_index(keep, labels.shape), axis=1)
        if not len(pixels):
            return None
        cy, cx = pixels[rng.integers(len(pixels))]
        return int(cy), int(cx)

    def crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        index = int(rng.choice(len(self.samples), p=self.p))
        sample = self.samples[index]
        scale = float(np.exp(rng.uniform(*np.log(cfg.scale_range))))
        size = max(8, round(cfg.crop / scale))
        y0, x0 = self._window(index, size, rng)
        window = np.s_[y0 : y0 + size, x0 : x0 + size]
        cached = self.maps[index]
        if cached is not None:
            return self._cached_crop(sample.image[window], cached[(slice(None), *window)], size, rng)
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
            image = _dim_objects(image, labels, cfg.object_dimming, rng)
        if size != cfg.crop:
            image, labels, valid = _resize(image, labels, valid, cfg.crop)
        if cfg.elastic > 0:
            image, labels, valid = _elastic(image, labels, valid, cfg.elastic, rng)
        targets = make_targets(labels)
        weights = make_weights(labels, small_boost=cfg.small_boost, rim_weight=cfg.rim_weight) * valid
        return self._finish(image, targets, weights, rng)

    def _cached_crop(self, image: np.ndarray, maps: np.ndarray, size: int, rng: np.random.Generator):
        """A crop from the cached whole-image maps (scale 1): pad, warp, orient, jitter."""
        image = image.astype(np.float32)
        if image.shape != (size, size):  # image smaller than the crop: pad, weigh padding zero
            ph, pw = size - image.shape[0], size - image.shape[1]
            image = np.pad(
                image, ((0, ph), (0, pw)), mode="reflect" if min(image.shape) > max(ph, pw) else "edge"
            )
            maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)))
        if self.config.elastic > 0:
            grid = _warp_grid(size, size, self.config.elastic, rng)
            smooth = _grid_sample(np.stack([image, maps[2]]), grid, "bilinear")
            sharp = _grid_sample(maps[[0, 1, 3]], grid, "nearest")
            image, maps = smooth[0], np.stack([sharp[0], sharp[1], smooth[1], sharp[2]])
        return self._finish(image, np.ascontiguousarray(maps[:3]), maps[3], rng)

    def _finish(self, image: np.ndarray, targets: np.ndarray, weights: np.ndarray, rng: np.random.Generator):
        cfg = self.config
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, targets, weights = (_orient(a, k, flip) for a in (image, targets, weights))
        image = _degrade(image, cfg, rng)
        gain = 1 + rng.uniform(-cfg.intensity_jitter, cfg.intensity_jitter)
        offset = rng.uniform(-cfg.intensity_jitter, cfg.intensity_jitter) / 2
        image = image * gain + offset + rng.normal(0, cfg.noise * rng.uniform(), image.shape)
        targets, weights = targets.astype(np.float32, copy=False), weights.astype(np.float32, copy=False)
        return image.astype(np.float32), targets, weights

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops = [self.crop(rng) for _ in range(self.config.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*crops, strict=True))
        return (
            torch.from_numpy(images[:, None]),
            torch.from_numpy(targets),
            torch.from_numpy(weights[:, None]),
        )


class CropBatches(torch.utils.data.Dataset):
    """Batch ``k`` of a run: drawn with a generator seeded by (seed, ``k``), so it is the same
    whichever process makes it, and whenever."""

    def __init__(self, sampler: CropSampler, seed: int, steps: int) -> None:
        self.sampler, self.seed, self.steps = sampler, seed, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler.batch(np.random.default_rng([self.seed, k]))


def batches(
    samples: Sequence[Sample], config: TrainConfig, steps: int, first: int = 0, pin: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches ``first`` to ``steps - 1`` of a run: made here, one at a time, or with
    ``config.workers`` > 0 in that many processes a few batches ahead of the training step."""
    dataset = CropBatches(CropSampler(samples, config), config.seed, steps)
    if config.workers < 1:
        return (dataset[k] for k in range(first, steps))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # the dataset's items are batches already
        sampler=range(first, steps),
        num_workers=config.workers,
        prefetch_factor=PREFETCH,
        pin_memory=pin,
        generator=torch.Generator(),  # the loader's own seed draw leaves torch's global RNG alone
    )
    return iter(loader)


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
