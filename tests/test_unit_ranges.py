"""Hidden units cut into ranges that are not one layer's own outputs, written by hand (no
library): Res2Net's block (a layer's units after BatchNorm and ReLU cut into ranges, each
added to the previous range's convolution), MixNet's mixed convolutions (a residual
stream cut into ranges of unequal widths, convolved by separate layers, concatenated,
cut again elsewhere, gated by a squeeze-excitation and added back to the stream),
InceptionNeXt's token mixer (the stream cut, ranges convolved depthwise, concatenated
back in order) and gMLP's gate (one half of a layer's activations times the other,
normed; the layer's outputs also read whole).

Each range is a space of its own: a permutation that keeps the function moves each
range's units among themselves, with every tensor of the cut space from the range's
first unit on (canon.core.unit_ranges).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn
from vision_models import vision

from canon.core import normalize, spec_from_module
from canon.core.paths import geodesic_path
from canon.core.units import unit_vectors
from canon.errors import UnsupportedModuleError

CHANNELS, SIDE, CLASSES = 3, 6, 3


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


class Res2Block(nn.Module):
    """A stem, then Res2Net's bottleneck: a 1 x 1 convolution to 4 ranges of 3 channels
    (BatchNorm, ReLU), the first three convolved 3 x 3 in turn, each after adding the
    previous one's output; the last passed as it is; all four read by a 1 x 1
    convolution added to the stem's output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv1, self.act1 = nn.Conv2d(8, 12, 1, bias=False), _bn_relu(12)
        self.convs = nn.ModuleList(nn.Conv2d(3, 3, 3, padding=1, bias=False) for _ in range(3))
        self.acts = nn.ModuleList(_bn_relu(3) for _ in range(3))
        self.conv3, self.bn3 = nn.Conv2d(12, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        x = F.relu(self.stem_bn(self.stem(x)))
        parts = torch.split(self.act1(self.conv1(x)), 3, dim=1)
        done: list[Tensor] = []
        sp = parts[0]
        for i, (conv, act) in enumerate(zip(self.convs, self.acts, strict=True)):
            sp = act(conv(sp if i == 0 else sp + parts[i]))
            done.append(sp)
        h = self.bn3(self.conv3(torch.cat([*done, parts[3]], dim=1)))
        out: Tensor = self.head(F.relu(h + x).mean(dim=(2, 3)))
        return out


class MixedBlock(nn.Module):
    """A stream of 8 channels cut into 3 and 5, each range its own 1 x 1 convolution (to 4
    and 6 channels), BatchNorm and ReLU of the 10 side by side, cut again into 2 and 8
    (across the two layers' units) for depthwise convolutions of two kernel sizes, a
    squeeze-excitation gate on the 10, then cut into 4 and 6 for two 1 x 1 convolutions
    back to 3 and 5 channels, normed and added to the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pw = nn.ModuleList([nn.Conv2d(3, 4, 1), nn.Conv2d(5, 6, 1)])
        self.act1 = _bn_relu(10)
        self.dw = nn.ModuleList([nn.Conv2d(2, 2, 3, padding=1, groups=2),
                                 nn.Conv2d(8, 8, 5, padding=2, groups=8)])  # fmt: skip
        self.act2 = _bn_relu(10)
        self.reduce, self.expand = nn.Conv2d(10, 4, 1), nn.Conv2d(4, 10, 1)
        self.pwl = nn.ModuleList([nn.Conv2d(4, 3, 1), nn.Conv2d(6, 5, 1)])
        self.bn3 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    @staticmethod
    def _mixed(x: Tensor, layers: nn.ModuleList, sizes: list[int]) -> Tensor:
        ranges = torch.split(x, sizes, dim=1)
        return torch.cat([layer(r) for layer, r in zip(layers, ranges, strict=True)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        x = self.stem_bn(self.stem(x))
        h = self.act1(self._mixed(x, self.pw, [3, 5]))
        h = self.act2(self._mixed(h, self.dw, [2, 8]))
        gate = self.expand(F.relu(self.reduce(h.mean(dim=(2, 3), keepdim=True))))
        h = h * torch.sigmoid(gate)
        h = self.bn3(self._mixed(h, self.pwl, [4, 6]))
        out: Tensor = self.head((h + x).mean(dim=(2, 3)))
        return out


class InceptionMixer(nn.Module):
    """A stream of 8 channels cut into 4 passed, 2 convolved 3 x 3 and 2 convolved 1 x 5
    (depthwise), concatenated back in order, normed and mixed by an MLP added back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 8, 3, padding=1)
        self.square = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.band = nn.Conv2d(2, 2, (1, 5), padding=(0, 2), groups=2)
        self.norm = nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        x = self.stem(x)
        kept, a, b = torch.split(x, [4, 2, 2], dim=1)
        h = self.norm(torch.cat([kept, self.square(a), self.band(b)], dim=1))
        x = x + self.fc2(F.gelu(self.fc1(h)))
        out: Tensor = self.head(x.mean(dim=(2, 3)))
        return out


class GatedMLP(nn.Module):
    """gMLP's channel MLP: up to 2 x 6 units, GELU, the second half normed and gating the
    first, down; the up layer's outputs are also read whole by a second layer."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.norm = nn.Linear(5, 12), nn.LayerNorm(6)
        self.down, self.whole = nn.Linear(6, 4), nn.Linear(12, 4)
        self.head = nn.Linear(4, CLASSES)
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.gelu(self.up(x))
        u, v = h.chunk(2, dim=-1)
        out: Tensor = self.head(torch.tanh(self.down(u * self.norm(v)) + self.whole(h)))
        return out


class DualPath(nn.Module):
    """DPN's dual paths: a residual path of 4 channels and a dense one growing by 2 a
    block, side by side into each block's layer, taken apart again by slices (the
    layer's first 4 outputs added to the residual path, the rest joining the dense)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 6, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(6 + 2 * i, 6, 1) for i in range(2))
        self.head = nn.Linear(10, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.stem(x))
        resid, dense = h[:, :4], h[:, 4:]
        for block in self.blocks:
            both = torch.cat([resid, dense], dim=1)
            out = F.relu(block(both))
            resid = both[:, :4] + out[:, :4]
            dense = torch.cat([both[:, 4:], out[:, 4:]], dim=1)
        out = self.head(torch.cat([resid, dense], dim=1).mean(dim=(2, 3)))
        return out


class GhostBlock(nn.Module):
    """GhostNet's ghost module: a 1 x 1 convolution to 4 channels and a depthwise one of
    those (each unit twice, side by side), the 8 taken whole by a slice, normed,
    convolved depthwise and added to a stream of 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 8, 3, padding=1)
        self.primary, self.cheap = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.norm, self.dw = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        s = self.stem(x)
        a = F.relu(self.primary(s))
        h = torch.cat([a, F.relu(self.cheap(a))], dim=1)[:, :8]
        out: Tensor = self.head((s + self.dw(self.norm(h))).mean(dim=(2, 3)))
        return out


class SplitAttention(nn.Module):
    """ResNeSt's split attention with a radix of 2: a grouped convolution to 2 parts of 4
    channels, the parts summed and pooled, a bottleneck to weights that a softmax spreads
    over the parts, the parts weighted by them and summed, added to the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS, 4, 3, padding=1)
        self.conv, self.bn = nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Conv2d(4, 3, 1), nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(4, CLASSES)
        self.input_shape = (CHANNELS, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        x = F.relu(self.stem(x))
        b = x.shape[0]
        parts = F.relu(self.bn(self.conv(x))).reshape(b, 2, 4, SIDE, SIDE)
        gap = parts.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        attn = self.fc2(F.relu(self.fc1(gap))).view(b, 1, 2, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(b, -1)
        h = (parts * attn.reshape(b, 2, 4, 1, 1)).sum(dim=1)
        out: Tensor = self.head((h + x).mean(dim=(2, 3)))
        return out


MODELS = {
    "res2net": Res2Block, "mixnet": MixedBlock, "inception": InceptionMixer,
    "gated": GatedMLP, "dpn": DualPath, "ghost": GhostBlock, "resnest": SplitAttention,
}  # fmt: skip


class RandomCuts(nn.Module):
    """A stream of 8 units cut at ``first`` (each range gating a layer of its own of the
    input, the products side by side added back), cut again at ``second`` (ranges across
    the first cut's), each range through ``tanh``, put side by side in the order
    ``order``, ``gated`` by a layer of the input, and read by the head."""

    def __init__(self, first: list[int], second: list[int], order: list[int], gated: bool) -> None:
        super().__init__()
        self.first, self.second, self.order = first, second, order
        self.stem = nn.Linear(5, 8)
        self.gate = nn.Linear(5, 8) if gated else None
        self.mix = nn.ModuleList(nn.Linear(5, n) for n in first)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.stem(x))
        parts = h.split(self.first, -1)
        h = h + torch.cat([m(x) * torch.sigmoid(parts[i]) for i, m in enumerate(self.mix)], -1)
        ranges = h.split(self.second, -1)
        z = torch.cat([torch.tanh(ranges[i]) for i in self.order], -1)
        if self.gate is not None:
            z = z * torch.sigmoid(self.gate(x))
        out: Tensor = self.head(z)
        return out


@st.composite
def _cuts(draw: st.DrawFn) -> RandomCuts:
    def sizes() -> list[int]:
        ends = draw(st.sets(st.integers(1, 7), max_size=3))
        bounds = [0, *sorted(ends), 8]
        return [b - a for a, b in itertools.pairwise(bounds)]

    first, second = sizes(), sizes()
    order = draw(st.permutations(range(len(second))))
    return RandomCuts(first, second, list(order), draw(st.booleans()))


@given(model=_cuts(), weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=12, deadline=None)
def test_any_cuts_keep_the_function(model: RandomCuts, weights: int, seed: int) -> None:
    """Whatever the two cuts and the order the ranges are put back in: random symmetries,
    normalization and the canonical form keep the class scores, and every one of the
    stem's rows is in exactly one group."""
    model = randomize(model, weights)
    spec = spec_from_module(model)
    assert_symmetries_keep_the_function(model, spec, state_of(model), _inputs(model, seed), seed)
    rows = sorted(
        r
        for g in spec.groups
        for p in g.producers
        if p.weight == "stem.weight"
        for r in range(p.start, p.start + g.size)
    )
    assert rows == list(range(8))


def _inputs(model: nn.Module, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed % 1000)
    return torch.randn(4, *model.input_shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kind", sorted(MODELS))
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=4, deadline=None)
def test_symmetries_keep_the_function(kind: str, weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form keep the class scores."""
    model = randomize(MODELS[kind](), weights)
    spec = spec_from_module(model)
    assert_symmetries_keep_the_function(model, spec, state_of(model), _inputs(model, seed), seed)


def _ranges(spec: object, tensor: str, axis: int = 0) -> dict[str, list[int]]:
    """For each group: where its units start along ``axis`` of ``tensor``."""
    found: dict[str, list[int]] = {}
    for g in spec.groups:  # type: ignore[attr-defined]
        for t in g.tensors:
            if (t.name, t.axis) == (tensor, axis):
                found.setdefault(g.name, []).append(t.start)
    return found


def test_res2net_ranges_join_the_convolutions_they_are_added_to() -> None:
    """Range 1 of conv1's units moves with conv 0's outputs, range 2 with conv 1's; range
    0 and range 3 alone; each carries its entries of conv1's BatchNorm."""
    spec = spec_from_module(Res2Block())
    assert _ranges(spec, "conv1.weight") == {
        "conv1@0": [0], "conv1@3": [3], "conv1@6": [6], "conv1@9": [9],
    }  # fmt: skip
    assert _ranges(spec, "act1.0.running_var") == _ranges(spec, "conv1.weight")
    (second,) = [g for g in spec.groups if g.name == "conv1@3"]
    assert {p.weight for p in second.producers} == {"conv1.weight", "convs.0.weight"}
    assert second.symmetry == "scale"


def test_mixnet_stream_is_cut_where_the_mixed_layers_meet() -> None:
    """The stream (the stem's channels) splits at 3: its two ranges join the outputs of
    the two last 1 x 1 convolutions; the 10 channels of the first two split at 2 and at
    4 (ranges 0-2, 2-4 and 4-10: the first layer's 4 units cut by the depthwise split),
    and the gate's layer makes the same ranges."""
    spec = spec_from_module(MixedBlock())
    assert _ranges(spec, "stem.weight") == {"stem@0": [0], "stem@3": [3]}
    pwl = {p.weight for g in spec.groups if g.name == "stem@3" for p in g.producers}
    assert pwl == {"stem.weight", "pwl.1.weight"}
    assert sorted(_ranges(spec, "expand.weight").values()) == [[0], [2], [4]]
    assert sorted(_ranges(spec, "act1.0.weight").values()) == [[0], [2], [4]]
    assert sorted(_ranges(spec, "pw.0.weight").values()) == [[0], [2]]


def test_a_stream_cut_and_concatenated_in_order_is_the_stream() -> None:
    """InceptionNeXt's: after the concatenation the norm and the MLP read the stream's
    ranges (the norm's weights, fc1's columns from each range's start)."""
    spec = spec_from_module(InceptionMixer())
    assert _ranges(spec, "norm.weight") == {"stem@0": [0], "stem@4": [4], "stem@6": [6]}
    assert _ranges(spec, "fc1.weight", axis=1) == _ranges(spec, "norm.weight")
    assert _ranges(spec, "fc2.weight") == _ranges(spec, "norm.weight")


def test_dual_paths_are_taken_apart_by_slices() -> None:
    """The residual path is the stem's first 4 channels, joined by each block's first 4
    outputs; each block's last 2 outputs stay a range of their own, read by the next
    block and the head from where the dense path puts them."""
    spec = spec_from_module(DualPath())
    (resid,) = [g for g in spec.groups if "stem.weight" in g.weights and g.size == 4]
    assert {(p.weight, p.start) for p in resid.producers} == {
        ("stem.weight", 0), ("blocks.0.weight", 0), ("blocks.1.weight", 0),
    }  # fmt: skip
    assert _ranges(spec, "head.weight", axis=1) == {
        resid.name: [0], "stem@4": [4], "blocks.0@4": [6], "blocks.1@4": [8],
    }  # fmt: skip


def test_a_ghost_modules_halves_added_to_a_stream_join_it_twice() -> None:
    """Both halves of the stream are the primary layer's units (each half added to one
    copy): one group, the stem's rows and the head's columns at 0 and 4, the depthwise
    filters and the norm's entries at 0 and 4."""
    spec = spec_from_module(GhostBlock())
    (group,) = [g for g in spec.groups if "primary.weight" in g.weights]
    assert sorted(p.start for p in group.producers if p.weight == "stem.weight") == [0, 4]
    assert sorted(o.start for o in group.outgoing if o.name == "head.weight") == [0, 4]
    assert sorted(c.start for c in group.carried if c.name == "dw.weight") == [0, 4]
    assert sorted(c.start for c in group.carried if c.name == "norm.running_var") == [0, 4]


def test_split_attentions_parts_move_alike() -> None:
    """The grouped convolution's two parts and the weights' two parts are summed and
    multiplied unit by unit, and added to the stem: one group of 4 holds the stem's rows
    and both parts' rows of each, at 0 and 4, in the convolution's 2 input groups."""
    spec = spec_from_module(SplitAttention())
    (parts,) = [g for g in spec.groups if "conv.weight" in g.weights]
    starts = sorted((p.weight, p.start) for p in parts.producers)
    assert starts == [
        ("conv.weight", 0), ("conv.weight", 4), ("fc2.weight", 0), ("fc2.weight", 4),
        ("stem.weight", 0),
    ]  # fmt: skip
    assert (parts.size, parts.blocks, parts.symmetry) == (4, 2, "none")


def test_halves_gating_each_other_move_together() -> None:
    """gMLP's halves join (a product of their units): one group of 6 with both halves of
    the up layer's rows, the layer reading the whole at both starts."""
    spec = spec_from_module(GatedMLP())
    (gate,) = [g for g in spec.groups if "up.weight" in g.weights]
    assert [p.start for p in gate.producers] == [0, 6]
    assert sorted(o.start for o in gate.outgoing if o.name == "whole.weight") == [0, 6]
    assert {c.name for c in gate.carried} == {"norm.weight", "norm.bias"}


def test_geodesics_keep_every_range_on_its_spheres() -> None:
    """Between two normalized Res2Net blocks the geodesic starts and ends exactly at
    them, and at every point between each unit on spheres keeps its rows' norm (in all
    of its producers, a range of one layer's among them: 1 per layer after BatchNorm)."""
    spec = spec_from_module(Res2Block())
    a, b = (normalize(state_of(randomize(Res2Block(), seed)), spec) for seed in (1, 2))
    path = geodesic_path(a, b, spec, torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64))
    for k, end in ((0, a), (3, b)):
        assert all(torch.equal(path.state(k)[n], end[n]) for n in a)
    ranged = [g for g in spec.groups if g.on_sphere and any(p.start for p in g.producers)]
    assert ranged
    for group in (g for g in spec.groups if g.on_sphere):
        ends = unit_vectors(a, group, effective=False).norm(dim=1)
        for k in (1, 2):
            norms = unit_vectors(path.state(k), group, effective=False).norm(dim=1)
            torch.testing.assert_close(norms, ends)


class NormedAfterTheCut(nn.Module):
    """A layer's activations cut at ``first``, each range read by a layer of its own, and
    the whole normed by a GroupNorm of 2 groups of 4 and read by the head."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first
        self.up, self.norm = nn.Linear(5, 8), nn.GroupNorm(2, 8)
        self.a, self.b = nn.Linear(first, CLASSES), nn.Linear(8 - first, CLASSES)
        self.head = nn.Linear(8, CLASSES)
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.up(x))
        a, b = h.split([self.first, 8 - self.first], dim=-1)
        out: Tensor = self.a(a) + self.b(b) + self.head(self.norm(h))
        return out


def test_a_group_norm_after_the_cut_keeps_its_groups() -> None:
    """Ranges that are its groups permute within them (the function kept); a cut
    across its groups is refused."""
    model = randomize(NormedAfterTheCut(4), 5)
    spec = spec_from_module(model)
    assert sorted((g.size, g.blocks) for g in spec.groups if "up.weight" in g.weights) == [
        (4, 1), (4, 1),
    ]  # fmt: skip
    assert_symmetries_keep_the_function(model, spec, state_of(model), _inputs(model, 3), 3)
    with pytest.raises(UnsupportedModuleError, match="across the groups"):
        spec_from_module(NormedAfterTheCut(3))


class AcrossTheCut(nn.Module):
    """A layer's activations cut into 2 and 6, and also sliced from 1 to 5."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.a, self.b = nn.Linear(5, 8), nn.Linear(2, 3), nn.Linear(6, 3)
        self.c = nn.Linear(4, 3)
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = F.relu(self.up(x))
        first, rest = h.split([2, 6], dim=-1)
        out: Tensor = self.a(first) + self.b(rest) + self.c(h[:, 1:5])
        return out


def test_a_range_across_a_cut_is_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match="across that cut"):
        spec_from_module(AcrossTheCut())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("res2net50_26w_4s", 32),
        ("mixnet_s", 32),
        ("inception_next_tiny", 64),
        ("rexnet_100", 32),
        ("focalnet_tiny_srf", 64),
        ("dpn68", 32),
        ("ghostnet_050", 32),
        ("resnest14d", 32),
    ],
)
def test_timms_models_with_ranges_keep_their_function(name: str, size: int) -> None:
    """timm's Res2Net, MixNet, InceptionNeXt, ReXNet (a shortcut added to the first
    channels of a block's output: `x[:, :c] += shortcut`), FocalNet (one gate per
    focal level sliced from a layer's outputs), DPN (dual paths), GhostNet (a layer's
    units and a depthwise convolution of them, side by side) and ResNeSt (split
    attention) on small images: random symmetries and canonical forms keep the logits of
    random weights (BatchNorm statistics random too), and a moved copy's canonical form
    is the original's."""
    _, timm = vision()
    torch.manual_seed(0)
    model = randomize(timm.create_model(name, num_classes=10, pretrained=False), 1)
    spec = spec_from_module(model, (3, size, size))
    assert any(p.start for g in spec.groups for p in g.producers)  # rows of a range
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    state = state_of(model)
    assert_symmetries_keep_the_function(model, spec, state, x.double(), seed=3)
