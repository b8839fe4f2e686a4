"""Views that read another tensor's shape: ``a.reshape_as(b)`` and ``a.view_as(b)`` are
reshapes to ``b``'s shape (LeViT's linear layer with a BatchNorm over its flattened
tokens), reading nothing of ``b``'s values, so ``b``'s units meet nothing there."""

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
