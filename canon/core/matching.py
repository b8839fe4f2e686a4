"""Matching methods: which unit of one network corresponds to which of another.

Both networks are *normalized* (their per-unit scales fixed), so matching
compares directions only. Two methods need nothing but the weights:

- ``incoming``: the paper's Alg. 2. Groups in forward order; each group's
  units are matched by the cosine of their incoming vectors (the
  concatenation of their rows in every producer whose inputs are already
  aligned), one linear assignment per group.
- ``weight``: weight matching (DESIGN §3b). Coordinate descent over groups,
  each step a linear assignment on the sum, over every parameter axis the
  group touches (incoming, outgoing and carried), of the inner products of
  the two networks' slices with every other group's current permutation
  applied; started from the ``incoming`` solution, repeated until a whole
  sweep changes no permutation. Each step can only raise the objective
  (:func:`matching_objective`), so it ends. Each layer's inner products are
  divided by the norms of the two networks' layers (:func:`layer_weights`),
  so the objective is a sum of per-layer cosines: in a normalized network
  every unit's scale has moved to the last layer, whose raw inner products
  would otherwise outweigh all the others.

``activation`` matching needs the model and data and lives in the engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

import torch
from torch import Tensor

from canon.core.lazy_similarity import (
    RowProducts,
    magnitude,
    matched,
    row_norms,
    structured,
)
from canon.core.permutations import (
    Alignment,
    UnitAxis,
    assign,
    identity_alignment,
    moved,
    unit_axes,
)
from canon.core.precision import working_dtype
from canon.core.spec import Producer, Spec, UnitGroup, forward_order, layout_of, linked
from canon.core.ties import assign_settled
from canon.core.units import gather_units, producer_rows, unit_slices
from canon.errors import ConfigError

__all__ = [
    "WEIGHT_METHODS",
    "default_method",
    "layer_weights",
    "match",
    "match_incoming",
    "match_weights",
    "matching_objective",
]

WEIGHT_METHODS = ("incoming", "weight")
"""The matching methods that need only the two networks' weights."""

MAX_SWEEPS = 100
# a product over at most this many numbers per unit is retaken rather than kept
_CHEAP_CONTRACTION = 8
#: elements of moved unit rows that :func:`_incoming_cosine` builds at a time: a wide
#: layer's rows are compared a block at a time (for a VGG's 4096 x 25088 layer, seven
#: blocks' products took as long as the whole one, within the noise of 2 CPU cores)
COSINE_SLAB = 1 << 24
#: a group of more units than this that permutes as heads or in blocks gets its
#: similarities a block at a time (:class:`~canon.core.lazy_similarity.RowProducts`,
#: :class:`_Blocked`), never whole: 8,192 units make a 512 MiB float64 matrix, and a
#: mixture's experts many times that
DENSE_UNITS = 8192


def default_method(spec: Spec) -> str:
    """``incoming`` for networks without shared groups (the paper's), else ``weight``."""
    return "weight" if spec.shared else "incoming"


def match(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    method: str = "auto",
    *,
    record: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> Alignment:
    """The alignment of normalized ``state`` to normalized ``reference`` by ``method``.

    ``auto`` is :func:`default_method`. With ``record`` (``incoming`` only),
    each group's similarity matrix as handed to the assignment solver is
    stored there under the group's name.
    """
    if method == "auto":
        method = default_method(spec)
    if method == "incoming":
        return match_incoming(state, reference, spec, record=record)
    if method == "weight":
        return match_weights(state, reference, spec, seed=seed)
    raise ConfigError(
        f"unknown matching method `{method}` for weights alone; "
        f"choose one of: {', '.join(WEIGHT_METHODS)} (activation matching needs data)"
    )


def match_incoming(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    *,
    record: dict[str, Tensor] | None = None,
) -> Alignment:
    """Alg. 2 on two *normalized* networks: the alignment of ``state`` to ``reference``.

    For each group in forward order, C[k, j] is the cosine between reference
    unit k and unit j of ``state`` (incoming effective weights, after the
    previous groups' permutations and signs were applied to the input axis);
    the permutation maximizes the sum of C (of |C| for ``sign`` and ``linear``
    groups, whose units then take the sign of their matched cosine); the
    groups of one attention layer are matched together, their heads as
    blocks (:func:`~canon.core.permutations.solve_heads`). The groups and the
    producers that count come from :func:`~canon.core.spec.forward_order`
    (in a residual stream, the stem first). A stream none of whose producers
    reads aligned units (a transformer's, whose stem is an embedding, carried)
    is matched by its slices of the tensors whose other axes are all aligned:
    the embeddings and norm affines.
    """
    axes = unit_axes(spec)
    current = identity_alignment(spec)
    perms = dict(current.permutations)
    signs = dict(current.signs)
    done: set[str] = set()
    for group, ready in forward_order(spec):
        if group.name in done:
            continue
        alignment = Alignment(perms, signs)
        mates = linked(spec, group)
        cosines = [
            _incoming_cosine(state, reference, g, ready, axes, alignment, done) for g in mates
        ]
        similarities = [
            magnitude(c) if g.signed else c for g, c in zip(mates, cosines, strict=True)
        ]
        if record is not None:
            record |= {g.name: s[:, :] for g, s in zip(mates, similarities, strict=True)}
        perms_found = assign_settled(mates, similarities, state, reference)
        for g, perm, cosine in zip(mates, perms_found, cosines, strict=True):
            if g.signed:
                found = matched(cosine, perm)
                signs[g.name] = torch.where(found < 0, -1.0, 1.0).to(found.dtype)
            perms[g.name] = perm
            done.add(g.name)
    return Alignment(perms, signs)


def _incoming_cosine(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    group: UnitGroup,
    ready: tuple[Producer, ...],
    axes: Mapping[str, tuple[UnitAxis, ...]],
    alignment: Alignment,
    done: set[str],
) -> Tensor | RowProducts:
    """C[k, j]: the cosine between reference unit k and unit j of ``state``, by their
    incoming effective weights in ``ready`` (other groups' permutations applied to the
    inputs). A ``linear`` group's units (attention) are compared by their slices of
    every weight that moves with them, whose other axes are all aligned by then; so
    are the units of a group whose ``ready`` producers read units not yet aligned (a
    stream whose stem is carried: their slices of the embeddings and norm affines).
    A group of more than :data:`DENSE_UNITS` units that permute as heads or in blocks
    gets its cosines as :class:`~canon.core.lazy_similarity.RowProducts`, taken a block
    at a time (a smaller one's are one product, read as views)."""
    lazy = structured(group.heads, group.blocks) and group.size > DENSE_UNITS
    if group.symmetry == "linear":
        tensors = [t for t in group.tensors if state[t.name].ndim > 1 and t.role != "carried"]
    elif _reads_aligned(ready, axes, group, done):
        tensors = []
    else:
        tensors = [t for t in group.tensors if _others(axes[t.name], group) <= done]
    if tensors:

        def slices(net: Mapping[str, Tensor], moving: bool) -> Tensor:
            parts = []
            for t in tensors:
                value = net[t.name]
                if moving:  # the tensor's other groups' axes (never this group's)
                    others = tuple(a for a in axes[t.name] if a.group != group.name)
                    value = moved(value, others, alignment)
                parts.append(unit_slices(value, t.axis, group.size, **layout_of(t)))
            return torch.cat(parts, 1)

        return _cosines(slices(reference, False), [slices(state, True)], lazy)
    reference_rows = _rows(reference, ready, group.size)
    return _cosines(reference_rows, _moved_rows(state, ready, axes, alignment, group), lazy)


def _cosines(ref_units: Tensor, blocks: Iterable[Tensor], lazy: bool) -> Tensor | RowProducts:
    """C[k, j]: the cosine between row k of ``ref_units`` and row j of the ``blocks`` (the
    other side's rows, a block of them at a time; a zero row: 0), the products divided by
    the norms afterwards, so that no normalized copy of either side is made (a wide
    layer's rows are large). Taken in :func:`working_dtype` of the two sides. With
    ``lazy``, the blocks joined and C given as
    :class:`~canon.core.lazy_similarity.RowProducts`."""
    rest = iter(blocks)
    first = next(rest)
    dtype = working_dtype(ref_units.dtype, first.dtype)  # every block has first's dtype
    ref_units = ref_units.to(dtype)
    ref_norms = row_norms(ref_units)
    if lazy:
        units = torch.cat([first, *rest]).to(dtype)
        return RowProducts(ref_units, units, ref_norms, row_norms(units))
    columns = []
    for units in itertools.chain([first], rest):
        units = units.to(dtype)
        columns.append(RowProducts(ref_units, units, ref_norms, row_norms(units))[:, :])
    return columns[0] if len(columns) == 1 else torch.cat(columns, 1)


def _moved_rows(
    state: Mapping[str, Tensor],
    ready: tuple[Producer, ...],
    axes: Mapping[str, tuple[UnitAxis, ...]],
    alignment: Alignment,
    group: UnitGroup,
) -> Iterator[Tensor]:
    """The units' incoming effective weights in ``ready`` (:func:`_rows`), the other groups'
    permutations and signs applied to their inputs, a block of about
    :data:`COSINE_SLAB` elements of units at a time: a wide layer's moved copy is never
    made whole (a VGG's first classifier layer is 400 MB). Whole when a weight's rows are
    not all the group's units or another group moves its first axis too."""
    skip = {p.weight: _own(axes, p.weight, group) for p in ready}
    weights = [state[p.weight] for p in ready]
    # a grouped convolution's input axis spans all its rows: never cut into row slabs
    by_rows = all(w.shape[0] == group.size for w in weights) and all(
        a.axis != 0 and a.groups == 1 for p in ready for a in axes[p.weight] if a != skip[p.weight]
    )
    fan_in = sum(w[0].numel() for w in weights if w.shape[0])
    step = max(1, COSINE_SLAB // max(fan_in, 1) if by_rows else group.size)
    for start in range(0, group.size or 1, step):  # an empty group: one empty block
        rows = slice(start, start + step) if by_rows else slice(None)
        part: dict[str, Tensor] = {}
        for p in ready:
            part[p.weight] = moved(state[p.weight][rows], axes[p.weight], alignment, skip[p.weight])
            if p.batchnorm is not None:  # what bn_gain reads
                for name in (p.batchnorm.weight, p.batchnorm.running_var):
                    part[name] = state[name][rows]
        yield _rows(part, ready, None if by_rows else group.size)


def _others(axes: tuple[UnitAxis, ...], group: UnitGroup) -> set[str]:
    """The groups other than ``group`` that a tensor's ``axes`` carry."""
    return {a.group for a in axes if a.group != group.name}


def _reads_aligned(
    ready: tuple[Producer, ...],
    axes: Mapping[str, tuple[UnitAxis, ...]],
    group: UnitGroup,
    done: set[str],
) -> bool:
    """Whether every producer in ``ready`` reads only units already aligned (``done``);
    :func:`~canon.core.spec.forward_order` falls back to producers that do not when
    none does."""
    return all(_others(axes[p.weight], group) <= done for p in ready)


def _rows(state: Mapping[str, Tensor], producers: tuple[Producer, ...], size: int | None) -> Tensor:
    """The units' incoming effective weights in ``producers``, one row per unit (``size``
    units, a part of a fused layer's rows; None: all of its rows)."""
    rows = [producer_rows(state, p, True, size) for p in producers]
    return rows[0] if len(rows) == 1 else torch.cat(rows, 1)


def _own(axes: Mapping[str, tuple[UnitAxis, ...]], name: str, group: UnitGroup) -> UnitAxis | None:
    """The axis by which tensor ``name`` carries ``group`` as a producer (axis 0)."""
    return next((a for a in axes[name] if a.group == group.name and a.axis == 0), None)


def _objective_names(spec: Spec, state: Mapping[str, Tensor]) -> set[str]:
    """The tensors weight matching compares: parameters (not running statistics)."""
    names = (
        set(spec.parameters)
        if spec.tensors
        else {n for n, t in state.items() if t.is_floating_point()}
    )
    return {n for n in unit_axes(spec) if n in names}


def layer_weights(
    state: Mapping[str, Tensor], reference: Mapping[str, Tensor], names: Iterable[str]
) -> dict[str, float]:
    """For each tensor of ``names``: 1 / (norm of its layer in ``reference`` x norm of its
    layer in ``state``), 0 where either is zero.

    A layer is the tensors of ``names`` of one module (the name up to its last dot: a
    weight and its bias, a norm layer's affine pair), its norm that of all of them
    together. Weighted so, a layer's inner products sum to the cosine between the two
    networks' layers, whatever the layers' scales.
    """
    layers: dict[str, list[str]] = {}
    for name in names:
        layers.setdefault(name.rpartition(".")[0], []).append(name)
    found = iter(
        _norms([s[n] for members in layers.values() for n in members for s in (reference, state)])
    )
    weights: dict[str, float] = {}
    for members in layers.values():
        # the squares summed in Python floats
        pairs = [(next(found), next(found)) for _ in members]
        norms = [sum(p[i] ** 2 for p in pairs) ** 0.5 for i in (0, 1)]
        weight = 1.0 / (norms[0] * norms[1]) if norms[0] * norms[1] > 0 else 0.0
        weights |= dict.fromkeys(members, weight)
    return weights


def _norms(tensors: list[Tensor]) -> list[float]:
    """Each tensor's L2 norm in :func:`working_dtype` (no float64 copy of every weight),
    read off the device at once."""
    if not tensors:
        return []
    device = tensors[0].device
    found = [torch.linalg.vector_norm(t, dtype=working_dtype(t.dtype)) for t in tensors]
    return torch.stack([n.to(device, torch.float64) for n in found]).tolist()


def matching_objective(
    state: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: Spec, alignment: Alignment
) -> float:
    """What ``weight`` matching maximizes: the sum over the matched parameters of
    <reference, state moved by ``alignment``>, each weighted by :func:`layer_weights`
    (a sum of per-layer cosines)."""
    axes = unit_axes(spec)
    names = sorted(_objective_names(spec, state))
    weights = layer_weights(state, reference, names)
    total = 0.0
    for name in names:
        a = reference[name].double()
        b = moved(state[name], axes[name], alignment).double()
        total += weights[name] * float((a * b).sum())
    return total


def match_weights(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    *,
    init: Alignment | None = None,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> Alignment:
    """Weight matching of normalized ``state`` to normalized ``reference`` (module docstring).

    Starts from ``init`` (default: the ``incoming`` solution); visits the
    groups in a seeded random order each sweep, skipping those none of whose
    neighbours (groups sharing a tensor) changed since their last step, which
    would only repeat it; stops when a sweep changes nothing or after
    ``max_sweeps``. The products are taken in :func:`working_dtype` of the
    networks and summed in float64; a tensor's product for a group is taken again only once a
    permutation of another of its axes changed (:class:`_Similarity`).
    """
    with torch.no_grad():
        similarities = _similarities(state, reference, spec)
        start = init or match_incoming(state, reference, spec)
        dtype = working_dtype(*(next(iter(net.values())).dtype for net in (state, reference)))
        return _descend(spec, similarities, start, dtype, seed, max_sweeps)


def _similarities(
    state: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: Spec
) -> dict[str, _Similarity]:
    """Each group's :class:`_Similarity`, its tensors in the order of their names.

    Built one group at a time: the products that never change are taken as the
    group's similarity is made, and their tensors' layouts are let go at once.
    """
    axes = unit_axes(spec)
    names = sorted(_objective_names(spec, state))
    weights = layer_weights(state, reference, names)
    touching: dict[str, list[tuple[str, UnitAxis]]] = {g.name: [] for g in spec.groups}
    for name in names:
        for axis in axes[name]:
            touching[axis.group].append((name, axis))
    return {
        g.name: _Similarity(
            g,
            [
                _Term(state[n], reference[n], weights[n], axis, axes[n], g.size)
                for n, axis in touching[g.name]
            ],
        )
        for g in spec.groups
    }


def _descend(
    spec: Spec,
    similarities: Mapping[str, _Similarity],
    start: Alignment,
    dtype: torch.dtype,
    seed: int,
    max_sweeps: int,
) -> Alignment:
    """The coordinate descent of :func:`match_weights` from ``start``."""
    perms = dict(start.permutations)
    signs = dict(start.signs)
    eps = torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps
    gen = torch.Generator().manual_seed(seed)
    groups = list(spec.groups)
    # how often each group's permutation changed: what the kept products depend on
    versions = {g.name: 0 for g in groups}
    # a group whose neighbours kept their permutations since its last step would repeat it
    stale = {g.name for g in groups}
    for _ in range(max_sweeps):
        if not stale:
            break
        for index in torch.randperm(len(groups), generator=gen).tolist():
            group = groups[index]
            if group.name not in stale:
                continue
            mates = linked(spec, group)  # one attention layer's groups step together
            stale -= {g.name for g in mates}
            current = Alignment(perms, signs)
            values = [similarities[g.name].value(current, versions) for g in mates]
            found = assign(mates, values)
            new = old = 0.0
            steps = []
            for value, perm, g in zip(values, found, mates, strict=True):
                perm = perm.cpu()
                even, odd = value.at(perm)
                sign = None if odd is None else torch.where(odd < 0, -1.0, 1.0)
                old_sign = None if odd is None else signs[g.name].cpu().double()
                new += _total(even, odd, None if sign is None else sign.double())
                old += _total(*value.at(perms[g.name].cpu()), old_sign)
                steps.append((g, perm, sign))
            # only a clear gain counts: ties keep the current solution, so the sweeps end
            if new <= old + 64 * eps * max(1.0, abs(old)):
                continue
            for g, perm, sign in steps:
                perms[g.name] = perm
                if sign is not None:
                    signs[g.name] = sign.float()
                versions[g.name] += 1
                stale |= similarities[g.name].neighbours
            stale -= {g.name for g in mates}
    return Alignment(perms, signs)


class _Term:
    """One tensor's part in its group's similarity: ``weight`` (its layer's, from
    :func:`layer_weights`) times <reference unit k's slice, state unit j's slice> along
    ``axis``, the tensor's other unit axes (``others``) moved.

    Both tensors are laid out once per matching: the reference with the group's
    axis first (a unit's slice is a row), the state with it last (a unit's slice is
    a column). A step then only gathers the state's other axes, whole contiguous
    blocks, and takes one matrix product of the same numbers that moving the tensor
    and reshaping it would give. The product is kept with the versions of the other
    axes' groups it was taken for, and taken again only when one of them changed:
    most steps leave most of a group's tensors as they were. Where keeping it cannot
    save a product (``keep`` False, set by :class:`_Similarity`) it is not kept.
    """

    def __init__(
        self,
        state: Tensor,
        reference: Tensor,
        weight: float,
        axis: UnitAxis,
        axes: tuple[UnitAxis, ...],
        units: int,
    ) -> None:
        self.units = units
        self.signed = axis.signed
        self.groups = {a.group for a in axes}
        layout = layout_of(axis)
        # a view where the layout and dtype allow (no copy of the reference's weights);
        # the layer's weight multiplies each product instead, a units x units matrix
        reference = reference.to(working_dtype(reference.dtype, state.dtype))
        self.reference = unit_slices(reference, axis.axis, units, **layout)
        self.weight = weight  # layer_weights
        # the state as (block, other dims..., units): unit j's slice is column j of the
        # matrix it reshapes to, and each other axis sits where it does in the reference's
        # group-first layout
        state = state.to(self.reference.dtype)
        # a grouped convolution's weight: its input axis is tied to its rows, so the
        # tensor moves whole and is laid out again at each step (a conv's few numbers)
        self.whole = any(a.groups > 1 for a in axes)
        self.axis, self.layout = axis, layout
        if self.whole:
            self.state = state
            self.others = tuple(a for a in axes if a.axis != axis.axis)
        else:
            shaped = gather_units(state, axis.axis, units, **layout)
            self.state = shaped.movedim(0, -1).contiguous()
            # other axes: of other groups, and not other parts of this same (fused) axis
            self.others = tuple(
                replace(a, axis=a.axis + 1 if a.axis < axis.axis else a.axis)
                for a in axes
                if a.axis != axis.axis
            )
        self.key: tuple[int, ...] | None = None
        self.product = torch.empty(0)
        self.keep = True

    @property
    def cheap(self) -> bool:
        """Whether the product is cheaper to take again than to keep (units x units
        numbers): a bias's or a norm affine's outer product, a few numbers per unit."""
        return self.reference[0].numel() <= _CHEAP_CONTRACTION

    def value(self, alignment: Alignment, versions: Mapping[str, int]) -> Tensor:
        """The product for the state moved by ``alignment``, at group ``versions``."""
        key = tuple(versions[a.group] for a in self.others)
        if self.key == key:
            return self.product.cpu()
        product = (self.reference @ self.moved(alignment)).mul_(self.weight)
        if self.keep:
            self.product, self.key = product, key
        return product.cpu()

    def moved(self, alignment: Alignment) -> Tensor:
        """The state moved by ``alignment`` as (numbers per unit) x units: unit j's slice
        is column j."""
        other = moved(self.state, self.others, alignment)
        if self.whole:
            other = unit_slices(other, self.axis.axis, self.units, **self.layout).t()
        return other.reshape(-1, self.units)


class _Similarity:
    """A group's weight-matching similarity S[k, j]: the sum of its tensors' products
    (:class:`_Term`), split into the terms a sign flip of unit j negates (``odd``, for
    ``sign`` groups) and the others (``even``).

    The products of the tensors without another unit axis (a first or last layer)
    never change: they are summed once, ahead of the others (in float64 a few
    float32 products add up exactly in any order, unless they differ by many
    orders of magnitude). Products that cost less than they would hold (biases,
    norm affines: :attr:`_Term.cheap`) are taken again at each step instead, and
    so are moving products when every moving tensor of the group reads the same
    other groups (when the group is stepped again, one of those changed: a kept
    product would be stale). A group of 3,072 units then holds no 3,072 x 3,072
    matrix between its steps.
    """

    def __init__(self, group: UnitGroup, terms: list[_Term]) -> None:
        self.size = group.size
        self.signed = group.signed
        self.neighbours = {name for term in terms for name in term.groups}
        self.dense = not (structured(group.heads, group.blocks) and group.size > DENSE_UNITS)
        self.terms = terms
        self.even: Tensor | None = None
        self.odd: Tensor | None = None
        if not self.dense:  # nothing kept: each step takes the blocks it reads
            return
        self.moving = [t for t in terms if t.others]
        if len({frozenset(a.group for a in t.others) for t in self.moving}) <= 1:
            for term in self.moving:
                term.keep = False
        self.retaken = [t for t in terms if not t.others and t.cheap]
        for term in self.retaken:
            term.keep = False
        fixed = [
            (t.signed, t.value(Alignment({}), {})) for t in terms if not t.others and not t.cheap
        ]
        even = [p for signed, p in fixed if not signed]
        odd = [p for signed, p in fixed if signed]
        self.even = _added(None, even, self.size) if even else None
        self.odd = _added(None, odd, self.size) if odd else None

    def value(self, alignment: Alignment, versions: Mapping[str, int]) -> _Dense | _Blocked:
        """S for the state moved by ``alignment`` (at group ``versions``): whole, or for a
        large group that permutes as heads or in blocks, a block at a time."""
        if not self.dense:
            return _Blocked(
                [(t.signed, t.weight, t.reference, t.moved(alignment)) for t in self.terms],
                self.size,
                self.signed,
            )
        products = [(t.signed, t.value(alignment, versions)) for t in self.moving + self.retaken]
        even = _added(self.even, [p for signed, p in products if not signed], self.size)
        if not self.signed:
            return _Dense(even, None)
        return _Dense(even, _added(self.odd, [p for signed, p in products if signed], self.size))


class _Dense:
    """A group's weight-matching similarity, whole: ``even`` and, for a ``sign`` group,
    ``odd`` (:class:`_Similarity`). Read as a matrix, it is what the assignment
    maximizes: even + |odd| (each unit then takes the sign that makes its odd part
    count positively)."""

    def __init__(self, even: Tensor, odd: Tensor | None) -> None:
        self.even, self.odd = even, odd
        self.target = even if odd is None else even + odd.abs()
        self.shape, self.device = self.target.shape, self.target.device

    def __getitem__(self, index: tuple[slice, slice]) -> Tensor:
        return self.target[index]

    def at(self, perm: Tensor) -> tuple[Tensor, Tensor | None]:
        """(even[k, perm[k]], odd[k, perm[k]] or None) for every k."""
        rows = torch.arange(self.even.shape[0])
        return self.even[rows, perm], None if self.odd is None else self.odd[rows, perm]


class _Blocked:
    """A group's weight-matching similarity a block at a time: for each term (signed,
    layer weight, reference rows, moved state columns), weight x reference[k] .
    state[:, j], the signed terms' sum (odd) apart from the others' (even). Read as a
    matrix it is even + |odd|, as :class:`_Dense`."""

    def __init__(
        self, terms: list[tuple[bool, float, Tensor, Tensor]], size: int, signed: bool
    ) -> None:
        self.terms, self.signed = terms, signed
        self.shape = (size, size)
        self.device = terms[0][2].device if terms else torch.device("cpu")

    def __getitem__(self, index: tuple[slice, slice]) -> Tensor:
        rows, cols = index
        even, odd = self._parts(lambda ref, other: ref[rows] @ other[:, cols])
        return even if odd is None else even + odd.abs()

    def at(self, perm: Tensor) -> tuple[Tensor, Tensor | None]:
        """(even[k, perm[k]], odd[k, perm[k]] or None) for every k, on the CPU: one inner
        product per unit and term, no block."""
        even, odd = self._parts(lambda ref, other: (ref * other[:, perm.to(other.device)].T).sum(1))
        return even.cpu(), None if odd is None else odd.cpu()

    def _parts(self, product: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor | None]:
        """The even and odd sums (float64) of each term's ``product`` times its weight."""
        sums: dict[bool, Tensor] = {}
        for signed, weight, reference, other in self.terms:
            part = product(reference, other).mul_(weight).double()
            key = signed and self.signed
            sums[key] = sums[key].add_(part) if key in sums else part
        even = sums.get(False)
        if even is None:
            shape = next(iter(sums.values())).shape if sums else (self.shape[0], self.shape[1])
            even = torch.zeros(shape, dtype=torch.float64, device=self.device)
        if not self.signed:
            return even, None
        return even, sums.get(True, torch.zeros_like(even))


def _added(base: Tensor | None, products: list[Tensor], size: int) -> Tensor:
    """``base`` (float64; None: zeros of ``size`` x ``size``) plus ``products``: a new
    tensor, or ``base`` itself if there are none."""
    if base is None:
        if not products:
            return torch.zeros(size, size, dtype=torch.float64)
        total = products[0].to(torch.float64, copy=True)  # as adding to zeros
    elif not products:
        return base
    else:
        total = base + products[0]  # float32 + float64 -> float64, as converting first
    for product in products[1:]:
        total.add_(product)
    return total


def _total(even: Tensor, odd: Tensor | None, sign: Tensor | None) -> float:
    """The matched similarities' sum: even + sign x odd."""
    if odd is None or sign is None:
        return float(even.sum())
    return float((even + odd.to(sign.device) * sign.to(odd.dtype)).sum())
