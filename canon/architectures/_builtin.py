"""The built-in architectures (the paper's networks, with sizes as config).

Every size in a config is a :data:`~canon.architectures._registry.Size`: an
integer from 1 to :data:`~canon._limits.MAX_DIM` (2**20), checked when the
config is made, before any module is.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from torch import Tensor, nn

from canon._limits import MAX_DIM
from canon.architectures._registry import CheckedConfig, Count, Range, Size, register_architecture
from canon.core.modules import BinaryConv2d, BinaryLinear, Sign
from canon.errors import ConfigError

__all__ = [
    "BinaryConvConfig",
    "BinaryMLPConfig",
    "CommitteeConfig",
    "LeNetConfig",
    "MLPConfig",
    "PerceptronConfig",
    "VGGConfig",
]

Activation = Literal["relu", "tanh", "sign"]


class Network(nn.Sequential):
    """A chain of named layers that knows the shape of one input sample."""

    def __init__(self, layers: list[tuple[str, nn.Module]], input_shape: tuple[int, ...]):
        super().__init__(OrderedDict(layers))
        self.input_shape = input_shape


class SumReadout(nn.Module):
    """Sums the hidden units: a committee machine's output weights, all fixed to 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=1, keepdim=True)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sign":
        return Sign()
    raise ConfigError(f"unknown activation `{name}`; choose relu, tanh or sign")


def _conv_out(size: int, kernel: int, padding: int) -> int:
    return size + 2 * padding - kernel + 1


@dataclass(frozen=True)
class _TwoConvConfig(CheckedConfig):
    """Images of ``in_channels`` x ``input_size`` x ``input_size`` through two stages of a
    ``kernel_size`` convolution (``padding``) to ``channels`` and a 2x2 max-pool."""

    in_channels: Size = 1
    input_size: Size = 28
    classes: Size = 10
    channels: tuple[Size, Size] = (20, 50)
    kernel_size: Size = 5
    padding: Count = 0


def _two_conv_stages(
    name: str,
    config: _TwoConvConfig,
    conv: Callable[..., nn.Module],
    activation: Callable[[], nn.Module],
    *,
    pool_first: bool = False,
) -> tuple[list[tuple[str, nn.Module]], int]:
    """The two stages (conv, activation, pool; ``pool_first``: conv, pool, activation) and
    the flatten, with the number of features they leave."""
    k, p, size = config.kernel_size, config.padding, config.input_size
    if len(config.channels) != 2:
        raise ConfigError(f"config `channels` of `{name}` must hold two sizes")
    side = _conv_out(_conv_out(size, k, p) // 2, k, p) // 2
    if side < 1:
        raise ConfigError(
            f"{name}: input_size {size} is too small for two {k}x{k} convolutions with "
            f"padding {p} and 2x2 pooling; raise `padding` or `input_size`"
        )
    layers: list[tuple[str, nn.Module]] = []
    fan_in = config.in_channels
    for i, width in enumerate(config.channels, start=1):
        act, pool = (f"act{i}", activation()), (f"pool{i}", nn.MaxPool2d(2))
        layers += [
            (f"conv{i}", conv(fan_in, width, k, padding=p)),
            *((pool, act) if pool_first else (act, pool)),
        ]
        fan_in = width
    layers.append(("flatten", nn.Flatten()))
    return layers, fan_in * side * side


def _binary_dense(
    fan_in: int, hidden: tuple[int, ...], classes: int, act: str
) -> list[tuple[str, nn.Module]]:
    """Binary fully connected layers of widths ``hidden``, each followed by a sign
    activation named ``{act}{i}``, then the binary output layer."""
    layers: list[tuple[str, nn.Module]] = []
    for i, width in enumerate(hidden, start=1):
        layers += [(f"fc{i}", BinaryLinear(fan_in, width, bias=False)), (f"{act}{i}", Sign())]
        fan_in = width
    layers.append(("out", BinaryLinear(fan_in, classes, bias=False)))
    return layers


@dataclass(frozen=True)
class MLPConfig(CheckedConfig):
    in_features: Size = 784
    hidden: tuple[Size, ...] = (512, 512)
    classes: Size = 10
    activation: Activation = "relu"
    bias: bool = True
    batchnorm: bool = False


@register_architecture("mlp", MLPConfig)
def mlp(config: MLPConfig) -> nn.Module:
    """Multi-layer perceptron: any depth and widths; relu, tanh or sign activations."""
    layers: list[tuple[str, nn.Module]] = []
    fan_in = config.in_features
    for i, width in enumerate(config.hidden, start=1):
        layers.append((f"fc{i}", nn.Linear(fan_in, width, bias=config.bias)))
        if config.batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm1d(width)))
        layers.append((f"act{i}", _activation(config.activation)))
        fan_in = width
    layers.append(("out", nn.Linear(fan_in, config.classes, bias=config.bias)))
    return Network(layers, (config.in_features,))


@dataclass(frozen=True)
class LeNetConfig(_TwoConvConfig):
    hidden: Size = 500


@register_architecture("lenet", LeNetConfig)
def lenet(config: LeNetConfig) -> nn.Module:
    """The paper's LeNet-like net: conv 20 and 50 filters 5x5, 2x2 max-pool, fc 500."""
    layers, fan_in = _two_conv_stages("lenet", config, nn.Conv2d, nn.ReLU)
    layers += [
        ("fc1", nn.Linear(fan_in, config.hidden)),
        ("act3", nn.ReLU()),
        ("out", nn.Linear(config.hidden, config.classes)),
    ]
    return Network(layers, (config.in_channels, config.input_size, config.input_size))


VGG16: tuple[int | Literal["M"], ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


@dataclass(frozen=True)
class VGGConfig(CheckedConfig):
    layers: tuple[Size | Literal["M"], ...] = VGG16
    width: Annotated[float, Range(1 / 64, 64)] = 1.0
    in_channels: Size = 3
    input_size: Size = 32
    classes: Size = 10
    hidden: tuple[Size, ...] = (512, 512)
    dropout: Annotated[float, Range(0, 1)] = 0.5


@register_architecture("vgg", VGGConfig)
def vgg(config: VGGConfig) -> nn.Module:
    """VGG with BatchNorm (VGG16 by default); `layers` and `width` shrink it."""
    layers: list[tuple[str, nn.Module]] = []
    channels, side, conv, pool = config.in_channels, config.input_size, 0, 0
    for item in config.layers:
        if item == "M":
            pool += 1
            layers.append((f"pool{pool}", nn.MaxPool2d(2)))
            side //= 2
            continue
        conv += 1
        width = max(1, round(int(item) * config.width))
        if width > MAX_DIM:
            raise ConfigError(
                f"vgg: `layers` item {item} times `width` {config.width:g} is {width} channels; "
                f"at most {MAX_DIM}"
            )
        layers += [
            (f"conv{conv}", nn.Conv2d(channels, width, 3, padding=1)),
            (f"bn{conv}", nn.BatchNorm2d(width)),
            (f"act{conv}", nn.ReLU()),
        ]
        channels = width
    if conv == 0 or side < 1:
        raise ConfigError("vgg: `layers` needs a convolution and must leave a spatial size >= 1")
    layers.append(("flatten", nn.Flatten()))
    fan_in = channels * side * side
    for i, hidden in enumerate(config.hidden, start=1):
        layers += [
            (f"fc{i}", nn.Linear(fan_in, hidden)),
            (f"fc_act{i}", nn.ReLU()),
            (f"drop{i}", nn.Dropout(config.dropout)),
        ]
        fan_in = hidden
    layers.append(("out", nn.Linear(fan_in, config.classes)))
    return Network(layers, (config.in_channels, config.input_size, config.input_size))


@dataclass(frozen=True)
class BinaryMLPConfig(CheckedConfig):
    in_features: Size = 784
    hidden: tuple[Size, ...] = (1001, 1001, 1001)
    classes: Size = 10


@register_architecture("binary_mlp", BinaryMLPConfig)
def binary_mlp(config: BinaryMLPConfig) -> nn.Module:
    """Binary MLP: sign activations, weights binarized in the forward pass (BinaryNet)."""
    layers = _binary_dense(config.in_features, config.hidden, config.classes, "act")
    return Network(layers, (config.in_features,))


@dataclass(frozen=True)
class CommitteeConfig(CheckedConfig):
    in_features: Size = 1000
    hidden: Size = 101


@register_architecture("committee", CommitteeConfig)
def committee(config: CommitteeConfig) -> nn.Module:
    """Binary committee machine: one hidden sign layer, output weights fixed to 1."""
    layers: list[tuple[str, nn.Module]] = [
        ("hidden", BinaryLinear(config.in_features, config.hidden, bias=False)),
        ("act", Sign()),
        ("vote", SumReadout()),
    ]
    return Network(layers, (config.in_features,))


@dataclass(frozen=True)
class PerceptronConfig(CheckedConfig):
    in_features: Size = 1000
    binary: bool = True


@register_architecture("perceptron", PerceptronConfig)
def perceptron(config: PerceptronConfig) -> nn.Module:
    """A perceptron with one output (binary weights by default)."""
    layer = (BinaryLinear if config.binary else nn.Linear)(config.in_features, 1, bias=False)
    return Network([("out", layer)], (config.in_features,))


@dataclass(frozen=True)
class BinaryConvConfig(_TwoConvConfig):
    in_channels: Size = 3
    input_size: Size = 32
    hidden: tuple[Size, ...] = (2001, 2001)


@register_architecture("binary_conv", BinaryConvConfig)
def binary_conv(config: BinaryConvConfig) -> nn.Module:
    """The paper's binary convnet: 2 binary convs (5x5, max-pool, sign), binary fc layers."""
    conv = functools.partial(BinaryConv2d, bias=False)
    layers, fan_in = _two_conv_stages("binary_conv", config, conv, Sign, pool_first=True)
    layers += _binary_dense(fan_in, config.hidden, config.classes, "fc_act")
    return Network(layers, (config.in_channels, config.input_size, config.input_size))
