"""The sizes of the reproduction in its full (default) and quick modes.

Everything the run does is fixed here, so the report can print its settings
and nothing else decides a number. Training follows the paper's protocols
(appendix A.1 and B, Fig. 10): fixed epoch budgets, every epoch run, cosine
annealing for continuous networks. The full mode runs the paper's own budgets
(300 epochs for continuous networks and midpoints, 200 for binary networks, 500 for
their adv random-label phase) and fits in 45 minutes on 2 CPU cores; ``epoch_scale``
multiplies every budget alike (the same for endpoints, adv's random-label phase,
midpoints and binary networks) for shorter runs. The quick mode (for CI: under 3
minutes on 2 CPU cores, measured at about 1.5) is a smoke test of every stage and
claim check: 1/60 of the budgets (5 epochs), 2 solutions per algorithm, a smaller
LeNet and HMM; its networks are trained far less than the paper's and its verdicts
mean nothing about the paper. Neither mode is tuned to make any claim hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = ["ALGOS", "PAPER_EPOCHS", "BinaryPlan", "NetPlan", "Plan", "make_plan"]

#: The paper's epoch budgets: continuous networks and midpoints (appendix A.1, Fig. 10),
#: binary networks and their adv random-label phase (appendix B).
PAPER_EPOCHS = {"continuous": 300, "binary": 200, "binary_adv": 500}

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
    #: adv's learning rate after the random-label phase (None: canon's default); the
    #: paper's appendix A.1 gives vanilla SGD 0.02 for continuous networks
    adv_lr: float | None = None


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
    #: every training budget is the paper's times this factor
    epoch_scale: float
    #: None: every epoch runs (the paper's protocol), no stop at a train error
    target_error: float | None
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
    #: claim (2): barriers that differ by at most this many train samples are tied
    tie_samples: int = 2
    #: claim (4): pairs of untrained networks whose distance is the baseline
    untrained_pairs: int = 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["nets"] = [{**asdict(n), "config": dict(n.config)} for n in self.nets]
        return data


def make_plan(quick: bool = False, epoch_scale: float | None = None) -> Plan:
    """The full plan (the default: the paper's epoch budgets), or the quick one;
    ``epoch_scale`` overrides the factor on the paper's budgets (for shorter runs)."""

    def sized(full: T, small: T) -> T:
        """A setting's value in the full plan, or its smaller value in the quick one."""
        return small if quick else full

    scale = epoch_scale if epoch_scale is not None else sized(1.0, 1 / 60)

    def budget(kind: str) -> int:
        return max(1, round(PAPER_EPOCHS[kind] * scale))

    epochs = {"epochs": budget("continuous"), "adv_epochs": budget("continuous"), "adv_lr": 0.02}
    return Plan(
        quick=quick,
        nets=sized(
            (_mlp(512, **epochs), _lenet((20, 50), 500, **epochs)),
            (_mlp(256, **epochs), _lenet((6, 16), 64, **epochs)),
        ),
        seeds_per_algo=sized(5, 2),
        epoch_scale=scale,
        target_error=None,
        pairs_per_class=sized(5, 2),
        bend_pairs_per_class=sized(2, 1),
        midpoint_epochs=budget("continuous"),
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
            seeds_per_algo=sized(5, 2),
            epochs=budget("binary"),
            adv_epochs=budget("binary_adv"),
            flips=sized((0.01, 0.025, 0.05, 0.1), (0.02, 0.05, 0.1)),
        ),
    )


def _mlp(width: int, **epochs: Any) -> NetPlan:
    """The MLP 64-width-width-10 on digits."""
    config = {"in_features": 64, "hidden": [width, width], "classes": 10}
    return NetPlan("mlp", f"MLP 64-{width}-{width}-10", "mlp", config, **epochs)


def _lenet(channels: tuple[int, int], hidden: int, **epochs: Any) -> NetPlan:
    """The LeNet-like net on digits: two 5x5 convolutions of ``channels``, fc ``hidden``."""
    c1, c2 = channels
    return NetPlan(
        "lenet",
        f"LeNet-like, conv {c1} and {c2} filters 5x5, fc {hidden}",
        "canon.repro.nets:lenet_digits",
        {"channels": [c1, c2], "hidden": hidden},
        **epochs,
    )
