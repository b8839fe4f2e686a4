"""Comparisons and pairwise tables over a zoo's entries, with every pair result cached.

A pair's result is keyed by the two entry ids (sorted), the path kind, a hash
of every option it depends on, and the cache version: a cache hit is always
the result the same computation would give. A table computes only the pairs
it does not find, so adding one entry to a table of N costs N computations.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import torch

from canon.architectures import build_model
from canon.core.geometry import Distances, distances
from canon.core.paths import check_points
from canon.data import Dataset, load_dataset
from canon.device import resolve_device
from canon.engine import PATH_KINDS, Evaluator, PathCurve, path_curve
from canon.engine.landscape import PathKind
from canon.errors import ConfigError, DatasetError, InvalidEntryError, NotCachedError
from canon.zoo._ingest import Source
from canon.zoo._layout import INDEX, check_folder
from canon.zoo._manifest import MANIFEST, write_manifest
from canon.zoo._midpoints import add_midpoint
from canon.zoo._rebuild import rebuild_index
from canon.zoo._records import Entry, VerifyReport, canonical_json, check_metrics
from canon.zoo._store import ZooStore, _fields

if TYPE_CHECKING:  # the Hub layer sits above the store; imported when used
    from canon.engine.midpoint import MidpointResult
    from canon.hub import PullResult, PushResult

__all__ = ["CURVE_METRICS", "DISTANCE_METRICS", "Comparison", "Table", "Zoo"]

CURVE_METRICS = ("barrier", "excess")
DISTANCE_METRICS = (
    "euclidean",
    "euclidean_aligned",
    "geodesic",
    "hamming",
    "hamming_fraction",
    "hamming_aligned",
    "hamming_aligned_fraction",
)
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


@dataclass(frozen=True, eq=False)
class Table:
    """A pairwise matrix over named entries (symmetric; zero on the diagonal)."""

    names: list[str]
    matrix: np.ndarray
    metric: str
    path: str | None
    computed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "names": self.names,
            "metric": self.metric,
            "path": self.path,
            "matrix": self.matrix.tolist(),
            "computed": self.computed,
            "options": self.options,
        }

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict())

    def to_csv(self) -> str:
        """The matrix as CSV with a header row and a name column."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["", *self.names])
        for name, row in zip(self.names, self.matrix.tolist(), strict=True):
            writer.writerow([name, *(f"{v:.6g}" for v in row)])
        return out.getvalue()

    def to_pandas(self) -> Any:
        """The matrix as a pandas DataFrame (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pandas is optional
            raise ImportError("Table.to_pandas needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.matrix, index=self.names, columns=self.names)


def options_hash(options: dict[str, Any]) -> str:
    """A short stable hash of the options a pair result depends on."""
    return hashlib.sha256(canonical_json(options).encode()).hexdigest()[:32]


class Zoo(ZooStore):
    """A zoo of networks, with cached comparisons and pairwise tables."""

    pair_computations: int = 0  # pairs computed (not found in the cache) by this object

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, create: bool = True, trust_code: bool = False
    ) -> Self:
        """Open the zoo at ``path`` (see :meth:`ZooIndex.open`).

        A folder with ``manifest.json`` and ``objects/`` but no index (a zoo
        as it travels, like the embedded default zoo) gets its index rebuilt
        from the manifest, every entry checked as ``add`` checks it; if any
        entry is bad the folder is left exactly as it was and the error names
        the entry (``canon verify --repair`` rebuilds without the bad ones).
        ``trust_code`` lets the zoo's entries name ``module:function``
        architectures, which canon imports and runs.
        """
        root = Path(path)
        check_folder(root)
        if not (root / INDEX).is_file() and (root / MANIFEST).is_file():
            rebuild_index(root, trust_code=trust_code)
        return super().open(path, create=create, trust_code=trust_code)

    @classmethod
    def check(
        cls, path: str | os.PathLike[str], *, repair: bool = False, trust_code: bool = False
    ) -> VerifyReport:
        """Verify the zoo at ``path`` (see :meth:`verify`), also one whose index is missing.

        Without an index, the manifest's entries are checked against the
        objects with nothing written; ``repair`` then rebuilds the index from
        the good entries, skipping (and reporting) the bad ones, deleting nothing.
        """
        root = Path(path)
        check_folder(root)
        rebuilt = None
        if not (root / INDEX).is_file() and (root / MANIFEST).is_file():
            rebuilt = rebuild_index(root, trust_code=trust_code, skip_bad=True, publish=repair)
            if not repair:
                return VerifyReport(
                    ok=not rebuilt.skipped,
                    checked=len(rebuilt.indexed),
                    skipped_entries=rebuilt.skipped,
                )
        with cls.open(root, create=False, trust_code=trust_code) as zoo:
            report = zoo.verify(repair=repair)
        if rebuilt is None:
            return report
        return replace(report, skipped_entries=rebuilt.skipped, rebuilt=True)

    def add(
        self,
        source: Source,
        *,
        name: str,
        architecture: str | None = None,
        config: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        tags: Mapping[str, object] | None = None,
        kind: str = "solution",
        parents: Sequence[Entry | str] = (),
        metrics: Mapping[str, Any] | None = None,
        created: datetime | None = None,
        evaluate: bool = True,
        device: str | torch.device = "cpu",
    ) -> Entry:
        """Add a network (see :meth:`ZooStore.add`), recording its train and test error.

        With ``evaluate`` and a ``dataset`` that loads here, the errors are
        computed (unless ``metrics`` already gives ``train_error``) and stored as
        metrics ``train_error`` and ``test_error``. A dataset that cannot be
        loaded here (files elsewhere) is recorded by name without errors.
        """
        fields = _fields(name, kind, tags, metrics, dataset, created)
        prepared = self._prepare(source, architecture, config)
        if evaluate and dataset is not None and "train_error" not in (metrics or {}):
            errors = _errors(
                prepared.state, prepared.architecture, prepared.config, dataset, device
            )
            fields = replace(fields, metrics=check_metrics({**errors, **(metrics or {})}))
        return self._add_prepared(prepared, parents, fields)

    def write_manifest(self) -> Path:
        """Write ``manifest.json``, the portable list of entries, families and references."""
        return write_manifest(self)

    def midpoint(
        self, a: Entry | str, b: Entry | str, *, name: str, **options: Any
    ) -> tuple[Entry, MidpointResult]:
        """Optimize a midpoint between a and b and add it (see :func:`add_midpoint`)."""
        return add_midpoint(self, a, b, name=name, **options)

    def push(self, repo_id: str, **options: Any) -> PushResult:
        """Push this zoo to a Hub repository (see :func:`canon.hub.push` for the options)."""
        from canon.hub import push

        return push(self, repo_id, **options)

    def pull(self, repo_id: str, **options: Any) -> PullResult:
        """Merge a zoo from a Hub repository into this one (see :func:`canon.hub.pull`)."""
        from canon.hub import pull

        return pull(self, repo_id, **options)

    def dataset(self, entry: Entry | str) -> Dataset:
        """The entry's dataset, loaded by name (once per zoo object)."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        if e.dataset is None:
            raise InvalidEntryError(
                f"entry `{e.name}` has no dataset; add it with a dataset to evaluate it"
            )
        cache: dict[str, Dataset] = self.__dict__.setdefault("_datasets", {})
        if e.dataset not in cache:
            cache[e.dataset] = load_dataset(e.dataset)
        return cache[e.dataset]

    def _pair_options(self, a: Entry, b: Entry, kind: str, points: int) -> dict[str, Any]:
        if a.family != b.family:
            raise ConfigError(
                f"`{a.name}` and `{b.name}` have different architectures or configs; "
                "only networks of one family can be compared"
            )
        if kind == "distances":
            return {"kind": kind}
        if a.dataset != b.dataset:
            raise ConfigError(
                f"`{a.name}` ({a.dataset}) and `{b.name}` ({b.dataset}) were not trained on "
                "the same dataset"
            )
        return {"kind": kind, "points": points, "dataset": a.dataset, "seed": 0}

    def _pair(
        self,
        a: Entry,
        b: Entry,
        kind: str,
        points: int,
        device: torch.device,
        compute: bool = True,
    ) -> dict[str, Any]:
        """The cached or computed result for the sorted pair (a, b)."""
        first, second = sorted((a, b), key=lambda e: e.id)
        options = self._pair_options(first, second, kind, points)
        key = options_hash(options)
        cached = self.cached_pair(first.id, second.id, kind, key)
        if cached is not None:
            return cached
        if not compute:
            raise NotCachedError(f"`{kind}` of `{a.name}` and `{b.name}` is not cached")
        result = self._compute(first, second, kind, points, device)
        self.store_pair(first.id, second.id, kind, key, result)
        self.pair_computations += 1
        return result

    def _compute(
        self, a: Entry, b: Entry, kind: str, points: int, device: torch.device
    ) -> dict[str, Any]:
        spec = self.spec(a)
        state_a, state_b = self.state(a, device), self.state(b, device)
        if kind == "distances":
            return distances(state_a, state_b, spec).to_dict()
        curve = path_curve(
            state_a,
            state_b,
            self.model(a),
            self.dataset(a),
            cast(PathKind, kind),
            points,
            device,
            spec=spec,
        )
        return curve.to_dict()

    def compare(
        self,
        a: Entry | str,
        b: Entry | str,
        *,
        paths: Sequence[str] = ("linear", "linear_aligned", "geodesic"),
        points: int = 25,
        device: str | torch.device = "auto",
        progress: Progress | None = None,
        compute: bool = True,
    ) -> Comparison:
        """Distances between a and b and their error curves along ``paths`` (cached).

        With ``compute=False`` nothing is computed: a part not in the cache
        raises :class:`~canon.errors.NotCachedError` (invalid requests still
        raise their own errors first).
        """
        check_points(points)  # before anything is computed or cached
        ea = a if isinstance(a, Entry) else self.get(a)
        eb = b if isinstance(b, Entry) else self.get(b)
        for kind in paths:
            if kind not in PATH_KINDS or kind.startswith("bend"):
                raise ConfigError(
                    f"`{kind}` cannot be compared directly; choose from linear, linear_aligned, "
                    "geodesic, random_flip, random_flip_aligned"
                )
        dev = resolve_device(device)
        flipped = ea.id > eb.id  # results are stored for the pair in id order
        dists = Distances.from_dict(self._pair(ea, eb, "distances", points, dev, compute))
        curves: dict[str, PathCurve] = {}
        for done, kind in enumerate(paths, start=1):
            curve = PathCurve.from_dict(self._pair(ea, eb, kind, points, dev, compute))
            curves[kind] = _reversed(curve) if flipped else curve
            if progress is not None:
                progress(done, len(paths))
        return Comparison(ea.name, eb.name, dists, curves)

    def barrier_table(
        self,
        entries: Sequence[Entry | str] | None = None,
        *,
        path: str = "geodesic",
        metric: str = "barrier",
        points: int = 25,
        device: str | torch.device = "auto",
        progress: Progress | None = None,
        compute: bool = True,
    ) -> Table:
        """The pairwise ``metric`` matrix of ``entries`` (default: every entry).

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
        chosen = self._resolve(entries)
        kind = path if metric in CURVE_METRICS else "distances"
        if kind != "distances" and (kind not in PATH_KINDS or kind.startswith("bend")):
            raise ConfigError(f"`{path}` is not a path kind a table can use")
        dev = resolve_device(device)
        n = len(chosen)
        matrix = np.zeros((n, n))
        before = self.pair_computations
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        found = self._bulk(chosen, kind, points) if pairs else {}
        for done, (i, j) in enumerate(pairs, start=1):
            first, second = sorted((chosen[i].id, chosen[j].id))
            result = found.get((first, second))
            if result is None and not compute:
                self._pair_options(chosen[i], chosen[j], kind, points)  # invalid pairs raise
                matrix[i, j] = matrix[j, i] = np.nan
                continue
            if result is None:
                result = self._pair(chosen[i], chosen[j], kind, points, dev)
            value = result[metric]
            if value is None:
                raise ConfigError(f"metric `{metric}` does not apply to these networks")
            matrix[i, j] = matrix[j, i] = float(value)
            if progress is not None:
                progress(done, len(pairs))
        return Table(
            names=[e.name for e in chosen],
            matrix=matrix,
            metric=metric,
            path=path if kind != "distances" else None,
            computed=self.pair_computations - before,
            options={"points": points} if kind != "distances" else {},
        )

    def _resolve(self, entries: Sequence[Entry | str] | None) -> list[Entry]:
        if entries is None:
            return self.entries()
        chosen = [e if isinstance(e, Entry) else self.get(e) for e in entries]
        if len({e.id for e in chosen}) != len(chosen):
            raise ConfigError("an entry is listed twice in the table selection")
        return chosen

    def _bulk(self, chosen: list[Entry], kind: str, points: int) -> dict[tuple[str, str], Any]:
        """Cached results for all pairs, when every pair shares one set of options."""
        families = {e.family for e in chosen}
        datasets = {e.dataset for e in chosen}
        if len(families) != 1 or (kind != "distances" and len(datasets) != 1):
            return {}  # _pair reports the mismatch for the first offending pair
        options = self._pair_options(chosen[0], chosen[-1], kind, points)
        return self.cached_pairs([e.id for e in chosen], kind, options_hash(options))


def _errors(
    state: Mapping[str, torch.Tensor],
    architecture: str,
    config: Mapping[str, Any],
    dataset: str,
    device: str | torch.device,
) -> dict[str, float]:
    """Train and test error of ``state`` on ``dataset``; empty when it does not load here."""
    try:
        data = load_dataset(dataset)
    except DatasetError:
        return {}
    model = build_model(architecture, config)
    dev = resolve_device(device)
    try:
        return {
            f"{split}_error": float(Evaluator(model, x, y, dev).error(dict(state)).errors[0])
            for split, x, y in (
                ("train", data.x_train, data.y_train),
                ("test", data.x_test, data.y_test),
            )
        }
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"`{architecture}` does not run on dataset `{dataset}`: {first}; "
            "check the architecture's config against the dataset"
        ) from None


def _reversed(curve: PathCurve) -> PathCurve:
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
