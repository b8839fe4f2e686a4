"""Branches a forward computes and drops, written by hand (SigLIP's image classifier runs
its vision tower's pooling head, then classifies the tokens' mean instead; no library).

A node none of whose results reach the logits does not change them, whatever its
weights: canon passes over it, and its weights stay as they are (in no group), even
where it reads parameters in ways canon cannot follow. So does a write in place into a
tensor that no result reaching the logits is, or is a view of; a write into one that is
(or may be) reaches the logits, and canon follows it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn

from canon.core import Spec, spec_from_module
from canon.errors import UnsupportedModuleError

WIDTH = 6


class Dropped(nn.Module):
    """Two layers; on the side, a probe matched against the hidden units by a product
    canon does not follow, whose result the forward drops."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, WIDTH)
        self.fc2 = nn.Linear(WIDTH, 3)
        self.side = nn.Linear(WIDTH, WIDTH)
        self.probe = nn.Parameter(torch.randn(WIDTH))
        self.input_shape = (4,)

    def _side(self, h: Tensor) -> Tensor:
        scores: Tensor = self.side(h) @ self.probe  # reads the probe "directly"
        return scores

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        self._side(h)  # computed, then dropped
        out: Tensor = self.fc2(h)
        return out


class WrittenInPlace(Dropped):
    """The same side branch, its result added in place into a view of the logits: the
    write reaches them, so canon follows the branch."""

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        out: Tensor = self.fc2(h)
        out.view(-1)[:1].add_(self._side(h)[:1])
        return out


class WrittenIntoABuffer(Dropped):
    """The same side branch, its result added in place into a buffer of the module: a
    later read of the buffer would see it, so canon follows the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        self.total.add_(self._side(h).sum())
        out: Tensor = self.fc2(h)
        return out


class WrittenAside(Dropped):
    """The same side branch, its result added in place into a tensor of its own (its
    size read off the input) that nothing reaching the logits reads."""

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        total.add_(self._side(h))
        out: Tensor = self.fc2(h)
        return out


def _model(seed: int) -> tuple[Dropped, Spec, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = Dropped().double().eval()
    return model, spec_from_module(model), model.state_dict()


def test_the_dropped_branchs_weights_are_in_no_group() -> None:
    _, spec, _ = _model(0)
    (group,) = spec.groups
    moved = {t.name for t in group.tensors}
    assert {"fc1.weight", "fc2.weight"} <= moved
    assert not moved & {"side.weight", "side.bias", "probe"}
    assert {"side.weight", "probe"} <= set(spec.tensor_info)  # still the network's


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_symmetries_keep_the_function(seed: int) -> None:
    model, spec, state = _model(seed % 100)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed)).double()
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


@pytest.mark.parametrize("model", [WrittenInPlace, WrittenIntoABuffer])
def test_a_branch_that_writes_in_place_is_followed(model: type[Dropped]) -> None:
    with pytest.raises(UnsupportedModuleError, match="matmul"):
        spec_from_module(model().double())


def test_a_write_into_a_dropped_tensor_is_dropped_too() -> None:
    torch.manual_seed(0)
    model = WrittenAside().double().eval()
    spec = spec_from_module(model)
    (group,) = spec.groups
    assert not {t.name for t in group.tensors} & {"side.weight", "probe"}
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)).double()
    assert_symmetries_keep_the_function(model, spec, model.state_dict(), x, 0)
