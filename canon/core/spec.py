"""The structure of a network: which tensors move with which hidden units.

A :class:`Spec` is the contract between a network's state dict and every
symmetry operation (DESIGN §3 "Spec"). It lists the network's *unit groups*
(sets of hidden units that permute together, in forward order) and its output
layer. Each group names its producers (the layers whose outputs are its units:
weight rows or filters, bias and, when the layer is followed by BatchNorm, the
BN parameters and running statistics; several for a residual stream), its
outgoing tensors (the consuming layers' input axes; for conv -> flatten ->
linear, contiguous blocks of ``block`` columns per channel) and the tensors
only permuted with it (norm layers, depthwise filters), and states which
activation symmetry the group has (DESIGN §3, §3b).

Specs are plain frozen records: they compare by value, serialize to JSON and
back, and carry the shape and dtype of every tensor of the state dict so that
checkpoints can be checked against them before any tensor is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypedDict, cast

import torch

from canon.errors import NonFiniteError, SpecMismatchError

__all__ = [
    "BatchNormTensors",
    "CarriedAxis",
    "Layout",
    "OutgoingAxis",
    "OutputLayer",
    "Producer",
    "Role",
    "Spec",
    "Symmetry",
    "Tap",
    "TensorAxis",
    "TensorInfo",
    "UnitGroup",
    "check_finite",
    "check_state",
    "claimed_twice",
    "forward_order",
    "layout_of",
    "linked",
]

Symmetry = Literal["scale", "sign", "linear", "none"]
"""Activation symmetry of a unit group.

``scale``: positive per-unit rescaling, compensated in the outgoing weights
(ReLU, leaky ReLU, max/avg pooling, no activation). ``sign``: per-unit sign
flip, compensated in the outgoing weights (odd activations: tanh, sign).
``linear``: any non-zero per-unit factor, compensated in the outgoing
weights (attention's query/key and value/output dimensions, DESIGN §3b):
normalized by balancing the two sides' norms, the sign fixed by alignment.
``none``: only the permutation symmetry.
"""

Role = Literal["incoming", "outgoing", "carried"]

SYMMETRIES: tuple[Symmetry, ...] = ("scale", "sign", "linear", "none")


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one tensor of a state dict."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    parameter: bool = True  # False for buffers (BN running statistics, counters)
    binary: bool = False  # a weight whose sign is used in the forward pass (BinaryNet)

    @property
    def is_floating(self) -> bool:
        """Whether the tensor holds floating-point values."""
        return self.dtype in _FLOAT_DTYPES


_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True)
class BatchNormTensors:
    """The BatchNorm that directly follows a group's producing layer (eval mode)."""

    weight: str
    bias: str
    running_mean: str
    running_var: str
    eps: float


@dataclass(frozen=True)
class OutgoingAxis:
    """A consuming layer's weight, indexed by the group's units along ``axis``.

    Unit ``k`` owns the contiguous slice ``[k * block, (k + 1) * block)`` of the
    axis (``block`` > 1 after a conv output is flattened into a linear layer),
    counted from ``start`` (> 0 for a part of a fused tensor, such as the keys'
    rows of a fused query-key-value projection). With ``repeat`` > 1 the units
    come in groups of ``head`` and the axis holds each group ``repeat`` times
    (the query rows of the heads that share one key head, grouped-query
    attention: :func:`~canon.core.units.unit_positions`). With ``stride`` > 0
    the groups of ``head`` units start ``stride`` apart (a part of a fused
    projection that interleaves queries, keys and values head by head).
    With ``groups`` > 1 the tensor is a grouped convolution's weight, (out, in / groups,
    ...): unit ``c`` of group ``j`` (``c // (in / groups)``) is entry ``c % (in / groups)``
    of axis 1 in the rows of output group ``j`` (:func:`~canon.core.units.ungrouped`).
    """

    name: str
    axis: int = 1
    block: int = 1
    start: int = 0
    repeat: int = 1  # > 1: groups of ``head`` units, each repeated (grouped-query attention)
    head: int = 1
    stride: int = 0
    groups: int = 1


@dataclass(frozen=True)
class Producer:
    """A layer whose outputs are the group's units: ``weight`` (units on axis 0:
    Linear rows, Conv filters), its ``bias`` and the ``batchnorm`` that directly follows it.

    ``start`` > 0 when the units are a part of a fused layer's outputs (the
    values' rows of a fused query-key-value projection): they are its rows
    from ``start`` on; with ``stride`` > 0, in runs of ``head`` rows that
    start ``stride`` apart (a projection whose rows interleave queries, keys
    and values head by head, GPT-NeoX's). The bias is laid out as the weight's rows,
    unless ``bias_start`` is set: then it is a tensor of its own, the units its
    entries from ``bias_start`` on (the query and value biases that timm's BEiT and EVA
    join into the fused projection's bias as it runs).
    """

    weight: str
    bias: str | None = None
    batchnorm: BatchNormTensors | None = None
    start: int = 0
    head: int = 1
    stride: int = 0
    bias_start: int | None = None

    def layout(self, name: str | None) -> Layout:
        """Where the units sit along axis 0 of the producer's tensor ``name``."""
        if name is not None and name == self.bias and self.bias_start is not None:
            return Layout(block=1, start=self.bias_start, repeat=1, head=1, stride=0, groups=1)
        return layout_of(self)

    @property
    def incoming(self) -> tuple[str, ...]:
        """Names of the producer's tensors indexed by the units on axis 0."""
        names = [self.weight]
        if self.bias is not None:
            names.append(self.bias)
        if self.batchnorm is not None:
            bn = self.batchnorm
            names += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return tuple(names)

    @property
    def own_scale(self) -> tuple[str, ...]:
        """The tensors that carry the units' output scale: BN's affine after BatchNorm,
        else the weight and bias."""
        if self.batchnorm is not None:
            return (self.batchnorm.weight, self.batchnorm.bias)
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    @property
    def odd(self) -> tuple[str, ...]:
        """The tensors negated to negate the producer's output (a sign flip)."""
        names = [self.weight] if self.bias is None else [self.weight, self.bias]
        if self.batchnorm is not None:
            names += [self.batchnorm.running_mean, self.batchnorm.bias]
        return tuple(names)


@dataclass(frozen=True)
class CarriedAxis:
    """A tensor that is only permuted with the group: a LayerNorm's or GroupNorm's
    affine, a depthwise convolution's filters, a BatchNorm that does not follow a layer
    (from ``start`` on when it normalizes several groups' units side by side: DenseNet's
    BatchNorm of its concatenated features), the rows of a gate on attention's output
    (in runs of ``head``, ``stride`` apart: one copy of the value heads' gates)."""

    name: str
    axis: int = 0
    repeat: int = 1  # > 1: a query norm's weights under grouped-query attention
    head: int = 1
    start: int = 0
    stride: int = 0


@dataclass(frozen=True)
class Tap:
    """A point of the traced graph whose output holds the group's units on ``axis``
    (in blocks of ``block``, from ``start``, in runs of ``head`` ``stride`` apart when
    ``stride`` > 0): where activation matching reads them.

    With a ``projection`` (a weight inside a module the trace does not enter,
    ``nn.MultiheadAttention``'s packed input projection, stacked experts' gate rows) the
    units are that weight's rows from ``start`` (in runs of ``head``, ``stride`` apart
    when ``stride`` > 0), plus ``projection_bias``, applied to the point's output (units
    on its last axis).
    """

    node: str
    axis: int = 1
    block: int = 1
    start: int = 0
    projection: str = ""
    projection_bias: str = ""
    head: int = 1
    stride: int = 0


@dataclass(frozen=True)
class TensorAxis:
    """One tensor that moves with a unit group: its name, the units' axis and role."""

    name: str
    axis: int
    role: Role
    block: int = 1
    start: int = 0
    repeat: int = 1
    head: int = 1
    stride: int = 0
    groups: int = 1


class Layout(TypedDict, total=False):
    """Where a group's units sit along a tensor axis (:mod:`canon.core.units`)."""

    block: int
    start: int
    repeat: int
    head: int
    stride: int
    groups: int


def layout_of(axis: object) -> Layout:
    """Where the units sit along ``axis`` (an outgoing, tensor or unit axis, a tap or a
    producer's rows): the keyword arguments of :mod:`canon.core.units`' helpers
    (defaults where ``axis`` has no such field: a producer's rows have no blocks)."""
    return Layout(
        block=int(getattr(axis, "block", 1)),
        start=int(getattr(axis, "start", 0)),
        repeat=int(getattr(axis, "repeat", 1)),
        head=int(getattr(axis, "head", 1)),
        stride=int(getattr(axis, "stride", 0)),
        groups=int(getattr(axis, "groups", 1)),
    )


@dataclass(frozen=True)
class UnitGroup:
    """A set of hidden units that permute together, and everything that moves with them.

    ``producers`` are the layers whose outputs are the units (one for a plain
    hidden layer; several for a residual stream: the stem, every block's last
    layer, projection shortcuts), ``outgoing`` the consuming layers' input
    axes, ``carried`` the tensors that are only permuted with the units
    (DESIGN §3b). Unit k's incoming vector is the concatenation of its rows in
    all producers. ``scale_invariant`` is true when the units' outputs do not
    depend on their incoming scale at all (a sign activation, reached through
    positively homogeneous ops), so the incoming weights can be normalized
    without compensation. ``blocks`` > 1 restricts permutations to within
    each of that many contiguous blocks of units (GroupNorm groups).
    ``heads`` > 1 splits the units into that many contiguous blocks (attention
    heads) that permute as wholes, units also permuting within their block;
    groups with the same non-empty ``link`` (one attention layer's
    query/key and value/output dimensions) move their blocks together.
    ``heads_only``: only whole heads permute, each unit keeping its place in
    its head (queries and keys under rotary position embeddings, whose
    dimensions are pinned to their frequencies, DESIGN §3b). ``linear_only``:
    every op between the producers and the consumers is linear (no activation:
    a linear bottleneck, two layers in a row, attention's values), so any
    invertible mixing of the units is an exact symmetry too; canon removes only
    permutations and the group's ``symmetry`` (for a ``scale`` group, not even
    sign flips): reported, not used.
    """

    name: str
    size: int
    symmetry: Symmetry
    producers: tuple[Producer, ...]
    outgoing: tuple[OutgoingAxis, ...] = ()
    scale_invariant: bool = False
    carried: tuple[CarriedAxis, ...] = ()
    blocks: int = 1
    taps: tuple[Tap, ...] = field(default=(), compare=False)
    heads: int = 1
    link: str = ""
    heads_only: bool = False
    linear_only: bool = field(default=False, compare=False)

    @property
    def weights(self) -> tuple[str, ...]:
        """The producers' weights (units on axis 0)."""
        return tuple(p.weight for p in self.producers)

    @property
    def incoming(self) -> tuple[str, ...]:
        """Names of the producers' tensors indexed by the units on axis 0."""
        return tuple(name for p in self.producers for name in p.incoming)

    @property
    def shared(self) -> bool:
        """Whether several layers produce the units (a residual stream)."""
        return len(self.producers) > 1

    @cached_property
    def tensors(self) -> tuple[TensorAxis, ...]:
        """Every tensor that moves with the group, with its axis and role."""
        inc = [
            TensorAxis(n, 0, "incoming", **p.layout(n)) for p in self.producers for n in p.incoming
        ]
        out = [TensorAxis(o.name, o.axis, "outgoing", **layout_of(o)) for o in self.outgoing]
        kept = [TensorAxis(c.name, c.axis, "carried", **layout_of(c)) for c in self.carried]
        return tuple(inc + out + kept)

    @property
    def normalized(self) -> bool:
        """Whether normalization (Alg. 1) rescales this group's units to unit norm."""
        return self.symmetry == "scale" or self.scale_invariant

    @property
    def signed(self) -> bool:
        """Whether the units' signs are free (fixed by alignment against a reference)."""
        return self.symmetry in ("sign", "linear")

    @property
    def on_sphere(self) -> bool:
        """Whether the units are points on spheres (distances are angles), or move
        freely (Euclidean terms, DESIGN §3b).

        Exactly the normalized units are on spheres: a unit whose norm is a real
        degree of freedom (symmetry ``none``; tanh and softsign units, odd but not
        homogeneous; the balanced ``linear`` units of attention) is not.
        """
        return self.normalized


@dataclass(frozen=True)
class OutputLayer:
    """The last layer, scaled globally to Frobenius norm sqrt(H^L)."""

    weight: str
    bias: str | None
    size: int


@dataclass(frozen=True)
class Spec:
    """The structure of a network: its unit groups in forward order and its output layer.

    ``output`` is ``None`` when the network has no output layer whose global scale is a
    symmetry: a committee machine sums its hidden units; a language model's output layer
    may be its token embedding (tied) or have its logits soft-capped by a tanh.
    ``tensors`` lists every tensor of the state dict, parameters and buffers alike.
    """

    groups: tuple[UnitGroup, ...]
    output: OutputLayer | None
    tensors: tuple[TensorInfo, ...] = field(default=())

    def __post_init__(self) -> None:
        twice = claimed_twice(self.groups)
        if twice:
            problems = tuple(
                f"tensor `{name}` axis {axis} moves with groups {', '.join(map(repr, owners))}"
                for name, axis, owners in twice
            )
            raise SpecMismatchError(
                f"invalid spec: {problems[0]}; a tensor axis may move with one unit group only "
                "(it would be permuted once per group)",
                problems=problems,
            )

    def group(self, name: str) -> UnitGroup:
        """The unit group called ``name``."""
        for g in self.groups:
            if g.name == name:
                return g
        known = ", ".join(g.name for g in self.groups) or "none"
        raise KeyError(f"no unit group `{name}` in this spec (groups: {known})")

    @property
    def shared(self) -> bool:
        """Whether any group has several producers (residual streams)."""
        return any(g.shared for g in self.groups)

    @property
    def tensor_info(self) -> dict[str, TensorInfo]:
        """The state dict's tensors by name."""
        return {t.name: t for t in self.tensors}

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the floating-point parameters (not buffers), in state-dict order."""
        return tuple(t.name for t in self.tensors if t.parameter and t.is_floating)

    @property
    def binary_weights(self) -> tuple[str, ...]:
        """Names of the weights used through their signs (binary networks)."""
        return tuple(t.name for t in self.tensors if t.binary)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable form of the spec (inverse of :meth:`from_dict`)."""
        return {
            "groups": [
                {
                    "name": g.name,
                    "size": g.size,
                    "symmetry": g.symmetry,
                    "producers": [
                        _sparse(
                            {
                                "weight": p.weight,
                                "bias": p.bias,
                                "batchnorm": None
                                if p.batchnorm is None
                                else vars(p.batchnorm).copy(),
                                "start": p.start,
                                "head": p.head,
                                "stride": p.stride,
                                "bias_start": p.bias_start,
                            }
                        )
                        for p in g.producers
                    ],
                    "outgoing": [_sparse(vars(o).copy()) for o in g.outgoing],
                    "scale_invariant": g.scale_invariant,
                    "carried": [_sparse(vars(c).copy()) for c in g.carried],
                    "blocks": g.blocks,
                    "taps": [_sparse(vars(t).copy()) for t in g.taps],
                }
                | _sparse(
                    {
                        "heads": g.heads,
                        "link": g.link,
                        "heads_only": g.heads_only,
                        "linear_only": g.linear_only,
                    }
                )
                for g in self.groups
            ],
            "output": None if self.output is None else vars(self.output).copy(),
            "tensors": [
                [t.name, list(t.shape), t.dtype, t.parameter, t.binary] for t in self.tensors
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        """Rebuild a spec from :meth:`to_dict` output."""
        groups = []
        for g in data["groups"]:
            if g["symmetry"] not in SYMMETRIES:
                raise ValueError(f"unknown symmetry `{g['symmetry']}` in spec group {g['name']}")
            groups.append(
                UnitGroup(
                    name=g["name"],
                    size=int(g["size"]),
                    symmetry=cast(Symmetry, g["symmetry"]),
                    producers=tuple(
                        Producer(
                            p["weight"],
                            p.get("bias"),
                            None
                            if p.get("batchnorm") is None
                            else BatchNormTensors(**p["batchnorm"]),
                            int(p.get("start", 0)),
                            int(p.get("head", 1)),
                            int(p.get("stride", 0)),
                            None if p.get("bias_start") is None else int(p["bias_start"]),
                        )
                        for p in g["producers"]
                    ),
                    outgoing=tuple(OutgoingAxis(**o) for o in g.get("outgoing", ())),
                    scale_invariant=bool(g.get("scale_invariant", False)),
                    carried=tuple(CarriedAxis(**c) for c in g.get("carried", ())),
                    blocks=int(g.get("blocks", 1)),
                    taps=tuple(Tap(**t) for t in g.get("taps", ())),
                    heads=int(g.get("heads", 1)),
                    link=str(g.get("link", "")),
                    heads_only=bool(g.get("heads_only", False)),
                    linear_only=bool(g.get("linear_only", False)),
                )
            )
        out = data.get("output")
        return cls(
            groups=tuple(groups),
            output=None if out is None else OutputLayer(**out),
            tensors=tuple(
                TensorInfo(name, tuple(int(s) for s in shape), dtype, *map(bool, flags))
                for name, shape, dtype, *flags in data.get("tensors", ())
            ),
        )


# Fields added after specs were first stored: written only when they differ from their
# defaults, so that every earlier spec serializes (and hashes) exactly as before.
_ADDED_DEFAULTS: dict[str, Any] = {
    "start": 0,
    "groups": 1,
    "bias_start": None,
    "heads": 1,
    "link": "",
    "heads_only": False,
    "linear_only": False,
    "projection": "",
    "projection_bias": "",
    "repeat": 1,
    "head": 1,
    "stride": 0,
}


def _sparse(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in record.items() if not (k in _ADDED_DEFAULTS and v == _ADDED_DEFAULTS[k])
    }


def claimed_twice(groups: Sequence[UnitGroup]) -> list[tuple[str, int, tuple[str, ...]]]:
    """The tensor axes that several groups move from the same position, as (tensor name,
    axis, the groups' names): such a tensor (one per-unit parameter multiplying two
    layers' outputs) would be permuted once per group. The parts of a fused tensor
    (query, key and value rows) start at different positions and are not counted."""
    owners: dict[tuple[str, int, int], dict[str, None]] = {}
    for group in groups:
        for t in group.tensors:
            owners.setdefault((t.name, t.axis, t.start), {})[group.name] = None
    return [
        (name, axis, tuple(names)) for (name, axis, _), names in owners.items() if len(names) > 1
    ]


def linked(spec: Spec, group: UnitGroup) -> list[UnitGroup]:
    """``group`` and the groups that share its heads' order (one attention layer), in
    spec order: what every matching method assigns together."""
    if not group.link:
        return [group]
    return [g for g in spec.groups if g.link == group.link]


def forward_order(spec: Spec) -> tuple[tuple[UnitGroup, tuple[Producer, ...]], ...]:
    """The groups in the order normalization and Alg. 2 visit them, each with the
    producers that determine its units' scale and match.

    A producer counts once every group it reads is done. In a chain that is
    each group's one producer, in forward order. In a residual stream the
    stem (and, in later stages, the first block's last layer and its
    projection shortcut) count; the later blocks' last layers read groups
    that themselves read the stream, and they follow the stream's factor
    instead (DESIGN §3b). Groups that share a ``link`` (one attention layer's) wait
    for each other: each comes once all of them could.
    """
    reads: dict[str, set[str]] = {}
    mates: dict[str, list[UnitGroup]] = {}
    for group in spec.groups:
        for axis in group.outgoing:
            reads.setdefault(axis.name, set()).add(group.name)
        if group.link:
            mates.setdefault(group.link, []).append(group)
    done: set[str] = set()

    def counted(group: UnitGroup) -> tuple[Producer, ...]:
        return tuple(p for p in group.producers if reads.get(p.weight, set()) <= done)

    order: list[tuple[UnitGroup, tuple[Producer, ...]]] = []
    remaining = list(spec.groups)
    while remaining:
        index, ready = 0, remaining[0].producers  # a spec written by hand may have cycles
        for i, group in enumerate(remaining):
            found = counted(group)
            # linked groups are matched together: only once each one's inputs are aligned
            # (GPT-OSS's sinks read nothing, and wait for the heads' projections)
            linked_ready = all(m.name in done or counted(m) for m in mates.get(group.link, []))
            if found and linked_ready:
                index, ready = i, found
                break
        group = remaining.pop(index)
        order.append((group, ready))
        done.add(group.name)
    return tuple(order)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def check_tensors(found: Mapping[str, tuple[tuple[int, ...], str]], spec: Spec, what: str) -> None:
    """Check tensor names, shapes and dtype kinds against ``spec``; report every mismatch.

    ``found`` maps each tensor name to its (shape, dtype name). Floating
    tensors may be stored in any floating dtype; integer buffers in any
    integer dtype.
    """
    expected = spec.tensor_info
    problems: list[str] = []
    for name in sorted(set(expected) - set(found)):
        problems.append(f"missing tensor `{name}` (shape {list(expected[name].shape)})")
    for name in sorted(set(found) - set(expected)):
        problems.append(f"unexpected tensor `{name}`")
    for name in sorted(set(found) & set(expected)):
        shape, dtype = found[name]
        info = expected[name]
        if tuple(shape) != info.shape:
            problems.append(f"tensor `{name}` has shape {list(shape)}, expected {list(info.shape)}")
        if (dtype in _FLOAT_DTYPES) != info.is_floating:
            problems.append(f"tensor `{name}` has dtype {dtype}, expected {info.dtype}")
    if problems:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise SpecMismatchError(
            f"{what} does not match the architecture: {shown}", problems=tuple(problems)
        )


def check_state(state: Mapping[str, torch.Tensor], spec: Spec, what: str = "state dict") -> None:
    """Check that ``state`` has exactly the spec's tensors with their shapes and finite values."""
    if spec.tensors:
        check_tensors(
            {name: (tuple(t.shape), dtype_name(t.dtype)) for name, t in state.items()}, spec, what
        )
    else:  # a spec built by hand may list no tensors: check the ones it names
        needed = {t.name for g in spec.groups for t in g.tensors}
        if spec.output is not None:
            needed.add(spec.output.weight)
        missing = sorted(needed - set(state))
        if missing:
            problems = tuple(f"missing tensor `{n}`" for n in missing)
            raise SpecMismatchError(
                f"{what} does not match the architecture: " + "; ".join(problems),
                problems=problems,
            )
    check_finite(state, what)


def check_finite(state: Mapping[str, torch.Tensor], what: str = "state dict") -> None:
    """Reject NaN or Inf values, naming every tensor that holds one."""
    by_device: dict[torch.device, list[str]] = {}
    for name, t in state.items():
        if t.is_floating_point():
            by_device.setdefault(t.device, []).append(name)
    bad: list[str] = []
    for group in by_device.values():
        # a finite sum proves a tensor finite in one read, and a device's sums are read
        # off it at once (one host sync); only a tensor whose sum is not finite (NaN,
        # Inf, or an overflowing sum) has every element checked
        finite = torch.stack([torch.isfinite(state[n].sum()) for n in group]).tolist()
        bad += [
            n
            for n, ok in zip(group, finite, strict=True)
            if not ok and not bool(torch.isfinite(state[n]).all())
        ]
    if bad:
        names = ", ".join(f"`{n}`" for n in bad)
        raise NonFiniteError(
            f"{what} has NaN or Inf values in {names}; canon only accepts finite weights",
            tensors=tuple(bad),
        )
