"""The CIFAR ResNet family of the re-basin literature (ResNet-20 by default).

He et al. (2016), section 4.2, as used by git re-basin: a 3x3 stem
convolution to ``16 * width`` channels, three stages of ``n`` basic blocks
(``depth = 6n + 2``) at ``16``, ``32`` and ``64`` times ``width`` channels,
the second and third starting with a stride-2 block, a global average pool
and a linear head. A basic block is conv3x3-norm-relu-conv3x3-norm, plus the
shortcut (the identity, or a 1x1 stride-2 convolution and norm where the
shape changes), then relu. Each stage is one residual stream: one shared
unit group whose producers are the stem (or the projection shortcut) and
every block's second convolution.

``norm`` picks BatchNorm (the default), a LayerNorm over the channels only
(which keeps channel permutations a symmetry but not per-channel scales) or
no norm at all (convolutions then carry a bias).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from canon.architectures._registry import CheckedConfig, Range, Size, register_architecture
from canon.errors import ConfigError

__all__ = ["BasicBlock", "ChannelLayerNorm", "ResNet", "ResNetConfig"]

Norm = Literal["batchnorm", "layernorm", "none"]

#: Base channels of the three stages, before the width multiplier.
STAGE_WIDTHS = (16, 32, 64)
#: The deepest network built: n = 200 blocks per stage (He et al.'s ResNet-1202).
MAX_DEPTH = 1202
#: The widest multiplier: 1024, 2048 and 4096 channels.
MAX_WIDTH = 64
#: The largest input side; the parameters do not depend on it, but tracing runs a sample.
MAX_INPUT = 512


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, at every position on its own."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.ln(x.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return ChannelLayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm `{kind}`; choose batchnorm, layernorm or none")


def _conv(fan_in: int, fan_out: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    """A convolution with "same" padding; biased only when no norm follows it."""
    return nn.Conv2d(
        fan_in, fan_out, kernel, stride=stride, padding=kernel // 2, bias=norm == "none"
    )


class BasicBlock(nn.Module):
    """conv3x3-norm-relu-conv3x3-norm, plus the shortcut, then relu."""

    def __init__(self, fan_in: int, fan_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv(fan_in, fan_out, 3, stride, norm)
        self.norm1 = _norm(norm, fan_out)
        self.act1 = nn.ReLU()
        self.conv2 = _conv(fan_out, fan_out, 3, 1, norm)
        self.norm2 = _norm(norm, fan_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or fan_in != fan_out:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", _conv(fan_in, fan_out, 1, stride, norm)),
                        ("norm", _norm(norm, fan_out)),
                    ]
                )
            )
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut: Tensor = self.shortcut(x)  # first: a projection names its stream's group
        out: Tensor = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)) + shortcut)
        return out


class Stage(nn.Module):
    """``blocks`` basic blocks at one width; the first may halve the resolution."""

    def __init__(self, fan_in: int, fan_out: int, blocks: int, stride: int, norm: str) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                BasicBlock(fan_in if i == 0 else fan_out, fan_out, stride if i == 0 else 1, norm)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.blocks(x)
        return y


class ResNet(nn.Module):
    """A CIFAR ResNet: stem, three stages of basic blocks, global average pool, linear head."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        blocks = (config.depth - 2) // 6
        widths = [base * config.width for base in STAGE_WIDTHS]
        self.stem = nn.Sequential(
            OrderedDict(
                [
                    ("conv", _conv(config.in_channels, widths[0], 3, 1, config.norm)),
                    ("norm", _norm(config.norm, widths[0])),
                    ("act", nn.ReLU()),
                ]
            )
        )
        self.stages = nn.Sequential(
            *(
                Stage(widths[max(i - 1, 0)], width, blocks, 1 if i == 0 else 2, config.norm)
                for i, width in enumerate(widths)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], config.classes)
        self.input_shape = (config.in_channels, config.input_size, config.input_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        logits: Tensor = self.head(torch.flatten(self.pool(x), 1))
        return logits


@dataclass(frozen=True)
class ResNetConfig(CheckedConfig):
    """``depth`` = 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...); stage widths 16, 32, 64 times
    ``width``; images of ``in_channels`` x ``input_size`` x ``input_size``."""

    depth: Annotated[int, Range(8, MAX_DEPTH)] = 20
    width: Annotated[int, Range(1, MAX_WIDTH)] = 1
    classes: Size = 10
    in_channels: Size = 3
    input_size: Annotated[int, Range(1, MAX_INPUT)] = 32
    norm: Norm = "batchnorm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.depth - 2) % 6:
            below = self.depth - (self.depth - 2) % 6
            nearest = f"{below} or {below + 6}" if below >= 8 else str(below + 6)
            raise ConfigError(
                f"config `depth` of `{type(self).__name__}` must be 6n + 2 (three stages of n "
                f"basic blocks of two convolutions, the stem and the head), got {self.depth}; "
                f"try {nearest}"
            )


@register_architecture("resnet", ResNetConfig)
def resnet(config: ResNetConfig) -> nn.Module:
    """CIFAR ResNet (ResNet-20 by default): depth 6n+2, width multiplier, BN/LN/no norm."""
    return ResNet(config)
