"""Mixtures of experts, written by hand with canon's own layers (no library).

A router picks each token's experts from ``x @ W.T``; :class:`StackedExperts` holds ``E``
gated (or plain) MLPs as two 2-D weights that stack the experts along their units. The
stream's units permute the router's and the experts' input columns and ``down_proj``'s
rows; each expert's units permute within the expert, its gate and up rows together. A
one-output layer gating a position's units (Qwen2-MoE's shared expert) is a factor.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function, run
from torch import Tensor, nn

from canon.core import (
    Alignment,
    Spec,
    apply_alignment,
    match_incoming,
    match_weights,
    matching,
    matching_objective,
    normalize,
    permutations,
    spec_from_module,
)
from canon.core.experts import ClampedSwiGLU, StackedExperts, TopKRouter, mark_router
from canon.core.symmetries import random_permutation
from canon.engine.matching import match_activations
from canon.errors import UnsupportedModuleError

TOKENS, WIDTH, EXPERTS, INNER, VOCAB = 5, 8, 4, 6, 30


class Mixture(nn.Module):
    """A mixture-of-experts MLP (Mixtral's block), with a shared expert gated per token
    (Qwen2-MoE's) when ``shared``; GPT-OSS's experts (gate and up rows interleaved,
    biases, a clamped SwiGLU) when ``oss``."""

    def __init__(
        self, gated: bool, act: nn.Module, shared: bool, router: nn.Module, oss: bool
    ) -> None:
        super().__init__()
        self.gate = router
        if isinstance(router, GivenBiasRouter):  # the block holds the router's score bias
            self.register_buffer("score_bias", torch.zeros(EXPERTS))
        glu = ClampedSwiGLU(1.702, 2.0) if oss else None
        self.experts = StackedExperts(
            EXPERTS, WIDTH, INNER, act, gated, interleaved=oss, bias=oss, glu=glu
        )
        self.shared = nn.Sequential(nn.Linear(WIDTH, 10), nn.GELU(), nn.Linear(10, WIDTH))
        self.shared_gate = nn.Linear(WIDTH, 1) if shared else None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        given = (self.score_bias,) if isinstance(self.gate, GivenBiasRouter) else ()
        _, weights, index = self.gate(flat, *given)
        out = self.experts(flat, index, weights).reshape(shape)
        if self.shared_gate is not None:
            out = out + torch.sigmoid(self.shared_gate(x)) * self.shared(x)
        return out


class Language(nn.Module):
    """Tokens, two residual mixture blocks under LayerNorms, a read-out (the logits'
    mean over the sequence: one row of classes per sequence)."""

    input_shape = (TOKENS,)
    main_input_name = "input_ids"

    def __init__(
        self,
        gated: bool = True,
        act: type[nn.Module] = nn.SiLU,
        shared: bool = False,
        router: type[nn.Module] | None = None,
        oss: bool = False,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.norms = nn.ModuleList(nn.LayerNorm(WIDTH) for _ in range(3))
        make = router or (lambda: TopKRouter(EXPERTS, WIDTH, 2))
        self.blocks = nn.ModuleList(Mixture(gated, act(), shared, make(), oss) for _ in range(2))
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        for norm, block in zip(self.norms, self.blocks, strict=False):
            h = h + block(norm(h))
        out: Tensor = self.head(self.norms[-1](h)).mean(1)  # a sequence's mean logits
        return out


class SoftRouter(nn.Module):
    """A library's router as transformers writes one (a Linear inside, softmax, top-k):
    marked, not canon's class."""

    def __init__(self) -> None:
        super().__init__()
        self.wg = nn.Linear(WIDTH, EXPERTS, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.wg(x)
        top, index = torch.topk(F.softmax(logits, dim=-1), 2, dim=-1)
        return logits, top, index


class PeekingRouter(SoftRouter):
    """A router that reads one unit of its input besides its weight's columns."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return super().forward(x + x[:, :1])


class TwoWeightRouter(SoftRouter):
    """A router with two weights of one row per expert: which the units read is not told."""

    def __init__(self) -> None:
        super().__init__()
        self.wh = nn.Linear(WIDTH, EXPERTS, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, top, index = super().forward(x)
        return logits + self.wh(x), top, index


class GroupedRouter(SoftRouter):
    """DeepSeek's routing: the experts in two groups, the better group's two best picked,
    a score bias per expert (a buffer): experts of one group are not those of the other."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(EXPERTS))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.wg(x)
        scores = logits.sigmoid() + self.bias
        halves = scores.view(-1, 2, EXPERTS // 2)
        best = halves.sum(-1).argmax(-1, keepdim=True)
        picked = torch.where(torch.arange(2) == best, 0.0, float("-inf"))
        index = torch.topk(scores + picked.repeat_interleave(EXPERTS // 2, -1), 2, -1)[1]
        return logits, logits.sigmoid().gather(1, index), index


class GivenBiasRouter(SoftRouter):
    """MiniMax-M2's router: a score bias per expert, held by its block, added to pick."""

    def forward(self, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        logits = self.wg(x)
        index = torch.topk(logits.sigmoid() + bias, 2, dim=-1)[1]
        return logits, logits.sigmoid().gather(1, index), index


def _given_bias() -> nn.Module:
    return mark_router(GivenBiasRouter())


def _marked() -> nn.Module:
    return mark_router(SoftRouter())


def _grouped() -> nn.Module:
    return mark_router(GroupedRouter())


def _model(seed: int, **kinds: object) -> tuple[Language, Spec, dict[str, Tensor]]:
    model = Language(**kinds).double().eval()  # type: ignore[arg-type]
    spec = spec_from_module(model)
    gen = torch.Generator().manual_seed(seed)
    state = {t.name: torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in spec.tensors}
    return model, spec, state


def _tokens(seed: int, n: int = 6) -> Tensor:
    return torch.randint(0, VOCAB, (n, TOKENS), generator=torch.Generator().manual_seed(seed))


def test_the_experts_compute_each_tokens_weighted_picks() -> None:
    """StackedExperts gives, for every token, the weighted sum of its picked experts'
    MLPs, each read from its rows and columns of the stacked weights."""
    gen = torch.Generator().manual_seed(0)
    for gated in (True, False):
        experts = StackedExperts(EXPERTS, WIDTH, INNER, nn.SiLU(), gated).double()
        assert experts.down_proj_bias is None
        with torch.no_grad():
            for p in experts.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        x = torch.randn(7, WIDTH, generator=gen, dtype=torch.float64)
        index = torch.randint(0, EXPERTS, (7, 2), generator=gen)
        weights = torch.rand(7, 2, generator=gen, dtype=torch.float64)
        rows = getattr(experts, experts.in_name)
        expected = torch.zeros_like(x)
        for t in range(7):
            for j in range(2):
                e = int(index[t, j])
                if gated:
                    gate = rows[2 * e * INNER : (2 * e + 1) * INNER] @ x[t]
                    up = rows[(2 * e + 1) * INNER : (2 * e + 2) * INNER] @ x[t]
                    h = F.silu(gate) * up
                else:
                    h = F.silu(rows[e * INNER : (e + 1) * INNER] @ x[t])
                down = experts.down_proj[:, e * INNER : (e + 1) * INNER]
                expected[t] += weights[t, j] * (down @ h)
        with torch.no_grad():
            torch.testing.assert_close(experts(x, index, weights), expected)


def test_gpt_oss_experts_compute_their_clamped_gate_with_biases() -> None:
    """With interleaved rows, biases and GPT-OSS's clamped SwiGLU, expert e's output on x
    is its down columns times the gate of its rows 2j (gate) and 2j + 1 (up), plus its
    biases (the input bias by row, the output bias its column of down_proj_bias)."""
    gen = torch.Generator().manual_seed(1)
    glu = ClampedSwiGLU(1.702, 2.0)
    experts = StackedExperts(
        EXPERTS, WIDTH, INNER, nn.Identity(), interleaved=True, bias=True, glu=glu
    ).double()
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 2)
    x = torch.randn(3, WIDTH, generator=gen, dtype=torch.float64)
    index = torch.tensor([[1], [3], [1]])
    weights = torch.ones(3, 1, dtype=torch.float64)
    rows = experts.gate_up_proj[2 * INNER : 4 * INNER]  # expert 1's
    h = F.linear(x, rows, experts.gate_up_proj_bias[2 * INNER : 4 * INNER])
    g, up = h[:, 0::2].clamp(max=2.0), h[:, 1::2].clamp(-2.0, 2.0)
    units = (up + 1) * g * torch.sigmoid(1.702 * g)
    down = experts.down_proj[:, INNER : 2 * INNER]
    expected = F.linear(units, down, experts.down_proj_bias[:, 1])
    with torch.no_grad():
        out = experts(x, index, weights)
    torch.testing.assert_close(out[[0, 2]], expected[[0, 2]])


def test_the_structure_is_derived() -> None:
    """Each block's experts are one group of E x I units in E blocks, made by the gate and up
    rows (runs of I rows, 2I apart, from 0 and from I) and read by down_proj's columns;
    the router's and experts' input columns read the stream, which down_proj's rows
    make. The experts move as wholes with their router's rows (one order, its bias and a
    score bias its block gives it with them), unless the router treats them apart
    (groups of experts: they stay in place). The shared expert's gate (one unit, a
    factor of the position's units) is in no group."""
    _, spec, _ = _model(0, shared=True)
    experts = spec.group("blocks.0.experts")
    assert (experts.size, experts.blocks, experts.symmetry) == (EXPERTS * INNER, EXPERTS, "none")
    # the experts move as wholes, in the order of their router's rows
    router = spec.group("blocks.0.gate")
    assert (router.size, router.heads, experts.heads) == (EXPERTS, EXPERTS, EXPERTS)
    assert router.link == experts.link != "" and router.weights == ("blocks.0.gate.weight",)
    layouts = [(p.weight, p.start, p.head, p.stride) for p in experts.producers]
    weight = "blocks.0.experts.gate_up_proj"
    assert layouts == [(weight, 0, INNER, 2 * INNER), (weight, INNER, INNER, 2 * INNER)]
    assert [o.name for o in experts.outgoing] == ["blocks.0.experts.down_proj"]
    stream = spec.group("embed")
    read = {o.name for o in stream.outgoing}
    assert {"blocks.0.gate.weight", weight, "blocks.1.shared_gate.weight"} <= read
    assert "blocks.1.experts.down_proj" in stream.weights
    assert not any(g.name.endswith("shared_gate") for g in spec.groups)
    _, marked, _ = _model(0, router=_marked)
    router = marked.group("blocks.1.gate")
    assert router.producers[0].bias == "blocks.1.gate.wg.bias" and router.heads == EXPERTS
    _, grouped, _ = _model(0, router=_grouped)  # the experts stay in place
    assert grouped.group("blocks.0.experts").heads == 1 and grouped.group("embed")
    assert not any(g.name.endswith("gate") for g in grouped.groups)
    _, oss, _ = _model(0, oss=True, router=_marked)  # GPT-OSS's: interleaved rows, biases
    experts = oss.group("blocks.0.experts")
    assert [(p.start, p.head, p.stride) for p in experts.producers] == [(0, 1, 2), (1, 1, 2)]
    assert experts.producers[0].bias == "blocks.0.experts.gate_up_proj_bias"
    bias = "blocks.0.experts.down_proj_bias"  # hidden x experts: the stream's, the experts'
    assert any(c.name == bias and c.axis == 0 for c in oss.group("embed").carried)
    assert any(c.name == bias and c.axis == 1 for c in oss.group("blocks.0.gate").carried)
    _, given, _ = _model(0, router=_given_bias)  # the block's score bias moves with them
    carried = given.group("blocks.0.gate").carried
    assert [(c.name, c.axis) for c in carried] == [("blocks.0.score_bias", 0)]
    _, plain, _ = _model(0, gated=False, act=nn.ReLU)
    relu = plain.group("blocks.1.experts")
    assert relu.symmetry == "scale" and relu.producers[0].stride == 0


@given(
    seed=st.integers(0, 2**31 - 1),
    kinds=st.sampled_from(
        [
            {},
            {"shared": True},
            {"gated": False, "act": nn.ReLU},
            {"gated": False, "act": nn.Tanh, "router": _marked},
            {"router": _grouped},
            {"oss": True, "router": _marked},
            {"router": _given_bias},
        ]
    ),
)
@settings(max_examples=12, deadline=None)
def test_symmetries_keep_the_function(seed: int, kinds: dict[str, object]) -> None:
    """Random symmetries (experts' units within their expert, scaled where the
    activation allows), normalization and canonical forms keep the logits; canonical
    forms of a moved copy agree with the original's."""
    model, spec, state = _model(seed % 1000, **kinds)
    assert_symmetries_keep_the_function(
        model, spec, state, _tokens(seed), seed, methods=("weight", "incoming")
    )


@pytest.mark.parametrize("method", ["weight", "incoming", "activation"])
def test_a_planted_permutation_is_recovered(method: str) -> None:
    """Every matching method finds the permutations planted in a copy (the experts in
    another order, with their router's rows, and each expert's units within it): the copy
    aligned to the original is the original (activation
    matching reads each expert's gate pre-activations, the tokens projected through its
    gate rows)."""
    model, spec, state = _model(3, shared=True)
    gen = torch.Generator().manual_seed(5)
    orders = {g.link: torch.randperm(g.heads, generator=gen) for g in spec.groups if g.link}
    planted = {
        g.name: random_permutation(g.size, g.blocks, gen, orders.get(g.link)) for g in spec.groups
    }
    moved = apply_alignment(state, Alignment(planted, {}), spec)
    if method == "weight":
        alignment = match_weights(moved, state, spec)
    elif method == "incoming":
        alignment = match_incoming(moved, state, spec)
    else:
        alignment = match_activations(moved, state, spec, model, _tokens(9, 64))
    aligned = apply_alignment(moved, alignment, spec)
    for name in state:
        torch.testing.assert_close(aligned[name], state[name], rtol=0, atol=1e-12)
    assert torch.equal(run(model, aligned, _tokens(1)), run(model, state, _tokens(1)))


@pytest.mark.parametrize(
    "kinds", [{}, {"router": _grouped}, {"shared": True}, {"oss": True, "router": _marked}]
)
def test_weight_matching_a_block_at_a_time_equals_the_whole_matrices(
    kinds: dict[str, object],
) -> None:
    """Weight matching reads a large group in heads or blocks (the experts; below 8,192
    units it holds the whole matrix) a strip at a time: forced onto that path for every
    such group, with one head pair per strip, it finds the same alignment of two
    unrelated mixtures, of the same objective."""
    _, spec, state = _model(4, **kinds)
    reference = normalize(_model(5, **kinds)[2], spec)
    moving = normalize(state, spec)
    whole = match_weights(moving, reference, spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "DENSE_UNITS", 0)
        patch.setattr(permutations, "STRIP", 1)
        blocked = match_weights(moving, reference, spec)
    assert any(g.heads > 1 or g.blocks > 1 for g in spec.groups)
    for group in spec.groups:
        assert torch.equal(blocked.permutations[group.name], whole.permutations[group.name])
    assert matching_objective(moving, reference, spec, blocked) == pytest.approx(
        matching_objective(moving, reference, spec, whole), rel=1e-12
    )


@pytest.mark.parametrize("kinds", [{}, {"oss": True, "router": _marked}])
def test_specs_round_trip(kinds: dict[str, object]) -> None:
    """The experts' blocks, heads and link, their strided producers and the router's
    carried tensors survive JSON."""
    _, spec, _ = _model(0, **kinds)
    assert Spec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_router_that_reads_more_than_its_weight_is_refused() -> None:
    """A module marked as a router is run once by the tracer: one that reads its input
    other than through its weight's columns is refused, by name, and so is one whose
    weight is not one of a kind."""
    with pytest.raises(UnsupportedModuleError, match="does not read its input through"):
        spec_from_module(Language(router=lambda: mark_router(PeekingRouter())).double())
    with pytest.raises(UnsupportedModuleError, match=r"router `blocks\.0\.gate` has no single"):
        spec_from_module(Language(router=lambda: mark_router(TwoWeightRouter())).double())


class Twice(Mixture):
    """One router and experts called on two inputs."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + super().forward(2 * x)


def test_experts_called_twice_are_refused() -> None:
    """canon follows one call of each router and experts module."""
    model = Language().double()
    model.blocks[0].__class__ = Twice
    with pytest.raises(UnsupportedModuleError, match="is called again"):
        spec_from_module(model)


def test_bad_sizes_are_refused() -> None:
    """Sizes and the number of experts picked are checked when the layers are made."""
    with pytest.raises(ValueError, match="must be positive"):
        StackedExperts(0, WIDTH, INNER, nn.SiLU())
    with pytest.raises(ValueError, match="picks 1 to 4 experts"):
        TopKRouter(EXPERTS, WIDTH, 5)
