"""Views that read another tensor's shape, and layers over constants.

``a.reshape_as(b)`` and ``a.view_as(b)`` are reshapes to ``b``'s shape (LeViT's linear
layer with a BatchNorm over its flattened tokens), reading nothing of ``b``'s values, so
``b``'s units meet nothing there. A layer over constants alone (EdgeNeXt's projected
position features) computes a tensor no symmetry moves, unless it is added to hidden
units: then its rows write those units, as any layer's do."""

from __future__ import annotations

import pytest
import torch
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn

from canon.core import spec_from_module

TOKENS, WIDTH, HIDDEN = 5, 8, 12


class TokensBatchNorm(nn.Module):
    """A linear layer over tokens whose BatchNorm runs on the tokens flattened into the
    batch, viewed back as the layer's output (``reshape_as`` or ``view_as``), then GELU
    and a classifier over the tokens' mean."""

    def __init__(self, view: str) -> None:
        super().__init__()
        self.view = view
        self.linear = nn.Linear(WIDTH, HIDDEN, bias=False)
        self.bn = nn.BatchNorm1d(HIDDEN)
        self.head = nn.Linear(HIDDEN, 3)
        self.input_shape = (TOKENS, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear(x)
        normed = self.bn(h.flatten(0, 1))
        h = normed.reshape_as(h) if self.view == "reshape_as" else normed.view_as(h)
        out: Tensor = self.head(nn.functional.gelu(h).mean(dim=1))
        return out


@pytest.mark.parametrize("view", ["reshape_as", "view_as"])
def test_a_batchnorm_over_flattened_tokens_belongs_to_its_layer(view: str) -> None:
    """The BatchNorm follows the layer's units through the flattening and the view back:
    one group of the layer's 12 units whose tensors include the BatchNorm's; symmetries
    keep the logits and canonical forms agree."""
    model = randomize(TokensBatchNorm(view), 0)
    spec = spec_from_module(model)
    (group,) = [g for g in spec.groups if g.name == "linear"]
    assert group.size == HIDDEN
    assert {"bn.weight", "bn.bias", "bn.running_mean"} <= {t.name for t in group.tensors}
    x = torch.randn(4, TOKENS, WIDTH, generator=torch.Generator().manual_seed(0)).double()
    assert_symmetries_keep_the_function(model, spec, state_of(model), x, seed=1)


class ProjectedPositions(nn.Module):
    """A stem convolution whose output gets position features added: a fixed grid of
    coordinates made in forward, projected by a 1x1 convolution of its own (EdgeNeXt's
    Fourier position encoding), then a block and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.project = nn.Conv2d(2, 6, 1)
        self.block = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)
        self.input_shape = (3, 5, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        rows = torch.linspace(0, 1, h.shape[2], dtype=h.dtype)
        cols = torch.linspace(0, 1, h.shape[3], dtype=h.dtype)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))[None]
        h = h + self.project(grid)
        h = h + self.block(torch.relu(h))
        out: Tensor = self.head(h.mean(dim=(2, 3)))
        return out


def test_a_layer_over_constants_added_to_the_stream_writes_its_units() -> None:
    """The projection of a fixed grid, added to the stem's units, writes those units as
    the stem does: its rows are one more producer of the stream's group (its columns read
    the grid, which nothing moves); symmetries keep the logits and canonical forms
    agree."""
    model = randomize(ProjectedPositions(), 0)
    spec = spec_from_module(model)
    (stream,) = [g for g in spec.groups if g.name == "stem"]
    assert {p.weight for p in stream.producers} == {"stem.weight", "project.weight", "block.weight"}
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)).double()
    assert_symmetries_keep_the_function(model, spec, state_of(model), x, seed=1)
