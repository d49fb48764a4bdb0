"""Fine-tuning on corrected (image, labels, reviewed-mask) pairs -> a new registered model version.

The widget, the command line and ``napari_loopseg.finetune`` all drive :func:`finetune_iter`.
It yields :class:`~.train.TrainProgress`; only after the last step does it write the new version
(``<base>-ft-N``, parent = base) to the user registry, so stopping early (cancel) leaves the
registry, the active model and every input exactly as they were.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .crops import Sample
from .instances import decode
from .metrics import Counts
from .normalize import InputError, normalize_plane
from .options import DEFAULT_MODEL, FINETUNE_DEFAULTS, TrainConfig, auto_steps
from .predict import Predictor, autocast_dtype, precision_name, resolve_device
from .progress import drive, relay
from .registry import (
    Model,
    check_new_name,
    check_writable,
    load_model,
    load_path,
    make_card,
    next_version_name,
    save_model,
)
from .sizing import Diameters
from .train import TrainProgress, train_iter


@dataclass(frozen=True)
class Pair:
    """One corrected image. ``reviewed`` None means the whole image is correct."""

    image: np.ndarray
    labels: np.ndarray
    reviewed: np.ndarray | None = None
    rgb: bool = False
    validation: bool = False

    def __post_init__(self) -> None:
        shape = self.image.shape[:-1] if self.rgb else self.image.shape
        if self.labels.ndim != 2:
            raise InputError(f"labels {self.labels.shape}: a pair is one 2D plane (split stacks into planes)")
        if tuple(shape) != tuple(self.labels.shape):
            raise InputError(f"image {self.image.shape} and labels {self.labels.shape} differ in shape")
        if self.reviewed is not None and self.reviewed.shape != self.labels.shape:
            raise InputError(f"reviewed mask {self.reviewed.shape} does not match labels {self.labels.shape}")
        if np.dtype(self.labels.dtype).kind not in "biu":
            raise InputError(f"labels must be integers, got {self.labels.dtype}")

    def reviewed_objects(self) -> np.ndarray:
        """The labels of objects the user reviewed (touching the reviewed region), others 0."""
        if self.reviewed is None:
            return self.labels
        return np.where(np.isin(self.labels, self.labels[self.reviewed > 0]), self.labels, 0)

    @property
    def reviewed_pixels(self) -> int:
        return int(self.labels.size if self.reviewed is None else np.count_nonzero(self.reviewed))


def plane_pairs(image: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, rgb: bool) -> list[Pair]:
    """One pair per plane: a 2D image, or a stack (time-lapse, Z) whose labels are a stack too."""
    if labels.ndim == 3:
        plane_shape = image.shape[:-1] if rgb else image.shape
        if tuple(plane_shape) != tuple(labels.shape):
            raise InputError(f"image stack {image.shape} and labels stack {labels.shape} differ in shape")
        if mask is not None and mask.shape != labels.shape:
            raise InputError(f"reviewed mask {mask.shape} does not match labels {labels.shape}")
        return [Pair(image[z], labels[z], None if mask is None else mask[z], rgb) for z in range(len(labels))]
    return [Pair(image, labels, mask, rgb)]


def score(
    model_net, pairs: Sequence[Pair], norm, params, device: str = "auto", precision: str = "auto"
) -> dict[str, float]:
    """Pooled AP of a network on fully-correct pairs (validation)."""
    predictor = Predictor(model_net, device=device, precision=precision)
    counts = Counts()
    for pair in pairs:
        maps = predictor.predict(normalize_plane(pair.image, pair.rgb, norm))
        counts.add(pair.labels, decode(maps, params))
    return counts.summary()


def finetune_iter(
    pairs: Sequence[Pair],
    base: str | Model = DEFAULT_MODEL,
    config: TrainConfig = FINETUNE_DEFAULTS,
    name: str | None = None,
) -> Generator[TrainProgress, None, Model]:
    """Train from ``base`` on the pairs; return the new, registered model version."""
    base_model = base if isinstance(base, Model) else load_model(base)
    train_pairs = [p for p in pairs if not p.validation]
    val_pairs = [p for p in pairs if p.validation]
    if not train_pairs:
        raise InputError("no training pairs: add at least one corrected image not marked for validation")
    if sum(p.reviewed_pixels for p in train_pairs) == 0:
        raise InputError("nothing reviewed yet: correct some objects, or mark an image as fully correct")
    if not any(p.labels.any() for p in train_pairs):
        raise InputError(
            "the labels have no objects, so there is nothing to learn from: paint the objects in, "
            "or mark an image without objects as correct beside images that have some"
        )
    new_name = name or next_version_name(base_model.name)
    check_new_name(new_name, check_writable())  # an unusable folder fails now, not after training
    norm, params = base_model.normalization, base_model.decode_params
    samples = [
        Sample(normalize_plane(p.image, p.rgb, norm), p.labels.astype(np.int32), p.reviewed)
        for p in train_pairs
    ]

    def validate(net) -> dict:
        return score(net, val_pairs, norm, params, config.device, config.precision)

    if config.steps is None:
        config = replace(config, steps=auto_steps(sum(p.reviewed_pixels for p in train_pairs)))

    if not val_pairs:
        config = replace(config, validate_every=0)
    device = resolve_device(config.device)
    started = time.perf_counter()
    last: TrainProgress | None = None  # its loss and validation go on the model card

    def remember(progress: TrainProgress) -> TrainProgress:
        nonlocal last
        last = progress
        return progress

    net = yield from relay(train_iter(base_model.net, samples, config, validate=validate), remember)
    card = make_card(
        new_name,
        net.config,
        norm,
        params,
        parent=base_model.name,
        training={
            "pairs": len(train_pairs),
            "validation_pairs": len(val_pairs),
            "reviewed_pixels": sum(p.reviewed_pixels for p in train_pairs),
            "objects": int(sum(len(np.unique(p.labels)) - 1 for p in train_pairs)),
            "steps": config.steps,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "seconds": round(time.perf_counter() - started, 1),
            "device": str(device),
            "precision": precision_name(autocast_dtype(device, config.precision)),
            "final_loss": None if last is None else round(last.loss, 5),
        },
        metrics={"validation": last.validation} if last is not None and last.validation else {},
        diameters=Diameters.measure([p.reviewed_objects() for p in train_pairs]) or base_model.diameters,
    )
    return load_path(save_model(net, card))


def finetune(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    base: str | Model = DEFAULT_MODEL,
    name: str | None = None,
    rgb: bool = False,
    on_progress=None,
    **config,
) -> Model:
    """Fine-tune ``base`` on images with corrected labels; masks mark reviewed pixels (None: all).

    ``config`` overrides :data:`FINETUNE_DEFAULTS` (steps, lr, batch_size, device, ...).
    Returns the new model version, already registered.
    """
    if len(images) != len(labels) or (masks is not None and len(masks) != len(images)):
        raise InputError(f"got {len(images)} images, {len(labels)} labels and {len(masks or [])} masks")
    masks = list(masks) if masks is not None else [None] * len(images)
    pairs = [
        pair
        for i, lab, m in zip(images, labels, masks, strict=True)
        for pair in plane_pairs(
            np.asarray(i), np.asarray(lab), None if m is None else np.asarray(m, bool), rgb
        )
    ]
    settings = replace(FINETUNE_DEFAULTS, **config)
    return drive(finetune_iter(pairs, base, settings, name), on_progress)
