"""The sizes of the reproduction in its full (default) and quick modes.

Everything the run does is fixed here, so the report can print its settings
and nothing else decides a number. The full mode stays under 30 minutes on 2
CPU cores, the quick mode (for CI) under a few minutes; neither is tuned to make
any claim hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = ["ALGOS", "BinaryPlan", "NetPlan", "Plan", "make_plan"]

#: The three ways of sampling solutions, flattest first (the paper's RSGD, SGD, ADV).
ALGOS = ("rsgd", "sgd", "adv")

T = TypeVar("T")


@dataclass(frozen=True)
class NetPlan:
    """A network to train: its label, title, architecture and config, and the most epochs
    of training (``adv_epochs``: of adv's random-label phase). The plan's ``nets`` are the
    continuous networks, trained on ``digits``."""

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

    def sized(full: T, small: T) -> T:
        """A setting's value in the full plan, or its smaller value in the quick one."""
        return small if quick else full

    return Plan(
        quick=quick,
        nets=sized(
            (_mlp(512), _lenet((20, 50), 500)),
            (_mlp(256, epochs=60, adv_epochs=30), _lenet((10, 20), 128, epochs=40, adv_epochs=20)),
        ),
        seeds_per_algo=sized(4, 2),
        target_error=0.0,
        pairs_per_class=sized(4, 2),
        bend_pairs_per_class=sized(2, 1),
        midpoint_epochs=sized(100, 10),
        points=sized(25, 13),
        sigmas=sized((0.1, 0.2, 0.3, 0.4, 0.5), (0.1, 0.3, 0.5)),
        draws=sized(10, 4),
        plane_grid=sized(17, 11),
        plane_margin=0.2,
        binary=BinaryPlan(
            D=sized(501, 51),
            P=sized(1503, 153),
            P_test=sized(1000, 500),
            hidden=sized(101, 21),
            ratios=(1, 2, 4),
            seeds_per_algo=sized(3, 2),
            epochs=sized(200, 50),
            adv_epochs=sized(200, 20),
            flips=sized((0.01, 0.025, 0.05, 0.1), (0.02, 0.05, 0.1)),
        ),
    )


def _mlp(width: int, **epochs: int) -> NetPlan:
    """The MLP 64-width-width-10 on digits."""
    config = {"in_features": 64, "hidden": [width, width], "classes": 10}
    return NetPlan("mlp", f"MLP 64-{width}-{width}-10", "mlp", config, **epochs)


def _lenet(channels: tuple[int, int], hidden: int, **epochs: int) -> NetPlan:
    """The LeNet-like net on digits: two 5x5 convolutions of ``channels``, fc ``hidden``."""
    c1, c2 = channels
    return NetPlan(
        "lenet",
        f"LeNet-like, conv {c1} and {c2} filters 5x5, fc {hidden}",
        "canon.repro.nets:lenet_digits",
        {"channels": [c1, c2], "hidden": hidden},
        **epochs,
    )
