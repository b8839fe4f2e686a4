"""Windowed vision transformers (Swin, Swin V2) and encoders with a relative position bias
read from an embedding by bucket (T5, MPNet), written by hand (no library).

Swin pads its grid of patches to a multiple of the window, shifts it by half a window
(``roll``), cuts it into windows by views, adds a per-head bias and each window's mask
to the scores (viewed as (batch, windows, heads, queries, keys) for that), and merges
each 2 x 2 patches into one of four times the channels. Padding and rolling move
positions, never units; the merged patches hold each unit four times, in runs of the
stream's width, so the reduction's four column blocks move together. Swin V2 normalizes
each head's queries and keys (permuting a head's dimensions keeps that, scaling them
does not), scales the scores per head, and computes its bias with an MLP over a fixed
table of coordinates: a tensor no symmetry moves.

T5 and MPNet look their bias up in an embedding of position buckets computed from
``arange``: no symmetry moves it either. A table of absolute positions looked up the
same way (GPT-2's) is added to the tokens' embeddings, so its columns are the stream's
units.
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
from canon.errors import UnsupportedModuleError

CHANNELS, WIDTH, HEADS, CLASSES = 3, 8, 2, 3


def _windows(x: Tensor, size: int) -> Tensor:
    """(batch, h, w, c) -> (batch * windows, size * size, c)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _unwindowed(x: Tensor, size: int, h: int, w: int) -> Tensor:
    """The inverse of :func:`_windows`."""
    c = x.shape[-1]
    x = x.view(-1, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _shift_mask(side: int, size: int, shift: int) -> Tensor:
    """Swin's mask of the shifted windows: -100 between patches from different regions."""
    regions = torch.zeros(1, side, side, 1)
    cuts = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            regions[:, rows, cols, :] = label
            label += 1
    labels = _windows(regions, size).squeeze(-1)
    differ = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.zeros_like(differ).masked_fill(differ != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head attention within windows: a fused projection viewed as (3, heads, d),
    a per-head bias over pairs of a window's positions, each window's shift mask, and
    ``nn.Softmax``. ``cosine``: Swin V2's normalized queries and keys, a per-head scale
    of the scores, and a bias from an MLP over a fixed table of coordinates."""

    def __init__(self, dim: int, size: int, cosine: bool) -> None:
        super().__init__()
        self.size, self.cosine = size, cosine
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)
        span = 2 * size - 1
        grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
        flat = grid.flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + size - 1
        self.register_buffer("index", rel[..., 0] * span + rel[..., 1], persistent=False)
        if cosine:
            self.logit_scale = nn.Parameter(torch.zeros(HEADS, 1, 1))
            self.mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, HEADS))
            steps = torch.arange(-(size - 1), size, dtype=torch.float32) / max(size - 1, 1)
            coords = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1)
            self.register_buffer("coords", coords.reshape(-1, 2), persistent=False)
        else:
            self.table = nn.Parameter(torch.zeros(span * span, HEADS))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Each window's attention output."""
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, HEADS, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.cosine:
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            scores = scores * torch.clamp(self.logit_scale, max=4.6).exp()
            table = 16 * torch.sigmoid(self.mlp(self.coords))
        else:
            scores = (q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)
            table = self.table
        bias = table[self.index.view(-1)].view(t, t, HEADS).permute(2, 0, 1)
        scores = scores + bias.unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.view(n // windows, windows, HEADS, t, t) + mask.unsqueeze(1)
            scores = scores.view(-1, HEADS, t, t)
        y = (self.softmax(scores) @ v).transpose(1, 2).reshape(n, t, c)
        out: Tensor = self.proj(y)
        return out


class SwinBlock(nn.Module):
    """Pre-norm window attention over a grid padded to a multiple of the window and
    shifted by ``shift`` (rolled back after), and an MLP."""

    def __init__(self, dim: int, side: int, size: int, shift: int, cosine: bool) -> None:
        super().__init__()
        self.size, self.shift = size, shift
        self.padded = side + (-side) % size
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, size, cosine)
        self.up, self.down = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        mask = _shift_mask(self.padded, size, shift) if shift else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block's output, (batch, side, side, dim)."""
        _, h, w, _ = x.shape
        y = F.pad(self.norm1(x), (0, 0, 0, self.padded - w, 0, self.padded - h))
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = _unwindowed(self.attn(_windows(y, self.size), self.mask), self.size, *y.shape[1:3])
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w, :].contiguous()
        out: Tensor = x + self.down(F.gelu(self.up(self.norm2(x))))
        return out


class TinySwin(nn.Module):
    """A conv patch embedding onto a 6 x 6 grid; a stage of two blocks (windows of 4, so
    the grid is padded, the second shifted by 2); patch merging to 3 x 3 with twice the
    channels (``cat`` of the four strided slices, HF's; or a view, permute and flatten,
    timm's); a block with one window; a norm, the mean over patches and a classifier."""

    def __init__(self, cosine: bool = False, merge: str = "cat") -> None:
        super().__init__()
        self.merge = merge
        self.patch = nn.Conv2d(CHANNELS, WIDTH, 2, stride=2)
        self.stage = nn.Sequential(
            SwinBlock(WIDTH, 6, 4, 0, cosine), SwinBlock(WIDTH, 6, 4, 2, cosine)
        )
        self.merge_norm = nn.LayerNorm(4 * WIDTH)
        self.reduction = nn.Linear(4 * WIDTH, 2 * WIDTH, bias=False)
        self.last = SwinBlock(2 * WIDTH, 3, 3, 0, cosine)
        self.norm = nn.LayerNorm(2 * WIDTH)
        self.head = nn.Linear(2 * WIDTH, CLASSES)
        self.input_shape = (CHANNELS, 12, 12)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.stage(self.patch(x).permute(0, 2, 3, 1))
        b, side, _, c = h.shape
        if self.merge == "cat":
            parts = (h[:, 0::2, 0::2], h[:, 1::2, 0::2], h[:, 0::2, 1::2], h[:, 1::2, 1::2])
            merged = torch.cat(parts, dim=-1)
        else:
            grid = h.reshape(b, side // 2, 2, side // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
            merged = grid.flatten(3)
        h = self.last(self.reduction(self.merge_norm(merged)))
        out: Tensor = self.head(self.norm(h).mean(dim=(1, 2)))
        return out


TOKENS, LENGTH, BUCKETS = 20, 6, 8


class BucketedEncoder(nn.Module):
    """Token embeddings from a table shared under two names (T5's ``shared`` and its
    encoder's ``embed_tokens``), absolute positions looked up by ``arange`` (GPT-2's),
    one attention block whose scores get a per-head bias looked up by relative-position
    bucket and broadcast with ``expand`` (T5's, MPNet's), RMS norms, a classifier on the
    mean over tokens."""

    main_input_name = "input_ids"  # token ids, as transformers' models say

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Embedding(TOKENS, WIDTH)
        self.embed_tokens = self.shared
        self.positions = nn.Embedding(LENGTH, WIDTH)
        self.buckets = nn.Embedding(BUCKETS, HEADS)
        self.norm1, self.norm2 = nn.RMSNorm(WIDTH), nn.RMSNorm(WIDTH)
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(4))
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.input_shape = (LENGTH,)

    def bias(self, b: int, t: int) -> Tensor:
        """(batch, heads, t, t): the bucket of each key's offset from each query."""
        offset = torch.arange(t)[None, :] - torch.arange(t)[:, None]
        half = BUCKETS // 2
        bucket = torch.where(offset > 0, half, 0) + offset.abs().clamp(max=half - 1)
        return self.buckets(bucket).permute(2, 0, 1).unsqueeze(0).expand(b, -1, t, t)

    def forward(self, ids: Tensor) -> Tensor:
        """Class scores."""
        b, t = ids.shape
        h = self.embed_tokens(ids) + self.positions(torch.arange(t))
        q, k, v = (
            p(self.norm1(h)).view(b, t, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        scores = torch.softmax(q @ k.transpose(-2, -1) + self.bias(b, t), dim=-1)
        h = h + self.o((scores @ v).transpose(1, 2).reshape(b, t, WIDTH))
        h = h + self.down(F.relu(self.up(self.norm2(h))))
        out: Tensor = self.head(h.mean(dim=1))
        return out


MODELS = {
    "swin": lambda: TinySwin(),
    "swin-v2-flatten": lambda: TinySwin(cosine=True, merge="flatten"),
    "bucketed": BucketedEncoder,
}


def _inputs(model: nn.Module, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    if isinstance(model, BucketedEncoder):
        return torch.randint(0, TOKENS, (4, LENGTH), generator=gen)
    return torch.randn(4, CHANNELS, 12, 12, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kind", sorted(MODELS))
@given(weights=st.integers(0, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=4, deadline=None)
def test_symmetries_keep_the_function(kind: str, weights: int, seed: int) -> None:
    """Random symmetries, normalization and the canonical form keep the class scores."""
    model = randomize(MODELS[kind](), weights).double()
    spec = spec_from_module(model)
    state = state_of(model)
    state = {name: state[name] for name in (t.name for t in spec.tensors)}
    x = _inputs(model, seed % 1000)
    assert_symmetries_keep_the_function(model, spec, state, x, seed)


@pytest.mark.parametrize("merge", ["cat", "flatten"])
def test_merged_patches_hold_each_unit_four_times(merge: str) -> None:
    """The reduction reads the stream's units in four runs of its width, the norm before
    it carries its weights the same way; the bias tables and the coordinates' MLP are in
    no group; the heads stay in place (the bias differs between them)."""
    spec = spec_from_module(TinySwin(cosine=merge == "flatten", merge=merge))
    stream = spec.group("patch")
    (read,) = [o for o in stream.outgoing if o.name == "reduction.weight"]
    assert (read.axis, read.repeat, read.head) == (1, 4, WIDTH)
    norm = {(c.name, c.repeat, c.head) for c in stream.carried if c.name.startswith("merge_norm")}
    assert norm == {("merge_norm.weight", 4, WIDTH), ("merge_norm.bias", 4, WIDTH)}
    grouped = {t.name for g in spec.groups for t in g.tensors}
    fixed = {t.name for t in spec.tensors if ".table" in t.name or ".mlp." in t.name}
    fixed |= {t.name for t in spec.tensors if "logit_scale" in t.name}
    assert fixed and not fixed & grouped
    attention = [g for g in spec.groups if g.name.endswith("qkv")]
    assert attention and all(g.heads == 1 and g.blocks == HEADS for g in attention)


def test_position_tables_follow_their_use() -> None:
    """Absolute positions added to the tokens are the stream's (carried along its units);
    the bucket table added to the scores is in no group; the token table is carried by
    the name the state dict keeps, though the forward reads it by another."""
    spec = spec_from_module(BucketedEncoder())
    names = {t.name for t in spec.tensors}
    assert "shared.weight" in names and "embed_tokens.weight" not in names
    (stream,) = [g for g in spec.groups if any(c.name == "shared.weight" for c in g.carried)]
    carried = {(c.name, c.axis) for c in stream.carried}
    assert {("shared.weight", 1), ("positions.weight", 1)} <= carried
    assert not any("buckets" in t.name for g in spec.groups for t in g.tensors)


class Traps(nn.Module):
    """Look-alikes that move or mix units."""

    def __init__(self, trap: str) -> None:
        super().__init__()
        self.trap = trap
        self.a = nn.Linear(4, WIDTH)
        self.b = nn.Linear(WIDTH + 2 if trap == "pad-units" else WIDTH, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.input_shape = (LENGTH, 4)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.a(x)
        if self.trap == "pad-units":  # two more units, of zeros
            h = F.pad(h, (0, 2))
        elif self.trap == "roll-units":  # each unit's values moved to its neighbour
            h = torch.roll(h, 1, dims=-1)
        elif self.trap == "softmax-over-heads":  # each query's weights mix the heads
            b, t, _ = h.shape
            q, k, v = (p.view(b, t, HEADS, -1).transpose(1, 2) for p in self.qkv(h).chunk(3, -1))
            weights = torch.softmax(q @ k.transpose(-2, -1), dim=1)
            h = h + (weights @ v).transpose(1, 2).reshape(b, t, WIDTH)
        out: Tensor = self.head(self.b(F.relu(h)).mean(dim=1))
        return out


@pytest.mark.parametrize(
    ("trap", "words"),
    [
        ("pad-units", "pads or moves along the unit axis"),
        ("roll-units", "pads or moves along the unit axis"),
        ("softmax-over-heads", "on attention heads"),
    ],
)
def test_look_alikes_are_refused(trap: str, words: str) -> None:
    """Padding or rolling the unit axis, and a softmax across heads, are refused."""
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(Traps(trap))
