"""The sizes of the reproduction in its full (default) and quick modes.

Everything the run does is fixed here, so the report can print its settings
and nothing else decides a number. The full mode stays under 30 minutes on 2
CPU cores, the quick mode (for CI) under a few minutes; neither is tuned to make
any claim hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ALGOS", "BinaryPlan", "NetPlan", "Plan", "make_plan"]

#: The three ways of sampling solutions, flattest first (the paper's RSGD, SGD, ADV).
ALGOS = ("rsgd", "sgd", "adv")


@dataclass(frozen=True)
class NetPlan:
    """A continuous network trained on ``digits``: its label, architecture and config, and
    the most epochs of training (``adv_epochs``: of adv's random-label phase)."""

    label: str
    title: str
    architecture: str
    config: Mapping[str, Any] = field(hash=False)
    epochs: int = 300
    adv_epochs: int = 300


@dataclass(frozen=True)
class BinaryPlan:
    """The binary committee machine on the hidden manifold model (the paper's section 5.1).

    ``ratios`` are the sizes N / D of the projection; ``D`` latent dimensions,
    ``P`` train patterns (the paper: D = 501, P = 3 D), ``hidden`` units. Random
    flip paths average over 5 flip orders (canon's default, the paper's 5).
    """

    D: int
    P: int
    P_test: int
    hidden: int
    ratios: tuple[int, ...]
    seeds_per_algo: int
    epochs: int
    adv_epochs: int
    flips: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """Every size and setting of one reproduction run."""

    quick: bool
    nets: tuple[NetPlan, ...]
    seeds_per_algo: int
    target_error: float
    pairs_per_class: int
    bend_pairs_per_class: int
    midpoint_epochs: int
    points: int
    sigmas: tuple[float, ...]
    draws: int
    plane_grid: int
    plane_margin: float
    binary: BinaryPlan
    #: claim (3): a barrier is "near zero" below this train error (the paper's solutions
    #: are networks with train error < 1%)
    near_zero: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["nets"] = [{**asdict(n), "config": dict(n.config)} for n in self.nets]
        return data


def make_plan(quick: bool = False) -> Plan:
    """The full plan (the default), or the quick one."""
    if quick:
        return Plan(
            quick=True,
            nets=(
                NetPlan("mlp", "MLP 64-256-256-10", "mlp", _mlp(256), epochs=60, adv_epochs=30),
                NetPlan(
                    "lenet",
                    "LeNet-like, conv 10 and 20 filters 5x5, fc 128",
                    "canon.repro.nets:lenet_digits",
                    {"channels": [10, 20], "hidden": 128},
                    epochs=40,
                    adv_epochs=20,
                ),
            ),
            seeds_per_algo=2,
            target_error=0.0,
            pairs_per_class=2,
            bend_pairs_per_class=1,
            midpoint_epochs=10,
            points=13,
            sigmas=(0.1, 0.3, 0.5),
            draws=4,
            plane_grid=11,
            plane_margin=0.2,
            binary=BinaryPlan(
                D=51,
                P=153,
                P_test=500,
                hidden=21,
                ratios=(1, 2, 4),
                seeds_per_algo=2,
                epochs=50,
                adv_epochs=20,
                flips=(0.02, 0.05, 0.1),
            ),
        )
    return Plan(
        quick=False,
        nets=(
            NetPlan("mlp", "MLP 64-512-512-10", "mlp", _mlp(512)),
            NetPlan(
                "lenet",
                "LeNet-like, conv 20 and 50 filters 5x5, fc 500",
                "canon.repro.nets:lenet_digits",
                {"channels": [20, 50], "hidden": 500},
            ),
        ),
        seeds_per_algo=4,
        target_error=0.0,
        pairs_per_class=4,
        bend_pairs_per_class=2,
        midpoint_epochs=100,
        points=25,
        sigmas=(0.1, 0.2, 0.3, 0.4, 0.5),
        draws=10,
        plane_grid=17,
        plane_margin=0.2,
        binary=BinaryPlan(
            D=501,
            P=1503,
            P_test=1000,
            hidden=101,
            ratios=(1, 2, 4),
            seeds_per_algo=3,
            epochs=200,
            adv_epochs=200,
            flips=(0.01, 0.025, 0.05, 0.1),
        ),
    )


def _mlp(width: int) -> dict[str, Any]:
    return {"in_features": 64, "hidden": [width, width], "classes": 10}
