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

import torch
import torch.nn.functional as F

from .crops import Sample, batches
from .options import TrainConfig
from .predict import autocast_dtype, resolve_device
from .unet import UNet, in_memory_format


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


#: Maps the Dice term scores: foreground and outline (the third, distance, is a regression).
DICE_MAPS = 2


def weighted_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, dice: float = 0.0
) -> torch.Tensor:
    """Pixel-weighted binary cross-entropy over all maps, plus ``dice`` times a weighted soft Dice
    loss on the foreground and outline maps (over the whole batch, so crops without objects add
    no noise); zero-weight pixels teach nothing."""
    logits = logits.float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = (per_pixel * weights).sum() / (weights.sum() * logits.shape[1]).clamp_min(1.0)
    if dice:
        probs, truth = torch.sigmoid(logits[:, :DICE_MAPS]), targets[:, :DICE_MAPS]
        overlap = (weights * probs * truth).sum(dim=(0, 2, 3))
        total = (weights * (probs + truth)).sum(dim=(0, 2, 3))
        loss = loss + dice * (1 - (2 * overlap + 1) / (total + 1)).mean()
    return loss


def _averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights, or None with ``decay`` 0: on images
    from other labs a model's scores swing between nearby steps (benchmarks/results/
    bundled-recipes.md), and an average along the path smooths that swing (Izmailov et al. 2018).

    The decay after n updates is at most (1 + n) / (10 + n), as in timm's ModelEmaV2: a plain 0.999
    still weighs the random initial weights 0.37 at step 1,000, and scored nothing at step 500."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema decay must lie in (0, 1), got {decay}")

    @torch.no_grad()
    def update(
        averages: Sequence[torch.Tensor], currents: Sequence[torch.Tensor], updates: torch.Tensor | int
    ) -> None:
        n = float(updates)
        keep = min(decay, (1 + n) / (10 + n))
        for average, current in zip(averages, currents, strict=True):
            if average.is_floating_point():
                average.lerp_(current, 1 - keep)
            else:  # BatchNorm's step count
                average.copy_(current)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


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

    ``checkpoint`` receives the full training state (model, optimizer, schedule, torch's RNG, step,
    the average if kept) after each validation and, with ``checkpoint_every``, once that many
    seconds have passed since the last (0: every step). Passing such a state as ``resume``
    continues exactly where it was taken: the same crops (batch k depends only on the seed and k),
    rates and updates as a run never stopped (the bundled-model script uses this to survive the
    end of a session; ``core.checkpoint`` writes it to disk).
    """
    if config.steps is None or config.steps < 1:
        raise ValueError(f"training needs a number of steps >= 1, got {config.steps}")
    torch.manual_seed(config.seed)
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
        if "torch_rng" in resume:
            torch.set_rng_state(resume["torch_rng"])
        first = int(resume["step"])
    stream = batches(samples, config, config.steps, first, pin=device.type == "cuda")
    start = saved = time.perf_counter()
    for step in range(first, config.steps):
        model.train()
        if config.freeze_norm:
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        images, targets, weights = (t.to(device, non_blocking=True) for t in next(stream))
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = weighted_loss(logits, targets, weights, config.dice)
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
