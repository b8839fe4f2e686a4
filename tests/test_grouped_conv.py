"""Grouped convolutions (ResNeXt's, RegNet's), written by hand (no library).

Output group ``j`` reads only input group ``j``, so the units a grouped convolution reads
and the units it makes permute within their groups (``blocks``), and an input unit's
entries are its column of its group's rows (``OutgoingAxis.groups``). The layout helpers
act on such a weight as they would on the dense block-diagonal weight it stands for.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn

from canon.core import (
    apply_alignment,
    match_incoming,
    match_weights,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.units import permute_units, regrouped, scale_units, ungrouped, unit_slices

CHANNELS, SIDE, CLASSES = 3, 6, 3


def _dense(w: Tensor, groups: int) -> Tensor:
    """The block-diagonal (out, in, ...) weight a grouped one stands for."""
    out, local = w.shape[:2]
    dense = w.new_zeros(out, local * groups, *w.shape[2:])
    for j in range(groups):
        rows = slice(j * out // groups, (j + 1) * out // groups)
        dense[rows, j * local : (j + 1) * local] = w[rows]
    return dense


def _grouped(dense: Tensor, groups: int) -> Tensor:
    """The grouped weight of a block-diagonal one (its off-diagonal blocks dropped)."""
    out, total = dense.shape[:2]
    local = total // groups
    rows = [dense[j * out // groups : (j + 1) * out // groups, j * local : (j + 1) * local]
            for j in range(groups)]  # fmt: skip
    return torch.cat(rows, 0)


@given(
    groups=st.sampled_from([1, 2, 3]),
    per_out=st.integers(1, 3),
    per_in=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_layout_helpers_act_as_on_the_dense_weight(
    groups: int, per_out: int, per_in: int, seed: int
) -> None:
    """Permuting, scaling and slicing a grouped weight's input units (within their
    groups) equals doing so to the columns of the block-diagonal weight it stands for."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(groups * per_out, per_in, 2, generator=gen, dtype=torch.float64)
    units = groups * per_in
    perm = torch.cat([j * per_in + torch.randperm(per_in, generator=gen) for j in range(groups)])
    factors = torch.rand(units, generator=gen, dtype=torch.float64) + 0.5
    dense = _dense(w, groups)
    assert torch.equal(regrouped(ungrouped(w, 1, groups), groups), w)
    moved = permute_units(w, 1, perm, groups=groups)
    assert torch.equal(moved, _grouped(dense[:, perm], groups))
    scaled = scale_units(w, 1, factors, groups=groups)
    torch.testing.assert_close(scaled, _grouped(dense * factors.view(1, -1, 1), groups))
    rows = unit_slices(w, 1, units, groups=groups)
    for c in range(units):  # unit c's slice: its column in its own group's rows
        j = c // per_in
        expected = w[j * per_out : (j + 1) * per_out, c % per_in]
        assert torch.equal(rows[c], expected.reshape(-1))


class TinyResNeXt(nn.Module):
    """A grouped stem (three groups over the image's channels and a multiplier), then a
    bottleneck: 1 x 1 conv, BatchNorm, ReLU, a grouped 3 x 3 conv (two groups),
    BatchNorm, ReLU, 1 x 1 conv and BatchNorm added to the stem; a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 6, 3, padding=1, groups=3)
        self.reduce, self.bn1 = nn.Conv2d(6, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.grouped, self.bn2 = (
            nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False),
            nn.BatchNorm2d(6),
        )
        self.expand, self.bn3 = nn.Conv2d(6, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.head = nn.Linear(6, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.stem(x))
        y = F.relu(self.bn1(self.reduce(h)))
        y = F.relu(self.bn2(self.grouped(y)))
        h = F.relu(h + self.bn3(self.expand(y)))
        out: Tensor = self.head(h.mean(dim=(2, 3)))
        return out


def test_the_groups_bound_the_permutations() -> None:
    """The units a grouped conv reads and makes permute within its groups; its weight is
    the read units' outgoing axis, grouped."""
    spec = spec_from_module(TinyResNeXt())
    assert {g.name: g.blocks for g in spec.groups} == {"stem": 3, "reduce": 2, "grouped": 2}
    (read,) = [o for o in spec.group("reduce").outgoing if o.name == "grouped.weight"]
    assert (read.axis, read.groups) == (1, 2)


@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=6, deadline=None)
def test_symmetries_keep_the_function(weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form (each matching method)
    keep the class scores, and canonical forms agree."""
    model = randomize(TinyResNeXt(), weights)
    spec = spec_from_module(model)
    state = state_of(model)
    gen = torch.Generator().manual_seed(seed % 1000)
    x = torch.randn(4, CHANNELS, SIDE, SIDE, generator=gen, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, state, x, seed, methods=("weight", "incoming"))


@pytest.mark.parametrize("match", [match_weights, match_incoming])
def test_a_planted_symmetry_is_recovered(match: object) -> None:
    """Weight and incoming matching undo a random symmetry exactly."""
    model = randomize(TinyResNeXt(), 1)
    spec = spec_from_module(model)
    state = normalize(state_of(model), spec)
    planted = normalize(random_symmetry(state, spec, seed=5), spec)
    assert not torch.equal(planted["grouped.weight"], state["grouped.weight"])
    aligned = apply_alignment(planted, match(planted, state, spec), spec)  # type: ignore[operator]
    assert max(float((aligned[k] - state[k]).abs().max()) for k in state) < 1e-9
