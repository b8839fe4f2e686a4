"""A fixed filter convolved with every channel alike (timm's ``BlurPool2d``: the
anti-aliasing of TResNet and ``resnetaa*``), written by hand (no library).

The filter is held by the code (a buffer outside the state dict), one for every channel:
the same linear map of each channel's positions, so the channels stay and permute
through it. A filter that differs between channels, or that the weights hold (a trained
one could differ in another network of the zoo), is refused.
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


class Blur(nn.Module):
    """A 3 x 3 binomial filter, stride 2, over each of ``channels`` channels after
    reflection padding; ``kind``: how the filter is held and laid out."""

    def __init__(self, channels: int, kind: str = "expanded") -> None:
        super().__init__()
        self.channels, self.kind = channels, kind
        row = torch.tensor([1.0, 2.0, 1.0])
        filt = (row[:, None] * row[None, :] / 16).expand(channels, 1, 3, 3).clone()
        if kind == "tilted":  # one channel's filter differs from the others'
            filt[0] = filt[0].flip(0) * 2
        if kind == "expanded":
            filt = filt[:1]
        self.register_buffer("filt", filt, persistent=kind == "stored")

    def forward(self, x: Tensor) -> Tensor:
        """The filtered channels."""
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        weight = self.filt.expand(self.channels, 1, 3, 3) if self.kind == "expanded" else self.filt
        return F.conv2d(x, weight, stride=2, groups=self.channels)


class BlurNet(nn.Module):
    """conv, BatchNorm, ReLU, blur, conv, ReLU, a residual blur of the stem, pool, head."""

    def __init__(self, kind: str = "expanded") -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.blur, self.skip = Blur(6, kind), Blur(6, kind)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)
        self.input_shape = (3, 8, 8)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.bn(self.stem(x)))
        h = F.relu(self.conv(self.blur(h))) + self.skip(h)
        out: Tensor = self.head(h.mean(dim=(2, 3)))
        return out


@pytest.mark.parametrize("kind", ["expanded", "per-channel"])
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=4, deadline=None)
def test_symmetries_keep_the_function(kind: str, weights: int, seed: int) -> None:
    """The stem's channels move through both blurs (one group with the conv's outputs,
    which the skip adds to); symmetries, normalization and canonical forms keep the
    class scores."""
    model = randomize(BlurNet(kind), weights)
    spec = spec_from_module(model)
    (stem,) = [g for g in spec.groups if "stem.weight" in g.weights]
    assert "conv.weight" in stem.weights
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed % 1000))
    assert_symmetries_keep_the_function(model, spec, state_of(model), x.double(), seed)


@pytest.mark.parametrize("kind", ["tilted", "stored"])
def test_a_filter_that_differs_or_is_stored_is_refused(kind: str) -> None:
    with pytest.raises(UnsupportedModuleError, match="conv2d"):
        spec_from_module(BlurNet(kind))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tresnet_m", "resnetaa50d"])
def test_timms_anti_aliased_networks_keep_their_function(name: str) -> None:
    """timm's TResNet and anti-aliased ResNet-D on 32 x 32 images: random symmetries and
    canonical forms keep the logits of random weights."""
    from vision_models import vision

    _, timm = vision()
    torch.manual_seed(0)
    model = randomize(timm.create_model(name, num_classes=10, pretrained=False), 1)
    spec = spec_from_module(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert_symmetries_keep_the_function(model, spec, state_of(model), x.double(), seed=3)
