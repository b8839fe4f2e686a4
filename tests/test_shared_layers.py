"""One layer applied at every depth (ALBERT's), and a factorized token embedding (a table
narrower than the stream, mapped up by a layer), written by hand (no library).

A layer called again holds the same weights, so the units it reads are the ones it read
before and the units it makes are the ones it made: every call's spaces join, and the
layer's groups are listed once. A table read only by the layer that maps it up has no
layer among its producers: it is moved by no symmetry, as the network's input is not.
A language-model head whose output layer is that table (tied) reads the units the table
writes, so the head's projection makes the table's units. (A layer called on the input
and then on hidden units is refused: tests/test_spec.py.)
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

TOKENS, LENGTH, NARROW, WIDTH, HEADS, DEPTH, CLASSES = 20, 6, 4, 8, 2, 3, 3


class SharedBlock(nn.Module):
    """Post-norm attention and MLP (ALBERT's)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)

    def forward(self, h: Tensor) -> Tensor:
        """The block's output."""
        b, t, _ = h.shape
        q, k, v = (p(h).view(b, t, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, WIDTH)
        h = self.norm1(h + self.o(y))
        out: Tensor = self.norm2(h + self.down(F.gelu(self.up(h))))
        return out


class SharedEncoder(nn.Module):
    """A narrow token table and positions, normed and mapped up to the stream; one block
    at every depth; then either a classifier on the mean over tokens, or (``tied``) a
    language-model head: a projection down to the table's width, a norm, and the table
    as output layer, read at the last position. With ``decoder_first`` the output layer is
    registered before the table, so the state dict keeps the tied tensor under the output
    layer's name (XLM-RoBERTa's does)."""

    main_input_name = "input_ids"  # token ids, as transformers' models say

    def __init__(self, tied: bool, decoder_first: bool = False) -> None:
        super().__init__()
        self.tied = tied
        if decoder_first:
            self.decoder = nn.Linear(NARROW, TOKENS)
        self.tokens = nn.Embedding(TOKENS, NARROW)
        self.positions = nn.Embedding(LENGTH, NARROW)
        self.embed_norm = nn.LayerNorm(NARROW)
        self.up_map = nn.Linear(NARROW, WIDTH)
        self.block = SharedBlock()
        if tied:
            self.dense, self.head_norm = nn.Linear(WIDTH, NARROW), nn.LayerNorm(NARROW)
            if not decoder_first:
                self.decoder = nn.Linear(NARROW, TOKENS)
            self.decoder.weight = self.tokens.weight
        else:
            self.head = nn.Linear(WIDTH, CLASSES)
        self.input_shape = (LENGTH,)

    def forward(self, ids: Tensor) -> Tensor:
        """Class scores, or the next token's logits."""
        e = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        h = self.up_map(self.embed_norm(e))
        for _ in range(DEPTH):
            h = self.block(h)
        if self.tied:
            out: Tensor = self.decoder(self.head_norm(F.gelu(self.dense(h[:, -1]))))
        else:
            out = self.head(h.mean(dim=1))
        return out


TIES = [(False, False), (True, False), (True, True)]


@pytest.mark.parametrize(("tied", "decoder_first"), TIES)
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=5, deadline=None)
def test_symmetries_keep_the_function(
    tied: bool, decoder_first: bool, weights: int, seed: int
) -> None:
    """Random symmetries, normalization and the canonical form keep the outputs."""
    model = randomize(SharedEncoder(tied, decoder_first), weights).double()
    spec = spec_from_module(model)
    state = state_of(model)
    state = {t.name: state[t.name] for t in spec.tensors}
    x = torch.randint(0, TOKENS, (5, LENGTH), generator=torch.Generator().manual_seed(seed))
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


@pytest.mark.parametrize(("tied", "decoder_first"), TIES)
def test_the_shared_layer_has_its_groups_once(tied: bool, decoder_first: bool) -> None:
    """One stream, one attention's two groups and one MLP group, each listing the shared
    layers once. The narrow table moves only when the tied head's projection makes its
    units; it is then carried by that group along its columns, under the name the state
    dict keeps, and there is no output layer to scale."""
    spec = spec_from_module(SharedEncoder(tied, decoder_first))
    assert sorted(g.name for g in spec.groups if g.link) == ["block.q", "block.v"]
    (mlp,) = [g for g in spec.groups if g.name == "block.up"]
    assert [p.weight for p in mlp.producers] == ["block.up.weight"]
    assert [o.name for o in mlp.outgoing] == ["block.down.weight"]
    grouped = {(t.name, t.axis) for g in spec.groups for t in g.tensors}
    table = "decoder.weight" if decoder_first else "tokens.weight"
    assert ((table, 1) in grouped) == tied
    assert (("positions.weight", 1) in grouped) == tied
    assert (spec.output is None) == tied
    if tied:
        (narrow,) = [g for g in spec.groups if any(p.weight == "dense.weight" for p in g.producers)]
        assert {c.name for c in narrow.carried} >= {table, "embed_norm.weight"}
        assert all(o.name != table for o in narrow.outgoing)
