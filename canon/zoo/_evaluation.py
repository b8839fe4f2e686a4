"""Work on zoo entries that needs their weights, model and dataset together: local energy,
planes, bend curves through stored midpoints, and training a new entry.

Each function unpacks an entry (state, model, dataset, spec) in one place and calls
the engine; :class:`~canon.zoo.Zoo` offers them as methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from canon.architectures import build_model
from canon.core import align
from canon.core.paths import check_points
from canon.data import load_dataset
from canon.device import resolve_device
from canon.engine import PathCurve, local_energy, path_curve, resolve_method
from canon.engine import plane as plane_section
from canon.engine import train as train_network
from canon.engine.kinds import bend_kind
from canon.errors import ConfigError, NameClashError
from canon.zoo._analysis import cached_pair, pair_key, reversed_curve
from canon.zoo._keys import options_hash
from canon.zoo._records import Entry, check_name

if TYPE_CHECKING:
    import torch

    from canon.engine import LocalEnergy, PlaneResult, TrainProgress, TrainResult
    from canon.zoo._zoo import Zoo

__all__ = ["bend_curve", "energy", "plane", "train_entry"]


def energy(
    zoo: Zoo,
    entry: Entry | str,
    *,
    sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    draws: int = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> LocalEnergy:
    """The local energy (flatness) of an entry on its dataset (see `canon.engine.local_energy`)."""
    e = entry if isinstance(entry, Entry) else zoo.get(entry)
    dev = resolve_device(device)
    return local_energy(
        zoo.state(e, dev), zoo.model(e), zoo.dataset(e), sigmas, draws, seed, dev, spec=zoo.spec(e)
    )


def plane(
    zoo: Zoo,
    a: Entry | str,
    b: Entry | str,
    c: Entry | str | None = None,
    *,
    grid: int = 21,
    margin: float = 0.2,
    normalized: bool = False,
    device: str | torch.device = "auto",
) -> PlaneResult:
    """Train error on the plane through a, b and c (:func:`canon.engine.plane`).

    Without ``c`` the third network is b aligned to a (not normalized), the
    paper's choice: the plane then holds the unaligned and the aligned copy of b.
    """
    ea, eb = (e if isinstance(e, Entry) else zoo.get(e) for e in (a, b))
    dev = resolve_device(device)
    spec = zoo.spec(ea)
    sa, sb = zoo.state(ea, dev), zoo.state(eb, dev)
    sc = zoo.state(c, dev) if c is not None else align(sb, sa, spec).state
    return plane_section(
        sa, sb, sc, zoo.model(ea), zoo.dataset(ea), grid, margin, normalized, dev, spec=spec
    )


def bend_curve(
    zoo: Zoo,
    a: Entry | str,
    b: Entry | str,
    midpoint: Entry | str,
    *,
    points: int = 25,
    device: str | torch.device = "auto",
) -> PathCurve:
    """The error along the single-bend path from a to b through a stored midpoint entry,
    of the bend kind of the path it was optimized from (its ``path`` tag); cached like a
    comparison's curves, under a key that names the midpoint."""
    check_points(points)
    ea, eb, m = (e if isinstance(e, Entry) else zoo.get(e) for e in (a, b, midpoint))
    kind = bend_kind(m.tags.get("path", "geodesic"))
    first, second = sorted((ea, eb), key=lambda e: e.id)
    spec = zoo.spec(first)
    key = pair_key(first, second, kind, points, resolve_method("auto", spec))
    assert key.options is not None
    dev = resolve_device(device)

    def compute() -> dict[str, Any]:
        return path_curve(
            zoo.state(first, dev),
            zoo.state(second, dev),
            zoo.model(first),
            zoo.dataset(first),
            kind,
            device=dev,
            midpoint=zoo.state(m, dev),
            spec=spec,
            options=key.options,
        ).to_dict()

    with_midpoint = options_hash({"curve": key.hash, "midpoint": m.id})
    curve = PathCurve.from_dict(cached_pair(zoo, first, second, kind, with_midpoint, compute))
    return curve if first is ea else reversed_curve(curve)


def train_entry(
    zoo: Zoo,
    *,
    name: str,
    architecture: str,
    config: Mapping[str, Any] | None = None,
    dataset: str,
    algo: str = "sgd",
    seed: int = 0,
    epochs: int = 300,
    target_error: float | None = 0.0,
    tags: Mapping[str, object] | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[TrainProgress], None] | None = None,
) -> tuple[Entry, TrainResult]:
    """Train a network (:func:`canon.engine.train`) and add it as ``name``, tagged with its
    ``algo`` and ``seed`` and with its train and test error as metrics.

    ``target_error`` stops sgd and adv at the first epoch whose train error is at most
    it; ``None`` runs all ``epochs``, the paper's protocol
    (:data:`~canon.engine.kinds.PAPER_PROTOCOL`). The name is checked before training
    starts.
    """
    check_name(name)
    if name in zoo:
        raise NameClashError(f"an entry named `{name}` already exists in {zoo!r}", name=name)
    if not isinstance(dataset, str):
        raise ConfigError("`dataset` must be a dataset name")
    model = build_model(architecture, config or {})
    result = train_network(
        model,
        load_dataset(dataset),
        algo,
        seed,
        epochs,
        target_error=target_error,
        device=device,
        progress=progress,
    )
    metrics = {"train_error": result.train_error}
    if result.test_error is not None:
        metrics["test_error"] = result.test_error
    entry = zoo.add(
        {k: v.cpu() for k, v in result.state.items()},
        name=name,
        architecture=architecture,
        config=config,
        dataset=dataset,
        tags={**(tags or {}), "algo": algo, "seed": str(seed)},
        metrics=metrics,
    )
    return entry, result
