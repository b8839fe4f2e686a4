"""GPT-OSS's attention, written by hand (no library): rotary halves cut by ``chunk`` and
attention sinks.

Each head's dimensions are cut in two by ``chunk``; each half is multiplied by the rotary
angles and the two are mixed (``x1 * cos - x2 * sin``, ``x2 * cos + x1 * sin``) and
joined again: the dimensions are pinned in their heads. A learned constant per head (its
sink) is joined after the keys, the scores' largest entry taken off (computed from the
scores, it moves with them), the softmax taken, and the sink's column dropped: the sinks
move with their heads, a group of their own linked to the heads' order (with
grouped-query attention, each key head's run of query heads' sinks). A ``chunk`` whose
parts are used otherwise is a fused projection's queries, keys and values, as before.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn

from canon.core import Spec, random_symmetry, spec_from_module
from canon.errors import UnsupportedModuleError

TOKENS, WIDTH, HEADS, D, VOCAB = 6, 16, 4, 4, 20


def _turn(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """GPT-OSS's rotary embedding: the halves of every head, mixed by the angles."""
    first, second = torch.chunk(x, 2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


class SinkAttention(nn.Module):
    """One attention layer with rotary halves and a sink per head (GPT-OSS's eager
    attention); with ``keep_sink`` the first key's column is dropped instead of the sink's
    (refused)."""

    def __init__(self, keep_sink: bool = False) -> None:
        super().__init__()
        self.q = nn.Linear(WIDTH, HEADS * D)
        self.k = nn.Linear(WIDTH, HEADS * D)
        self.v = nn.Linear(WIDTH, HEADS * D)
        self.o = nn.Linear(HEADS * D, WIDTH)
        self.sinks = nn.Parameter(torch.zeros(HEADS))
        self.keep_sink = keep_sink
        angles = torch.arange(TOKENS)[:, None] * 10.0 ** -torch.arange(D // 2)[None]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, HEADS, D).transpose(1, 2) for p in (self.q, self.k, self.v))
        cos, sin = self.cos[:t].to(x.dtype), self.sin[:t].to(x.dtype)
        q, k = _turn(q, cos, sin), _turn(k, cos, sin)
        scores = q @ k.transpose(2, 3) / math.sqrt(D)
        sinks = self.sinks.reshape(1, -1, 1, 1).expand(b, -1, t, -1)
        joined = torch.cat([scores, sinks], dim=-1)
        joined = joined - joined.max(dim=-1, keepdim=True).values
        probs = F.softmax(joined, dim=-1)
        probs = probs[..., 1:] if self.keep_sink else probs[..., :-1]
        if self.keep_sink:  # the sink weighs the last token's value, the first's weighs none
            v = v.roll(-1, dims=2)
        out = (probs @ v).transpose(1, 2).reshape(b, t, HEADS * D)
        out_: Tensor = self.o(out)
        return out_


class Model(nn.Module):
    """Tokens, one residual sink-attention block under a LayerNorm, a read-out of the
    sequence's mean."""

    input_shape = (TOKENS,)
    main_input_name = "input_ids"

    def __init__(self, keep_sink: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.attn = SinkAttention(keep_sink)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        h = h + self.attn(self.norm(h))
        out: Tensor = self.head(h).mean(1)
        return out


def _spec() -> tuple[Model, Spec]:
    model = Model().double().eval()
    return model, spec_from_module(model)


def test_the_sinks_move_with_their_heads_whose_dimensions_are_pinned() -> None:
    """One sink per head, a parameter: a group of its own linked to the heads' order, each
    sink in its head's place; the rotary halves pin the query and key dimensions in their
    heads (heads only); the values' dimensions permute within their head. A random
    symmetry moves the sinks with the heads."""
    _, spec = _spec()
    queries, values, sinks = (spec.group(n) for n in ("attn.q", "attn.v", "attn.sinks"))
    assert queries.link and queries.link == values.link == sinks.link
    assert (queries.heads, values.heads, sinks.heads) == (HEADS, HEADS, HEADS)
    assert queries.heads_only and not values.heads_only and sinks.heads_only
    assert sinks.size == HEADS and {t.name for t in sinks.tensors} == {"attn.sinks"}
    state = {t.name: torch.randn(t.shape, dtype=torch.float64) for t in spec.tensors}
    moved = [random_symmetry(state, spec, seed=s) for s in range(4)]
    assert any(not torch.equal(m["attn.sinks"], state["attn.sinks"]) for m in moved)


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=10, deadline=None)
def test_symmetries_keep_the_function(seed: int) -> None:
    """Random symmetries, normalization and canonical forms keep the logits."""
    model, spec = _spec()
    gen = torch.Generator().manual_seed(seed % 1000)
    state = {t.name: torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in spec.tensors}
    x = torch.randint(0, VOCAB, (5, TOKENS), generator=gen)
    assert_symmetries_keep_the_function(model, spec, state, x, seed, ("weight", "incoming"))


def test_the_sinks_column_must_be_dropped() -> None:
    """Scores that hold the sinks' column and not a key's are refused."""
    with pytest.raises(UnsupportedModuleError, match="unsupported op `getitem` on attention"):
        spec_from_module(Model(keep_sink=True).double())


def test_sinks_held_in_a_buffer_keep_the_heads_in_place() -> None:
    """Sinks that are no parameter (a buffer) move with no symmetry: the heads stay in
    place, each one's dimensions in its own block."""
    model = Model().double().eval()
    sinks = model.attn.sinks.detach().clone()
    del model.attn.sinks
    model.attn.register_buffer("sinks", sinks)
    spec = spec_from_module(model)
    queries, values = spec.group("attn.q"), spec.group("attn.v")
    assert not queries.link and not values.link and values.blocks == HEADS
    assert all(g.name != "attn.sinks" for g in spec.groups)
