"""Rotary embeddings that turn some of the tokens, written by hand (timm's EVA-02 and
RoPE ViTs; no library needed), and learned per-head frequencies (timm's mixed RoPE).

EVA-02 views its fused projection into heads, then turns the patches' queries and keys
and not its class token's: ``cat([q[:, :, :1], rope(q[:, :, 1:])], dim=2)``, the rotation
GPT-J's (neighbouring pairs: ``stack((-x[..., 1::2], x[..., ::2]), -1)``). A slice and a
join along the tokens keep every unit of every head, so the heads still move as wholes
while the rotated dimensions stay in their places. Frequencies that differ between heads
(``mixed``) keep the heads in place too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn
from vision_models import small_timm_vit

from canon.core import Spec, spec_from_module

WIDTH, HEADS, TOKENS = 12, 3, 5
D = WIDTH // HEADS


def _turned(x: Tensor) -> Tensor:
    """[x0, x1, x2, x3] -> [-x1, x0, -x3, x2] (GPT-J's and EVA's pairs)."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


class PatchRotary(nn.Module):
    """A class token and patches, one pre-norm attention block (a fused projection,
    rotary angles on the patches only), an MLP, the class token read out."""

    def __init__(self, mixed: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(4, WIDTH)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.norm1 = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.norm2 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 20), nn.GELU(), nn.Linear(20, WIDTH))
        self.head = nn.Linear(WIDTH, 3)
        # one frequency per pair of dimensions, shared by the heads or (mixed) learned per head
        shape = (HEADS, 1, D // 2) if mixed else (1, 1, D // 2)
        self.freqs = nn.Parameter(torch.rand(shape) + 0.5, requires_grad=mixed)
        self.input_shape = (TOKENS - 1, 4)

    def _rope(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[2], dtype=x.dtype, device=x.device)[:, None]
        angles = (positions * self.freqs).repeat_interleave(2, -1)  # pairs turn together
        return x * angles.cos() + _turned(x) * angles.sin()

    def forward(self, patches: Tensor) -> Tensor:
        x = torch.cat([self.cls.expand(patches.shape[0], -1, -1), self.embed(patches)], 1)
        b, n, _ = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = torch.cat([q[:, :, :1, :], self._rope(q[:, :, 1:, :])], dim=2)
        k = torch.cat([k[:, :, :1, :], self._rope(k[:, :, 1:, :])], dim=2)
        y = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, WIDTH))
        x = x + self.mlp(self.norm2(x))
        out: Tensor = self.head(x[:, 0])
        return out


def _model(mixed: bool, seed: int) -> tuple[PatchRotary, Spec, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = PatchRotary(mixed).double().eval()
    spec = spec_from_module(model)
    gen = torch.Generator().manual_seed(seed)
    state = {
        k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        for k, v in model.state_dict().items()
    }
    return model, spec, state


def test_the_heads_move_and_the_turned_dimensions_stay() -> None:
    """Shared angles: the query/key group keeps each dimension in its head (only whole
    heads move, with the values'), the value/output group's dimensions permute freely.
    Angles learned per head: no query/key group is left, and the value dimensions
    permute within heads that stay in place."""
    _, spec, _ = _model(False, 0)
    qk, vo = (g for g in spec.groups if g.heads == HEADS)
    assert qk.heads_only and qk.link == vo.link and not vo.heads_only
    _, mixed, _ = _model(True, 0)
    assert not [g for g in mixed.groups if g.heads > 1]
    assert any(g.blocks == HEADS and g.size == WIDTH for g in mixed.groups)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), mixed=st.booleans())
def test_symmetries_keep_the_function(seed: int, mixed: bool) -> None:
    """Random symmetries, normalization and canonical forms (weight and incoming
    matching) keep the logits; a moved copy's canonical form is the original's."""
    model, spec, state = _model(mixed, seed % 100)
    x = torch.randn(4, TOKENS - 1, 4, generator=torch.Generator().manual_seed(seed))
    assert_symmetries_keep_the_function(
        model, spec, state, x.double(), seed, methods=("weight", "incoming")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["eva02_tiny_patch14_224", "vit_small_patch16_rope_224", "vit_small_patch16_rope_mixed_224"],
)
def test_timms_rotary_vision_transformers_keep_their_function(name: str) -> None:
    """timm's EVA-02 and RoPE ViTs (two blocks, 2 x 2 patches): random symmetries and
    canonical forms keep the logits of random weights, and a moved copy's canonical
    form is the original's."""
    model, spec, state, x = small_timm_vit(name, 28 if "patch14" in name else 32)
    assert_symmetries_keep_the_function(model, spec, state, x, seed=3)
