"""The error landscape between networks: curves along paths, barriers, local energy, planes.

DESIGN §3 "Paths", "Error and barrier", "Flatness", "Planes". The energy is
the train error (fraction misclassified; single output: sign). Every result is
a frozen record that serializes to JSON and back.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias, TypeVar

import torch
from torch import Tensor, nn

from canon._limits import MAX_DRAWS, MAX_GRID, MAX_SIGMAS, clip
from canon.architectures import build_model
from canon.core import (
    WEIGHT_METHODS,
    Alignment,
    Spec,
    UnitScales,
    apply_alignment,
    check_state,
    match,
    normalize,
    normalize_with_scales,
    spec_from_module,
)
from canon.core.geometry import Distances, distances
from canon.core.host_work import Baton
from canon.core.paths import (
    NetworkPath,
    bend_path,
    flip_path,
    geodesic_path,
    linear_path,
    plane_grid,
    positions,
)
from canon.core.permutations import check_alignment
from canon.core.precision import state_dtype, to_working
from canon.core.records import JsonRecord
from canon.device import in_lanes, resolve_device
from canon.engine.batchnorm import has_batchnorm, with_recomputed_statistics
from canon.engine.evaluate import Evaluator, Scores
from canon.engine.kinds import PATH_KINDS, PathKindInfo, get_matching, get_path_kind
from canon.engine.matching import find_alignment, resolve_method
from canon.engine.noise import perturbation_path
from canon.engine.normal_forms import NormalForms
from canon.engine.options import MATCH_BATCH, BNMode, PathOptions
from canon.errors import ConfigError

__all__ = [
    "PATH_KINDS",
    "LocalEnergy",
    "PathCurve",
    "PathEnds",
    "PlaneResult",
    "PreparedCurves",
    "ScaledPath",
    "as_data",
    "as_model",
    "local_energy",
    "pairs_per_call",
    "path_curve",
    "path_curves",
    "plane",
    "prepare_curves",
]

#: A registered path kind's name (:func:`~canon.engine.kinds.list_path_kinds`).
PathKind: TypeAlias = str

ModelLike = nn.Module | str | tuple[str, Mapping[str, Any]]


def as_model(model: ModelLike) -> nn.Module:
    """An ``nn.Module`` template from a module, an architecture name, or (name, config)."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, str):
        return build_model(model)
    name, config = model
    return build_model(name, config)


Split: TypeAlias = tuple[Tensor, Tensor]
_T = TypeVar("_T")

# inputs cast to a working dtype, per source tensor (by id: tensors compare elementwise):
# the cast copy stays the same object while its source lives, so that the evaluators made
# for it are reused (:func:`_evaluator`)
_CAST: dict[int, dict[torch.dtype, Tensor]] = {}


def as_data(data: Any, dtype: torch.dtype | None = None) -> tuple[Split, Split | None]:
    """(train, test) pairs from an (x, y) pair or a dataset object with train/test splits;
    with ``dtype`` (a :func:`~canon.core.precision.working_dtype`), floating inputs in it,
    to run networks of that dtype on them."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        return _cast((torch.as_tensor(x), torch.as_tensor(y)), dtype), None
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        test = None
        if getattr(data, "x_test", None) is not None:
            test = _cast((data.x_test, data.y_test), dtype)
        return _cast((data.x_train, data.y_train), dtype), test
    raise ConfigError("`data` must be an (x, y) pair of tensors or a dataset with x_train/y_train")


def _cast(split: Split, dtype: torch.dtype | None) -> Split:
    """``split`` with floating inputs in ``dtype``: the same cast tensor for the same source."""
    x, y = split
    if dtype is None or not x.is_floating_point() or x.dtype == dtype:
        return split
    if id(x) not in _CAST:
        _CAST[id(x)] = {}
        weakref.finalize(x, _CAST.pop, id(x), None)
    kept = _CAST[id(x)]
    if dtype not in kept:
        kept[dtype] = x.to(dtype)
    return kept[dtype], y


def _check_count(name: str, value: object, low: int, high: int) -> None:
    """Refuse ``value`` unless it is an integer from ``low`` to ``high`` (checked before any
    allocation it sizes); the error names it and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"`{name}` must be an integer from {low} to {high}, got {clip(repr(value), 40)}"
        )


def _floats(t: Tensor | None) -> list[float] | None:
    """The values of a 1-D tensor as Python floats (one copy off the device)."""
    return None if t is None else [float(v) for v in t.double().tolist()]


@dataclass(frozen=True)
class PathCurve:
    """The error along a path between two networks, its barrier and the options used.

    ``barrier`` = max_i E(x_i); ``excess`` = max_i [E(x_i) - ((1 - x_i) E(0) + x_i E(1))].
    For random-flip paths the curve is the mean over the orders (``train_error_std``
    their standard deviation) and ``barrier``/``excess`` are the mean over orders of
    each order's value (``barrier_std`` their standard deviation).
    """

    kind: str
    x: list[float]
    train_error: list[float]
    barrier: float
    excess: float
    distances: Distances
    options: dict[str, Any] = field(default_factory=dict)
    train_loss: list[float] | None = None
    test_error: list[float] | None = None
    train_error_std: list[float] | None = None
    barrier_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse of :meth:`from_dict`)."""
        data = asdict(self)
        data["distances"] = self.distances.to_dict()
        return data

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathCurve:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(data)
        values["distances"] = Distances.from_dict(values["distances"])
        return cls(**values)


def barrier_and_excess(x: Tensor, errors: Tensor) -> tuple[float, float]:
    """The barrier max_i E(x_i) and the excess over the line between the endpoint errors."""
    line = (1 - x) * errors[0] + x * errors[-1]
    return float(errors.max()), float((errors - line).max())


# Evaluators of recent templates: building one (a deep copy, a trace, the graph's fast ops)
# costs about as much as evaluating a small network's 25 points, so the curves of one
# template on one data split (a table's pairs) share it. Keyed weakly by the template
# module; an evaluator is reused only for the very same data tensors.
_EVALUATORS: weakref.WeakKeyDictionary[nn.Module, list[Evaluator]] = weakref.WeakKeyDictionary()
_EVALUATORS_PER_TEMPLATE = 2  # a train and a test split


def _evaluator(
    model: nn.Module, split: tuple[Tensor, Tensor], device: torch.device, batch: int
) -> Evaluator:
    """An evaluator of ``model``'s architecture on ``split``: the one made for the same
    template, data tensors, device and batch size before, if it is still kept."""
    kept = _EVALUATORS.setdefault(model, [])
    for evaluator in kept:
        if (
            evaluator.source[0] is split[0]
            and evaluator.source[1] is split[1]
            and evaluator.device == device
            and evaluator.batch_size == max(1, int(batch))
        ):
            return evaluator
    evaluator = Evaluator(model, split[0], split[1], device, batch)
    kept.append(evaluator)
    del kept[:-_EVALUATORS_PER_TEMPLATE]
    return evaluator


def path_curve(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    kind: PathKind = "geodesic",
    points: int = 25,
    device: str | torch.device = "auto",
    *,
    midpoint: Mapping[str, Tensor] | None = None,
    spec: Spec | None = None,
    loss: bool = False,
    test: bool = False,
    bn: BNMode = "recompute",
    bn_batches: int = 20,
    bn_batch_size: int = 256,
    orders: int = 5,
    seed: int = 0,
    method: str = "auto",
    match_batch: int = MATCH_BATCH,
    options: PathOptions | None = None,
    batch_size: int = 10_000,
) -> PathCurve:
    """Evaluate the train error (optionally loss and test error) along a path from a to b.

    ``kind`` names a registered path kind (:func:`~canon.engine.kinds.list_path_kinds`);
    the built-ins: ``linear`` (raw parameters), ``linear_aligned`` (b aligned to a,
    not normalized), ``geodesic`` (normalized and aligned; per-unit slerp),
    ``bend`` (two geodesic legs through ``midpoint``, which is normalized and
    aligned to a), ``bend_linear`` / ``bend_linear_aligned`` (two straight legs
    through ``midpoint`` as given, to b raw / aligned to a), ``random_flip`` and
    ``random_flip_aligned`` (binary networks: ``orders`` seeded flip orders,
    mean and std). ``points`` positions from 0 to 1 inclusive; the endpoints
    are the endpoint networks themselves. For networks with BatchNorm, the
    running statistics at interior points are recomputed on ``bn_batches``
    training batches of ``bn_batch_size`` (``bn="recompute"``) or interpolated
    (``bn="interpolate"``); the choice is recorded in ``options``. b is
    aligned to a by the matching ``method`` (``auto``: ``incoming`` for
    networks without shared groups, ``weight`` for residual ones;
    ``activation`` runs both on ``match_batch`` training inputs); the method
    used is recorded in ``options`` too.

    With ``loss``, the mean cross-entropy at each point is reported too. Geodesic and
    bend paths run between normalized networks, whose output layers normalization
    scaled by one positive factor each; their losses are those of the networks at
    their own output scale: the logits at x are multiplied by (1 - x) s_a + x s_b, s
    the factor normalization took off each end's logits (on a bend, each leg's
    between its own ends', the midpoint's that of the midpoint as given), so the
    end losses are the networks' own and compare with those of linear paths. The
    errors do not depend on it.

    ``options`` gives every option the numbers depend on as one record
    (:class:`PathOptions`, what a cache keys results by) instead of the
    keywords ``points`` … ``seed``; passing both is an error. ``batch_size``
    bounds memory only.
    """
    given = PathOptions(
        points, bn, bn_batches, bn_batch_size, orders, seed, loss, test, method, match_batch
    )
    if options is not None and given != PathOptions():
        raise ConfigError("give path options either as `options` or as keywords, not both")
    return _prepare_curves(
        [(a, b, midpoint)], model, data, kind, options or given, device, spec, batch_size
    ).evaluate()[0]


def path_curves(
    pairs: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]],
    model: ModelLike,
    data: Any,
    kind: PathKind = "geodesic",
    device: str | torch.device = "auto",
    *,
    options: PathOptions | None = None,
    spec: Spec | None = None,
    batch_size: int = 10_000,
    alignments: Sequence[Alignment] | None = None,
) -> list[PathCurve]:
    """The curves of several pairs (a, b) of one architecture along ``kind`` (one without
    a midpoint): ``[path_curve(a, b, model, data, kind, options=options) for a, b in
    pairs]``, with the points of every pair's path evaluated together, so that a small
    network's points share calls across pairs (:meth:`Evaluator.evaluate_many`).

    ``alignments`` gives each pair's alignment of b to a, found elsewhere (such as
    through a family reference, :func:`~canon.core.through_reference`): no pair is
    then matched, and ``options.method`` is recorded as the method that found them.
    """
    return prepare_curves(
        pairs,
        model,
        data,
        kind,
        device,
        options=options,
        spec=spec,
        batch_size=batch_size,
        alignments=alignments,
    ).evaluate()


def prepare_curves(
    pairs: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]],
    model: ModelLike,
    data: Any,
    kind: PathKind = "geodesic",
    device: str | torch.device = "auto",
    *,
    options: PathOptions | None = None,
    spec: Spec | None = None,
    batch_size: int = 10_000,
    alignments: Sequence[Alignment] | None = None,
    checked: bool = False,
    forms: NormalForms | None = None,
) -> PreparedCurves:
    """:func:`path_curves` in two steps: the pairs normalized, matched, measured and their
    paths made now, their points evaluated by :meth:`PreparedCurves.evaluate`. With
    ``spec`` given (it defaults to the model's, traced) and a matching that reads only
    weights, this step is tensor work alone (no module runs, no trace), so it may run
    in a thread beside another pair's evaluation. ``checked``: every state was checked
    against ``spec`` already (its tensors' shapes and finite values, as
    :func:`~canon.checkpoint.load_state` checks them), so the pairs are not again.
    ``forms`` keeps networks' normalized copies across calls (a table's: each entry
    normalized once, not once a pair; the tensors of a state given again must not have
    changed meanwhile)."""
    if alignments is not None and len(alignments) != len(pairs):
        raise ConfigError(f"{len(alignments)} alignments for {len(pairs)} pairs")
    if checked and spec is None:
        raise ConfigError("`checked=True` needs the `spec` the states were checked against")
    return _prepare_curves(
        [(a, b, None) for a, b in pairs],
        model,
        data,
        kind,
        options or PathOptions(),
        device,
        spec,
        batch_size,
        alignments,
        checked,
        forms,
    )


#: pairs in one :func:`path_curves` call at most, so that results come in steadily
MAX_PAIRS_PER_CALL = 64


def pairs_per_call(
    model: ModelLike,
    data: Any,
    points: int,
    device: str | torch.device = "auto",
    batch_size: int = 10_000,
) -> int:
    """How many pairs' curves of ``points`` points to hand :func:`path_curves` at once:
    as many as the evaluator runs stacked in one call (at most
    :data:`MAX_PAIRS_PER_CALL`); 1 for networks that run point by point, where
    evaluating pairs together would only hold more paths in memory."""
    train, _ = as_data(data)
    evaluator = _evaluator(as_model(model), train, resolve_device(device), batch_size)
    return max(1, min(MAX_PAIRS_PER_CALL, evaluator.points_per_call() // max(1, points)))


@dataclass(frozen=True)
class _CurveWork:
    """A pair's curve before its paths are evaluated: the paths, the factors on their
    logits for the losses (:class:`ScaledPath`; ``None``: 1) and what the curve records."""

    paths: list[NetworkPath]
    distances: Distances
    recorded: dict[str, Any]
    output_scales: list[Tensor | None]


def _prepare_curves(
    pairs: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor], Mapping[str, Tensor] | None]],
    model: ModelLike,
    data: Any,
    kind: PathKind,
    opts: PathOptions,
    device: str | torch.device,
    spec: Spec | None,
    batch_size: int,
    alignments: Sequence[Alignment | None] | None = None,
    checked: bool = False,
    forms: NormalForms | None = None,
) -> PreparedCurves:
    """The paths of each (a, b, midpoint), b aligned to a by ``alignments`` where given,
    else matched by ``opts.method``; each network's normal form made once
    (:class:`~canon.engine.normal_forms.NormalForms`: ``forms`` or this call's own).
    Each pair runs in its :func:`~canon.core.precision.working_dtype` (float32 for half
    precision; pairs of different ones are evaluated apart, so that a pair's numbers do
    not depend on the pairs that come with it)."""
    info = get_path_kind(kind)
    template = as_model(model)
    spec = spec or spec_from_module(template)
    dev = resolve_device(device)
    if opts.test and as_data(data)[1] is None:  # the data checked before any work
        raise ConfigError("`test=True` needs a dataset with a test split")
    given = alignments or [None] * len(pairs)
    forms = forms if forms is not None else NormalForms()
    dtypes = [state_dtype(*pair) for pair in pairs]
    parts = []
    x = positions(opts.points)
    for dtype in dict.fromkeys(dtypes):
        mine = [i for i, d in enumerate(dtypes) if d == dtype]
        split = as_data(data, dtype)
        works = _prepared(
            [pairs[i] for i in mine], [given[i] for i in mine], template, split[0], info, opts,
            x, dev, spec, forms, checked,
        )  # fmt: skip
        parts.append(_Part(tuple(mine), works, split))
    return PreparedCurves(tuple(parts), len(pairs), template, kind, opts, x, dev, batch_size)


def _prepared(
    pairs: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor], Mapping[str, Tensor] | None]],
    alignments: Sequence[Alignment | None],
    template: nn.Module,
    train: Split,
    info: PathKindInfo,
    opts: PathOptions,
    x: Tensor,
    dev: torch.device,
    spec: Spec,
    forms: NormalForms,
    checked: bool = False,
) -> list[_CurveWork]:
    """Each pair's :func:`_prepare`, several at once where they allow (:func:`_threads_for`)."""

    def prepare(i: int) -> _CurveWork:
        (a, b, m), alignment = pairs[i], alignments[i]
        return _prepare(
            a, b, m, template, spec, train, info, opts, x, dev, forms, alignment, checked
        )  # fmt: skip

    threads = _threads_for(alignments, opts, spec)
    work = _taking_turns(prepare) if threads > 1 and BATON.get(dev.type, True) else prepare
    return _in_threads(in_lanes(work, dev, threads), len(pairs), threads)


def _taking_turns(fn: Callable[[int], _T]) -> Callable[[int], _T]:
    """``fn``, its calls in several threads taking turns under one baton (:data:`BATON`)."""
    baton = Baton()

    def run(i: int) -> _T:
        with baton.held():
            return fn(i)

    return run


@dataclass(frozen=True)
class _Part:
    """The prepared pairs of one working dtype: their places among all the pairs, their
    work, and the data in that dtype."""

    places: tuple[int, ...]
    works: list[_CurveWork]
    data: tuple[Split, Split | None]


@dataclass(frozen=True)
class PreparedCurves:
    """Pairs' paths made and held, their points not yet evaluated (:func:`prepare_curves`).
    A table prepares its next pairs while the device evaluates these."""

    parts: tuple[_Part, ...]
    count: int
    template: nn.Module
    kind: str
    options: PathOptions
    x: Tensor
    device: torch.device
    batch_size: int

    def evaluate(self) -> list[PathCurve]:
        """The pairs' curves, in the order the pairs were given: the BatchNorm statistics
        recomputed where the options ask (the shared template runs: one pair at a time),
        then every path's points evaluated together."""
        curves: list[PathCurve | None] = [None] * self.count
        for part in self.parts:
            for i, curve in zip(part.places, self._evaluated(part), strict=True):
                curves[i] = curve
        return [c for c in curves if c is not None]

    def _evaluated(self, part: _Part) -> list[PathCurve]:
        (train, test_split), opts, dev = part.data, self.options, self.device
        evaluator = _evaluator(self.template, train, dev, self.batch_size)
        # the BatchNorm statistics read the inputs the evaluator holds on the device
        works = [_recomputed(w, self.template, evaluator.x, opts) for w in part.works]
        paths = [p for w in works for p in w.paths]
        scales = [s for w in works for s in w.output_scales]
        scores = iter(evaluator.evaluate_many(paths, loss=opts.loss, output_scales=scales))
        tests: Iterator[Scores] | None = None
        if opts.test and test_split is not None:
            tests = iter(
                _evaluator(self.template, test_split, dev, self.batch_size).evaluate_many(paths)
            )
        curves = []
        for work in works:
            mine = [next(scores) for _ in work.paths]
            test_error = None
            if tests is not None:
                test_error = torch.stack([next(tests).errors for _ in work.paths]).mean(0)
            curves.append(_finish(self.kind, self.x, work, mine, test_error))
        return curves


#: Pairs prepared at once at most (each holds its endpoints' normalized copies meanwhile).
PREPARE_THREADS = 8


#: By device type, whether the threads of :func:`_prepared` take turns at launching ops
#: (:class:`~canon.core.host_work.Baton`), handing the turn over only while a solve runs
#: on the host or a read waits for the device; else they launch at once, passing the
#: GIL to one another at every op. On a GPU the host only launches (the device works
#: meanwhile): turns. On 2 CPU cores, four threads preparing pairs of 784-8-8-10 MLPs
#: (launches and little work) took 3.4 ms a pair by turns, 6.8-8.1 ms at once; of
#: 784-512-512-10 (real work, which threads share out) 48-52 ms by turns, 35-37 at once.
BATON: dict[str, bool] = {"cpu": False, "cuda": True}


def _threads_for(alignments: Sequence[Alignment | None], opts: PathOptions, spec: Spec) -> int:
    """How many pairs :func:`_prepared` prepares at once: several where pairs are matched
    by a method that reads only their weights, up to the cores there are and
    :data:`PREPARE_THREADS`. A pair's assignment solves run on the host outside the GIL
    (scipy), so one pair's solves overlap with others' tensor work; on a GPU they are
    most of a small network's time beyond its forward passes. A matching that runs the
    shared template (``needs_data``) goes one pair at a time."""
    if all(a is not None for a in alignments):
        return 1
    if get_matching(resolve_method(opts.method, spec)).needs_data:
        return 1
    return max(1, min(PREPARE_THREADS, os.cpu_count() or 1, len(alignments)))


def _in_threads(fn: Callable[[int], _T], count: int, threads: int) -> list[_T]:
    """``[fn(i) for i in range(count)]``, computed by up to ``threads`` threads."""
    if threads <= 1 or count <= 1:
        return [fn(i) for i in range(count)]
    with ThreadPoolExecutor(max_workers=min(threads, count)) as pool:
        return list(pool.map(fn, range(count)))


def _prepare(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    midpoint: Mapping[str, Tensor] | None,
    template: nn.Module,
    spec: Spec,
    train: tuple[Tensor, Tensor],
    info: PathKindInfo,
    opts: PathOptions,
    x: Tensor,
    dev: torch.device,
    forms: NormalForms,
    alignment: Alignment | None = None,
    checked: bool = False,
) -> _CurveWork:
    """One pair's paths (b aligned to a by ``alignment``, or matched by ``opts.method``)
    and its record; the BN statistics as the endpoints give them (:func:`_recomputed`).
    ``checked``: a and b were checked against ``spec`` already. The ends' working and
    normalized copies come from ``forms`` (made once for all the pairs an end is in)."""
    if not checked:
        check_state(a, spec, "`a`")
        check_state(b, spec, "`b`")
    points, seed = opts.points, opts.seed
    dtype = state_dtype(a, b, midpoint)
    form_a, form_b = forms.of(a, spec, dev, dtype), forms.of(b, spec, dev, dtype)
    a, b = dict(form_a.state), dict(form_b.state)
    norm_a, scales_a = dict(form_a.normalized), form_a.scales
    norm_b, scales_b = dict(form_b.normalized), form_b.scales
    method = resolve_method(opts.method, spec)
    if alignment is None:
        alignment = find_alignment(
            norm_b,
            norm_a,
            spec,
            method,
            model=template,
            # the inputs go to the device only for a matching that reads them
            inputs=train[0].to(dev) if get_matching(method).needs_data else None,
            batch=opts.match_batch,
            seed=seed,
        )
    else:
        check_alignment(alignment, spec)
    dists = distances(a, b, spec, alignment, normalized=(norm_a, norm_b), check=False)
    recorded: dict[str, Any] = {"points": points, "seed": seed, "method": method}
    if get_matching(method).needs_data:
        recorded["match_batch"] = opts.match_batch
    m = None
    if info.needs_midpoint:
        if midpoint is None:
            raise ConfigError(f"a `{info.name}` path needs a `midpoint` network")
        check_state(midpoint, spec, "`midpoint`")
        m = to_working(midpoint, dev, dtype)
    ends = PathEnds(
        a,
        b,
        norm_a,
        norm_b,
        alignment,
        spec,
        x,
        m,
        opts.orders,
        seed,
        method,
        _output_factor(scales_a, spec),
        _output_factor(scales_b, spec),
    )
    paths = info.build(ends)
    if info.orders:
        recorded["orders"] = opts.orders
    scales = [p.output_scale if isinstance(p, ScaledPath) else None for p in paths]
    return _CurveWork(paths, dists, recorded, scales)


def _recomputed(
    work: _CurveWork, template: nn.Module, train_x: Tensor, opts: PathOptions
) -> _CurveWork:
    """``work`` with the BN statistics recomputed on ``train_x`` (on the paths' device)
    where ``opts`` asks (called once the endpoints' normalized copies are let go: only
    the paths' bases stay held)."""
    if not has_batchnorm(template):
        return work
    recorded = work.recorded | {"bn": opts.bn}
    paths = work.paths
    if opts.bn == "recompute":
        recorded |= {"bn_batches": opts.bn_batches, "bn_batch_size": opts.bn_batch_size}
        interior = range(1, opts.points - 1)
        paths = [
            with_recomputed_statistics(
                p, template, train_x, interior, opts.bn_batches, opts.bn_batch_size
            )
            for p in paths
        ]
    return _CurveWork(paths, work.distances, recorded, work.output_scales)


def _finish(
    kind: str, x: Tensor, work: _CurveWork, scores: list[Scores], test_error: Tensor | None
) -> PathCurve:
    """The curve from the scores of its paths (several: random orders, averaged)."""
    errors = torch.stack([s.errors for s in scores])  # [R, K]
    per_order = [barrier_and_excess(x, e) for e in errors]
    barriers = torch.tensor([b for b, _ in per_order], dtype=torch.float64)
    excesses = torch.tensor([e for _, e in per_order], dtype=torch.float64)
    losses = None
    if any(s.losses is not None for s in scores):
        losses = torch.stack([s.losses for s in scores if s.losses is not None]).mean(0)
    several = len(scores) > 1
    return PathCurve(
        kind=kind,
        x=_floats(x) or [],
        train_error=_floats(errors.mean(0)) or [],
        barrier=float(barriers.mean()),
        excess=float(excesses.mean()),
        distances=work.distances,
        options=work.recorded,
        train_loss=_floats(losses),
        test_error=_floats(test_error),
        train_error_std=_floats(errors.std(0, unbiased=False)) if several else None,
        barrier_std=float(barriers.std(unbiased=False)) if several else None,
    )


@dataclass(frozen=True)
class PathEnds:
    """What a path kind's builder gets (:func:`~canon.engine.kinds.register_path_kind`).

    The endpoints raw (``a``, ``b``) and normalized, the alignment of normalized b
    to normalized a, the positions ``x``, the ``midpoint`` (checked against the
    spec and on the endpoints' device; ``None`` unless the kind needs one),
    the number of random ``orders`` with their first ``seed``, the matching
    ``method`` that aligned b (a midpoint is aligned to a by it, or by the
    architecture's weight-based default when the method needs data), and the
    positive factors normalization took off a's and b's logits (``output_a``,
    ``output_b``: :attr:`~canon.core.UnitScales.output`, 1 for an all-zero
    output layer, which normalization leaves as it is; ``None`` when it took
    none: no output layer, or a binary one).
    """

    a: dict[str, Tensor]
    b: dict[str, Tensor]
    norm_a: dict[str, Tensor]
    norm_b: dict[str, Tensor]
    alignment: Alignment
    spec: Spec
    x: Tensor
    midpoint: dict[str, Tensor] | None = None
    orders: int = 1
    seed: int = 0
    method: str = "auto"
    output_a: float | None = None
    output_b: float | None = None

    def aligned_b(self) -> dict[str, Tensor]:
        """Raw b with a's unit order (the alignment found on the normalized networks)."""
        return apply_alignment(self.b, self.alignment, self.spec)

    def require_midpoint(self, kind: str) -> dict[str, Tensor]:
        """The midpoint, or a ConfigError naming ``kind`` when there is none."""
        if self.midpoint is None:
            raise ConfigError(f"a `{kind}` path needs a `midpoint` network")
        return self.midpoint


def build_linear(ends: PathEnds) -> list[NetworkPath]:
    """Straight line between the raw parameters."""
    return [linear_path(ends.a, ends.b, ends.x)]


def build_linear_aligned(ends: PathEnds) -> list[NetworkPath]:
    """Straight line from a to b aligned to a (not normalized)."""
    return [linear_path(ends.a, ends.aligned_b(), ends.x)]


@dataclass(frozen=True, eq=False)
class ScaledPath(NetworkPath):
    """A path whose point k, for its loss, has its logits multiplied by
    ``output_scale[k]`` ([K], positive): a path between normalized networks
    (geodesic, bend), whose output layers normalization scaled globally, then has
    the losses of networks at their own output scale, the factor moving linearly
    between the ends' (:func:`_output_scale_line`). The path's tensors, and so its
    distances and errors, are those of the normalized networks.
    """

    output_scale: Tensor


def _output_factor(scales: UnitScales, spec: Spec) -> float | None:
    """The factor normalization took off the network's logits: ``scales.output``, 1 for
    an all-zero output layer (left as it is); ``None`` where it took none: without an
    output layer, or with a binary one (used through its weights' signs, whatever
    their scale)."""
    if spec.output is None or spec.output.weight in spec.binary_weights:
        return None
    return 1.0 if scales.output is None else scales.output


def _output_scale_line(x: Tensor, start: float, end: float) -> Tensor:
    """(1 - x) start + x end at the positions ``x`` (float64)."""
    x = x.to(torch.float64)
    return (1 - x) * start + x * end


def _scaled(path: NetworkPath, scale: Tensor | None) -> NetworkPath:
    """``path`` with the factors ``scale`` on its logits for the losses (none: as it is)."""
    return path if scale is None else ScaledPath(path.x, path.tensors, scale)


def build_geodesic(ends: PathEnds) -> list[NetworkPath]:
    """Per-unit slerp between the normalized networks, b aligned to a; the losses are at
    the networks' own output scale, (1 - x) s_a + x s_b (:class:`ScaledPath`)."""
    end = apply_alignment(ends.norm_b, ends.alignment, ends.spec)
    path = geodesic_path(ends.norm_a, end, ends.spec, ends.x)
    scale = None
    if ends.output_a is not None and ends.output_b is not None:
        scale = _output_scale_line(ends.x, ends.output_a, ends.output_b)
    return [_scaled(path, scale)]


def _bend_scale(ends: PathEnds, middle: float | None) -> Tensor | None:
    """The output scale along a bend: on each leg linear in the leg's own fraction,
    from s_a to the midpoint's ``middle`` (x <= 0.5), then to s_b."""
    if ends.output_a is None or ends.output_b is None or middle is None:
        return None
    x = ends.x.to(torch.float64)
    first = _output_scale_line(x * 2, ends.output_a, middle)
    second = _output_scale_line(x * 2 - 1, middle, ends.output_b)
    return torch.where(x <= 0.5, first, second)


def build_bend(ends: PathEnds) -> list[NetworkPath]:
    """Two geodesic legs through the midpoint, normalized and aligned to a. The losses
    are at the networks' own output scale: each leg's factor moves linearly between its
    ends' (the midpoint's: that of the midpoint as given, :class:`ScaledPath`)."""
    spec = ends.spec
    m, m_scales = normalize_with_scales(ends.require_midpoint("bend"), spec, check=False)
    method = ends.method if ends.method in WEIGHT_METHODS else "auto"
    m = apply_alignment(m, match(m, ends.norm_a, spec, method), spec)
    end = apply_alignment(ends.norm_b, ends.alignment, spec)
    path = bend_path(ends.norm_a, m, end, spec, ends.x)
    return [_scaled(path, _bend_scale(ends, _output_factor(m_scales, spec)))]


def build_bend_linear(ends: PathEnds) -> list[NetworkPath]:
    """Two straight legs through the midpoint as given, to raw b."""
    m = ends.require_midpoint("bend_linear")
    return [bend_path(ends.a, m, ends.b, ends.spec, ends.x, legs="linear")]


def build_bend_linear_aligned(ends: PathEnds) -> list[NetworkPath]:
    """Two straight legs through the midpoint as given, to b aligned to a."""
    m = ends.require_midpoint("bend_linear_aligned")
    return [bend_path(ends.a, m, ends.aligned_b(), ends.spec, ends.x, legs="linear")]


def _flips(ends: PathEnds, end: dict[str, Tensor], kind: str) -> list[NetworkPath]:
    if not ends.spec.binary_weights:
        raise ConfigError(f"`{kind}` paths need a network with binary weights")
    if ends.orders < 1:
        raise ConfigError(f"`orders` must be at least 1, got {ends.orders}")
    return [flip_path(ends.a, end, ends.spec, ends.x, ends.seed + r) for r in range(ends.orders)]


def build_random_flip(ends: PathEnds) -> list[NetworkPath]:
    """Binary networks: ``orders`` seeded random orders of flipping a's weights to b's."""
    return _flips(ends, ends.b, "random_flip")


def build_random_flip_aligned(ends: PathEnds) -> list[NetworkPath]:
    """Binary networks: random flip orders from a to b aligned to a."""
    return _flips(ends, ends.aligned_b(), "random_flip_aligned")


@dataclass(frozen=True)
class LocalEnergy(JsonRecord):
    """Local energy dE(w, sigma) = E_z[E(w + sigma z * w)] - E(w) at each sigma (mean and
    std over draws). Binary networks: sigma is the fraction of weights flipped."""

    sigmas: list[float]
    mean: list[float]
    std: list[float]
    base_error: float
    options: dict[str, Any] = field(default_factory=dict)


def local_energy(
    state: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    draws: int = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
    *,
    spec: Spec | None = None,
    batch_size: int = 10_000,
) -> LocalEnergy:
    """The local energy (flatness) of ``state`` on the train split of ``data``.

    Every floating parameter w is perturbed multiplicatively, w + sigma z w
    with z ~ N(0, 1) elementwise; for binary networks a random fraction sigma
    of the binary weights is flipped instead. Averaged over ``draws`` seeded draws.
    """
    _check_count("draws", draws, 1, MAX_DRAWS)
    if len(sigmas) > MAX_SIGMAS:
        raise ConfigError(f"`sigmas` lists {len(sigmas)} levels; at most {MAX_SIGMAS} are allowed")
    if any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise ConfigError("`sigmas` must be finite and non-negative")
    template = as_model(model)
    spec = spec or spec_from_module(template)
    check_state(state, spec, "`state`")
    dev = resolve_device(device)
    dtype = state_dtype(state)
    train, _ = as_data(data, dtype)
    state = to_working(state, dev, dtype)
    evaluator = _evaluator(template, train, dev, batch_size)
    base = float(evaluator.error(state).errors[0])
    path = perturbation_path(state, spec, list(sigmas), draws, seed)
    errors = evaluator.evaluate(path).errors.reshape(len(sigmas), draws) - base
    return LocalEnergy(
        sigmas=[float(s) for s in sigmas],
        mean=_floats(errors.mean(1)) or [],
        std=_floats(errors.std(1, unbiased=False)) or [],
        base_error=base,
        options={"draws": draws, "seed": seed, "binary": bool(spec.binary_weights)},
    )


@dataclass(frozen=True)
class PlaneResult(JsonRecord):
    """Train errors on a grid of the plane through three networks.

    ``errors[i][j]`` is the error at (alphas[i], betas[j]); ``anchors`` are the
    (alpha, beta) positions of a, b, c.
    """

    alphas: list[float]
    betas: list[float]
    errors: list[list[float]]
    anchors: list[list[float]]
    normalized: bool
    options: dict[str, Any] = field(default_factory=dict)


def plane(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    c: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    grid: int = 21,
    margin: float = 0.2,
    normalized: bool = False,
    device: str | torch.device = "auto",
    *,
    spec: Spec | None = None,
    batch_size: int = 10_000,
    bn_batches: int = PathOptions.bn_batches,
    bn_batch_size: int = PathOptions.bn_batch_size,
) -> PlaneResult:
    """Train error on a ``grid`` x ``grid`` section of the plane through a, b and c.

    The plane is spanned by the three networks' floating parameters
    (Gram-Schmidt, Garipov et al.); with ``normalized`` each network is
    normalized first (the plane itself is not). In a network with BatchNorm,
    the running statistics at every grid point are recomputed on
    ``bn_batches`` training batches of ``bn_batch_size`` (as at a path's
    interior points; no stored statistics belong to a point off the three
    networks), and ``options`` records it. Pass c = b aligned to a to see
    the effect of alignment, as in the paper's Fig. 4.
    """
    _check_count("grid", grid, 2, MAX_GRID)
    template = as_model(model)
    spec = spec or spec_from_module(template)
    for name, s in (("a", a), ("b", b), ("c", c)):
        check_state(s, spec, f"`{name}`")
    dev = resolve_device(device)
    dtype = state_dtype(a, b, c)
    train, _ = as_data(data, dtype)
    sa, sb, sc = (to_working(s, dev, dtype) for s in (a, b, c))
    if normalized:
        sa, sb, sc = (normalize(s, spec, check=False) for s in (sa, sb, sc))
    section = plane_grid(sa, sb, sc, spec.parameters, grid, margin)
    options: dict[str, Any] = {"grid": grid, "margin": margin}
    path = section.path
    if has_batchnorm(template):
        every = range(len(path))
        train_x = train[0].to(dev)
        path = with_recomputed_statistics(path, template, train_x, every, bn_batches, bn_batch_size)
        options |= {"bn": "recompute", "bn_batches": bn_batches, "bn_batch_size": bn_batch_size}
    errors = _evaluator(template, train, dev, batch_size).evaluate(path).errors
    return PlaneResult(
        alphas=_floats(section.alphas) or [],
        betas=_floats(section.betas) or [],
        errors=errors.reshape(grid, grid).tolist(),
        anchors=section.anchors.tolist(),
        normalized=normalized,
        options=options,
    )
