"""Cached results of pairs of entries, keyed so that a hit is always the right result.

A pair's result is stored under the two entry ids (sorted), the path kind, a
hash of every option it depends on, and the cache version. Rows live in the
index (``pair_cache``) and cascade away with either entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from canon.zoo._answers import cached_metrics
from canon.zoo._index import Index
from canon.zoo._models import EntryModel, PairCacheModel
from canon.zoo._objects import check_sha
from canon.zoo._records import CACHE_VERSION, PairResult, canonical_json

__all__ = ["PairCache"]

_CHUNK = 400  # ids per query: SQLite's bound-parameter limit


class PairCache:
    """The pair results cached in ``index``."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def get(self, a: str, b: str, kind: str, options_hash: str) -> dict[str, Any] | None:
        """The cached result for entries ``a`` and ``b`` (ids, either order), or None."""
        a, b = sorted((check_sha(a), check_sha(b)))
        with self.index.session() as s:
            row = s.get(PairCacheModel, (a, b, kind, options_hash, CACHE_VERSION))
            return None if row is None else dict(json.loads(row.result))

    def metric_many(
        self, ids: Sequence[str], kind: str, options_hash: str, metric: str
    ) -> dict[tuple[str, str], object]:
        """The ``metric`` of every cached result among the entries ``ids``, keyed by sorted
        id pair (:func:`~canon.zoo._answers.cached_metrics`: no result parsed whole)."""
        wanted = [check_sha(i) for i in ids]
        with self.index.session() as s:
            connection = s.connection()
            return cached_metrics(
                lambda sql, params: connection.exec_driver_sql(sql, params),
                wanted,
                kind,
                options_hash,
                metric,
            )

    def put(self, results: Iterable[PairResult], *, replace: bool = True) -> int:
        """Cache many results in one transaction (each under its sorted pair); the count
        (none in a read-only zoo, which computes what it has not cached every time).
        ``replace=False`` keeps a result already cached under the same key (results from
        elsewhere, such as a pull, never overwrite the zoo's own)."""
        if self.index.read_only:
            return 0
        rows = []
        for r in results:
            a, b = sorted((check_sha(r.a), check_sha(r.b)))
            rows.append(
                PairCacheModel(
                    entry_a=a,
                    entry_b=b,
                    path_kind=r.kind,
                    options_hash=r.options_hash,
                    cache_version=CACHE_VERSION,
                    result=canonical_json(dict(r.result)),
                )
            )
        with self.index.session(write=True) as s:
            # An entry removed by another process while its pairs were computed takes its
            # pairs with it: they are not cached (the answers were still given).
            ids = {r.entry_a for r in rows} | {r.entry_b for r in rows}
            listed = sorted(ids)
            present = {
                found
                for i in range(0, len(listed), 500)  # SQLite bounds a statement's parameters
                for found in s.scalars(
                    select(EntryModel.id).where(EntryModel.id.in_(listed[i : i + 500]))
                )
            }
            rows = [r for r in rows if r.entry_a in present and r.entry_b in present]
            if not replace:
                rows = [r for r in rows if s.get(PairCacheModel, _key(r)) is None]
            for row in rows:
                s.merge(row)
        return len(rows)

    def results(self, ids: Iterable[str] | None = None) -> list[PairResult]:
        """Every cached result of this code's cache version (among ``ids`` if given)."""
        wanted = None if ids is None else {check_sha(i) for i in ids}
        with self.index.session() as s:
            rows = s.execute(
                select(
                    PairCacheModel.entry_a,
                    PairCacheModel.entry_b,
                    PairCacheModel.path_kind,
                    PairCacheModel.options_hash,
                    PairCacheModel.result,
                )
                .where(PairCacheModel.cache_version == CACHE_VERSION)
                .order_by(
                    PairCacheModel.entry_a,
                    PairCacheModel.entry_b,
                    PairCacheModel.path_kind,
                    PairCacheModel.options_hash,
                )
            ).all()
        return [
            PairResult(a, b, kind, key, json.loads(text))
            for a, b, kind, key, text in rows
            if wanted is None or (a in wanted and b in wanted)
        ]


def _key(row: PairCacheModel) -> tuple[str, str, str, str, int]:
    """A cached row's primary key, as ``Session.get`` takes it."""
    return (row.entry_a, row.entry_b, row.path_kind, row.options_hash, row.cache_version)
