"""One pair's computation, and blocks of pairs as plain data that any process can compute.

:func:`compute_pairs` is the single place pairs' results (distances, or error curves
along a path kind) are computed from their entries (:func:`compute_pair` for one; a
table's curves of one family are evaluated several pairs at a time). It reads the
entries through a :class:`PairSource`: the :class:`~canon.zoo.Zoo` itself in-process,
or, in a worker of another process or machine, an :class:`ObjectSource` that holds
what the driver sent (:class:`PairBlock`: architecture, config, dataset name and each
entry's object, as a file path or as its bytes) and never opens the zoo's index. Only
the driver writes results to the index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from canon.architectures import build_model
from canon.checkpoint import load_state
from canon.core import Alignment, Spec, normalize, through_reference
from canon.core.geometry import distances
from canon.core.permutations import check_alignment
from canon.data import Dataset, load_dataset
from canon.device import keep_bytes, queued_mark, resolve_device, side_stream
from canon.engine import (
    PathOptions,
    PreparedCurves,
    find_alignment,
    get_matching,
    pairs_per_call,
    prepare_curves,
)
from canon.engine.normal_forms import NormalForms
from canon.errors import CorruptZooError
from canon.zoo._ingest import spec_for
from canon.zoo._keys import pair_hash, reference_fields
from canon.zoo._records import Entry, canonical_json

__all__ = [
    "ObjectSource",
    "PairBlock",
    "PairKey",
    "PairSource",
    "PairTask",
    "SharedTemplates",
    "compute_block",
    "compute_pair",
    "compute_pairs",
    "pair_key",
]


@dataclass(frozen=True)
class PairKey:
    """What a pair's result depends on besides the two entries: the path options (None for
    distances) and the hash of everything, the cache key."""

    kind: str
    options: PathOptions | None
    hash: str
    matching: PathOptions | None = None  # the matching options, also for distances
    reference: str | None = None  # aligned through this family reference (an entry id)


def pair_key(
    a: Entry, b: Entry, kind: str, points: int, method: str, reference: str | None = None
) -> PairKey:
    """The cache key of ``kind`` for entries a and b aligned by the (resolved) matching
    ``method``, directly or, given the family ``reference``'s id, through each one's
    alignment to it; pairs that cannot be compared raise.

    The options record given to :func:`path_curve` is the one hashed, so no option
    (or changed default) can be left out of the key.
    """
    options = PathOptions(points=points, method=method)
    key = pair_hash(a, b, kind, options.to_dict(), reference)
    return PairKey(kind, None if kind == "distances" else options, key, options, reference)


@dataclass(frozen=True)
class PairTask:
    """One pair to compute: ``first`` and ``second`` sorted by id, and its key."""

    first: Entry
    second: Entry
    key: PairKey


class PairSource(Protocol):
    """Where a pair computation reads its entries from (a zoo, or an :class:`ObjectSource`)."""

    def spec(self, entry: Entry) -> Spec: ...

    def state(self, entry: Entry, device: str | torch.device = "cpu") -> dict[str, Tensor]: ...

    def model(self, entry: Entry) -> nn.Module: ...

    def dataset(self, entry: Entry) -> Dataset: ...

    def alignment(self, entry: Entry) -> Alignment: ...


def compute_pair(source: PairSource, task: PairTask, device: torch.device) -> dict[str, Any]:
    """The result of ``task``: the distances of its pair, or its error curve (as a dict)."""
    return next(compute_pairs(source, [task], device))[1]


#: Devices on which a table prepares its next pairs (normalizing, matching, distances,
#: paths: tensor work and the host's assignment solves) in a thread while the current
#: ones are evaluated: devices that run queued work while the host goes on (a GPU),
#: whose evaluations would otherwise wait for each preparation and it for them. On a
#: CPU the evaluation takes every core itself.
OVERLAP: dict[str, bool] = {"cpu": False, "cuda": True}


def compute_pairs(
    source: PairSource, tasks: Sequence[PairTask], device: torch.device
) -> Iterator[tuple[PairTask, dict[str, Any]]]:
    """Each of ``tasks`` with its result (:func:`compute_pair`), in order, as computed.

    Consecutive curves of one family and key options are evaluated together, as many
    pairs at once as their points share calls (:func:`~canon.engine.pairs_per_call`):
    a small network's path points then run stacked across pairs. On a device of
    :data:`OVERLAP` the next such group is prepared while the current one is
    evaluated. The results are the same as one pair at a time.
    """
    side = device if OVERLAP.get(device.type, False) and not _runs_models(tasks) else None
    prepare = functools.partial(_prepare, forms=NormalForms())  # each entry normalized once
    for unit, prepared in _one_ahead(_units(source, tasks, device), prepare, side):
        if unit.model is None:
            yield unit.tasks[0], _distances(source, unit.tasks[0], device)
            continue
        try:
            curves = _curve_dicts(unit.tasks, prepared())
        except Exception:
            if len(unit.tasks) == 1:
                raise
            # one pair failed: the pairs before it are still wanted (a table keeps them)
            for t in unit.tasks:
                alone = _unit(source, [t], unit.model, unit.data, device)
                yield t, _curve_dicts([t], prepare(alone))[0]
        else:
            yield from zip(unit.tasks, curves, strict=True)


def _runs_models(tasks: Sequence[PairTask]) -> bool:
    """Whether preparing some of ``tasks``' curves runs their networks (a matching that
    reads activations): such units are not prepared beside another's evaluation."""
    return any(
        t.key.options is not None
        and t.key.reference is None
        and get_matching(t.key.options.method).needs_data
        for t in tasks
    )


@dataclass
class _Unit:
    """Pairs computed together: one distance task (``model`` None), or a group of curves
    of one family and key options with what preparing their paths reads (made in the
    caller's thread: the source's index, specs and files are read only there)."""

    tasks: list[PairTask]
    model: nn.Module | None = None
    data: Dataset | None = None
    device: torch.device | None = None
    spec: Spec | None = None
    states: list[tuple[dict[str, Tensor], dict[str, Tensor]]] | None = None
    alignments: list[Alignment] | None = None
    failure: Exception | None = None  # raised when the unit is prepared


def _units(source: PairSource, tasks: Sequence[PairTask], device: torch.device) -> Iterator[_Unit]:
    """``tasks`` cut into units: each distance task alone, consecutive curves of one family
    and key options in groups of :func:`~canon.engine.pairs_per_call`."""
    start = 0
    while start < len(tasks):
        task = tasks[start]
        if task.key.options is None:
            yield _Unit([task])
            start += 1
            continue
        model, data = source.model(task.first), source.dataset(task.first)
        size = pairs_per_call(model, data, task.key.options.points, device)
        group = [task]
        for later in tasks[start + 1 : start + size]:
            if not _together(task, later):
                break
            group.append(later)
        yield _unit(source, group, model, data, device)
        start += len(group)


def _unit(
    source: PairSource,
    group: list[PairTask],
    model: nn.Module,
    data: Dataset | None,
    device: torch.device,
) -> _Unit:
    """The unit of curves ``group``: its entries' weights and alignments read now, or what
    reading them raised (kept for when the unit is prepared, as if raised there)."""
    unit = _Unit(group, model, data, device)
    try:
        first = group[0]
        unit.spec = source.spec(first.first)
        if first.key.reference is not None:
            unit.alignments = [_through_reference(source, t) for t in group]
        unit.states = [
            (source.state(t.first, device), source.state(t.second, device)) for t in group
        ]
    except Exception as exc:
        unit.failure = exc
    return unit


def _prepare(unit: _Unit, forms: NormalForms) -> PreparedCurves | None:
    """The paths of a unit of curves, made (:func:`~canon.engine.prepare_curves`, the
    entries' normal forms kept in ``forms``); None for a distance task (computed as it
    is reached)."""
    if unit.failure is not None:
        raise unit.failure
    if unit.model is None:
        return None
    assert unit.states is not None and unit.device is not None
    first = unit.tasks[0]
    return prepare_curves(
        unit.states,
        unit.model,
        unit.data,
        first.key.kind,
        unit.device,
        spec=unit.spec,
        options=first.key.options,
        alignments=unit.alignments,
        checked=True,  # read by load_state, which checks them against the spec
        forms=forms,
    )


_P = TypeVar("_P")


def _one_ahead(
    units: Iterator[_Unit], prepare: Callable[[_Unit], _P], device: torch.device | None
) -> Iterator[tuple[_Unit, Callable[[], _P]]]:
    """Each unit with a function giving its prepared form (or raising what preparing it
    raised). Without ``device`` a unit is prepared when that function is called. With
    it, each unit is prepared in a thread, on a stream of its own on the device
    (:func:`~canon.device.side_stream`), while the caller works on the unit before it;
    the next unit is made (in the caller's thread) only once no preparation runs.
    Preparing runs tensor code only: no module, no trace (torch.fx patches modules
    process-wide while it traces)."""
    if device is None:
        for unit in units:
            yield unit, functools.partial(prepare, unit)
        return

    def in_side_stream(unit: _Unit, mark: torch.cuda.Event | None) -> _P:
        with side_stream(device, after=mark):
            return prepare(unit)

    with ThreadPoolExecutor(max_workers=1) as pool:
        held: tuple[_Unit, Future[_P]] | None = None
        for unit in units:
            future = pool.submit(in_side_stream, unit, queued_mark(device))
            if held is not None:
                yield held[0], held[1].result
            wait([future])
            held = (unit, future)
        if held is not None:
            yield held[0], held[1].result


def _together(first: PairTask, later: PairTask) -> bool:
    """Whether ``later``'s curve can be evaluated with ``first``'s: one family, one path
    kind, the same options and alignment."""
    same_key = (first.key.kind, first.key.options, first.key.reference) == (
        later.key.kind,
        later.key.options,
        later.key.reference,
    )
    return same_key and first.first.family == later.first.family


def _curve_dicts(group: list[PairTask], prepared: PreparedCurves | None) -> list[dict[str, Any]]:
    """The curves of ``group``, prepared, evaluated, as the results a table stores (the
    reference they were aligned through recorded in their options)."""
    assert prepared is not None
    through = reference_fields(group[0].key.reference)
    return [c.to_dict() | {"options": c.options | through} for c in prepared.evaluate()]


def _distances(source: PairSource, task: PairTask, device: torch.device) -> dict[str, Any]:
    """The distances of ``task``'s pair, b aligned to a by the key's matching method
    (directly, or through the family reference)."""
    a, b, key = task.first, task.second, task.key
    assert key.matching is not None
    spec = source.spec(a)
    state_a, state_b = source.state(a, device), source.state(b, device)
    normalized = normalize(state_a, spec), normalize(state_b, spec)
    if key.reference is not None:
        alignment = _through_reference(source, task)
    else:
        method = key.matching.method
        model, inputs = None, None
        if get_matching(method).needs_data:
            model, inputs = source.model(a), source.dataset(a).x_train.to(device)
        alignment = find_alignment(
            normalized[1],
            normalized[0],
            spec,
            method,
            model=model,
            inputs=inputs,
            batch=key.matching.match_batch,
            seed=key.matching.seed,
        )
    found = distances(state_a, state_b, spec, alignment, normalized=normalized, check=False)
    return found.to_dict()  # loaded: checked


def _through_reference(source: PairSource, task: PairTask) -> Alignment:
    """The pair's b aligned to a through the family reference: each one's (cached)
    alignment to the reference, composed."""
    return through_reference(source.alignment(task.second), source.alignment(task.first))


class SharedTemplates:
    """A :class:`PairSource` that hands out one template module per family, so that the
    curves of many pairs share one evaluator (built once per template and data split),
    and keeps the small networks' weights it read last (:func:`~canon.device.keep_bytes`
    of their device: a table reads each entry once for every pair it is in, and on a GPU
    a read is a copy to it)."""

    def __init__(self, source: PairSource) -> None:
        self.source = source
        self._models: dict[str, nn.Module] = {}
        self._states: OrderedDict[tuple[str, str], dict[str, Tensor]] = OrderedDict()
        self._held = 0

    def spec(self, entry: Entry) -> Spec:
        """The source's spec."""
        return self.source.spec(entry)

    def state(self, entry: Entry, device: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The source's weights (a new dict of the same tensors, which no one writes into,
        when they were read lately)."""
        key = (entry.id, str(device))
        if key in self._states:
            self._states.move_to_end(key)
            return dict(self._states[key])
        state = self.source.state(entry, device)
        size = sum(t.numel() * t.element_size() for t in state.values())
        budget = keep_bytes(resolve_device(device))
        if size <= budget // 16:
            self._states[key] = state
            self._held += size
            while self._held > budget:
                _, dropped = self._states.popitem(last=False)
                self._held -= sum(t.numel() * t.element_size() for t in dropped.values())
        return dict(state)

    def dataset(self, entry: Entry) -> Dataset:
        """The source's dataset."""
        return self.source.dataset(entry)

    def alignment(self, entry: Entry) -> Alignment:
        """The source's alignment of the entry to its family reference."""
        return self.source.alignment(entry)

    def model(self, entry: Entry) -> nn.Module:
        """The family's template module (made once; weights not loaded, never changed)."""
        if entry.family not in self._models:
            self._models[entry.family] = self.source.model(entry)
        return self._models[entry.family]


# -- blocks: pairs as plain data ---------------------------------------------------------


@dataclass(frozen=True)
class PairBlock:
    """Pairs of one family as plain data (strings, numbers, bytes): what a worker needs.

    ``entries`` holds each entry's record (:func:`_entry_record`); ``objects`` each
    entry's weights, a file path (workers that share the zoo's disk) or the object's
    bytes; ``pairs`` the (first id, second id, cache key) to compute; ``kind``,
    ``points`` and ``method`` the options they share. Pairs aligned through their
    family ``reference`` (its id) carry each entry's alignment to it in ``alignments``
    (:meth:`~canon.core.Alignment.to_dict`).
    """

    entries: dict[str, dict[str, Any]]
    objects: dict[str, Any]
    pairs: list[tuple[str, str, str]]
    kind: str
    points: int
    method: str
    reference: str | None = None
    alignments: dict[str, dict[str, Any]] | None = None

    @classmethod
    def of(
        cls,
        tasks: Sequence[PairTask],
        objects: Mapping[str, Any],
        alignments: Mapping[str, Alignment] | None = None,
    ) -> PairBlock:
        """The block of ``tasks`` (one kind, points, method and reference) with ``objects``
        (and, for pairs aligned through the reference, ``alignments``) by entry id."""
        first = tasks[0]
        options = first.key.matching
        assert options is not None
        entries = {e.id: _entry_record(e) for t in tasks for e in (t.first, t.second)}
        return cls(
            entries=entries,
            objects={i: objects[i] for i in entries},
            pairs=[(t.first.id, t.second.id, t.key.hash) for t in tasks],
            kind=first.key.kind,
            points=options.points,
            method=options.method,
            reference=first.key.reference,
            alignments=None
            if first.key.reference is None or alignments is None
            else {i: alignments[i].to_dict() for i in entries},
        )


def _entry_record(e: Entry) -> dict[str, Any]:
    return {
        "name": e.name,
        "architecture": e.architecture,
        "config": json.loads(canonical_json(e.config)),
        "family": e.family,
        "dataset": e.dataset,
        "kind": e.kind,
    }


class ObjectSource:
    """Entries' specs, weights, models and datasets from a :class:`PairBlock` alone.

    An object given as bytes is checked against its id (the SHA-256 of its bytes)
    and read through a private temporary file, as a zoo reads its objects: the
    header is checked against the spec before any tensor is loaded.
    """

    def __init__(self, block: PairBlock) -> None:
        self.block = block
        self._specs: dict[str, Spec] = {}
        self._datasets: dict[str, Dataset] = {}

    def entry(self, entry_id: str) -> Entry:
        """The entry record of ``entry_id``."""
        r = self.block.entries[entry_id]
        return Entry(
            id=entry_id,
            name=r["name"],
            architecture=r["architecture"],
            config=r["config"],
            family=r["family"],
            dataset=r["dataset"],
            kind=r["kind"],
        )

    def spec(self, entry: Entry) -> Spec:
        """The spec of the entry's architecture (once per family)."""
        if entry.family not in self._specs:
            self._specs[entry.family] = spec_for(entry.architecture, entry.config)
        return self._specs[entry.family]

    def state(self, entry: Entry, device: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The entry's weights, checked against its spec, on ``device``."""
        held = self.block.objects[entry.id]
        if isinstance(held, str):
            path = Path(held)
            if not path.is_file():
                raise CorruptZooError(
                    f"object {entry.id} of entry `{entry.name}` is not at `{held}` on this "
                    "worker; for workers that do not share the zoo's folder, give the "
                    "cluster's address (--address), and each object is sent to them"
                )
            return load_state(path, self.spec(entry), device=device)
        data = bytes(held)
        if hashlib.sha256(data).hexdigest() != entry.id:
            raise CorruptZooError(f"object {entry.id} of entry `{entry.name}` arrived damaged")
        fd, name = tempfile.mkstemp(suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return load_state(name, self.spec(entry), device=device)
        finally:
            os.unlink(name)

    def model(self, entry: Entry) -> nn.Module:
        """A fresh module of the entry's architecture (weights not loaded)."""
        return build_model(entry.architecture, entry.config)

    def alignment(self, entry: Entry) -> Alignment:
        """The entry's alignment to its family reference, as the driver sent it."""
        held = (self.block.alignments or {}).get(entry.id)
        if held is None:
            raise CorruptZooError(f"no alignment to the family reference came with `{entry.name}`")
        alignment = Alignment.from_dict(held)
        check_alignment(alignment, self.spec(entry))
        return alignment

    def dataset(self, entry: Entry) -> Dataset:
        """The entry's dataset, loaded by name on this worker (once)."""
        if entry.dataset is None:
            raise CorruptZooError(f"entry `{entry.name}` has no dataset")
        if entry.dataset not in self._datasets:
            self._datasets[entry.dataset] = load_dataset(entry.dataset)
        return self._datasets[entry.dataset]


def compute_block(block: PairBlock, device: str = "auto") -> list[tuple[str, str, str, str]]:
    """Every pair of ``block`` computed here: (first id, second id, key, the result as
    canonical JSON), in the block's order."""
    from canon.device import resolve_device

    objects = ObjectSource(block)
    source = SharedTemplates(objects)
    dev = resolve_device(device)
    tasks = []
    for first, second, key_hash in block.pairs:
        a, b = objects.entry(first), objects.entry(second)
        key = pair_key(a, b, block.kind, block.points, block.method, block.reference)
        if key.hash != key_hash:  # the worker's canon keys this pair otherwise
            raise CorruptZooError(
                f"the pair `{a.name}`, `{b.name}` keys differently on this worker "
                "(another canon version?); install the driver's version on the workers"
            )
        tasks.append(PairTask(a, b, key))
    return [
        (t.first.id, t.second.id, t.key.hash, canonical_json(result))
        for t, result in compute_pairs(source, tasks, dev)
    ]
