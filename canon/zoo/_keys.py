"""Cache keys of pair results, and the shapes of the records they hold, without torch.

A pair's result is cached under a hash of every option it depends on. The
computing side (:mod:`canon.zoo._analysis`) hashes the options record it
passes to the engine (:class:`~canon.engine.PathOptions`); the side that only
reads the cache (:mod:`canon.zoo._answers`, fast ``canon compare`` / ``canon
table``) hashes the same record (it needs no torch) through
:func:`path_options`. Both go through :func:`pair_hash`, so the two keys are
one function of the same values. What the reading side needs of torch modules
is mirrored here, and ``tests/test_torch_free.py`` keeps each mirror equal to
what it mirrors: the fields of :class:`~canon.core.geometry.Distances` and
:class:`~canon.engine.PathCurve`, and the most points a path may have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from canon.engine.kinds import get_matching
from canon.engine.options import PathOptions
from canon.errors import ConfigError, InvalidEntryError
from canon.zoo._records import Entry, canonical_json

__all__ = [
    "CURVE_FIELDS",
    "CURVE_METRICS",
    "DISTANCE_METRICS",
    "MAX_POINTS",
    "check_pair",
    "curve_hash",
    "dataset_of",
    "options_hash",
    "pair_hash",
    "path_options",
    "reference_fields",
]

#: The metrics of a path curve a table can show.
CURVE_METRICS = ("barrier", "excess")
#: The fields of :class:`~canon.core.geometry.Distances`, in order (the first three are
#: always there; the others only where they apply).
DISTANCE_METRICS = (
    "euclidean",
    "euclidean_aligned",
    "geodesic",
    "euclidean_free",
    "hamming",
    "hamming_fraction",
    "hamming_aligned",
    "hamming_aligned_fraction",
)
#: The fields of :class:`~canon.engine.PathCurve`, in order (the first six are required).
CURVE_FIELDS = (
    "kind",
    "x",
    "train_error",
    "barrier",
    "excess",
    "distances",
    "options",
    "train_loss",
    "test_error",
    "train_error_std",
    "barrier_std",
)
#: The most points a path may have (:data:`canon.core.paths.MAX_POINTS`).
MAX_POINTS = 4097


def options_hash(options: Mapping[str, Any]) -> str:
    """A short stable hash of the options a pair result depends on."""
    return hashlib.sha256(canonical_json(dict(options)).encode()).hexdigest()[:32]


def path_options(points: int, method: str) -> dict[str, Any]:
    """The path options of a request for ``points`` and ``method`` (every other field at
    its default), as hashed for a key."""
    return PathOptions(points=points, method=method).to_dict()


def curve_hash(kind: str, dataset: str | None, options: Mapping[str, Any]) -> str:
    """The hash a curve along ``kind`` on ``dataset`` with ``options`` (every field of the
    path options, defaults included) is cached under."""
    return options_hash({"kind": kind, "dataset": dataset, **options})


def dataset_of(entry: Entry) -> str:
    """The name of the entry's dataset; :class:`InvalidEntryError` saying how to name one
    if it has none."""
    if entry.dataset is None:
        raise InvalidEntryError(
            f"entry `{entry.name}` has no dataset to evaluate it on; name the one it was "
            f"trained on: `canon edit {entry.name} --dataset NAME` (Python: "
            f"zoo.edit({entry.name!r}, dataset=NAME))"
        )
    return entry.dataset


def check_pair(a: Entry, b: Entry, kind: str, method: str) -> None:
    """Raise :class:`ConfigError` unless ``kind`` of a and b (aligned by the resolved
    matching ``method``) can be computed: one family, and one dataset where data is used
    (:class:`InvalidEntryError` where an entry has none)."""
    if a.family != b.family:
        raise ConfigError(
            f"`{a.name}` and `{b.name}` have different architectures or configs; "
            "only networks of one family can be compared"
        )
    if (kind != "distances" or get_matching(method).needs_data) and dataset_of(a) != dataset_of(b):
        raise ConfigError(
            f"`{a.name}` ({a.dataset}) and `{b.name}` ({b.dataset}) were not trained on "
            "the same dataset"
        )


def reference_fields(reference: str | None) -> dict[str, str]:
    """What a result aligned through a family ``reference`` (an entry id) records and its
    key hashes beyond the path options; nothing for a pair matched directly."""
    return {} if reference is None else {"align": "reference", "reference": reference}


def pair_hash(
    a: Entry, b: Entry, kind: str, options: Mapping[str, Any], reference: str | None = None
) -> str:
    """The cache key of ``kind`` for entries a and b under the path ``options`` (every field
    of :class:`~canon.engine.PathOptions`, its ``method`` resolved); pairs that cannot be
    compared raise. With a ``reference`` (an entry id), b was aligned to a through each
    one's alignment to that family reference (by ``method``), not by matching the pair.

    Distances depend on the alignment only, and on the data when it is matched on;
    a curve on every option, its kind and the dataset.
    """
    method = str(options["method"])
    check_pair(a, b, kind, method)
    through = reference_fields(reference)
    if kind == "distances":
        fields: dict[str, Any] = {"kind": kind, "method": method, **through}
        if get_matching(method).needs_data:
            fields |= {"dataset": a.dataset, "match_batch": options["match_batch"], "seed": 0}
        return options_hash(fields)
    return curve_hash(kind, a.dataset, {**options, **through})
