"""The reproduction run: train solutions, fill a zoo, measure everything of the paper's
sections 4 and 5, and keep the results as records for the claims, figures and report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canon.errors import ConfigError
from canon.repro._measure import (
    BEND_KINDS,
    class_of,
    energies_by_class,
    entry_pairs_by_class,
    normalized_distance,
    path_curves,
    plane_sections,
)
from canon.repro._plan import ALGOS, BinaryPlan, NetPlan, Plan

if TYPE_CHECKING:
    from canon.data import Dataset
    from canon.engine import LocalEnergy, PathCurve, PlaneResult
    from canon.zoo import Entry, Table, Zoo

__all__ = ["BinarySize", "Measurements", "NetResults", "Stage", "Tracker", "measure"]

#: ``progress(stage, done, total)``: steps done out of the run's total, and what runs now.
Stage = Callable[[str, int, int], None]


@dataclass
class Tracker:
    """Counts the run's steps and reports them to a ``progress(stage, done, total)``."""

    total: int
    report: Stage | None = None
    done: int = 0

    def step(self, stage: str, count: int = 1) -> None:
        """``count`` more steps of ``stage`` are done."""
        self.done += count
        if self.report is not None:
            self.report(stage, self.done, self.total)

    def within(self, stage: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for a sub-task of ``stage`` (one step each)."""
        start = self.done

        def update(done: int, total: int) -> None:
            self.done = start + done
            if self.report is not None:
                self.report(stage, self.done, self.total)

        return update


@dataclass(frozen=True)
class NetResults:
    """Everything measured for one continuous network on digits (sections 4.1-4.2)."""

    plan: NetPlan
    solutions: list[Entry]
    classes: dict[str, str]
    energies: dict[str, list[LocalEnergy]]
    test_errors: dict[str, list[float]]
    curves: dict[str, list[PathCurve]]
    bends: dict[str, list[PathCurve]]
    distances: list[Table]
    plane: tuple[PlaneResult, PlaneResult]
    plane_labels: tuple[str, str, str]
    split: tuple[int, int]  # train and test samples
    #: per pair class, the Euclidean distance of the normalized, aligned solutions
    closeness: dict[str, list[float]] = field(default_factory=dict)
    #: the same distance between pairs of untrained networks (claim 4's baseline)
    untrained: list[float] = field(default_factory=list)
    #: per pair class, (distance to the flatter endpoint, to the other) of each optimized
    #: geodesic midpoint (Fig. 5 middle and right)
    midpoint_distances: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: per starting path (``geodesic``, ``linear_aligned``, ``linear``), how many times each
    #: midpoint's training diverged and restarted at half the learning rate
    midpoint_restarts: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class BinarySize:
    """Everything measured for the committee machine at one size N = ratio * D (section 5.1)."""

    ratio: int
    N: int
    solutions: list[Entry]
    energies: dict[str, list[LocalEnergy]]
    test_errors: dict[str, list[float]]
    curves: dict[str, list[PathCurve]]


@dataclass(frozen=True)
class Measurements:
    """The whole run's results."""

    plan: Plan
    seed: int
    nets: list[NetResults] = field(default_factory=list)
    binary: list[BinarySize] = field(default_factory=list)


def _steps(plan: Plan) -> int:
    n = plan.seeds_per_algo
    within = n * (n - 1) // 2
    pairs = sum(min(plan.pairs_per_class, within if a == b else n * n) for a, b in _class_pairs())
    bends = sum(
        min(plan.bend_pairs_per_class, within if a == b else n * n) for a, b in _class_pairs()
    )
    per_net = 2 * 3 * n + pairs + len(BEND_KINDS) * bends + 2
    b = plan.binary
    per_size = 2 * 3 * b.seeds_per_algo + 3 * b.seeds_per_algo * (b.seeds_per_algo - 1) // 2
    return len(plan.nets) * per_net + len(b.ratios) * per_size


def _class_pairs() -> list[tuple[str, str]]:
    return [(ALGOS[i], ALGOS[j]) for i in range(len(ALGOS)) for j in range(i, len(ALGOS))]


def _seed(base: int, group: int, algo: str, index: int) -> int:
    """Distinct initialization seeds across groups (networks, sizes) and algorithms."""
    return base * 100_000 + group * 1_000 + ALGOS.index(algo) * 100 + index


@dataclass(frozen=True)
class _Training:
    """The solutions of one network: ``seeds_per_algo`` per algorithm of ``net`` trained
    on ``dataset`` and tagged with ``tags``, and the noise levels ``sigmas`` of their local
    energy."""

    net: NetPlan
    dataset: str
    tags: dict[str, str]
    seeds_per_algo: int
    sigmas: tuple[float, ...]


def _solutions(
    zoo: Zoo,
    plan: Plan,
    training: _Training,
    data: Dataset,
    group: int,
    seed: int,
    tracker: Tracker,
    device: str,
) -> tuple[list[Entry], dict[str, str], dict[str, list[LocalEnergy]], dict[str, list[float]]]:
    """Train the solutions of ``training`` (seeded by :func:`_seed`) and add them to the
    zoo; return them, their classes (by algorithm), and per class their local energies and
    test errors."""
    from canon.architectures import build_model
    from canon.engine import train

    net = training.net
    config = dict(net.config)
    model = build_model(net.architecture, config)
    options: dict[str, Any] = {
        "epochs": net.epochs,
        "adv_epochs": net.adv_epochs,
        "target_error": plan.target_error,
    }
    solutions = []
    for algo in ALGOS:
        lr: dict[str, Any] = {"lr": net.adv_lr} if algo == "adv" and net.adv_lr else {}
        for index in range(training.seeds_per_algo):
            algo_seed = _seed(seed, group, algo, index)
            result = train(model, data, algo, algo_seed, device=device, **options, **lr)
            metrics = {
                "train_error": result.train_error,
                "test_error": result.test_error if result.test_error is not None else math.nan,
                "epochs": result.epochs,
            }
            if algo == "rsgd":  # the last coupling, and the replicas' spread start -> end
                metrics["coupling"] = result.history[-1]["gamma"]
                metrics["spread_start"], metrics["spread_end"] = result.options["spread"]
            entry = zoo.add(
                {k: v.cpu() for k, v in result.state.items()},
                name=f"{net.label}-{algo}-{index}",
                architecture=net.architecture,
                config=config,
                dataset=training.dataset,
                tags={**training.tags, "algo": algo, "seed": str(algo_seed)},
                metrics=metrics,
            )
            solutions.append(entry)
            tracker.step(f"{net.label}: training {algo}")
    classes = class_of(solutions)
    energies, tests = energies_by_class(
        zoo,
        solutions,
        classes,
        sigmas=training.sigmas,
        draws=plan.draws,
        seed=seed,
        device=device,
        progress=tracker.within(f"{net.label}: local energy"),
    )
    return solutions, classes, energies, tests


def _bends(
    zoo: Zoo,
    pairs: dict[str, list[tuple[Entry, Entry]]],
    plan: Plan,
    tracker: Tracker,
    device: str,
) -> tuple[dict[str, list[PathCurve]], dict[str, list[tuple[float, float]]], dict[str, list[int]]]:
    """Optimize a midpoint from each starting path for each pair (:meth:`Zoo.midpoint`: SGD
    for every epoch of the budget, the bend curve on 25 points); keep the bend curves,
    for the geodesic midpoints their normalized aligned distances to the pair's flatter
    and other endpoint, and per starting path each training's restarts after a
    divergence. The midpoints stay in the zoo as ``midpoint`` entries."""
    curves: dict[str, list[PathCurve]] = {}
    distances: dict[str, list[tuple[float, float]]] = {}
    restarts: dict[str, list[int]] = {}
    for cls, group in pairs.items():
        for a, b in group[: plan.bend_pairs_per_class]:
            for path in BEND_KINDS:
                _, result = zoo.midpoint(
                    a,
                    b,
                    name=f"mid-{a.name}-{b.name}-{path}",
                    path=path,
                    epochs=plan.midpoint_epochs,
                    device=device,
                )
                curves.setdefault(cls, []).append(result.curve)
                restarts.setdefault(path, []).append(result.restarts)
                if path == "geodesic":
                    spec, m = zoo.spec(a), result.state
                    near = normalized_distance(m, zoo.state(a, device), spec)
                    far = normalized_distance(m, zoo.state(b, device), spec)
                    distances.setdefault(cls, []).append((near, far))
                tracker.step(f"bend paths {cls}")
    return curves, distances, restarts


def _closeness(
    zoo: Zoo, pairs: dict[str, list[tuple[Entry, Entry]]], device: str
) -> dict[str, list[float]]:
    """Per pair class, the normalized aligned Euclidean distance of each pair."""
    return {
        cls: [
            normalized_distance(zoo.state(a, device), zoo.state(b, device), zoo.spec(a))
            for a, b in group
        ]
        for cls, group in pairs.items()
    }


def _untrained(net: NetPlan, count: int, seed: int) -> list[float]:
    """The normalized aligned distance between ``count`` pairs of freshly initialized nets."""
    import torch

    from canon.architectures import build_model
    from canon.core import spec_from_module

    model = build_model(net.architecture, dict(net.config))
    spec = spec_from_module(model)
    found = []
    for k in range(count):
        states = []
        for s in (2 * k, 2 * k + 1):
            torch.manual_seed(seed * 100_000 + 99_000 + s)
            states.append(build_model(net.architecture, dict(net.config)).state_dict())
        found.append(normalized_distance(states[0], states[1], spec))
    return found


def measure_net(
    zoo: Zoo, plan: Plan, net: NetPlan, group: int, seed: int, tracker: Tracker, device: str
) -> NetResults:
    """Train the network's solutions and take every section-4 measurement on them."""
    from canon.data import load_dataset

    data = load_dataset("digits")
    training = _Training(net, "digits", {"net": net.label}, plan.seeds_per_algo, plan.sigmas)
    solutions, classes, energies, tests = _solutions(
        zoo, plan, training, data, group, seed, tracker, device
    )
    pairs = entry_pairs_by_class(solutions, classes, per_class=plan.pairs_per_class)
    curves = path_curves(
        zoo,
        pairs,
        points=plan.points,
        device=device,
        progress=tracker.within(f"{net.label}: paths"),
    )
    bends, midpoint_distances, restarts = _bends(zoo, pairs, plan, tracker, device)
    metrics = ("euclidean", "euclidean_aligned", "geodesic")
    tables = [zoo.barrier_table(solutions, metric=m, device=device) for m in metrics]
    tracker.step(f"{net.label}: distances")
    flat, sharp = (next(e for e in solutions if classes[e.name] == a) for a in ("rsgd", "adv"))
    section = plane_sections(
        zoo, flat, sharp, grid=plan.plane_grid, margin=plan.plane_margin, device=device
    )
    tracker.step(f"{net.label}: plane")
    labels = (flat.name, sharp.name, f"{sharp.name} aligned")
    return NetResults(
        net,
        solutions,
        classes,
        energies,
        tests,
        curves,
        bends,
        tables,
        section,
        labels,
        (data.num_train, data.num_test),
        _closeness(zoo, pairs, device),
        _untrained(net, plan.untrained_pairs, seed),
        midpoint_distances,
        restarts,
    )


def hmm_file(folder: Path, binary: BinaryPlan, N: int, seed: int) -> Path:
    """Write the hidden manifold model at size N as an .npz file (``x``, ``y``, ``x_test``,
    ``y_test``, all ±1) and return its path."""
    import numpy as np

    from canon.data import load_dataset

    data = load_dataset("hmm", D=binary.D, P=binary.P, N=N, P_test=binary.P_test, seed=seed)
    x = data.x_train.numpy()
    if bool((x == x[:1]).all(0).any()):
        raise ConfigError(
            f"hmm N={N}: an input feature is constant on the train split; choose a larger `P`"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hmm-D{binary.D}-P{binary.P}-N{N}-seed{seed}.npz"
    np.savez(
        path,
        x=x,
        y=data.y_train.numpy(),
        x_test=data.x_test.numpy(),
        y_test=data.y_test.numpy(),
    )
    return path


def measure_binary(
    zoo: Zoo, plan: Plan, ratio: int, group: int, seed: int, tracker: Tracker, device: str
) -> BinarySize:
    """Train committee machines at N = ratio * D and take the section-5.1 measurements."""
    from canon.data import load_dataset

    binary = plan.binary
    N = ratio * binary.D
    dataset = f"npz:{hmm_file(zoo.root / 'data', binary, N, seed).resolve()}"
    data = load_dataset(dataset)
    label = f"cm{N}"
    machine = NetPlan(
        label,
        f"binary committee machine, N = {N}",
        "canon.repro.nets:committee_pm1",
        {"in_features": N, "hidden": binary.hidden},
        epochs=binary.epochs,
        adv_epochs=binary.adv_epochs,
    )
    tags = {"net": "committee", "N": str(N), "D": str(binary.D), "P": str(binary.P)}
    training = _Training(machine, dataset, tags, binary.seeds_per_algo, binary.flips)
    solutions, classes, energies, tests = _solutions(
        zoo, plan, training, data, group, seed, tracker, device
    )
    pairs = entry_pairs_by_class(solutions, classes, within_only=True)
    curves = path_curves(
        zoo,
        pairs,
        ("random_flip", "random_flip_aligned"),
        points=plan.points,
        device=device,
        progress=tracker.within(f"{label}: random flip paths"),
    )
    return BinarySize(ratio, N, solutions, energies, tests, curves)


def measure(
    zoo: Zoo, plan: Plan, *, seed: int = 0, device: str = "auto", progress: Stage | None = None
) -> Measurements:
    """Run every training and measurement of ``plan`` into ``zoo`` (which should be empty)."""
    tracker = Tracker(_steps(plan), progress)
    results = Measurements(plan, seed)
    for group, net in enumerate(plan.nets):
        results.nets.append(measure_net(zoo, plan, net, group, seed, tracker, device))
    for offset, ratio in enumerate(plan.binary.ratios):
        group = len(plan.nets) + offset
        results.binary.append(measure_binary(zoo, plan, ratio, group, seed, tracker, device))
    return results
