"""A small, configurable 2D U-Net (Ronneberger et al. 2015) for dense per-pixel maps.

Only local operations are used (3x3 convolutions, 2x2 pooling, 2x2 transposed convolutions and
BatchNorm, which is a per-pixel affine map in eval mode), so every output pixel depends on a
bounded window of the input. That is what lets overlap-tile prediction reproduce whole-image
prediction exactly: see :func:`receptive_radius`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters; stored verbatim in the model card."""

    in_channels: int = 1
    out_channels: int = 3
    width: int = 16
    depth: int = 3

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        keys = {"in_channels", "out_channels", "width", "depth"}
        missing = keys - set(data)
        if missing:
            raise ValueError(f"architecture is missing {sorted(missing)}")
        values = {k: int(data[k]) for k in keys}
        if not (1 <= values["depth"] <= 6 and 1 <= values["width"] <= 256):
            raise ValueError(f"unsupported architecture {values}")
        if not (1 <= values["in_channels"] <= 16 and 1 <= values["out_channels"] <= 16):
            raise ValueError(f"unsupported architecture {values}")
        return cls(**values)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; input sides must be multiples of ``2**depth``."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [config.width * 2**level for level in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(config.depth)):
            self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.merge.append(_double_conv(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be divisible by this."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def fused_for_inference(net: UNet) -> UNet:
    """An eval-mode copy with each BatchNorm folded into the convolution before it.

    The same function, less work: at 4096^2 on a CPU, BatchNorm took 11% of the forward. The
    caller's network is left as it is (it may still be training).
    """
    fused = copy.deepcopy(net).eval()
    for block in (*fused.down, fused.bottom, *fused.merge):
        for conv in (0, 3):  # Conv2d, BatchNorm2d, ReLU, Conv2d, BatchNorm2d, ReLU
            block[conv] = fuse_conv_bn_eval(block[conv], block[conv + 1])
            block[conv + 1] = nn.Identity()
    return fused


def in_memory_format(net: UNet, memory_format: torch.memory_format) -> UNet:
    """``net.to(memory_format=...)``, typed (torch's overloads of ``Module.to`` leave the keyword out)."""
    return net.to(memory_format=memory_format)  # type: ignore[call-overload]


def receptive_radius(config: UNetConfig) -> int:
    """Largest distance (pixels) from an output pixel to any input pixel it depends on.

    Each 3x3 convolution at level ``l`` reaches ``2**l`` input pixels further; each 2x2 pool at
    level ``l`` can add ``2**l`` more (the window's far side); transposed convolutions add no
    reach beyond the pooling grid. The test suite checks this bound against autograd.
    """
    radius = 0
    for level in range(config.depth):
        radius += 2 * 2**level  # two convolutions on the way down
        radius += 2**level  # pooling window
        radius += 2 * 2**level  # two convolutions on the way up
    radius += 2 * 2**config.depth  # bottleneck
    return radius
