"""Attention whose projections are laid out as GPT-NeoX, Persimmon, StableLM and Qwen3
lay them out, written by hand (no library needed).

- GPT-NeoX views its fused projection as (heads, 3 * d) and chunks every head into its
  query, key and value dimensions: the queries are rows h * 3d + j of the fused weight,
  interleaved with the keys and values head by head. Persimmon views it as
  (heads, 3, d) and picks ``[..., i, :]``: the same rows.
- A partial rotary embedding turns only the first dimensions of each head; GPT-J's and
  Cohere's turn neighbouring pairs (``stack((-x[..., 1::2], x[..., ::2]), -1)``).
- A norm over each head's dimensions (the query/key norms of Qwen3 and Persimmon)
  shares its weights between heads.
- Phi-3 slices its fused projection (``qkv[..., :q]``) into contiguous parts;
  GPT-BigCode splits it after an ``unsqueeze(1)`` into queries and one key and one
  value head (multi-query attention).
- Falcon-40B views its fused projection as (groups, heads per group + 2, d): each key/value
  group's query heads, then its key head and its value head, picked by a range and by
  lists, the key and value broadcast to the group's query heads.
- BLOOM merges the batch and the heads into one axis for ``baddbmm`` (adding ALiBi's
  per-head bias, which keeps the heads in place) and ``bmm``.
- Falcon views its fused multi-query projection as (heads + 2, d) and picks the query
  heads (``[..., :-2, :]``), the key head (``[..., [-2], :]``) and the value head, which
  attention broadcasts to every query head.
- Eager grouped-query attention repeats each key/value head for the query heads that
  share it (transformers' ``repeat_kv``) before ``softmax(q @ k^T) @ v``, its scores
  soft-capped by a tanh (Gemma 2) and masked by ``torch.where`` (GPT-Neo).

Each keeps the network's function under canon's symmetries, and canon recovers a
planted symmetry by weight, incoming and activation matching.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import (
    assert_same_function,
    assert_symmetries_keep_the_function,
    outputs,
    randomize,
    state_of,
)
from torch import Tensor, nn
from vision_models import small_timm_vit

from canon.core import (
    Spec,
    apply_alignment,
    canonicalize,
    match_incoming,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.paths import geodesic_path
from canon.core.trace import load_into
from canon.engine.matching import match_activations
from canon.errors import UnsupportedModuleError

WIDTH, HEADS, TOKENS, VOCAB = 16, 4, 6, 11


def _rotate_half(x: Tensor, half: int) -> Tensor:
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotate_pairs(x: Tensor) -> Tensor:
    """GPT-J's rotate_every_two: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def _partial_rotary(x: Tensor, turned: int, pairs: bool = False) -> Tensor:
    """Rotary position embedding of the first ``turned`` dimensions of every head, turned
    as two halves (Llama, GPT-NeoX) or as neighbouring pairs (``pairs``: GPT-J, Cohere)."""
    positions = torch.arange(x.shape[-2], dtype=x.dtype)
    freqs = 1.0 / 10000 ** (torch.arange(0, turned, 2, dtype=x.dtype) / turned)
    angles = torch.cat([positions[:, None] * freqs] * 2, dim=-1)
    rot, rest = x[..., :turned], x[..., turned:]
    if pairs:
        angles = (positions[:, None] * freqs).repeat_interleave(2, dim=-1)
        rot = rot * angles.cos() + _rotate_pairs(rot) * angles.sin()
    else:
        rot = rot * angles.cos() + _rotate_half(rot, turned // 2) * angles.sin()
    return torch.cat((rot, rest), dim=-1)


class Block(nn.Module):
    """One pre-norm attention block and MLP on a residual stream.

    ``layout``: ``chunk`` (GPT-NeoX), ``pick`` (Persimmon), ``slice`` (Phi-3) or
    ``separate`` (three projections). ``turned``: the rotated dimensions of each head (0:
    no rotary).
    ``norm``: ``head``, a LayerNorm over each head's dimensions of the queries and keys
    (Qwen3), or ``projection``, over all of them before the view into heads (OLMo 2).
    ``kv_heads`` < HEADS (separate projections only): grouped-query attention, written
    eagerly with ``repeat_kv`` and soft-capped scores.
    """

    def __init__(self, layout: str, turned: int, norm: str, kv_heads: int, pairs: bool) -> None:
        super().__init__()
        self.layout, self.turned, self.d = layout, turned, WIDTH // HEADS
        self.pairs = pairs
        self.kv_heads = kv_heads
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        if layout == "separate":
            self.q = nn.Linear(WIDTH, WIDTH)
            self.k, self.v = (nn.Linear(WIDTH, kv_heads * self.d) for _ in range(2))
        else:  # multi-query: one key head and one value head after the queries
            one_kv = layout in ("mqa", "falcon", "split")
            grouped = layout in ("grouped", "grouped-view")
            width = WIDTH + 2 * kv_heads * self.d if grouped else 3 * WIDTH
            self.qkv = nn.Linear(WIDTH, WIDTH + 2 * self.d if one_kv else width)
        self.norm = norm
        widths = {"head": (self.d, self.d), "projection": (WIDTH, kv_heads * self.d)}
        if norm:
            self.q_norm, self.k_norm = (nn.LayerNorm(w) for w in widths[norm])
        self.o = nn.Linear(WIDTH, WIDTH)
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        if self.layout == "chunk":
            qkv = self.qkv(x).view(b, t, HEADS, 3 * self.d).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            return q, k, v
        if self.layout == "mqa":  # GPT-BigCode: one key/value head, (batch, 1, tokens, d)
            q, k, v = self.qkv(x).unsqueeze(1).split((WIDTH, self.d, self.d), dim=3)
            return q.view(b, t, HEADS, self.d).transpose(1, 2), k, v
        if self.layout == "grouped":  # (groups, heads per group + 2, d): Falcon-40B's
            per = HEADS // self.kv_heads
            fused = self.qkv(x).view(b, t, self.kv_heads, per + 2, self.d)
            q, k, v = fused[:, :, :, :-2], fused[:, :, :, [-2]], fused[:, :, :, [-1]]
            k, v = torch.broadcast_to(k, q.shape), torch.broadcast_to(v, q.shape)
            q, k, v = (h.flatten(2, 3).transpose(1, 2) for h in (q, k, v))
            return q, k, v
        if self.layout in ("split", "unbind", "grouped-view"):  # newer Falcon code
            fused = self.qkv(x).view(b, t, -1, self.d)
            if self.layout == "split":
                q, k, v = fused.split([HEADS, 1, 1], dim=-2)
            elif self.layout == "unbind":
                q, k, v = fused.unflatten(-2, (HEADS, 3)).unbind(-2)
            else:
                grouped = fused.view(b, t, self.kv_heads, -1, self.d)
                q, k, v = (
                    grouped[..., :-2, :].flatten(-3, -2),
                    grouped[..., -2, :],
                    grouped[..., -1, :],
                )
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.layout == "falcon":  # (heads + 2, d): query heads, then a key and a value
            fused = self.qkv(x).view(b, t, HEADS + 2, self.d)
            parts = fused[..., :-2, :], fused[..., [-2], :], fused[..., [-1], :]
            q, k, v = (p.transpose(1, 2) for p in parts)
            return q, k, v
        if self.layout == "slice":
            qkv = self.qkv(x)
            parts = qkv[..., :WIDTH], qkv[..., WIDTH : 2 * WIDTH], qkv[..., 2 * WIDTH :]
            q, k, v = (p.view(b, t, HEADS, self.d).transpose(1, 2) for p in parts)
            return q, k, v
        if self.layout in ("pick", "bloom"):
            fused = self.qkv(x).view(b, t, HEADS, 3, self.d)
            parts = fused[..., 0, :], fused[..., 1, :], fused[..., 2, :]
            q, k, v = (p.transpose(1, 2) for p in parts)
            return q, k, v
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.norm == "projection":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, HEADS, self.d).transpose(1, 2)
        k, v = (h.view(b, t, self.kv_heads, self.d).transpose(1, 2) for h in (k, v))
        return q, k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.layout == "grouped-view":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if self.layout == "split":  # the one key/value head broadcast
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.layout == "grouped" or (self.kv_heads == HEADS and self.layout != "bloom"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.layout == "mqa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if self.layout == "bloom":  # batch and heads merged; ALiBi added by baddbmm
            b, h, t, d = q.shape
            q, k, v = (x.reshape(b * h, t, d) for x in (q, k, v))
            slopes = 2.0 ** -torch.arange(1, h + 1, dtype=q.dtype)
            alibi = (slopes[:, None] * torch.arange(t, dtype=q.dtype)).repeat(b, 1)[:, None]
            scores = alibi.baddbmm(batch1=q, batch2=k.transpose(1, 2), beta=1.0, alpha=d**-0.5)
            causal = torch.ones(t, t, dtype=torch.bool).tril()
            scores = scores.view(b, h, t, t).masked_fill(~causal, -1e9)
            probs = torch.softmax(scores, dim=-1).view(b * h, t, t)
            return torch.bmm(probs, v).view(b, h, t, d)
        if self.layout == "falcon" and self.turned:  # the one key/value head broadcast
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.layout == "falcon":  # the same, written eagerly
            causal = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool).tril()
            scores = (q @ k.transpose(-1, -2) / self.d**0.5).masked_fill(~causal, -1e9)
            return torch.softmax(scores, dim=-1) @ v
        b, _, t, d = k.shape
        n = HEADS // self.kv_heads
        k, v = (h[:, :, None, :, :].expand(b, self.kv_heads, n, t, d) for h in (k, v))
        k, v = (h.reshape(b, HEADS, t, d) for h in (k, v))
        scores = torch.tanh(q @ k.transpose(2, 3) / d**0.5 / 5.0) * 5.0
        causal = torch.ones(t, t, dtype=torch.bool).tril()  # chosen, as GPT-Neo masks
        scores = torch.where(causal, scores, torch.tensor(-1e9, dtype=q.dtype))
        return torch.softmax(scores, dim=-1) @ v

    def forward(self, x: Tensor) -> Tensor:
        """x + attention(norm1(x)), then + mlp(norm2(.))."""
        b, t, _ = x.shape
        q, k, v = self._heads(self.norm1(x))
        if self.norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.turned:
            q, k = (_partial_rotary(h, self.turned, self.pairs) for h in (q, k))
        y = self._attend(q, k, v)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, WIDTH))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class LM(nn.Module):
    """Token embedding, two blocks, a final norm and a head read at the last token."""

    main_input_name = "input_ids"  # token ids, as transformers' models say

    def __init__(
        self,
        layout: str,
        turned: int = 0,
        norm: str = "",
        kv_heads: int = HEADS,
        pairs: bool = False,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        blocks = (Block(layout, turned, norm, kv_heads, pairs) for _ in range(2))
        self.blocks = nn.ModuleList(blocks)
        self.norm, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB)
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits at the last position."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(self.norm(x)[:, -1])
        return out


CASES = {
    "neox": ("chunk", 2, "", HEADS),  # GPT-NeoX: fused, chunked, partial rotary
    "neox-no-rotary": ("chunk", 0, "", HEADS),
    "persimmon": ("pick", 2, "head", HEADS),  # fused, picked, partial rotary, q/k norms
    "qwen3": ("separate", 4, "head", 2),  # full rotary after query/key norms, eager GQA
    "stablelm": ("separate", 2, "", HEADS),  # partial rotary on separate projections
    "eager-gqa": ("separate", 0, "", 2),  # repeat_kv, soft-capped scores, no rotary
    "phi3": ("slice", 4, "", HEADS),  # fused, sliced into contiguous parts, rotary
    "olmo2": ("separate", 4, "projection", 2),  # q/k norms over whole projections, GQA
    "olmo2-no-rotary": ("separate", 0, "projection", HEADS),
    "gptj": ("separate", 2, "", HEADS, True),  # neighbouring pairs of the first 2 turn
    "cohere": ("separate", 4, "", 2, True),  # all pairs turn; eager GQA
    "bigcode": ("mqa", 0, "", 1),  # multi-query: one key/value head, unsqueezed and split
    # Falcon's multi-query view (heads + 2, d), its key and value heads picked by lists and
    # broadcast to the query heads: with rotary (only nothing of the queries/keys moves:
    # one head has nowhere to go) and eagerly without
    "falcon": ("falcon", 4, "", 1),
    "falcon-eager": ("falcon", 0, "", 1),
    # Falcon-40B: each key/value group's query heads, key and value side by side in one
    # fused projection, picked by ranges and lists, the key and value broadcast; rotary
    "falcon40": ("grouped", 4, "", 2),
    "falcon40-one-group": ("grouped", 0, "", 1),
    # the same three layouts as newer Falcon code writes them, from a (heads, d) view:
    # split into ranges of whole heads; unflattened into (heads, 3) and unbound; viewed
    # into (groups, slots) and the key and value picked by an index
    "falcon-split": ("split", 4, "", 1),
    "falcon-unbind": ("unbind", 2, "", HEADS),
    "falcon40-view": ("grouped-view", 4, "", 2),
    # BLOOM: picked from (heads, 3, d), batch and heads merged into one axis for baddbmm
    # with ALiBi (a per-head bias: the heads stay in place) and bmm
    "bloom": ("bloom", 0, "", HEADS),
}


@functools.cache
def _traced(kind: str) -> tuple[LM, Spec]:
    model = randomize(LM(*CASES[kind]), 0)
    return model, spec_from_module(model)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, LM, Spec]:
    return (request.param, *_traced(request.param))


def _tokens(n: int, seed: int) -> Tensor:
    return torch.randint(0, VOCAB, (n, TOKENS), generator=torch.Generator().manual_seed(seed))


def _gap(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b if b[k].is_floating_point())


def test_interleaved_parts_are_the_fused_rows_of_each_head(case: tuple[str, LM, Spec]) -> None:
    """The queries, keys and values of a fused projection are its rows in runs of d, 3d
    apart, from 0, d and 2d; rotary embeddings and per-head norms pin the query/key
    dimensions in their heads (only whole heads move there), except the dimensions a
    partial rotary embedding passes; values keep their dimension symmetry."""
    kind, _, spec = case
    layout, turned, norm, kv_heads = CASES[kind][:4]
    d = WIDTH // HEADS
    # with grouped-query attention the key dimensions are the units
    name = {
        "separate": "blocks.0.q" if kv_heads == HEADS else "blocks.0.k",
        "mqa": f"blocks.0.qkv@{WIDTH}",
        "falcon": f"blocks.0.qkv@{WIDTH}",
        "grouped": f"blocks.0.qkv@{HEADS // kv_heads * d}",
        "grouped-view": f"blocks.0.qkv@{HEADS // kv_heads * d}",
        "split": f"blocks.0.qkv@{WIDTH}",
        "unbind": "blocks.0.qkv",
    }
    queries_keys = spec.group(name.get(layout, "blocks.0.qkv"))
    pinned = bool(turned) or norm == "head"  # a norm of each head pins its dimensions
    if layout == "bloom":  # ALiBi: each group permutes within its heads, in place
        values = spec.group(f"blocks.0.qkv@{2 * d}")
        for group in (queries_keys, values):
            assert (group.symmetry, group.heads, group.blocks, group.link) == (
                "linear",
                1,
                HEADS,
                "",
            )
        (made,) = values.producers
        assert (made.start, made.head, made.stride) == (2 * d, d, 3 * d)
        return
    if kv_heads == 1:  # one head stays where it is: pinned dimensions do too
        assert not queries_keys.heads_only and not queries_keys.link
        assert queries_keys.blocks == (queries_keys.size if pinned else 1)
    else:
        assert queries_keys.heads_only == pinned
    assert queries_keys.symmetry == ("none" if pinned or norm else "linear")
    if norm == "projection":  # the norms' affines move with the query/key dimensions
        carried = {c.name: (c.repeat, c.head) for c in queries_keys.carried}
        repeat = HEADS // kv_heads
        assert carried["blocks.0.q_norm.weight"] == (repeat, d if repeat > 1 else 1)
        assert carried["blocks.0.k_norm.weight"] == (1, 1)
    # a partial rotary embedding turns the first dimensions of each head: they are pinned,
    # the passed ones form a group of their own, free within their heads, and both move
    # with the heads' order
    split = 0 < turned < d and not norm and kv_heads == HEADS
    turned_dims = turned if split else d
    assert (queries_keys.size, queries_keys.heads) == (kv_heads * turned_dims, kv_heads)
    if split:
        passed = spec.group(f"{queries_keys.name}:{turned}")
        assert (passed.symmetry, passed.heads_only) == ("linear", False)
        assert (passed.size, passed.heads, passed.link) == (
            HEADS * (d - turned),
            HEADS,
            queries_keys.link,
        )
        (made,) = passed.producers
        assert (made.start % d, made.head) == (turned, d - turned)
    if kv_heads < HEADS:  # each key dimension's query rows repeat over its query heads
        queries = "blocks.0.q.weight" if layout == "separate" else "blocks.0.qkv.weight"
        (rows,) = [o for o in queries_keys.outgoing if o.name == queries]
        assert (rows.repeat, rows.head) == (HEADS // kv_heads, d)
    if layout in (
        "grouped",
        "grouped-view",
    ):  # each group's key rows: a run of d, (heads per group + 2) d apart
        per = HEADS // kv_heads
        stride = (per + 2) * d if kv_heads > 1 else 0  # one group: its rows are one run
        (made,) = queries_keys.producers
        assert (made.start, made.head if stride else d, made.stride) == (per * d, d, stride)
        (rows,) = [o for o in queries_keys.outgoing if o.name == "blocks.0.qkv.weight"]
        assert (rows.start, rows.repeat, rows.head, rows.stride) == (0, per, d, stride)
        return
    if layout in ("separate", "mqa", "falcon", "split"):
        return
    if layout == "slice":  # contiguous parts: the values are rows 2W to 3W
        (made,) = spec.group(f"blocks.0.qkv@{2 * WIDTH}").producers
        assert (made.start, made.stride) == (2 * WIDTH, 0)
        return
    values = spec.group(f"blocks.0.qkv@{2 * d}")
    assert (values.symmetry, values.heads_only, values.heads) == ("linear", False, HEADS)
    (made,) = values.producers
    assert (made.start, made.head, made.stride) == (2 * d, d, 3 * d)
    (made,) = queries_keys.producers
    assert (made.start, made.head, made.stride) == (0, turned_dims, 3 * d)
    keys = [o for o in queries_keys.outgoing if o.name == "blocks.0.qkv.weight"]
    assert [(o.start, o.head, o.stride) for o in keys] == [(d, turned_dims, 3 * d)]


@pytest.mark.parametrize("kind", sorted(CASES))
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=4, deadline=None)
def test_symmetries_keep_the_function(kind: str, weights: int, seed: int) -> None:
    """Random symmetries (heads, dimensions, stream and MLP units permuted, factors and
    signs where the group allows them) and normalization keep the logits."""
    template, spec = _traced(kind)
    model = randomize(copy.deepcopy(template), weights)
    state, x = state_of(model), _tokens(8, 1)
    y = outputs(model, state, x)
    moved = random_symmetry(state, spec, seed=seed)
    assert_same_function(outputs(model, moved, x), y, rtol=1e-9)
    assert_same_function(outputs(model, normalize(state, spec), x), y, rtol=1e-9)


@pytest.mark.parametrize("method", ["weight", "incoming", "activation"])
def test_a_planted_symmetry_is_recovered(case: tuple[str, LM, Spec], method: str) -> None:
    """The canonical form of a symmetric copy is the original's, by each matching method
    (activation matching reads the fused layer's output at each part's rows)."""
    _, model, spec = case
    state = state_of(model)
    reference = normalize(state, spec)
    planted = normalize(random_symmetry(state, spec, seed=7), spec)
    if method == "weight":
        aligned = canonicalize(planted, spec, reference=state, method="weight")
    elif method == "incoming":
        aligned = apply_alignment(planted, match_incoming(planted, reference, spec), spec)
    else:
        found = match_activations(planted, reference, spec, model, _tokens(64, 2), batch=64)
        aligned = apply_alignment(planted, found, spec)
    assert _gap(aligned, reference) < 1e-9


class CutTwice(nn.Module):
    """GPT-NeoX's chunk, then each query head cut again and put back in another order."""

    main_input_name = "input_ids"

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qkv, self.o = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """One attention layer whose queries are cut after the chunk."""
        x = self.embed(tokens)
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, HEADS, 3 * WIDTH // HEADS).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        first, second = q.chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(torch.cat((second, first), -1), k, v)
        out: Tensor = self.head((x + self.o(y.transpose(1, 2).reshape(b, t, -1)))[:, -1])
        return out


class StreamChunked(nn.Module):
    """A residual stream (no layer makes it) viewed into heads and chunked."""

    main_input_name = "input_ids"

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 2 * WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """Attention whose queries/keys are halves of the embedding's heads."""
        x = self.embed(tokens)
        b, t, _ = x.shape
        q, k = x.view(b, t, HEADS, 2 * WIDTH // HEADS).transpose(1, 2).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k, k)
        out: Tensor = self.head(y.transpose(1, 2).reshape(b, t, -1)[:, -1])
        return out


class OverlappingSlices(nn.Module):
    """Two slices of one layer's outputs that share rows."""

    def __init__(self) -> None:
        super().__init__()
        self.fused, self.a, self.b = nn.Linear(4, 8), nn.Linear(6, 2), nn.Linear(6, 2)
        self.input_shape = (4,)

    def forward(self, x: Tensor) -> Tensor:
        """Each reader takes six of the eight outputs."""
        h = self.fused(x)
        out: Tensor = self.a(torch.relu(h[:, :6])) + self.b(torch.relu(h[:, 2:]))
        return out


class OverlappingHeads(nn.Module):
    """Falcon's multi-query view, its key head one of the query heads, and a value head
    picked by a list of two."""

    main_input_name = "input_ids"

    def __init__(self, two: bool) -> None:
        super().__init__()
        self.two, self.d = two, WIDTH // HEADS
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qkv, self.o = nn.Linear(WIDTH, WIDTH + 2 * self.d), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """Attention over heads taken from one view twice (or two at once)."""
        x = self.embed(tokens)
        b, t, _ = x.shape
        fused = self.qkv(x).view(b, t, HEADS + 2, self.d)
        q = fused[..., :-2, :]
        k = fused[..., [-2], :] if self.two else fused[..., [-3], :]
        v = fused[..., [-2, -1], :][..., :1, :] if self.two else fused[..., [-1], :]
        y = F.scaled_dot_product_attention(*(h.transpose(1, 2) for h in (q, k, v)))
        out: Tensor = self.head((x + self.o(y.transpose(1, 2).reshape(b, t, -1)))[:, -1])
        return out


class HiddenBias(nn.Module):
    """``baddbmm`` whose added term is computed from the hidden units (attention scores
    themselves), not from positions."""

    main_input_name = "input_ids"

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.o, self.head = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, VOCAB)
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """BLOOM's attention, its scores added to themselves by baddbmm."""
        x = self.embed(tokens)
        b, t, _ = x.shape
        q, k, v = (
            h.view(b, t, HEADS, -1).transpose(1, 2).reshape(b * HEADS, t, -1)
            for h in self.qkv(x).chunk(3, dim=-1)
        )
        bias = torch.bmm(q, k.transpose(1, 2))
        probs = torch.softmax(bias.baddbmm(q, k.transpose(1, 2)), dim=-1)
        y = torch.bmm(probs, v).view(b, HEADS, t, -1).transpose(1, 2).reshape(b, t, -1)
        out: Tensor = self.head((x + self.o(y))[:, -1])
        return out


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (HiddenBias(), "adds hidden units to attention scores"),
        (CutTwice(), "cuts attention heads into several tensors"),
        (StreamChunked(), "cuts attention heads into several tensors"),
        (OverlappingSlices(), "share rows"),
        (OverlappingHeads(two=False), "share rows"),
        (OverlappingHeads(two=True), "unsupported op `getitem` on attention heads"),
    ],
    ids=[
        "hidden-bias",
        "cut-twice",
        "stream-chunked",
        "overlapping-slices",
        "shared-head",
        "two-listed",
    ],
)
def test_heads_cut_unlike_a_fused_projection_are_refused(model: nn.Module, words: str) -> None:
    """Heads cut where no single layer's rows can follow them are refused with a reason,
    never taken for a fused projection."""
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(model)


class SlicedMLP(nn.Module):
    """A layer's outputs cut in two halves (sliced, the first half read twice, or
    chunked), each with an activation of its own."""

    def __init__(self, cut: str = "slice") -> None:
        super().__init__()
        self.cut = cut
        self.fused, self.a, self.b = nn.Linear(4, 8), nn.Linear(4, 5), nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)
        self.input_shape = (4,)

    def forward(self, x: Tensor) -> Tensor:
        """relu of the first half (taken twice), tanh of the second, summed by a and b."""
        h = self.fused(x)
        if self.cut == "chunk":
            low, high = h.chunk(2, dim=1)
            first, second = torch.relu(low), torch.tanh(high)
        else:
            first, second = torch.relu(h[:, :4]) + torch.relu(h[:, :4]), torch.tanh(h[:, 4:])
        out: Tensor = self.head(torch.relu(self.a(first) + self.b(second)))
        return out


@pytest.mark.parametrize("cut", ["slice", "chunk"])
def test_parts_of_a_layer_keep_their_own_symmetry(cut: str) -> None:
    """Each half is a group of its own (relu: scale, tanh: sign), a half taken twice one
    group; symmetries and normalization scale and flip each half's own rows and keep the
    function."""
    model = randomize(SlicedMLP(cut), 3)
    spec = spec_from_module(model)
    symmetries = {g.name: g.symmetry for g in spec.groups}
    assert symmetries == {"fused": "scale", "fused@4": "sign", "a": "scale"}
    state, x = state_of(model), torch.randn(16, 4, dtype=torch.float64)
    y = outputs(model, state, x)
    for seed in (1, 2):
        assert_same_function(outputs(model, random_symmetry(state, spec, seed=seed), x), y)
    assert_same_function(outputs(model, normalize(state, spec), x), y)


@pytest.mark.parametrize("cut", ["slice", "chunk"])
def test_only_the_rows_on_spheres_turn_along_the_geodesic(cut: str) -> None:
    """Between two normalized networks the relu half's rows (units on spheres) keep unit
    norm along the geodesic; the tanh half's rows (not on spheres) move on the straight
    line; the ends are the networks themselves."""
    model = SlicedMLP(cut)
    spec = spec_from_module(model)
    a = normalize(state_of(randomize(model, 4)), spec)
    b = normalize(state_of(randomize(model, 5)), spec)
    path = geodesic_path(a, b, spec, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))
    for k, end in ((0, a), (2, b)):
        assert torch.equal(path.state(k)["fused.weight"], end["fused.weight"])
    between = path.state(1)["fused.weight"]
    torch.testing.assert_close(between[:4].norm(dim=1), torch.ones(4, dtype=torch.float64))
    line = 0.7 * a["fused.weight"][4:] + 0.3 * b["fused.weight"][4:]
    torch.testing.assert_close(between[4:], line, rtol=0, atol=1e-12)


class CappedLogits(nn.Module):
    """Gemma 2's ending: logits soft-capped by a tanh, from an output layer tied to the
    token embedding (``tied``) or from one of its own."""

    main_input_name = "input_ids"

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.mlp = nn.Sequential(
            nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH)
        )
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        self.input_shape = (TOKENS,)

    def forward(self, tokens: Tensor) -> Tensor:
        """30 * tanh(logits / 30) at the last position."""
        x = self.embed(tokens)
        x = x + self.mlp(x)
        return torch.tanh(self.head(x[:, -1]) / 30.0) * 30.0


@pytest.mark.parametrize("tied", [True, False])
def test_capped_logits_are_followed(tied: bool) -> None:
    """Under a cap the output layer's scale is no symmetry (nor is it when the layer is
    the token embedding): no output layer is listed, nothing rescales the logits, and
    symmetries and normalization keep the function (nanochat caps an output layer of its
    own)."""
    model = randomize(CappedLogits(tied=tied), 6)
    spec = spec_from_module(model)
    assert spec.output is None
    assert any(o.name == "head.weight" for g in spec.groups for o in g.outgoing) != tied

    def logits(state: dict[str, Tensor]) -> Tensor:
        load_into(model, state)  # the tied weight once, as canon lists it
        with torch.no_grad():
            out: Tensor = model(x)
        return out

    x = _tokens(8, 3)
    state = {t.name: model.state_dict()[t.name].clone() for t in spec.tensors}
    y = logits(state)
    torch.testing.assert_close(logits(random_symmetry(state, spec, seed=1)), y)
    torch.testing.assert_close(logits(normalize(state, spec)), y)


class TwoHeads(nn.Module):
    """DeiT's distilled ending: a class head on the first token and a distillation head
    on the second, averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, WIDTH)
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.head, self.dist = nn.Linear(WIDTH, 3), nn.Linear(WIDTH, 3)
        self.input_shape = (TOKENS, 4)

    def forward(self, x: Tensor) -> Tensor:
        """(head(token 0) + dist(token 1)) / 2."""
        h = self.embed(x)
        h = h + self.down(F.relu(self.up(h)))
        out: Tensor = (self.head(h[:, 0]) + self.dist(h[:, 1])) / 2
        return out


def test_averaged_output_layers_keep_their_scales() -> None:
    """Two output layers summed list no output layer to scale (their scales are one
    symmetry only together): both read the stream, whose symmetries and normalization
    keep the logits."""
    model = randomize(TwoHeads(), 7)
    spec = spec_from_module(model)
    assert spec.output is None
    (stream,) = [g for g in spec.groups if g.shared]
    assert {"head.weight", "dist.weight"} <= {o.name for o in stream.outgoing}
    x = torch.randn(5, TOKENS, 4, dtype=torch.float64)
    state = state_of(model)
    assert_symmetries_keep_the_function(model, spec, state, x, seed=2)


@pytest.mark.slow
def test_timms_distilled_deit_keeps_its_function() -> None:
    """timm's distilled DeiT (two blocks, its two heads averaged): no output layer to
    scale; random symmetries and canonical forms keep the logits."""
    model, spec, state, x = small_timm_vit("deit_tiny_distilled_patch16_224", 32)
    assert spec.output is None
    assert_symmetries_keep_the_function(model, spec, state, x, seed=3)


@pytest.mark.slow  # a process of its own: seconds of imports
def test_canon_spec_shows_interleaved_rows_and_pinned_heads() -> None:
    """`canon spec` names each part's rows (from its start, in runs every 3d) and says
    where only whole heads move: the two dimensions of each head that the partial rotary
    embedding turns, not the two it passes (a group of their own) nor the values."""
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    config = json.dumps({"layout": "chunk", "turned": 2})
    done = subprocess.run(
        [sys.executable, "-m", "canon", "spec", "test_interleaved_heads:LM", "--config", config],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    lines = {line.split(": ")[0].strip(): line for line in done.stdout.splitlines()}
    turned, passed = lines["group blocks.0.qkv"], lines["group blocks.0.qkv:2"]
    assert "blocks.0.qkv rows 0+ in runs of 2 every 12" in turned
    assert "blocks.0.qkv rows 2+ in runs of 2 every 12" in passed
    assert "only whole heads move" in turned
    assert "only whole heads move" not in passed + lines["group blocks.0.qkv@8"]
