"""A ResNet-18-style network for small images, with GroupNorm instead of BatchNorm.

He et al. 2016's BasicBlock ResNet-18 (four stages of two blocks, widths w, 2w, 4w, 8w, the
last three stages halving the resolution), with the small-image stem of CIFAR ResNets (one 3×3
convolution, no 7×7 convolution or max-pool). Normalisation is GroupNorm (Wu & He 2018) so that
each sample's output depends on that sample alone — the property per-sample gradients (DP-SGD)
need. The blocks keep torchvision's in-place operations (``out += identity``,
``ReLU(inplace=True)``), which per-sample gradient code must survive.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from veil.errors import check

STAGES = (2, 2, 2, 2)  # blocks per stage, as in ResNet-18


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups for ``channels``: gcd(channels, 32), Wu & He 2018's 32 where it divides.

    Fewer channels than 32 give one channel per group (a power-of-two channel count) or fewer,
    larger groups (e.g. 3 channels → 1 group, LayerNorm over the channels).
    """
    check(channels >= 1, f"channels must be >= 1 (got {channels})")
    return math.gcd(channels, max_groups)


def group_norm(channels: int) -> nn.GroupNorm:
    """``nn.GroupNorm(norm_groups(channels), channels)`` with a learned per-channel affine."""
    return nn.GroupNorm(norm_groups(channels), channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm; the identity (or a 1×1 projection) added in place."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                group_norm(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Stem (3×3 conv, GroupNorm, ReLU), four stages of BasicBlocks, global average pool, Linear."""

    def __init__(
        self, blocks: tuple[int, ...], num_classes: int, in_channels: int, width: int
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False),
            group_norm(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = width
        for index, count in enumerate(blocks):
            out_channels = width * 2**index
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.head(features.flatten(1))


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18-style network: [2, 2, 2, 2] BasicBlocks of widths ``width·(1, 2, 4, 8)``.

    ``width=64`` is ResNet-18's (11.2 M parameters at 10 classes); smaller widths give the same
    architecture at about ``(width/64)²`` of the parameters. Any image size works at width ≥ 8;
    narrower networks normalise single channels in the last stage and need images over 8×8.
    """
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    check(in_channels >= 1, f"in_channels must be >= 1 (got {in_channels})")
    check(width >= 1, f"width must be >= 1 (got {width})")
    return ResNet(STAGES, num_classes, in_channels, width)
