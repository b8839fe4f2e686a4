"""Comparisons and pairwise tables over a zoo's entries, with every pair result cached.

A pair's result is keyed by the two entry ids (sorted), the path kind, a hash
of every option it depends on, and the cache version: a cache hit is always
the result the same computation would give. A table computes only the pairs
it does not find, so adding one entry to a table of N costs N computations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from canon._limits import clip
from canon.core.geometry import Distances
from canon.core.paths import check_points
from canon.core.precision import state_dtype, to_working
from canon.data import load_dataset
from canon.device import resolve_device
from canon.engine import (
    DEFAULT_PATHS,
    Evaluator,
    PathCurve,
    PathOptions,
    list_path_kinds,
)
from canon.engine.landscape import as_data
from canon.errors import ConfigError, DatasetError, NotCachedError
from canon.zoo._answers import TableData, comparison_text
from canon.zoo._executors import check_executor, run_pairs
from canon.zoo._keys import (
    CURVE_METRICS,
    DISTANCE_METRICS,
    check_pair,
    curve_hash,
    reference_fields,
)
from canon.zoo._pair_work import PairTask, compute_pair, pair_key
from canon.zoo._records import ALIGN_MODES, Entry, PairResult, canonical_json

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo

__all__ = [
    "CURVE_METRICS",
    "DISTANCE_METRICS",
    "Comparison",
    "Progress",
    "Table",
    "barrier_table",
    "cached_pair",
    "compare",
    "curve_key",
    "errors_on",
    "pair_key",
    "reversed_curve",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Comparison:
    """Distances between two entries and the error curve along each path kind."""

    a: str
    b: str
    distances: Distances
    curves: dict[str, PathCurve] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "a": self.a,
            "b": self.b,
            "distances": self.distances.to_dict(),
            "curves": {kind: curve.to_dict() for kind, curve in self.curves.items()},
        }

    def __str__(self) -> str:
        """The comparison as `canon compare` prints it."""
        return comparison_text(self.to_dict())


@dataclass(frozen=True, eq=False)
class Table:
    """A pairwise matrix over named entries (symmetric; zero on the diagonal)."""

    names: list[str]
    matrix: np.ndarray
    metric: str
    path: str | None
    computed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> TableData:
        """The table as plain lists (as a table answered from the cache alone comes)."""
        return TableData(
            self.names, self.metric, self.path, self.matrix.tolist(), self.computed, self.options
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return self.to_data().to_dict()

    def to_json(self) -> str:
        """One JSON object."""
        return self.to_data().to_json()

    def to_csv(self) -> str:
        """The matrix as CSV with a header row and a name column."""
        return self.to_data().to_csv()

    def to_text(self) -> str:
        """The matrix as `canon table` prints it (also ``str(table)``)."""
        return self.to_data().to_text()

    def __str__(self) -> str:
        return self.to_text()

    def to_pandas(self) -> Any:
        """The matrix as a pandas DataFrame (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pandas is optional
            raise ImportError("Table.to_pandas needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.matrix, index=self.names, columns=self.names)


def curve_key(kind: str, dataset: str | None, options: PathOptions) -> str:
    """The hash a curve along ``kind`` on ``dataset`` with ``options`` is cached under:
    every field of the options record, defaults included."""
    return curve_hash(kind, dataset, options.to_dict())


def reference_id(zoo: Zoo, entry: Entry, align: str, method: str) -> str | None:
    """The id of the family reference that pairs of ``entry``'s family are aligned
    through (``align="reference"``), or None for pairs matched directly (``pair``).

    Each entry's alignment to the reference is the zoo's cached one, found by the
    family's own matching method: another ``method`` cannot be used through it.
    """
    if align not in ALIGN_MODES:
        raise ConfigError(f"unknown alignment `{align}`; choose one of {', '.join(ALIGN_MODES)}")
    if align == "pair":
        return None
    family_method = zoo.matching_method(entry)
    if method != family_method:
        raise ConfigError(
            f"aligning through the family reference uses each entry's cached alignment to "
            f"it, found by the family's matching method `{family_method}`, not `{method}`: "
            "leave the matching method out, or align the pairs directly"
        )
    return zoo.reference(entry).id


def _pair(
    zoo: Zoo,
    a: Entry,
    b: Entry,
    kind: str,
    points: int,
    method: str,
    device: torch.device,
    compute: bool = True,
    reference: str | None = None,
) -> dict[str, Any]:
    """The cached or computed result for the sorted pair (a, b) (aligned through the
    family ``reference``, given its id)."""
    first, second = sorted((a, b), key=lambda e: e.id)
    key = pair_key(first, second, kind, points, method, reference)
    return cached_pair(
        zoo,
        first,
        second,
        kind,
        key.hash,
        lambda: compute_pair(zoo, PairTask(first, second, key), device),
        compute,
    )


def cached_pair(
    zoo: Zoo,
    first: Entry,
    second: Entry,
    kind: str,
    key: str,
    compute: Callable[[], dict[str, Any]],
    allowed: bool = True,
) -> dict[str, Any]:
    """The result of ``kind`` for the pair (first, second) (sorted by id) cached under
    ``key``; computed by ``compute`` and cached when missing (only if ``allowed``, else
    :class:`~canon.errors.NotCachedError`)."""
    cached = zoo.pairs.get(first.id, second.id, kind, key)
    if cached is not None:
        return cached
    if not allowed:
        raise NotCachedError(f"`{kind}` of `{first.name}` and `{second.name}` is not cached")
    result = compute()
    zoo.pairs.put([PairResult(first.id, second.id, kind, key, result)])
    zoo.pair_computations += 1
    # as the cache holds it (keys sorted), so a fresh answer prints as a cached one does
    return dict(json.loads(canonical_json(result)))


def compare(
    zoo: Zoo,
    a: Entry | str,
    b: Entry | str,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    points: int = 25,
    method: str = "auto",
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    compute: bool = True,
    align: str = "pair",
) -> Comparison:
    """Distances between a and b and their error curves along ``paths`` (cached).

    b is aligned to a by the matching ``method`` (``auto``: the architecture's
    default, :func:`~canon.core.default_method`); results are cached per method.
    With ``align="reference"`` b is aligned to a through the family reference
    instead: each entry's cached alignment to it, composed (one matching per entry,
    so a table of N entries matches N times, not N(N-1)/2; pairs matched directly
    can align better); results are cached apart, under the reference.

    With ``compute=False`` nothing is computed: a part not in the cache
    raises :class:`~canon.errors.NotCachedError` (invalid requests still
    raise their own errors first).
    """
    check_points(points)  # before anything is computed or cached
    ea = a if isinstance(a, Entry) else zoo.get(a)
    eb = b if isinstance(b, Entry) else zoo.get(b)
    comparable = list_path_kinds(comparable=True)
    for kind in paths:
        if kind not in comparable:
            raise ConfigError(
                f"`{kind}` cannot be compared directly; choose from {', '.join(comparable)}"
            )
    dev = resolve_device(device)
    method = zoo.matching_method(ea, method)
    for kind in paths:  # every part checked before any is computed or cached
        check_pair(ea, eb, kind, method)
    reference = reference_id(zoo, ea, align, method)
    flipped = ea.id > eb.id  # results are stored for the pair in id order
    dists = Distances.from_dict(
        _pair(zoo, ea, eb, "distances", points, method, dev, compute, reference)
    )
    curves: dict[str, PathCurve] = {}
    for done, kind in enumerate(paths, start=1):
        curve = PathCurve.from_dict(
            _pair(zoo, ea, eb, kind, points, method, dev, compute, reference)
        )
        curves[kind] = reversed_curve(curve) if flipped else curve
        if progress is not None:
            progress(done, len(paths))
    zoo.remember_matching(ea)
    return Comparison(ea.name, eb.name, dists, curves)


def barrier_table(
    zoo: Zoo,
    entries: Sequence[Entry | str] | None = None,
    *,
    path: str = "geodesic",
    metric: str = "barrier",
    points: int = 25,
    method: str = "auto",
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    compute: bool = True,
    executor: str = "local",
    address: str | None = None,
    align: str = "pair",
) -> Table:
    """The pairwise ``metric`` matrix of ``entries`` (default: every entry).

    Pairs are aligned by the matching ``method``, directly or (``align="reference"``)
    through the family reference, as in :func:`compare`.
    The pairs not cached are computed by ``executor``: ``local`` (this process) or
    ``ray`` (blocks of pairs as tasks on the Ray cluster at ``address``, default the
    one this process is connected to or a new local one; this process alone writes
    the results to the index). Results are cached as they arrive, so an interrupted
    table keeps every pair it finished.

    ``metric`` is ``barrier`` or ``excess`` along ``path``, or a distance
    (``geodesic``, ``euclidean``, ``euclidean_aligned``, ``hamming``, …).
    Only the pairs not already cached are computed; with ``compute=False``
    nothing is, and pairs not in the cache are NaN.
    """
    if metric not in CURVE_METRICS + DISTANCE_METRICS:
        raise ConfigError(
            f"unknown metric `{metric}`; choose one of "
            f"{', '.join(CURVE_METRICS + DISTANCE_METRICS)}"
        )
    check_points(points)
    check_executor(executor, address)
    chosen = _resolve(zoo, entries)
    _check_one_family(chosen)
    kind = path if metric in CURVE_METRICS else "distances"
    if kind != "distances" and kind not in list_path_kinds(comparable=True):
        raise ConfigError(f"`{path}` is not a path kind a table can use")
    dev = resolve_device(device)
    n = len(chosen)
    matrix = np.zeros((n, n))
    before = zoo.pair_computations
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    method = zoo.matching_method(chosen[0], method) if pairs else method
    reference = reference_id(zoo, chosen[0], align, method) if pairs else None
    found = _bulk(zoo, chosen, kind, points, method, metric, reference) if pairs else {}
    tasks = []
    for i, j in pairs:
        low, high = sorted((chosen[i], chosen[j]), key=lambda e: e.id)
        if (low.id, high.id) not in found:  # keyed now: a pair that cannot be, raises
            key = pair_key(low, high, kind, points, method, reference)
            tasks.append(PairTask(low, high, key))
    count = len(pairs) - len(tasks)

    def counted(computed: int) -> None:
        nonlocal count
        count += computed
        if progress is not None:
            progress(count, len(pairs))

    if progress is not None and count:  # the cached pairs, at once
        progress(count, len(pairs))
    if tasks and compute:
        found |= run_pairs(
            zoo, tasks, dev, executor=executor, address=address, done=counted, metric=metric
        )
    for i, j in pairs:
        first, second = sorted((chosen[i].id, chosen[j].id))
        if (first, second) not in found:
            matrix[i, j] = matrix[j, i] = np.nan
            continue
        value = found[(first, second)]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"metric `{metric}` does not apply to these networks")
        matrix[i, j] = matrix[j, i] = float(value)
    if pairs:
        zoo.remember_matching(chosen[0])
    return Table(
        names=[e.name for e in chosen],
        matrix=matrix,
        metric=metric,
        path=path if kind != "distances" else None,
        computed=zoo.pair_computations - before,
        options=({"points": points} if kind != "distances" else {})
        | {"method": method}
        | reference_fields(reference),
    )


def _check_one_family(chosen: Sequence[Entry]) -> None:
    """Raise :class:`ConfigError` naming each family and its entries, where ``chosen``
    spans several (a table compares networks of one architecture and config)."""
    families: dict[str, list[Entry]] = {}
    for e in chosen:
        families.setdefault(e.family, []).append(e)
    if len(families) < 2:
        return

    def named(members: list[Entry]) -> str:
        names = ", ".join(e.name for e in members[:3]) + (", ..." if len(members) > 3 else "")
        first = members[0]
        return f"{len(members)} of {clip(first.architecture, 40)} {first.family[:12]} ({names})"

    raise ConfigError(
        f"the entries are of {len(families)} families: "
        + "; ".join(named(m) for m in families.values())
        + ". A table compares networks of one architecture and config: name its entries, "
        "or select them by --tag"
    )


def _resolve(zoo: Zoo, entries: Sequence[Entry | str] | None) -> list[Entry]:
    if entries is None:
        return zoo.entries()
    chosen = [e if isinstance(e, Entry) else zoo.get(e) for e in entries]
    if len({e.id for e in chosen}) != len(chosen):
        raise ConfigError("an entry is listed twice in the table selection")
    return chosen


def _bulk(
    zoo: Zoo,
    chosen: list[Entry],
    kind: str,
    points: int,
    method: str,
    metric: str,
    reference: str | None,
) -> dict[tuple[str, str], object]:
    """The cached ``metric`` of all pairs, when every pair shares one set of options."""
    families = {e.family for e in chosen}
    datasets = {e.dataset for e in chosen}
    if len(families) != 1 or (kind != "distances" and len(datasets) != 1):
        return {}  # pair_key reports the mismatch for the first offending pair
    key = pair_key(chosen[0], chosen[-1], kind, points, method, reference)
    return zoo.pairs.metric_many([e.id for e in chosen], kind, key.hash, metric)


def errors_on(
    model: nn.Module,
    state: Mapping[str, Tensor],
    dataset: str,
    device: str | torch.device,
    architecture: str,
) -> dict[str, float]:
    """Train and test error of ``state`` (weights of ``model``, of ``architecture``) on
    ``dataset``; empty when it does not load here (files elsewhere), and a ConfigError
    when the network cannot run on it."""
    try:
        data = load_dataset(dataset)
    except DatasetError:
        return {}
    dev = resolve_device(device)
    dtype = state_dtype(state)
    train, test = as_data(data, dtype)
    splits = [("train", train)] + ([("test", test)] if test is not None else [])
    try:
        return {
            f"{split}_error": float(
                Evaluator(model, x, y, dev).error(to_working(state, dev, dtype)).errors[0]
            )
            for split, (x, y) in splits
        }
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"`{architecture}` does not run on dataset `{dataset}`: {first}; "
            "check the architecture's config against the dataset"
        ) from None


def reversed_curve(curve: PathCurve) -> PathCurve:
    """The same curve seen from the other end (x -> 1 - x)."""

    def flip(values: list[float] | None) -> list[float] | None:
        return None if values is None else list(reversed(values))

    return PathCurve(
        kind=curve.kind,
        x=[1.0 - v for v in reversed(curve.x)],
        train_error=list(reversed(curve.train_error)),
        barrier=curve.barrier,
        excess=curve.excess,
        distances=curve.distances,
        options=curve.options,
        train_loss=flip(curve.train_loss),
        test_error=flip(curve.test_error),
        train_error_std=flip(curve.train_error_std),
        barrier_std=curve.barrier_std,
    )
