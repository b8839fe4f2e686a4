"""A fused query-key-value projection whose bias the forward joins from parts as it runs
(timm's BEiT, BEiT v2, EVA and Swin V2: ``F.linear(x, qkv.weight, torch.cat((q_bias,
k_bias, v_bias)))``, the key bias a buffer of zeros no file holds), written by hand.

The projection's outputs are cut into queries, keys and values; each part's bias is the
parameter joined at its rows, a tensor of its own (``Producer.bias_start``), and the
zeros need no moving. Symmetries scale and permute each part's rows and its bias alike.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn

from canon.core import Spec, random_symmetry, spec_from_module
from canon.errors import UnsupportedModuleError

PATCHES, PIXELS, WIDTH, HEADS, CLASSES = 4, 6, 8, 2, 3


class JoinedBiasViT(nn.Module):
    """Patches, one pre-norm attention block whose fused projection's bias is joined from
    the query bias, zeros and the value bias, an MLP, and a classifier on the mean of the
    patches. ``recorded``: the forward also branches on its input's shape, which torch.fx
    cannot trace, so canon records the graph by running it (the zeros a plain constant there)."""

    def __init__(self, recorded: bool = False) -> None:
        super().__init__()
        self.recorded = recorded
        self.patch = nn.Linear(PIXELS, WIDTH)
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.q_bias, self.v_bias = (
            nn.Parameter(torch.zeros(WIDTH)),
            nn.Parameter(torch.zeros(WIDTH)),
        )
        self.register_buffer("k_bias", torch.zeros(WIDTH), persistent=False)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.input_shape = (PATCHES, PIXELS)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        if self.recorded and x.shape[-1] != PIXELS:  # Python on a shape: not traceable
            raise ValueError(f"patches of {PIXELS} pixels expected")
        h = self.patch(x)
        b, n, _ = h.shape
        qkv = self.projected(self.norm1(h))
        q, k, v = qkv.reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, WIDTH)
        h = h + self.proj(y)
        h = h + self.down(F.gelu(self.up(self.norm2(h))))
        out: Tensor = self.head(h.mean(dim=1))
        return out

    def projected(self, h: Tensor) -> Tensor:
        """The fused projection of ``h``, its bias joined from parts."""
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        return F.linear(h, weight=self.qkv.weight, bias=bias)


@pytest.mark.parametrize("recorded", [False, True])
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=6, deadline=None)
def test_symmetries_keep_the_function(recorded: bool, weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form keep the class scores."""
    model = randomize(JoinedBiasViT(recorded), weights).double()
    model.k_bias.zero_()  # randomize draws buffers too: the key bias is zeros
    spec = spec_from_module(model)
    state = {t.name: state_of(model)[t.name] for t in spec.tensors}
    x = torch.randn(5, PATCHES, PIXELS, generator=torch.Generator().manual_seed(seed % 1000))
    x = x.double()
    assert not torch.equal(random_symmetry(state, spec, seed=seed)["q_bias"], state["q_bias"])
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


@pytest.mark.parametrize("recorded", [False, True])
def test_each_part_has_its_own_bias(recorded: bool) -> None:
    """The queries' producer is the projection's first rows with ``q_bias`` from its
    entry 0; the values', its last rows with ``v_bias`` from 0; the keys' rows have no
    bias; the zeros are no tensor of the spec. The spec's JSON keeps all of it."""
    spec = spec_from_module(JoinedBiasViT(recorded))
    assert "k_bias" not in {t.name for t in spec.tensors}
    made = {(p.weight, p.start, p.bias, p.bias_start) for g in spec.groups for p in g.producers}
    assert ("qkv.weight", 0, "q_bias", 0) in made
    assert ("qkv.weight", 2 * WIDTH, "v_bias", 0) in made
    (qk,) = [g for g in spec.groups if any(p.bias == "q_bias" for p in g.producers)]
    assert {(o.name, o.start) for o in qk.outgoing} == {("qkv.weight", WIDTH)}
    assert Spec.from_dict(spec.to_dict()) == spec


class Traps(nn.Module):
    """Joined biases canon cannot take apart with the projection's outputs."""

    def __init__(self, trap: str) -> None:
        super().__init__()
        self.trap = trap
        self.patch = nn.Linear(PIXELS, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.qk_bias = nn.Parameter(torch.zeros(2 * WIDTH))
        self.v_bias = nn.Parameter(torch.zeros(WIDTH))
        self.register_buffer("ones", torch.ones(WIDTH), persistent=False)
        self.head = nn.Linear(WIDTH if trap != "used-whole" else 3 * WIDTH, CLASSES)
        self.input_shape = (PATCHES, PIXELS)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.patch(x)
        b, n, _ = h.shape
        if self.trap == "ones":  # a buffer no file holds that is not zeros
            bias = torch.cat((self.qk_bias[:WIDTH], self.ones, self.v_bias))
        else:
            bias = torch.cat((self.qk_bias, self.v_bias))
        qkv = F.linear(h, weight=self.qkv.weight, bias=bias)
        if self.trap == "used-whole":
            out: Tensor = self.head(torch.relu(qkv).mean(dim=1))
            return out
        q, k, v = qkv.reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, WIDTH)
        out = self.head((h + y).mean(dim=1))
        return out


@pytest.mark.parametrize(
    ("trap", "words"),
    [
        ("parts-across-the-cut", "not the parts its outputs are cut into"),
        ("used-whole", "outputs are used whole"),
        ("ones", "used directly in forward"),
    ],
)
def test_look_alikes_are_refused(trap: str, words: str) -> None:
    """A bias part across queries and keys, a fused output used whole, and a part that is
    a buffer of ones are refused, each with its reason."""
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(Traps(trap))


class ZeroedKeyBiasViT(JoinedBiasViT):
    """:class:`JoinedBiasViT` with a fused projection of its own bias, of which a clone has
    the rows ``zeroed`` set to zero in place before each call (torchvision's Swin V2
    zeroes the keys' third so)."""

    def __init__(self, zeroed: slice) -> None:
        super().__init__()
        del self.q_bias, self.v_bias, self.k_bias  # the projection has a bias of its own
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.zeroed = zeroed

    def projected(self, h: Tensor) -> Tensor:
        """The fused projection of ``h``, with the rows ``zeroed`` of its bias zeroed."""
        bias = self.qkv.bias.clone()
        bias[self.zeroed].zero_()
        return F.linear(h, self.qkv.weight, bias)


@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=4, deadline=None)
def test_a_bias_with_a_third_zeroed_in_place_moves_with_its_units(weights: int, seed: int):
    """A clone of the projection's bias with the keys' third zeroed in place: the bias is
    the projection's own, every third of it moved with its units (the parameter's key
    third, random here, is never read); symmetries keep the function."""
    model = randomize(ZeroedKeyBiasViT(slice(WIDTH, 2 * WIDTH)), weights).double()
    spec = spec_from_module(model)
    state = {t.name: state_of(model)[t.name] for t in spec.tensors}
    assert "qkv.bias" in state and state["qkv.bias"][WIDTH : 2 * WIDTH].abs().sum() > 0
    x = torch.randn(5, PATCHES, PIXELS, generator=torch.Generator().manual_seed(seed % 1000))
    assert_symmetries_keep_the_function(model, spec, state, x.double(), seed)


@pytest.mark.parametrize("zeroed", [slice(WIDTH, WIDTH + WIDTH // 2), slice(0, 2 * WIDTH)])
def test_a_bias_zeroed_in_place_across_its_parts_is_refused(zeroed: slice) -> None:
    """Zeroed rows that are not one whole third could be moved onto rows that are read:
    refused."""
    with pytest.raises(UnsupportedModuleError, match="linear"):
        spec_from_module(ZeroedKeyBiasViT(zeroed))
