"""Optimized midpoints between two entries, added to the zoo as entries of kind ``midpoint``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from canon.engine import (
    MIDPOINT_LR,
    MIDPOINT_LR_HALVINGS,
    MIDPOINT_PATHS,
    MidpointResult,
    optimize_midpoint,
)
from canon.errors import ConfigError, NameClashError
from canon.zoo._keys import dataset_of
from canon.zoo._records import Entry, check_name

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo

__all__ = ["MIDPOINT_PATHS", "add_midpoint", "check_midpoint"]


def check_midpoint(
    zoo: Zoo, a: Entry | str, b: Entry | str, name: str, path: str
) -> tuple[Entry, Entry]:
    """The two endpoint entries, once a midpoint ``name`` between them along ``path`` is valid.

    The name must be valid and free, the endpoints of one family and dataset
    (the midpoint trains on it), and ``path`` one of :data:`MIDPOINT_PATHS`.
    """
    check_name(name)
    if name in zoo:
        raise NameClashError(f"an entry named `{name}` already exists in {zoo!r}", name=name)
    ea = a if isinstance(a, Entry) else zoo.get(a)
    eb = b if isinstance(b, Entry) else zoo.get(b)
    if ea.family != eb.family or ea.dataset != eb.dataset:
        raise ConfigError(
            f"`{ea.name}` and `{eb.name}` must share architecture, config and dataset "
            "for a midpoint"
        )
    dataset_of(ea)  # a midpoint trains on it: one that has none is told how to name it
    if path not in MIDPOINT_PATHS:
        raise ConfigError(f"`path` must be one of {', '.join(MIDPOINT_PATHS)}, got `{path}`")
    return ea, eb


def add_midpoint(
    zoo: Zoo,
    a: Entry | str,
    b: Entry | str,
    *,
    name: str,
    path: str = "geodesic",
    epochs: int = 300,
    lr: float = MIDPOINT_LR,
    lr_halvings: int = MIDPOINT_LR_HALVINGS,
    device: str | torch.device = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Entry, MidpointResult]:
    """Optimize a midpoint m between a and b (:func:`~canon.engine.optimize_midpoint`) and add it.

    The entry has kind ``midpoint``, parents (a, b), tag ``path``, and metrics
    ``train_error``, ``bend_barrier`` (the barrier of the bend path a -> m -> b), and
    the learning rate ``lr`` it trained at after ``restarts`` divergences.
    ``lr`` and ``lr_halvings`` are :func:`~canon.engine.optimize_midpoint`'s.
    ``progress(epoch, epochs)`` is called after each training epoch.
    """
    ea, eb = check_midpoint(zoo, a, b, name, path)
    result = optimize_midpoint(
        zoo.state(ea),
        zoo.state(eb),
        zoo.model(ea),
        zoo.dataset(ea),
        path,
        epochs=epochs,
        lr=lr,
        lr_halvings=lr_halvings,
        device=device,
        progress=None if progress is None else (lambda p: progress(p.epoch, p.epochs)),
    )
    entry = zoo.add(
        {k: v.cpu() for k, v in result.state.items()},
        name=name,
        architecture=ea.architecture,
        config=ea.config,
        dataset=ea.dataset,
        kind="midpoint",
        parents=(ea, eb),
        tags={"path": path},
        metrics={
            "train_error": result.train_error,
            "bend_barrier": result.barrier,
            "lr": result.lr,
            "restarts": result.restarts,
        },
        device=device,
    )
    return entry, result
