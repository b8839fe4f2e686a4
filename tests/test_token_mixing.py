"""Linear layers over the positions, written by hand (MLP-Mixer's and ResMLP's token
mixing; no library needed), and ResMLP's affine ``addcmul(beta, alpha, x)``.

A token-mixing layer reads the tokens moved to the last axis: the same map of the
positions for every channel, so the channels stay on their axis and permute through it
(and scale through it without a bias); its weights index positions, and no symmetry moves
them. ``addcmul(beta, alpha, x)`` is a per-channel scale and shift whose parameters move
with the channels.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn
from vision_models import vision

from canon.core import Spec, spec_from_module

TOKENS, WIDTH = 5, 6


class Mixing(nn.Module):
    """Tokens in, a token-mixing MLP (Mixer's, ``hidden`` units) or a single token-mixing
    layer (ResMLP's, after an affine), a channel MLP, the tokens' mean read out."""

    def __init__(self, hidden: int | None) -> None:
        super().__init__()
        self.embed = nn.Linear(3, WIDTH)
        self.alpha = nn.Parameter(torch.ones(WIDTH))
        self.beta = nn.Parameter(torch.zeros(WIDTH))
        if hidden is None:
            self.tokens = nn.Sequential(nn.Linear(TOKENS, TOKENS))
        else:
            self.tokens = nn.Sequential(
                nn.Linear(TOKENS, hidden), nn.GELU(), nn.Linear(hidden, TOKENS)
            )
        self.channels = nn.Sequential(nn.Linear(WIDTH, 10), nn.GELU(), nn.Linear(10, WIDTH))
        self.head = nn.Linear(WIDTH, 4)
        self.input_shape = (TOKENS, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        a = torch.addcmul(self.beta, self.alpha, h)
        h = h + self.tokens(a.transpose(1, 2)).transpose(1, 2)
        h = h + self.channels(h)
        out: Tensor = self.head(h.mean(1))
        return out


def _model(hidden: int | None, seed: int) -> tuple[Mixing, Spec, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = Mixing(hidden).double().eval()
    state = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
    return model, spec_from_module(model), state


@pytest.mark.parametrize("hidden", [None, 7])
def test_the_channels_move_and_the_positions_stay(hidden: int | None) -> None:
    """One stream group carries the affine's parameters; the token-mixing layers are in
    no group (their units are positions, or hidden units over positions that stay)."""
    _, spec, _ = _model(hidden, 0)
    (stream,) = [g for g in spec.groups if g.name == "embed"]
    assert {"alpha", "beta"} <= {t.name for t in stream.tensors}
    grouped = {t.name for g in spec.groups for t in g.tensors}
    assert not {n for n in spec.tensor_info if n.startswith("tokens.")} & grouped


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), hidden=st.sampled_from([None, 7]))
def test_symmetries_keep_the_function(seed: int, hidden: int | None) -> None:
    model, spec, state = _model(hidden, seed % 100)
    x = torch.randn(4, TOKENS, 3, generator=torch.Generator().manual_seed(seed)).double()
    assert_symmetries_keep_the_function(model, spec, state, x, seed, methods=("weight", "incoming"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixer_s16_224", "resmlp_12_224"])
def test_timms_mlp_mixers_keep_their_function(name: str) -> None:
    """timm's MLP-Mixer and ResMLP on 32 x 32 images: random symmetries and canonical
    forms keep the logits of random weights, and a moved copy's canonical form is the
    original's."""
    _, timm = vision()
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, pretrained=False, img_size=32)
    model = model.double().eval()
    spec = spec_from_module(model, (3, 32, 32))
    gen = torch.Generator().manual_seed(1)
    state = {
        k: v + 0.2 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        for k, v in model.state_dict().items()
    }
    x = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, state, x, seed=3)
