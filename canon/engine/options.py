"""The options a path curve's numbers depend on, as one record (no torch needed).

The zoo hashes this record for its pair-cache keys, both where it computes
(through :func:`~canon.engine.path_curve`) and where it only reads the cache
(the fast ``canon compare`` / ``canon table``, which must not import torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["MATCH_BATCH", "BNMode", "PathOptions"]

BNMode = Literal["recompute", "interpolate"]

MATCH_BATCH = 512
"""Training inputs activation matching runs the two networks on, by default."""


@dataclass(frozen=True)
class PathOptions:
    """Every option a path curve's numbers depend on: one record that is passed to
    :func:`~canon.engine.path_curve` and hashed for a cache key, so no option can be left
    out of either.

    ``points`` along the path; BatchNorm statistics at interior points
    ``bn`` (``recompute`` on ``bn_batches`` training batches of
    ``bn_batch_size``, or ``interpolate``); ``orders`` seeded random flip orders
    (binary networks) from ``seed``; whether to report the ``loss`` and the
    ``test`` error too; the matching ``method`` that aligns b to a
    (:data:`~canon.engine.kinds.MATCHING_METHODS`; ``auto`` is the
    architecture's default) and, for methods that run the networks on data,
    the ``match_batch`` of training inputs (drawn with ``seed``).
    """

    points: int = 25
    bn: BNMode = "recompute"
    bn_batches: int = 20
    bn_batch_size: int = 256
    orders: int = 5
    seed: int = 0
    loss: bool = False
    test: bool = False
    method: str = "auto"
    match_batch: int = MATCH_BATCH

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (every field, defaults included)."""
        return asdict(self)
