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

__all__ = [
    "EXPERTS_LINK",
    "ClampedGLU",
    "ClampedSwiGLU",
    "Glu",
    "StackedExperts",
    "TopKRouter",
    "is_router",
    "mark_router",
    "router_weight",
]

#: The attribute that marks a module as a router (:func:`mark_router`).
_ROUTER = "canon_router"
#: How the link of a mixture's experts and its router's rows ends (``UnitGroup.link``).
EXPERTS_LINK = "#experts"


class ClampedSwiGLU(nn.Module):
    """GPT-OSS's gate of a unit from its gate and up pre-activations: ``(clamp(up, -limit,
    limit) + 1) * g * sigmoid(alpha * g)`` with ``g = clamp(gate, max=limit)``."""

    def __init__(self, alpha: float, limit: float) -> None:
        super().__init__()
        self.alpha, self.limit = float(alpha), float(limit)

    def forward(self, gate: Tensor, up: Tensor) -> Tensor:
        """Each unit's output from its own two pre-activations."""
        g = gate.clamp(max=self.limit)
        return (up.clamp(-self.limit, self.limit) + 1) * g * torch.sigmoid(g * self.alpha)


class ClampedGLU(nn.Module):
    """A unit's gate times its up pre-activation clamped to [-limit, limit]: ``act(clamp(gate,
    max=limit)) * clamp(up, -limit, limit)`` (HY-V4's), or with ``act_first`` the gate's
    activation clamped, ``clamp(act(gate), max=limit)`` (Bailing's)."""

    def __init__(self, act: nn.Module, limit: float, act_first: bool = False) -> None:
        super().__init__()
        self.act, self.limit, self.act_first = act, float(limit), act_first

    def forward(self, gate: Tensor, up: Tensor) -> Tensor:
        """Each unit's output from its own two pre-activations."""
        if self.act_first:
            g: Tensor = self.act(gate).clamp(max=self.limit)
        else:
            g = self.act(gate.clamp(max=self.limit))
        return g * up.clamp(-self.limit, self.limit)


#: A gated unit's function of its gate and up pre-activations, other than ``act(gate) * up``.
Glu = ClampedSwiGLU | ClampedGLU


class StackedExperts(nn.Module):
    """``experts`` MLPs of ``hidden`` inputs and ``intermediate`` units each, applied to the
    tokens the router sent them: ``forward(x, index, weights)`` with ``x`` (tokens,
    hidden), ``index`` and ``weights`` (tokens, k) gives ``sum_j weights[t, j] *
    expert_{index[t, j]}(x[t])`` for every token ``t``.

    A gated expert computes ``act(gate) * up`` (or ``glu(gate, up)``) from its gate and up
    rows, which follow one another (``interleaved``: alternate, unit ``j``'s gate row
    ``2j``, its up row ``2j + 1``); with ``bias``, ``<in_name>_bias`` (one per row) and
    ``down_proj_bias`` (hidden x experts: expert ``e``'s output bias is its column ``e``).
    """

    def __init__(
        self,
        experts: int,
        hidden: int,
        intermediate: int,
        act: nn.Module,
        gated: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        interleaved: bool = False,
        bias: bool = False,
        glu: Glu | None = None,
    ) -> None:
        super().__init__()
        if min(experts, hidden, intermediate) < 1:
            raise ValueError(
                f"experts, hidden and intermediate sizes must be positive, got "
                f"{experts}, {hidden}, {intermediate}"
            )
        if (interleaved or glu is not None) and not gated:
            raise ValueError("interleaved rows and a two-input gate need gated experts")
        self.experts, self.hidden, self.intermediate = experts, hidden, intermediate
        self.gated, self.interleaved = gated, interleaved
        self.act_fn = act
        self.glu = glu
        rows = experts * intermediate * (2 if gated else 1)

        def new(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype))

        self.register_parameter(self.in_name, new(rows, hidden))
        self.down_proj = new(hidden, experts * intermediate)
        self.register_parameter(f"{self.in_name}_bias", new(rows) if bias else None)
        self.register_parameter("down_proj_bias", new(hidden, experts) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert's layers drawn as ``nn.Linear`` draws its own: weights and biases
        uniform in +-1/sqrt(fan-in) (``hidden`` for the rows in, ``intermediate`` for
        ``down_proj``)."""
        fans = {self.in_name: self.hidden, "down_proj": self.intermediate}
        with torch.no_grad():
            for name, fan in fans.items():
                for tensor in (self._parameters[name], self._parameters[f"{name}_bias"]):
                    if tensor is not None:
                        bound = fan**-0.5
                        tensor.uniform_(-bound, bound)

    @property
    def in_name(self) -> str:
        """The name of the weight that reads the tokens: ``gate_up_proj`` or ``up_proj``."""
        return "gate_up_proj" if self.gated else "up_proj"

    def _units(self, h: Tensor) -> Tensor:
        """An expert's units from its rows' pre-activations (tokens x rows)."""
        if not self.gated:
            out: Tensor = self.act_fn(h)
            return out
        gate, up = (h[..., 0::2], h[..., 1::2]) if self.interleaved else h.chunk(2, dim=-1)
        if self.glu is not None:
            glued: Tensor = self.glu(gate, up)
            return glued
        gated: Tensor = self.act_fn(gate) * up
        return gated

    def forward(self, x: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        """The weighted sum of the picked experts' outputs, one row per token."""
        rows: Tensor = getattr(self, self.in_name)
        ins = rows.view(self.experts, -1, self.hidden)
        in_bias, down_bias = (self._parameters[f"{n}_bias"] for n in (self.in_name, "down_proj"))
        biases = in_bias.view(self.experts, -1) if in_bias is not None else None
        outs = self.down_proj.view(self.hidden, self.experts, self.intermediate)
        if x.is_meta:  # which tokens reach which experts is data: meta tensors have shapes
            return torch.empty_like(x)
        out = torch.zeros_like(x)
        hit = torch.bincount(index.flatten(), minlength=self.experts)[: self.experts]
        for e in hit.nonzero().flatten().tolist():  # the experts some token reached
            token, slot = torch.where(index == e)
            h = self._units(F.linear(x[token], ins[e], None if biases is None else biases[e]))
            down = None if down_bias is None else down_bias[:, e]
            y = F.linear(h, outs[:, e], down) * weights[token, slot, None]
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
        with torch.no_grad():  # as nn.Linear's weight
            self.weight.uniform_(-(hidden**-0.5), hidden**-0.5)

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
