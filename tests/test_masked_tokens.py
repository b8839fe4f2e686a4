"""Vision transformers that replace masked patches by a learned token (DINOv2, BEiT), read
the class token next to the mean of the patches, or add a relative position bias
gathered from a table to their attention scores (BEiT), written by hand (no library).

The mask comes from the input, so it is the same for every unit: the mask token moves
with the residual stream's units, and multiplying the units by the mask is linear in
each of them. The class token and the patches' mean side by side hold every unit twice:
the classifier's columns of both copies move together. A bias table gathered by an index
is computed from parameters alone: no symmetry moves it, and as it differs between
heads, the heads stay in place.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_same_function, randomize, state_of
from torch import Tensor, nn

from canon.core import (
    apply_alignment,
    canonicalize,
    match_incoming,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.trace import load_into
from canon.errors import UnsupportedModuleError

PATCHES, PIXELS, WIDTH, HEADS, CLASSES = 4, 6, 8, 2, 3


class MaskedViT(nn.Module):
    """Patch embeddings, a class token, a mask token in place of the masked patches
    (``blend``: ``x * (1 - m) + token * m``, DINOv2's; ``choose``: ``torch.where``),
    positions, one pre-norm attention block and MLP, and a classifier that reads the class
    token next to the mean of the patches."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.patch = nn.Linear(PIXELS, WIDTH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.mask_token = nn.Parameter(torch.zeros(1, WIDTH))
        self.positions = nn.Parameter(torch.zeros(1, PATCHES + 1, WIDTH))
        self.norm1, self.norm2, self.norm = (nn.LayerNorm(WIDTH) for _ in range(3))
        self.qkv, self.o = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.head = nn.Linear(2 * WIDTH, CLASSES)
        self.input_shape = (PATCHES, PIXELS)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Class scores; ``mask`` (batch, patches) marks the patches to replace."""
        if mask is None:
            mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        e = self.patch(x)
        if self.how == "blend":
            m = mask.unsqueeze(-1).type_as(e)
            e = e * (1 - m) + self.mask_token.expand(e.shape[0], e.shape[1], -1) * m
        elif self.how == "cast":  # DINOv2 with registers: the token cast to e's dtype
            e = torch.where(mask.unsqueeze(-1), self.mask_token.to(e.dtype).unsqueeze(0), e)
        else:
            e = torch.where(mask.unsqueeze(-1), self.mask_token.unsqueeze(0), e)
        h = torch.cat((self.cls_token.expand(e.shape[0], -1, -1), e), dim=1) + self.positions
        b, t, _ = h.shape
        q, k, v = (
            p.view(b, t, HEADS, -1).transpose(1, 2) for p in self.qkv(self.norm1(h)).chunk(3, -1)
        )
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, WIDTH)
        h = h + self.o(y)
        h = self.norm(h + self.down(F.gelu(self.up(self.norm2(h)))))
        features = torch.cat((h[:, 0], h[:, 1:].mean(dim=1)), dim=-1)
        out: Tensor = self.head(features)
        return out


def _run(model: nn.Module, state: dict[str, Tensor], x: Tensor, mask: Tensor) -> Tensor:
    load_into(model, state)
    with torch.no_grad():
        out: Tensor = model(x, mask)
    return out


def _inputs(seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, PATCHES, PIXELS, generator=gen, dtype=torch.float64)
    return x, torch.rand(5, PATCHES, generator=gen) > 0.5


@pytest.mark.parametrize("how", ["blend", "choose", "cast"])
def test_the_mask_token_moves_with_the_stream_and_the_copies_with_each_other(how: str) -> None:
    """The mask token is carried by the residual stream's group (along its units); the
    classifier reads each stream unit twice, in two runs of the stream's width."""
    spec = spec_from_module(MaskedViT(how))
    stream = spec.group("patch")
    assert {(c.name, c.axis) for c in stream.carried} >= {
        ("mask_token", 1),
        ("cls_token", 2),
        ("positions", 2),
    }
    (read,) = [o for o in stream.outgoing if o.name == "head.weight"]
    assert (read.axis, read.repeat, read.head) == (1, 2, WIDTH)


@pytest.mark.parametrize("how", ["blend", "choose", "cast"])
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=6, deadline=None)
def test_symmetries_keep_the_function_on_masked_inputs(how: str, weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form keep the class scores of
    inputs with masked patches, which read the mask token, and of unmasked ones."""
    model = randomize(MaskedViT(how), weights).double()
    spec = spec_from_module(model)
    state = state_of(model)
    x, mask = _inputs(seed % 1000)
    for m in (mask, torch.zeros_like(mask)):
        y = _run(model, state, x, m)
        moved = random_symmetry(state, spec, seed=seed)
        assert_same_function(_run(model, moved, x, m), y, rtol=1e-9)
        assert_same_function(_run(model, normalize(state, spec), x, m), y, rtol=1e-9)
        aligned = canonicalize(moved, spec, reference=state, method="weight")
        assert_same_function(_run(model, aligned, x, m), y, rtol=1e-9)


def test_a_planted_symmetry_is_recovered_mask_token_included() -> None:
    """Incoming matching undoes a random symmetry exactly, the mask token's entries too."""
    model = randomize(MaskedViT("blend"), 0).double()
    spec = spec_from_module(model)
    state = normalize(state_of(model), spec)
    planted = normalize(random_symmetry(state, spec, seed=3), spec)
    assert not torch.equal(planted["mask_token"], state["mask_token"])
    aligned = apply_alignment(planted, match_incoming(planted, state, spec), spec)
    assert max(float((aligned[k] - state[k]).abs().max()) for k in state) < 1e-9


class Traps(nn.Module):
    """Look-alikes of the patterns above that are not what they seem."""

    def __init__(self, trap: str) -> None:
        super().__init__()
        self.trap = trap
        self.patch, self.other = nn.Linear(PIXELS, WIDTH), nn.Linear(PIXELS, WIDTH)
        if trap == "token-times-pixels":
            self.mask_token = nn.Parameter(torch.zeros(1, WIDTH))
        self.head = nn.Linear(2 * WIDTH if trap == "cat-two-spaces" else WIDTH, CLASSES)
        self.input_shape = (PATCHES, PIXELS)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores from the mean over patches."""
        e = self.patch(x)
        if self.trap == "token-times-pixels":  # the factor varies along the token's axis
            e = e + self.mask_token * x.repeat(1, 1, 2)[..., :WIDTH]
        elif self.trap == "units-times-pixels":  # a factor that differs between units
            e = e * x.repeat(1, 1, 2)[..., :WIDTH]
        elif self.trap == "cat-two-spaces":  # two layers' units side by side: not copies
            e = torch.cat((e, self.other(x)), dim=-1)
        elif self.trap == "two-layers-chosen":  # a choice between two layers' units
            e = torch.where(torch.zeros_like(x[..., :1], dtype=torch.bool), self.other(x), e)
        out: Tensor = self.head(e.mean(dim=1))
        return out


@pytest.mark.parametrize(
    ("trap", "words"),
    [
        ("token-times-pixels", "multiplied by the network's input"),
        ("units-times-pixels", "combines the network's input with hidden units"),
        ("two-layers-chosen", "chooses between hidden units and another tensor"),
    ],
)
def test_look_alikes_are_refused(trap: str, words: str) -> None:
    """Each is refused with its reason, never followed as a mask token or as copies."""
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(Traps(trap))


def test_two_layers_side_by_side_are_not_copies() -> None:
    """Two layers' units concatenated keep their own groups: the classifier reads each
    once, from where the concatenation put it (tests/test_side_by_side.py)."""
    spec = spec_from_module(Traps("cat-two-spaces"))
    reads = {
        g.name: (o.start, o.repeat)
        for g in spec.groups
        for o in g.outgoing
        if o.name == "head.weight"
    }
    assert reads == {"patch": (0, 1), "other": (WIDTH, 1)}


class RelativeBiasViT(nn.Module):
    """Patches, one attention block whose scores get a bias per head and pair of
    positions, gathered from a learned table by a fixed index (BEiT's relative position
    bias), and a classifier on the mean of the patches. ``stream``: the gathered table
    is added to the residual stream instead (a look-alike canon refuses)."""

    def __init__(self, stream: bool = False) -> None:
        super().__init__()
        self.stream = stream
        self.patch = nn.Linear(PIXELS, WIDTH)
        distances = 2 * PATCHES  # one more: a special distance
        self.table = nn.Parameter(torch.zeros(distances, WIDTH if stream else HEADS))
        positions = torch.arange(PATCHES)
        index = positions[:, None] - positions[None, :] + PATCHES
        self.register_buffer("index", index, persistent=False)
        self.qkv, self.o = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.input_shape = (PATCHES, PIXELS)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.patch(x)
        b, t, _ = h.shape
        # BEiT's table: its last row (a special distance) cut off and put back first
        table = torch.cat((self.table[-1:], self.table[:-1]))
        bias = table[self.index.view(-1)].view(t, t, -1).permute(2, 0, 1).contiguous()
        if self.stream:
            h = h + bias.mean(dim=-1).transpose(0, 1)
        q, k, v = (p.view(b, t, HEADS, -1).transpose(1, 2) for p in self.qkv(h).chunk(3, -1))
        scores = q @ k.transpose(-2, -1) / (WIDTH // HEADS) ** 0.5
        if not self.stream:
            scores = scores + bias.unsqueeze(0)
        y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, WIDTH)
        out: Tensor = self.head((h + self.o(y)).mean(dim=1))
        return out


def test_a_relative_position_bias_keeps_the_heads_in_place() -> None:
    """The gathered bias differs between heads: each attention group permutes only within
    its heads (in blocks); symmetries, normalization and the canonical form keep the class
    scores, and the bias table never moves."""
    model = randomize(RelativeBiasViT(), 0).double()
    spec = spec_from_module(model)
    for name in ("qkv", f"qkv@{2 * WIDTH}"):
        group = spec.group(name)
        assert (group.heads, group.blocks, group.link) == (1, HEADS, "")
    state = state_of(model)
    x, _ = _inputs(1)
    load_into(model, state)
    with torch.no_grad():
        y = model(x)
    for seed in range(3):
        moved = random_symmetry(state, spec, seed=seed)
        assert torch.equal(moved["table"], state["table"])
        aligned = canonicalize(moved, spec, reference=state, method="weight")
        for weights in (moved, aligned, normalize(state, spec)):
            load_into(model, weights)
            with torch.no_grad():
                assert_same_function(model(x), y, rtol=1e-9)


def test_a_gathered_table_added_to_hidden_units_is_refused() -> None:
    """A table gathered by an index and added to the residual stream would have to move
    with the stream's units, which canon cannot follow through the gather: refused."""
    with pytest.raises(UnsupportedModuleError, match="parameter `table` is used directly"):
        spec_from_module(RelativeBiasViT(stream=True))
