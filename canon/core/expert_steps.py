"""The walk's steps through a mixture of experts (DESIGN §3b "Experts"): a router and
the stacked experts it feeds (:mod:`canon.core.experts`), each one op of the graph.

The router reads the stream's units through its weight's columns (an outgoing axis)
and gives values no symmetry moves: the experts picked and their weights, as the
network's input is. The experts read the stream's units through the columns of their
input weight, and make new units with ``down_proj``'s rows (added to the stream, they
join it). Their hidden units are one space of ``E * I`` units in ``E`` blocks: a unit
permutes within its expert, its gate and up rows together (runs of ``I`` rows, ``2I``
apart, from 0 and from ``I``), its ``down_proj`` column with them.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx, nn

from canon.core.experts import EXPERTS_LINK, StackedExperts, router_weight
from canon.core.ops import Op, library_activation, module_op, plain
from canon.core.spec import CarriedAxis, OutgoingAxis, Tap
from canon.core.walk_values import (
    Made,
    Space,
    Units,
    Value,
    attribute,
    check_commutes,
    hidden_units,
    probe_copy,
    shape_of,
    unsupported,
)

__all__ = ["ExpertSteps", "check_router"]


class ExpertSteps:
    """The :class:`~canon.core.unit_spaces.Walker`'s steps for routers and experts (a
    mixin: it shares the walker's ``values``, ``order`` and the network's input space)."""

    gm: fx.GraphModule
    values: dict[fx.Node, Value]
    order: dict[fx.Node, int]
    input: Space
    inner: list[Space]  # spaces no node's value holds (the experts' hidden units)
    calls: dict[str, tuple[Units | None, Space]]
    names: frozenset[str] | None  # the model's state dict (None: what the graph reads)
    # each router call: its module, its weight, the units it reads, the model's tensors it
    # is given besides them (a score bias its block holds)
    routers: dict[fx.Node, tuple[nn.Module, str, Units, tuple[str, ...]]]

    def _read_tokens(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]], what: str) -> Units:
        """The stream's units that a router or the experts at ``node`` read: its first
        argument, units on the last axis, one entry each; nothing else hidden."""
        path = str(node.target)
        hidden = hidden_units(inputs)
        first = node.args[0] if node.args else None
        if len(hidden) != 1 or hidden[0][0] is not first:
            raise unsupported(
                f"{what} `{path}` must read hidden units as its first argument, and no other "
                "hidden units",
                what,
                path,
            )
        source, units = hidden[0]
        if units.axis != len(shape_of(source)) - 1 or units.block != 1 or units.repeat != 1:
            raise unsupported(
                f"{what} `{path}` reads an input whose units are not its last axis", what, path
            )
        if path in self.calls:
            raise unsupported(
                f"{what} `{path}` is called again; canon follows one call of each", what, path
            )
        space = units.space.root()
        space.taps.setdefault(source.name, Tap(source.name, units.axis))
        return units

    def _router(
        self, node: fx.Node, module: nn.Module, inputs: list[tuple[fx.Node, Value]]
    ) -> Units:
        """A router: its weight's columns read the stream's units; its outputs (scores and
        the experts picked) are moved by no symmetry."""
        path = str(node.target)
        units = self._read_tokens(node, inputs, "router")
        extra = tuple(
            str(a.target) for a in node.args[1:] if isinstance(a, fx.Node) and a.op == "get_attr"
        )
        if len(inputs) != 1 + len(extra) or len(node.args) != 1 + len(extra) or node.kwargs:
            raise unsupported(
                f"router `{path}` takes tensors besides the tokens and the model's own "
                "(a score bias); canon follows a router called on those alone",
                "router",
                path,
            )
        space = units.space.root()
        weight = check_router(module, path, space.size, [self._tensor(n) for n in extra])
        space.outgoing.append((self.order[node], OutgoingAxis(f"{path}.{weight}", 1)))
        self.calls[path] = (units, self.input)
        self.routers[node] = (module, weight, units, extra)
        return Units(self.input, 1)

    def _tensor(self, name: str) -> Tensor:
        """The model's parameter or buffer ``name``."""
        found = attribute(self.gm, name)
        assert found is not None  # the target of a get_attr node
        return found

    def _experts(
        self, node: fx.Node, module: StackedExperts, inputs: list[tuple[fx.Node, Value]]
    ) -> Units:
        """Stacked experts: the stream's units read by the input weight's columns, the
        experts' own units (a space in blocks, one per expert), the output made by
        ``down_proj``'s rows."""
        path, order = str(node.target), self.order[node]
        units = self._read_tokens(node, inputs, "experts")
        tokens = self._tokens_of(node)
        space = units.space.root()
        if space.size != module.hidden or len(node.args) != 3:
            raise unsupported(
                f"experts `{path}` have {module.hidden} inputs, not the {space.size} units "
                "they read, or are not called as (tokens, index, weights)",
                "experts",
                path,
            )
        op = self._expert_op(path, module)
        weight = f"{path}.{module.in_name}"
        in_bias = f"{weight}_bias" if module.down_proj_bias is not None else None
        space.outgoing.append((order, OutgoingAxis(weight, 1)))
        e, i = module.experts, module.intermediate
        inner = Space(size=e * i, created=order, origin=path, blocks=e)
        if module.gated:
            # unit j of expert e: gate row 2ei + j and up row 2ei + i + j, or (interleaved)
            # rows 2(ei + j) and 2(ei + j) + 1
            head, stride, up = (1, 2, 1) if module.interleaved else (i, 2 * i, i)
            inner.producers += [
                Made(order, path, weight, in_bias, start=0, head=head, stride=stride),
                Made(order, path, weight, in_bias, start=up, head=head, stride=stride),
            ]
            inner.ops.append((order, op))
            if module.glu is None:
                inner.ops.append((order, plain("product")))
            layout = {"head": head, "stride": stride}
        else:
            inner.producers.append(Made(order, path, weight, in_bias))
            inner.ops.append((order, op))
            layout = {}
        # the gate's (or up) pre-activations of every token: what activation matching reads
        inner.taps[f"{path}#experts"] = Tap(
            tokens, units.axis, projection=weight, projection_bias=in_bias or "", **layout
        )
        inner.outgoing.append((order, OutgoingAxis(f"{path}.down_proj", 1)))
        self.inner.append(inner)
        made = Space(size=module.hidden, created=order, origin=path)
        made.producers.append(Made(order, path, f"{path}.down_proj", None))
        by_expert = []
        if in_bias is not None:  # each expert's own output bias (hidden x experts)
            made.carried.append(CarriedAxis(f"{path}.down_proj_bias", 0))
            made.ops.append((order, plain("experts' biases")))  # a shift: no factor moves it
            by_expert.append(CarriedAxis(f"{path}.down_proj_bias", 1))
        self._route(node, inner, e, by_expert)
        self.calls[path] = (units, made)
        return Units(made, len(shape_of(node)) - 1)

    def _expert_op(self, path: str, module: StackedExperts) -> Op:
        """What the experts' activation (or two-input gate) does to a unit's scale."""
        if module.glu is not None:
            return plain(type(module.glu).__name__)
        act = module.act_fn
        op = module_op(act)
        if op is None:
            raise unsupported(
                f"the experts' activation `{path}.act_fn` ({type(act).__name__}) is not one "
                "canon knows",
                type(act).__name__,
                f"{path}.act_fn",
            )
        if library_activation(act):
            check_commutes(act, f"{path}.act_fn", (1, module.intermediate), 1, parameters=False)
        return op

    def _route(
        self, node: fx.Node, inner: Space, experts: int, by_expert: list[CarriedAxis]
    ) -> None:
        """When the experts at ``node`` take their index and weights straight from one
        router's outputs and that router treats the experts alike (:func:`_moves_experts`),
        the experts move as wholes with its rows: ``inner`` in ``experts`` blocks, and a
        space of the router's rows (its per-expert vectors carried, and ``by_expert``: the
        experts' tensors with an axis of experts), in one order."""
        sources = {a.args[0] for a in node.args[1:] if _getitem(a)}  # type: ignore[union-attr]
        router = next(iter(sources)) if len(sources) == 1 else None
        if router not in self.routers:
            return
        assert isinstance(router, fx.Node)
        module, weight, units, extra = self.routers[router]
        if self.names is not None and not set(extra) <= self.names:
            return  # a tensor no file holds (not persistent): it cannot move with them
        given = [self._tensor(n) for n in extra]
        per_expert = _moves_experts(module, weight, experts, given)
        if per_expert is None:
            return
        path, order = str(router.target), self.order[router]
        prefix = weight.removesuffix("weight")
        bias = f"{prefix}bias" if f"{prefix}bias" in per_expert else None
        rows = Space(size=experts, created=order, origin=path)
        full = f"{path}.{bias}" if bias is not None else None
        rows.producers.append(Made(order, path, f"{path}.{weight}", full))
        rows.carried += [CarriedAxis(f"{path}.{n}", 0) for n in per_expert if n != bias]
        rows.carried += [CarriedAxis(n, 0) for n in extra] + by_expert
        reads = self._tokens_of(router)
        rows.taps[f"{path}#router"] = Tap(
            reads, units.axis, projection=f"{path}.{weight}", projection_bias=full or ""
        )
        link = f"{inner.origin}{EXPERTS_LINK}"
        for space in (inner, rows):
            space.heads, space.link = experts, link
        self.inner.append(rows)

    def _tokens_of(self, node: fx.Node) -> str:
        """The name of the node whose units a router or experts call reads."""
        first = node.args[0]
        assert isinstance(first, fx.Node)
        return first.name


def _getitem(arg: object) -> bool:
    """Whether ``arg`` is a node that picks one output of a call (``out[i]``)."""
    return (
        isinstance(arg, fx.Node)
        and arg.target is operator.getitem
        and isinstance(arg.args[0], fx.Node)
        and isinstance(arg.args[1], int)
    )


def _moves_experts(
    module: nn.Module, weight: str, experts: int, given: list[Tensor]
) -> tuple[str, ...] | None:
    """The router's tensors besides ``weight`` (all of one entry per expert, as must be the
    tensors it is ``given``), when, run once on random tokens with random tensors, its
    outputs follow a permutation of the experts (its weight's rows and those tensors
    permuted alike): the logits permuted, the indices renamed, the weights of the picked
    the same. None otherwise (the experts stay in place: a routing that picks groups of
    experts first, DeepSeek's, treats them apart)."""
    tensors = module.state_dict()
    others = tuple(n for n in tensors if n != weight)
    if any(tuple(t.shape) != (experts,) for t in [*(tensors[n] for n in others), *given]):
        return None
    gen = torch.Generator().manual_seed(1)
    probe = probe_copy(module)
    held = probe.state_dict(keep_vars=True)
    x = torch.randn((16, held[weight].shape[1]), generator=gen, dtype=torch.float64)
    args = [torch.randn(experts, generator=gen, dtype=torch.float64) for _ in given]
    perm = torch.randperm(experts, generator=gen)
    back = torch.argsort(perm)
    with torch.no_grad():
        for t in held.values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
        before = _flat(probe(x, *args))
        for n in (weight, *others):
            held[n].copy_(held[n][perm])
        after = _flat(probe(x, *(a[perm] for a in args)))

    def follows(old: Tensor, new: Tensor) -> bool:
        if old.shape != new.shape:
            return False
        if not old.is_floating_point():
            return bool((old >= 0).all() and (old < experts).all()) and torch.equal(new, back[old])
        close = torch.allclose(new, old, 1e-5, 1e-7)
        if old.shape[-1] == experts:
            close = close or torch.allclose(new, old[..., perm], 1e-5, 1e-7)
        return close

    same = len(before) == len(after) and all(map(follows, before, after))
    return others if same else None


def check_router(module: nn.Module, path: str, width: int, given: list[Tensor]) -> str:
    """The name of the weight through which a module followed as a router reads the
    units (:func:`router_weight`). Refused unless, run once on random tokens with random
    parameters (and random tensors of the shapes it is ``given`` besides the tokens), it
    gives the same outputs when the tokens' units and that weight's columns are permuted
    alike: it reads the units through that weight alone."""
    name = router_weight(module, width)
    if name is None:
        raise unsupported(
            f"router `{path}` has no single weight of one row per expert and {width} columns",
            "router",
            path,
        )
    gen = torch.Generator().manual_seed(0)
    probe = probe_copy(module)
    x = torch.randn((16, width), generator=gen, dtype=torch.float64)
    args = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in given]
    perm = torch.randperm(width, generator=gen)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        expected = _flat(probe(x, *args))
        w = probe.get_parameter(name)
        w.copy_(w[:, perm])
        found = _flat(probe(x[:, perm], *args))
    same = len(found) == len(expected) and all(
        a.shape == b.shape
        and (torch.equal(a, b) if not a.is_floating_point() else torch.allclose(a, b, 1e-5, 1e-7))
        for a, b in zip(found, expected, strict=False)
    )
    if not same:
        raise unsupported(
            f"`{path}` ({type(module).__name__}), followed as a router, does not read its "
            "input through its weight's columns alone (permuting both changed its outputs)",
            "router",
            path,
        )
    return name


def _flat(value: object) -> list[Tensor]:
    """The tensors of a module's output (a tensor, or a tuple of them), in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return []
