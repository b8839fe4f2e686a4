"""GPT-OSS's attention, written by hand (no library): rotary halves cut by ``chunk`` and
attention sinks.

Each head's dimensions are cut in two by ``chunk``; each half is multiplied by the rotary
angles and the two are mixed (``x1 * cos - x2 * sin``, ``x2 * cos + x1 * sin``) and
joined again: the dimensions are pinned in their heads. A learned constant per head (its
sink) is joined after the keys, the scores' largest entry taken off, the softmax taken,
and the sink's column dropped: the heads stay in place. A ``chunk`` whose parts are used
otherwise is a fused projection's queries, keys and values, as before.
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

from canon.core import Spec, spec_from_module
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


def test_the_heads_stay_and_their_dimensions_are_pinned() -> None:
    """The sinks differ between heads, so the heads stay in place (no link); the rotary
    halves pin the query and key dimensions in their heads (each its own block: nothing
    moves); the values' dimensions permute within their head; the sinks are in no group."""
    _, spec = _spec()
    queries, values = spec.group("attn.q"), spec.group("attn.v")
    assert not queries.link and not values.link
    assert (queries.blocks, values.blocks) == (HEADS * D, HEADS)
    assert {t.name for g in spec.groups for t in g.tensors}.isdisjoint({"attn.sinks"})


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
