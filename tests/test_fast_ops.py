"""Exact faster kernels: the rewritten graph computes bitwise what the model computes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import fx, nn

from canon.core.trace import tracer
from canon.engine.fast_ops import max_pool_2x2, optimize_graph


@given(
    st.integers(1, 3), st.integers(1, 4), st.integers(2, 9), st.integers(2, 9), st.integers(0, 99)
)
def test_max_pool_2x2_is_bitwise_max_pool2d(n, c, h, w, seed):
    """Two strided maxima equal F.max_pool2d(x, 2) exactly, odd sizes and NaN included."""
    x = torch.randn((n, c, h, w), generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, 0] = float("nan") if seed % 3 == 0 else x[0, 0, 0, 0]
    torch.testing.assert_close(max_pool_2x2(x), F.max_pool2d(x, 2), equal_nan=True, rtol=0, atol=0)


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.MaxPool2d(2)
        self.padded = nn.MaxPool2d(2, padding=1)
        self.wide = nn.MaxPool2d(3)
        self.ceil = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.plain(x)
        b = F.max_pool2d(x, 2)
        c = F.max_pool2d(x, kernel_size=2, stride=1)
        return torch.cat(
            [t.flatten(1) for t in (a, b, c, self.padded(x), self.wide(x), self.ceil(x))], 1
        )


def test_only_plain_2x2_pools_are_rewritten():
    """Plain 2x2/stride-2 pools (module or function) are replaced; padded, wider, stride-1
    and ceil-mode pools are kept; outputs are bitwise unchanged; nothing on other devices."""
    model = Pools()
    gm = optimize_graph(fx.GraphModule(model, tracer().trace(model)), torch.device("cpu"))
    replaced = [n for n in gm.graph.nodes if n.target is max_pool_2x2]
    assert len(replaced) == 2
    kept = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    assert kept == {"padded", "wide", "ceil"}
    x = torch.randn(2, 3, 7, 8)
    assert torch.equal(gm(x), model(x))
    meta = fx.GraphModule(model, tracer().trace(model))
    assert optimize_graph(meta, torch.device("meta")) is meta
    assert not any(n.target is max_pool_2x2 for n in meta.graph.nodes)
