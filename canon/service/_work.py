"""What the service computes, through the zoo API only: cache probes, job requests, job handlers.

A request for a comparison or a table is first answered from the pair cache
(``compute=False``); what is not cached becomes a job whose parameters
name entries by id, so identical requests share one job. Handlers run jobs
in a worker thread on the worker's own :class:`~canon.zoo.Zoo`.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from canon._limits import clip
from canon.engine import (
    DEFAULT_PATHS,
    MATCHING_METHODS,
    MIDPOINT_LR,
    MIDPOINT_LR_HALVINGS,
    MIDPOINT_PATHS,
    list_path_kinds,
)
from canon.errors import ConfigError, NotCachedError
from canon.zoo import (
    CURVE_METRICS,
    DISTANCE_METRICS,
    Comparison,
    Entry,
    Table,
    Zoo,
    check_midpoint,
    check_name,
)

__all__ = [
    "COMPARABLE_PATHS",
    "DEFAULT_PATHS",
    "JOB_KINDS",
    "MATCHING_METHODS",
    "METRICS",
    "MIDPOINT_PATHS",
    "cached_comparison",
    "cached_table",
    "check_upload",
    "compare_params",
    "comparison_figure",
    "midpoint_params",
    "run_job",
    "select_entries",
    "table_params",
]

Progress = Callable[[int, int], None]
COMPARABLE_PATHS: tuple[str, ...] = tuple(list_path_kinds(comparable=True))
METRICS: tuple[str, ...] = CURVE_METRICS + DISTANCE_METRICS
JOB_KINDS: tuple[str, ...] = ("compare", "table", "midpoint")
_FIGURE_LOCK = threading.Lock()  # matplotlib's font cache is shared by all figures


def _ids(zoo: Zoo, names: Sequence[str]) -> list[Entry]:
    return [zoo.get(check_name(n)) for n in names]


def compare_params(
    zoo: Zoo,
    a: str,
    b: str,
    paths: Sequence[str],
    points: int,
    method: str = "auto",
    align: str = "pair",
) -> dict[str, Any]:
    """The job parameters of a comparison (entries by id); unknown entries raise."""
    ea, eb = _ids(zoo, [a, b])
    paths = list(paths or DEFAULT_PATHS)
    params = {"a": ea.id, "b": eb.id, "paths": paths, "points": points, "method": method}
    return params | _align(align)


def _align(align: str) -> dict[str, str]:
    """The job parameter of an alignment through the family reference (none for pairs,
    so that jobs queued before there was a choice read the same)."""
    return {} if align == "pair" else {"align": align}


def select_entries(
    zoo: Zoo,
    names: Sequence[str] | None,
    tags: Mapping[str, str] | None,
    kind: str = "solution",
) -> list[Entry]:
    """Entries named in ``names`` (without names, the entries of ``kind``), keeping those
    with every tag: the rule of ``canon table`` (:meth:`Zoo.choose`)."""
    for name in names or ():
        check_name(name)
    return zoo.choose(names or (), tags, kind=kind, least=2, what="a table")


def table_params(
    zoo: Zoo,
    names: Sequence[str] | None,
    tags: Mapping[str, str] | None,
    path: str,
    metric: str,
    points: int,
    method: str = "auto",
    kind: str = "solution",
    align: str = "pair",
) -> dict[str, Any]:
    """The job parameters of a table over a selection (entries by id, in order)."""
    chosen = select_entries(zoo, names, tags, kind)
    entries = [e.id for e in chosen]
    params = {"entries": entries, "path": path, "metric": metric, "points": points}
    return params | {"method": method} | _align(align)


def midpoint_params(
    zoo: Zoo,
    a: str,
    b: str,
    name: str,
    path: str,
    epochs: int,
    lr: float = MIDPOINT_LR,
    lr_halvings: int = MIDPOINT_LR_HALVINGS,
) -> dict[str, Any]:
    """The job parameters of a midpoint, checked before anything is queued."""
    ea, eb = check_midpoint(zoo, a, b, name, path)
    return {
        "a": ea.id,
        "b": eb.id,
        "name": name,
        "path": path,
        "epochs": epochs,
        "lr": lr,
        "lr_halvings": lr_halvings,
    }


def check_upload(zoo: Zoo, path: Path, architecture: str | None, dataset: str | None) -> None:
    """Refuse what a client must not make the server load: stricter than ``canon add``.

    Only registered architectures are built (a ``module:function`` one would
    import and call server code chosen by the client), whether named in the
    request or in the file's metadata; a dataset with a path (``npz:PATH``)
    must be one the zoo already uses (it would read a server file). The zoo's
    add then checks the file's header against the architecture before it
    allocates anything, so a config that lies about sizes costs no memory.
    """
    from canon.architectures import list_architectures
    from canon.checkpoint import read_header
    from canon.zoo import META_ARCH

    name = architecture or read_header(path).metadata.get(META_ARCH)
    if name is not None and name not in list_architectures():
        raise ConfigError(
            f"architecture `{clip(name, 100)}` is not registered on this server; uploads can "
            f"use {', '.join(list_architectures())} (add others with `canon add` on the server)"
        )
    if dataset is not None and ":" in dataset and dataset not in {e.dataset for e in zoo.entries()}:
        raise ConfigError(
            f"dataset `{clip(dataset, 100)}` names a file; uploads can name registered datasets "
            "or those the zoo already uses"
        )


def _compare(zoo: Zoo, params: Mapping[str, Any], device: str, **how: Any) -> Comparison:
    """The comparison that ``params`` (:func:`compare_params`) ask for; ``how``: the
    ``progress`` or ``compute`` of :meth:`Zoo.compare`."""
    return zoo.compare(
        params["a"],
        params["b"],
        paths=params["paths"],
        points=params["points"],
        method=params.get("method", "auto"),
        align=params.get("align", "pair"),
        device=device,
        **how,
    )


def _table(zoo: Zoo, params: Mapping[str, Any], device: str, **how: Any) -> Table:
    """The table that ``params`` (:func:`table_params`) ask for; ``how``: the ``progress``
    or ``compute`` of :meth:`Zoo.barrier_table`."""
    return zoo.barrier_table(
        params["entries"],
        path=params["path"],
        metric=params["metric"],
        points=params["points"],
        method=params.get("method", "auto"),
        align=params.get("align", "pair"),
        device=device,
        **how,
    )


def cached_comparison(zoo: Zoo, params: Mapping[str, Any]) -> Comparison | None:
    """The comparison if every part of it is cached, else None (invalid requests raise)."""
    try:
        return _compare(zoo, params, "cpu", compute=False)
    except NotCachedError:
        return None


def cached_table(zoo: Zoo, params: Mapping[str, Any]) -> Table | None:
    """The table if every pair is cached, else None (invalid requests raise)."""
    table = _table(zoo, params, "cpu", compute=False)
    return None if bool(np.isnan(table.matrix).any()) else table


def comparison_figure(comparison: Comparison, fmt: str = "svg") -> bytes:
    """The error-along-path figure of a comparison (``svg`` or ``png``) as bytes."""
    from canon.plots import plot_curves

    with tempfile.TemporaryDirectory(prefix="canon-figure-") as tmp:
        out = Path(tmp) / f"curves.{fmt}"
        with _FIGURE_LOCK:
            plot_curves(comparison.curves, out, title=f"{comparison.a} vs {comparison.b}")
        return out.read_bytes()


def _run_compare(
    zoo: Zoo, params: Mapping[str, Any], device: str, progress: Progress
) -> dict[str, Any]:
    return _compare(zoo, params, device, progress=progress).to_dict()


def _run_table(
    zoo: Zoo, params: Mapping[str, Any], device: str, progress: Progress
) -> dict[str, Any]:
    return _table(zoo, params, device, progress=progress).to_dict()


def _run_midpoint(
    zoo: Zoo, params: Mapping[str, Any], device: str, progress: Progress
) -> dict[str, Any]:
    entry, result = zoo.midpoint(
        params["a"],
        params["b"],
        name=params["name"],
        path=params["path"],
        epochs=params["epochs"],
        lr=params.get("lr", MIDPOINT_LR),
        lr_halvings=params.get("lr_halvings", MIDPOINT_LR_HALVINGS),
        device=device,
        progress=progress,
    )
    return {
        "entry": entry.to_dict(),
        "bend_barrier": result.barrier,
        "epochs": result.epochs,
        "lr": result.lr,
        "restarts": result.restarts,
        "curve": result.curve.to_dict(),
    }


_HANDLERS: dict[str, Callable[[Zoo, Mapping[str, Any], str, Progress], dict[str, Any]]] = {
    "compare": _run_compare,
    "table": _run_table,
    "midpoint": _run_midpoint,
}


def run_job(
    zoo: Zoo, kind: str, params: Mapping[str, Any], device: str | torch.device, progress: Progress
) -> dict[str, Any]:
    """Compute a job of ``kind`` on ``zoo`` and return its JSON-ready result."""
    if kind not in _HANDLERS:
        raise ConfigError(f"unknown job kind `{kind}`; expected one of {', '.join(JOB_KINDS)}")
    return _HANDLERS[kind](zoo, params, str(device), progress)
