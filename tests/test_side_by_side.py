"""Several layers' units side by side: ``torch.cat`` along the channels of different
layers' outputs (DenseNet's features, Inception's branches, a U-Net's skip connections),
written by hand (no library).

Each part keeps its own group. A BatchNorm or LayerNorm of the concatenation carries
each part's entries of its tensors (from the part's start), a depthwise convolution each
part's filters, and the layer that reads the concatenation has each part's units as its
columns from the part's start. The network's input among the parts does not move.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn

from canon.core import spec_from_module
from canon.errors import UnsupportedModuleError

CHANNELS, SIDE, GROWTH, CLASSES = 3, 8, 4, 3


class DenseLayer(nn.Module):
    """DenseNet's: BatchNorm, ReLU and a 1 x 1 convolution of every feature so far, then
    BatchNorm, ReLU and a 3 x 3 convolution to ``GROWTH`` new channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(width), nn.Conv2d(width, 8, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(8), nn.Conv2d(8, GROWTH, 3, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        """The new features."""
        h = self.conv1(F.relu(self.norm1(torch.cat(features, 1))))
        out: Tensor = self.conv2(F.relu(self.norm2(h)))
        return out


class TinyDenseNet(nn.Module):
    """A stem, a dense block of three layers, a transition (norm, conv, average pooling)
    and the final norm, pooling and classifier over the concatenated features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 6, 3, padding=1, bias=False)
        self.block = nn.ModuleList(DenseLayer(6 + i * GROWTH) for i in range(3))
        width = 6 + 3 * GROWTH
        self.transition_norm = nn.BatchNorm2d(width)
        self.transition = nn.Conv2d(width, 8, 1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        features = [self.stem(x)]
        for layer in self.block:
            features.append(layer(features))
        h = torch.cat(features, 1)
        h = F.avg_pool2d(self.transition(F.relu(self.transition_norm(h))), 2)
        out: Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.norm(h)), 1), 1))
        return out


class TinyUNet(nn.Module):
    """Two levels: the coarse features upsampled and concatenated with the fine ones and
    with the input image itself; an Inception-like pair of branches side by side, a
    depthwise convolution and a LayerNorm over them (channels last); a classifier over the
    flattened pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(CHANNELS, 4, 3, padding=1)
        self.down2 = nn.Conv2d(4, 6, 3, padding=1)
        self.up = nn.Conv2d(6 + 4 + CHANNELS, 5, 3, padding=1)
        self.branch1, self.branch3 = nn.Conv2d(5, 3, 1), nn.Conv2d(5, 2, 3, padding=1)
        self.depthwise = nn.Conv2d(5, 5, 3, padding=1, groups=5)
        self.norm = nn.LayerNorm(5)
        self.mix = nn.Linear(5, 6)
        self.head = nn.Linear(6 * 4, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        fine = F.relu(self.down1(x))
        coarse = F.relu(self.down2(F.max_pool2d(fine, 2)))
        h = torch.cat([F.interpolate(coarse, scale_factor=2.0), fine, x], dim=1)
        h = F.relu(self.up(h))
        h = torch.cat([F.relu(self.branch1(h)), torch.tanh(self.branch3(h))], dim=1)
        h = self.norm(self.depthwise(h).permute(0, 2, 3, 1))
        h = F.gelu(self.mix(h)).permute(0, 3, 1, 2)
        out: Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(h, 2), 1))
        return out


MODELS = {"densenet": TinyDenseNet, "unet": TinyUNet}


@pytest.mark.parametrize("kind", sorted(MODELS))
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=5, deadline=None)
def test_symmetries_keep_the_function(kind: str, weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form keep the class scores."""
    model = randomize(MODELS[kind](), weights)
    spec = spec_from_module(model)
    state = state_of(model)
    gen = torch.Generator().manual_seed(seed % 1000)
    x = torch.randn(4, CHANNELS, SIDE, SIDE, generator=gen, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


def _starts(spec: object, tensor: str) -> dict[str, int]:
    """Each group's start on ``tensor`` (outgoing or carried)."""
    return {
        g.name: t.start
        for g in spec.groups  # type: ignore[attr-defined]
        for t in g.tensors
        if t.name == tensor and t.role != "incoming"
    }


def test_each_part_reads_from_its_start() -> None:
    """The last dense layer's first conv and BatchNorm, and the transition's, hold each
    earlier layer's channels from where the concatenation put them."""
    spec = spec_from_module(TinyDenseNet())
    conv2 = [f"block.{i}.conv2" for i in range(3)]
    expected = {"stem": 0, conv2[0]: 6, conv2[1]: 10}
    assert _starts(spec, "block.2.conv1.weight") == expected
    assert _starts(spec, "block.2.norm1.running_var") == expected
    assert _starts(spec, "transition.weight") == {**expected, conv2[2]: 14}


def test_the_input_among_the_parts_stays() -> None:
    """The upsampled coarse features and the fine ones move; the input image's columns of
    the layer that reads them do not (no group holds them)."""
    spec = spec_from_module(TinyUNet())
    assert _starts(spec, "up.weight") == {"down2": 0, "down1": 6}
    assert _starts(spec, "norm.weight") == {"branch1": 0, "branch3": 3}
    assert _starts(spec, "depthwise.weight") == {"branch1": 0, "branch3": 3}


class Traps(nn.Module):
    """Concatenations canon does not follow."""

    def __init__(self, trap: str) -> None:
        super().__init__()
        self.trap = trap
        self.a, self.b = nn.Conv2d(CHANNELS, 2, 1), nn.Conv2d(CHANNELS, 2, 1)
        self.grouped = nn.Conv2d(4, 4, 1, groups=2)
        self.head = nn.Linear(4, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = torch.cat([self.a(x), self.b(x)], dim=1)
        if self.trap == "grouped":  # a grouped convolution over the concatenation
            h = self.grouped(h)
        out: Tensor = self.head(h.mean(dim=(2, 3)))
        return out


@pytest.mark.parametrize(
    ("trap", "words"),
    [
        ("grouped", "reads units of several layers side by side in a way canon does not"),
    ],
)
def test_look_alikes_are_refused(trap: str, words: str) -> None:
    """A concatenation read by a grouped convolution is refused with its reason (one
    added to another layer's units cuts those into ranges: tests/test_unit_ranges.py)."""
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(Traps(trap))
