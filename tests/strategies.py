"""Hypothesis strategies: small networks of every built-in architecture and custom modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from canon.architectures import build_model
from canon.core.modules import Sign

# Hidden widths start at 2: a layer after a 1-unit layer has fan-in 1, where every pair of
# units has |cosine| 1 and weight-based matching (the paper's, which ignores biases) is
# ambiguous by construction.
sizes = st.integers(min_value=2, max_value=9)
widths = st.lists(sizes, min_size=1, max_size=3)


def mlp_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "in_features": st.integers(2, 12),
            "hidden": widths,
            "classes": st.integers(2, 5),
            "activation": st.sampled_from(["relu", "tanh", "sign"]),
            "bias": st.booleans(),
            "batchnorm": st.booleans(),
        }
    )


def lenet_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "in_channels": st.integers(1, 2),
            "input_size": st.integers(8, 13),
            "channels": st.tuples(st.integers(1, 4), st.integers(2, 5)).map(list),
            "kernel_size": st.sampled_from([3, 5]),
            "padding": st.just(2),
            "hidden": sizes,
            "classes": st.integers(2, 4),
        }
    )


def vgg_configs() -> st.SearchStrategy[dict[str, Any]]:
    block = st.lists(st.integers(2, 6), min_size=1, max_size=2).map(lambda b: [*b, "M"])
    return st.fixed_dictionaries(
        {
            "layers": st.lists(block, min_size=1, max_size=2).map(
                lambda bs: [x for b in bs for x in b]
            ),
            "in_channels": st.integers(1, 3),
            "input_size": st.sampled_from([4, 5, 8]),
            "hidden": st.lists(sizes, max_size=2),
            "classes": st.integers(2, 4),
        }
    )


def binary_mlp_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"in_features": st.integers(2, 12), "hidden": widths, "classes": st.integers(2, 5)}
    )


def committee_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"in_features": st.integers(2, 12), "hidden": sizes})


def perceptron_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"in_features": st.integers(2, 12), "binary": st.booleans()})


def binary_conv_configs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "in_channels": st.integers(1, 2),
            "input_size": st.integers(8, 12),
            "channels": st.tuples(st.integers(1, 4), st.integers(2, 4)).map(list),
            "kernel_size": st.sampled_from([3, 5]),
            "padding": st.just(2),
            "hidden": st.lists(sizes, min_size=1, max_size=2),
            "classes": st.integers(2, 4),
        }
    )


CONFIGS: dict[str, Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    "mlp": mlp_configs,
    "lenet": lenet_configs,
    "vgg": vgg_configs,
    "binary_mlp": binary_mlp_configs,
    "committee": committee_configs,
    "perceptron": perceptron_configs,
    "binary_conv": binary_conv_configs,
}


# -- custom modules, traced rather than built-in ------------------------------


class FunctionalConvNet(nn.Module):
    """Functional calls: F.relu, F.max_pool2d, x.view(x.size(0), -1), torch.tanh."""

    def __init__(self, c: int, h: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c * 4 * 4, h)
        self.head = nn.Linear(h, classes)
        self.input_shape = (1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        x = x.view(x.size(0), -1)
        x = torch.tanh(self.fc(x))
        return self.head(x)


class Block(nn.Module):
    def __init__(self, fan_in: int, width: int, act: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, width)
        self.act = act
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.linear(x)))


class NestedMLP(nn.Module):
    """Nested custom modules and Sequentials, torch.flatten on an image input, leaky ReLU."""

    def __init__(self, h1: int, h2: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(Block(16, h1, nn.LeakyReLU(0.1)), Block(h1, h2, Sign()))
        self.out = nn.Linear(h2, classes)
        self.input_shape = (1, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(torch.flatten(x, 1)))


class Conv1dNet(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU -> AvgPool1d -> flatten -> Linear."""

    def __init__(self, c: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, c, 3)
        self.bn = nn.BatchNorm1d(c)
        self.pool = nn.AvgPool1d(2)
        self.out = nn.Linear(c * 3, classes)
        self.input_shape = (2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pool(self.bn(self.conv(x)).relu()).reshape(x.shape[0], -1))


def custom_models() -> st.SearchStrategy[nn.Module]:
    return st.one_of(
        st.builds(FunctionalConvNet, sizes, sizes, st.integers(2, 4)),
        st.builds(NestedMLP, sizes, sizes, st.integers(2, 4)),
        st.builds(Conv1dNet, sizes, st.integers(2, 4)),
    )


def builtin_models() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.one_of(
        *[configs().map(lambda c, n=name: (n, c)) for name, configs in CONFIGS.items()]
    )


def models() -> st.SearchStrategy[nn.Module]:
    """Any network canon supports: a small built-in of every kind or a traced custom module."""
    return st.one_of(builtin_models().map(lambda nc: build_model(*nc)), custom_models())
