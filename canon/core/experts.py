"""Mixture-of-experts layers that canon's tracer understands (DESIGN §3b "Experts").

A mixture-of-experts MLP sends each token to the ``k`` experts its *router* picks and
sums their outputs, weighted by the router's scores. Two pieces are followed whole:

- :class:`StackedExperts`: ``E`` gated MLPs (``act(x Wg^T) * (x Wu^T)`` then ``Wd``) or
  plain ones (``act(x Wu^T)`` then ``Wd``), held as two 2-D weights that stack the experts
  along the axis of their own units: ``gate_up_proj`` (``E * 2I`` rows: expert ``e``'s
  gate rows ``[2eI, 2eI + I)``, its up rows the next ``I``) or ``up_proj`` (``E * I``
  rows), and ``down_proj`` (``H x E * I``: expert ``e``'s columns ``[eI, eI + I)``).
  Each expert's hidden units permute among themselves (the group's ``blocks``), the
  stream's units along the weights' other axis.
- a *router*: a module whose outputs (scores, the experts picked) depend on the tokens
  only through ``x @ W.T``, ``W`` its one weight of one row per expert
  (:func:`router_weight`); the stream's units permute its columns and nothing moves its
  outputs. :class:`TopKRouter` is
  canon's; a library's router is marked with :func:`mark_router`, and the tracer checks
  by running it that it is what the mark says.

The routing is data-dependent, so a graph recorded for one input would hold the
experts that input reached; as one op each, the graph is the same for every input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StackedExperts", "TopKRouter", "is_router", "mark_router", "router_weight"]

#: The attribute that marks a module as a router (:func:`mark_router`).
_ROUTER = "canon_router"


class StackedExperts(nn.Module):
    """``experts`` MLPs of ``hidden`` inputs and ``intermediate`` units each, applied to the
    tokens the router sent them: ``forward(x, index, weights)`` with ``x`` (tokens,
    hidden), ``index`` and ``weights`` (tokens, k) gives ``sum_j weights[t, j] *
    expert_{index[t, j]}(x[t])`` for every token ``t``."""

    def __init__(
        self,
        experts: int,
        hidden: int,
        intermediate: int,
        act: nn.Module,
        gated: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(experts, hidden, intermediate) < 1:
            raise ValueError(
                f"experts, hidden and intermediate sizes must be positive, got "
                f"{experts}, {hidden}, {intermediate}"
            )
        self.experts, self.hidden, self.intermediate = experts, hidden, intermediate
        self.gated = gated
        self.act_fn = act
        rows = experts * intermediate * (2 if gated else 1)
        w_in = torch.empty(rows, hidden, device=device, dtype=dtype)
        self.register_parameter(self.in_name, nn.Parameter(w_in))
        w_out = torch.empty(hidden, experts * intermediate, device=device, dtype=dtype)
        self.down_proj = nn.Parameter(w_out)

    @property
    def in_name(self) -> str:
        """The name of the weight that reads the tokens: ``gate_up_proj`` or ``up_proj``."""
        return "gate_up_proj" if self.gated else "up_proj"

    def forward(self, x: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        """The weighted sum of the picked experts' outputs, one row per token."""
        rows: Tensor = getattr(self, self.in_name)
        ins = rows.view(self.experts, -1, self.hidden)
        outs = self.down_proj.view(self.hidden, self.experts, self.intermediate)
        out = torch.zeros_like(x)
        hit = torch.bincount(index.flatten(), minlength=self.experts)[: self.experts]
        for e in hit.nonzero().flatten().tolist():  # the experts some token reached
            token, slot = torch.where(index == e)
            h = F.linear(x[token], ins[e])
            if self.gated:
                gate, up = h.chunk(2, dim=-1)
                h = self.act_fn(gate) * up
            else:
                h = self.act_fn(h)
            y = F.linear(h, outs[:, e]) * weights[token, slot, None]
            out.index_add_(0, token, y.to(out.dtype))
        return out


class TopKRouter(nn.Module):
    """Each token's ``k`` experts of highest softmax score, and those scores renormalized to
    sum to one (Mixtral's router): ``forward(x)`` gives (logits, weights, index)."""

    def __init__(
        self,
        experts: int,
        hidden: int,
        k: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= k <= experts:
            raise ValueError(f"a router picks 1 to {experts} experts, got k={k}")
        self.k = k
        self.weight = nn.Parameter(torch.empty(experts, hidden, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The router's logits, the picked experts' weights and their indices."""
        logits = F.linear(x, self.weight)
        top, index = torch.topk(logits.softmax(dim=-1), self.k, dim=-1)
        return logits, top / top.sum(dim=-1, keepdim=True), index


def mark_router(module: nn.Module) -> nn.Module:
    """Mark ``module`` (a library's router: one ``weight`` row per expert, read as ``x @
    weight.T``) so that canon's tracer follows it as one op (:func:`is_router`); returns
    it. The tracer runs it once to check that it is a router."""
    setattr(module, _ROUTER, True)
    return module


def is_router(module: nn.Module) -> bool:
    """Whether the tracer follows ``module`` as a router: canon's :class:`TopKRouter` or a
    module marked by :func:`mark_router`."""
    return isinstance(module, TopKRouter) or getattr(module, _ROUTER, False) is True


def router_weight(module: nn.Module, width: int) -> str | None:
    """The name (under ``module``) of its one 2-D parameter of ``width`` columns: a
    router's weight, one row per expert; None unless there is exactly one."""
    found = [n for n, p in module.named_parameters() if p.ndim == 2 and p.shape[1] == width]
    return found[0] if len(found) == 1 else None
