"""Attention pooling by a learned query, written by hand (timm's ``AttentionPoolLatent``:
the pooling head of SigLIP and Perception Encoder ViTs; no library needed).

A learned latent, projected, asks every token ``softmax(q k^T) v``: the query is a
constant that no symmetry moves, so the keys cannot move against it (their projection's
rows stay in place) and neither can the heads (each weights the tokens its own way). The
values still pass linearly to the output projection: each value dimension may permute
within its head and take a factor, the output projection's columns moving with it.
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
from canon.errors import UnsupportedModuleError

WIDTH, HEADS, TOKENS = 12, 3, 4
D = WIDTH // HEADS


class LatentPool(nn.Module):
    """Tokens, one pre-norm MLP block, then a learned query's attention over the tokens
    (a fused key/value projection), its output projection and a read-out."""

    def __init__(self, project_query: bool = True, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.embed = nn.Linear(5, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 16), nn.GELU(), nn.Linear(16, WIDTH))
        self.latent = nn.Parameter(torch.randn(1, 1, WIDTH))
        self.q = nn.Linear(WIDTH, WIDTH) if project_query else nn.Identity()
        if fused:
            self.kv = nn.Linear(WIDTH, 2 * WIDTH)
        else:
            self.k, self.v = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, 3)
        self.input_shape = (TOKENS, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = h + self.mlp(self.norm(h))
        b, n, _ = h.shape
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, HEADS, D).transpose(1, 2)
        if self.fused:
            k, v = self.kv(h).reshape(b, n, 2, HEADS, D).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            k, v = (p(h).reshape(b, n, HEADS, D).transpose(1, 2) for p in (self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        pooled = self.proj(y.transpose(1, 2).reshape(b, 1, WIDTH))
        out: Tensor = self.head(pooled[:, 0])
        return out


def _model(
    seed: int, project_query: bool = True, fused: bool = True
) -> tuple[LatentPool, Spec, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = LatentPool(project_query, fused).double().eval()
    return model, spec_from_module(model), model.state_dict()


@pytest.mark.parametrize("fused", [True, False])
def test_the_values_permute_within_heads_that_stay(fused: bool) -> None:
    """The keys form no group (their rows stay, whether a fused projection's or a layer
    of their own); the values form one of the heads' blocks, each dimension free within
    its head; the rest of the network keeps its groups."""
    _, spec, _ = _model(0, fused=fused)
    names = {g.name: g for g in spec.groups}
    assert not {"kv", "k"} & set(names)
    (values,) = [g for n, g in names.items() if n in (f"kv@{WIDTH}", "v")]
    assert values.size == WIDTH and values.blocks == HEADS and values.heads == 1
    assert {"embed", "mlp.0", "proj"} <= set(names)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), project_query=st.booleans(), fused=st.booleans())
def test_symmetries_keep_the_function(seed: int, project_query: bool, fused: bool) -> None:
    """Random symmetries, normalization and canonical forms keep the logits; a moved
    copy's canonical form is the original's (the latent used as the query as it is, and
    keys and values from a fused projection or layers of their own, too)."""
    model, spec, state = _model(seed % 100, project_query, fused)
    x = torch.randn(3, TOKENS, 5, generator=torch.Generator().manual_seed(seed)).double()
    assert_symmetries_keep_the_function(model, spec, state, x, seed, methods=("weight", "incoming"))


class QueryFromValues(LatentPool):
    """A constant query attending with keys and values that are one projection's same
    units: refused."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        b, n, _ = h.shape
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, HEADS, D).transpose(1, 2)
        k = h.reshape(b, n, HEADS, D).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, k)
        out: Tensor = self.head(self.proj(y.transpose(1, 2).reshape(b, WIDTH)))
        return out


def test_keys_that_are_the_values_are_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match="constant query"):
        spec_from_module(QueryFromValues().double())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_base_patch16_siglip_224", "vit_pe_core_tiny_patch16_384"])
def test_timms_attention_pooled_vision_transformers_keep_their_function(name: str) -> None:
    """timm's SigLIP and Perception Encoder ViTs (two blocks, 2 x 2 patches), pooled by a
    learned query: random symmetries and canonical forms keep the logits of random
    weights, and a moved copy's canonical form is the original's."""
    model, spec, state, x = small_timm_vit(name, 32)
    assert_symmetries_keep_the_function(model, spec, state, x, seed=3)
