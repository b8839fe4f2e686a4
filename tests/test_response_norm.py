"""ConvNeXt V2's global response norm (GRN), written by hand (no library).

Each channel is scaled by its spatial norm over the mean of all channels' norms, times a
weight, plus a bias, plus the input: like a norm it commutes with a permutation of the
channels (its weight and bias permuted alike) and nothing else. canon knows it by its
class name, runs it once to check that, and carries its tensors along their own unit
axis (timm's ``(dim,)``, transformers' ``(1, 1, 1, dim)``).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn

from canon.core import spec_from_module
from canon.errors import UnsupportedModuleError

CHANNELS, WIDTH, SIDE, CLASSES = 3, 8, 6, 4


class GlobalResponseNorm(nn.Module):
    """GRN over the channels of NHWC tensors; ``flat`` holds its tensors as ``(dim,)``,
    else as ``(1, 1, 1, dim)``."""

    def __init__(self, dim: int, flat: bool = True) -> None:
        super().__init__()
        shape = (dim,) if flat else (1, 1, 1, dim)
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def norms(self, x: Tensor) -> Tensor:
        g = x.norm(p=2, dim=(1, 2), keepdim=True)
        return g / (g.mean(dim=-1, keepdim=True) + 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, 1, 1, -1) + self.weight.view(1, 1, 1, -1) * x * self.norms(x)


class FirstChannelGRN(GlobalResponseNorm):
    """A response norm that scales every channel by the first channel's norm: it does not
    commute with a permutation of the channels."""

    def norms(self, x: Tensor) -> Tensor:
        return super().norms(x)[..., :1]


class Block(nn.Module):
    """ConvNeXt V2's block: a depthwise conv, a LayerNorm, then (channels last) a Linear,
    GELU, the GRN and a Linear, added to the input."""

    def __init__(self, grn: nn.Module) -> None:
        super().__init__()
        self.dw = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, groups=WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.up = nn.Linear(WIDTH, 2 * WIDTH)
        self.act = nn.GELU()
        self.grn = grn
        self.down = nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.down(self.grn(self.act(self.up(self.norm(h)))))
        return x + h.permute(0, 3, 1, 2)


class Net(nn.Module):
    """A stem, two ConvNeXt V2 blocks, a pooled read-out."""

    input_shape = (CHANNELS, SIDE, SIDE)

    def __init__(self, make: type[GlobalResponseNorm] = GlobalResponseNorm, flat: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, WIDTH, 2, stride=2)
        self.blocks = nn.Sequential(*(Block(make(2 * WIDTH, flat)) for _ in range(2)))
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.blocks(self.stem(x)).mean((2, 3)))
        return out


@pytest.mark.parametrize("flat", [True, False])
def test_the_norm_is_carried_along_its_unit_axis(flat: bool) -> None:
    """The GRN's weight and bias move with the units it reads (the expansion), along
    their one long axis; the group keeps only its permutations."""
    spec = spec_from_module(Net(flat=flat).double())
    group = spec.group("blocks.0.up")
    carried = {(c.name, c.axis) for c in group.carried}
    axis = 0 if flat else 3
    assert carried == {("blocks.0.grn.weight", axis), ("blocks.0.grn.bias", axis)}
    assert group.symmetry == "none"


@given(seed=st.integers(0, 2**31 - 1), flat=st.booleans())
@settings(max_examples=10, deadline=None)
def test_symmetries_keep_the_function(seed: int, flat: bool) -> None:
    """Random symmetries, normalization and canonical forms keep the outputs."""
    model = Net(flat=flat).double().eval()
    spec = spec_from_module(model)
    gen = torch.Generator().manual_seed(seed % 1000)
    state = {t.name: torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in spec.tensors}
    x = torch.randn(5, *Net.input_shape, generator=gen, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


def test_a_response_norm_that_mixes_channels_is_refused() -> None:
    """canon runs a module it knows by its class name only: one that does not commute with
    a permutation of the channels is refused, by name."""
    with pytest.raises(UnsupportedModuleError, match=r"`blocks\.0\.grn` \(FirstChannelGRN\)"):
        spec_from_module(Net(FirstChannelGRN).double())
