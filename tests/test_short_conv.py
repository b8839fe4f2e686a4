"""Short gated convolutions, written by hand (LFM2's; no library needed).

A projection's output, transposed to (batch, channels, tokens), is cut into three parts
B, C and x along the channels; ``B * x`` is convolved along the tokens by a causal
depthwise convolution, which a function call runs on a layer's own weight read through
views (``F.conv1d(h, conv.weight.squeeze(1).unsqueeze(1), groups=channels)``, as
transformers' ``causal_conv1d_fn`` does), and multiplied by C. Channel j of B, C and x
meet only each other and the j-th filter: the three parts' rows, the filters and the
output projection's columns permute together, one group.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn

from canon.core import Spec, spec_from_module
from canon.errors import UnsupportedModuleError

WIDTH, TOKENS, KERNEL = 6, 5, 3


class ShortConv(nn.Module):
    """Token embeddings, one residual short-convolution block under a norm, a read-out of
    the last token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.in_proj = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.conv = nn.Conv1d(WIDTH, WIDTH, KERNEL, groups=WIDTH, bias=False)
        self.out_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, 4)
        self.input_shape = (TOKENS,)
        self.main_input_name = "input_ids"

    def _filter(self, h: Tensor) -> Tensor:
        weight = self.conv.weight.squeeze(1).unsqueeze(1)
        out: Tensor = F.conv1d(h, weight, padding=KERNEL - 1, groups=WIDTH)
        return out[:, :, : h.shape[-1]]  # causal: the first positions of the padded output

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        b, c, x = self.in_proj(self.norm(h)).transpose(-1, -2).chunk(3, dim=-2)
        y = c * self._filter(b * x)
        h = h + self.out_proj(y.transpose(-1, -2))
        out: Tensor = self.head(h[:, -1])
        return out


class ComputedFilter(ShortConv):
    """The filters scaled in forward before the call: no layer's own weight, refused."""

    def _filter(self, h: Tensor) -> Tensor:
        out: Tensor = F.conv1d(h, self.conv.weight * 2.0, padding=KERNEL - 1, groups=WIDTH)
        return out[:, :, : h.shape[-1]]


def _model(seed: int) -> tuple[ShortConv, Spec, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = ShortConv().double().eval()
    return model, spec_from_module(model), model.state_dict()


def test_the_channels_of_b_c_and_x_move_together() -> None:
    _, spec, _ = _model(0)
    (group,) = [g for g in spec.groups if g.name == "in_proj"]
    assert group.size == WIDTH
    assert [p.start for p in group.producers] == [0, WIDTH, 2 * WIDTH]
    assert {"conv.weight", "out_proj.weight"} <= {t.name for t in group.tensors}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_symmetries_keep_the_function(seed: int) -> None:
    """Random symmetries, normalization and canonical forms (weight and incoming
    matching) keep the logits; a moved copy's canonical form is the original's."""
    model, spec, state = _model(seed % 100)
    ids = torch.randint(0, 20, (4, TOKENS), generator=torch.Generator().manual_seed(seed))
    assert_symmetries_keep_the_function(
        model, spec, state, ids, seed, methods=("weight", "incoming")
    )


def test_a_filter_computed_in_forward_is_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"conv\.weight"):
        spec_from_module(ComputedFilter().double())
