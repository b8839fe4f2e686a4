"""The registries of kinds: path kinds, training algorithms and matching methods
(DESIGN §2 "Registries").

A path kind names how the path between two networks is built (``linear``,
``geodesic``, ``bend``, ...): its builder, whether it runs through a
midpoint network, and whether two zoo entries can be compared along it
directly. A training algorithm names a trainer and its default step. A
matching method names how the units of two networks are paired (DESIGN §3b):
``incoming``, ``weight``, ``activation``. Every
list of choices (the CLI's, the service's, the plots') derives from these
registries; users add their own with :func:`register_path_kind`,
:func:`register_algorithm` and :func:`register_matching`.

This module imports neither torch nor the core: the command line reads it to
build its choices, and a built-in builder or trainer imports its module
(:mod:`canon.engine.landscape`, :mod:`canon.engine.train`) on its first call.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from canon._limits import clip
from canon.errors import ConfigError, DuplicateNameError

if TYPE_CHECKING:
    from canon.core.paths import NetworkPath
    from canon.core.permutations import Alignment
    from canon.engine.landscape import PathEnds
    from canon.engine.matching import MatchInputs
    from canon.engine.train import Fitted, TrainSetup

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PATHS",
    "MATCHING_METHODS",
    "MIDPOINT_LR",
    "MIDPOINT_LR_HALVINGS",
    "MIDPOINT_LR_HALVINGS_MAX",
    "MIDPOINT_LR_MAX",
    "MIDPOINT_PATHS",
    "PAPER_PROTOCOL",
    "PATH_KINDS",
    "AlgorithmInfo",
    "Matcher",
    "MatchingInfo",
    "PathBuilder",
    "PathKindInfo",
    "Trainer",
    "bend_kind",
    "get_algorithm",
    "get_matching",
    "get_path_kind",
    "list_algorithms",
    "list_matchings",
    "list_path_kinds",
    "register_algorithm",
    "register_matching",
    "register_path_kind",
]

#: Which training protocol is the paper's, in one sentence (``canon train --help``, README);
#: here, not in :mod:`canon.engine.train`, so the command line reads it without torch.
PAPER_PROTOCOL = (
    "The paper's protocol (appendix A.1) runs every epoch of a fixed budget (300) with "
    "cosine annealing; stopping at the first epoch with zero train error is faster but "
    "not the paper's, and gives sharper solutions."
)

#: Builds the path(s) between two networks: one path, or several (seeded random orders).
PathBuilder = Callable[["PathEnds"], "list[NetworkPath]"]
#: Trains a network as set up by :func:`canon.engine.train` and returns the solution.
Trainer = Callable[["TrainSetup"], "Fitted"]
#: Pairs the units of two normalized networks: the alignment of one to the other.
Matcher = Callable[["MatchInputs"], "Alignment"]
B = TypeVar("B", bound=Callable[..., Any])


@dataclass(frozen=True)
class PathKindInfo:
    """A registered path kind.

    ``needs_midpoint``: the path runs through a third network (an optimized
    midpoint) given to :func:`~canon.engine.path_curve` as ``midpoint``.
    ``comparable``: two networks can be compared along it directly (zoo
    comparisons and tables, the service, ``canon plot paths``).
    ``bend_of``: for a bend, the path whose midpoint its midpoint is optimized
    from (:func:`~canon.engine.optimize_midpoint`'s ``path``). ``orders``: the
    builder draws ``orders`` seeded random orders and the curve is their mean.
    """

    name: str
    build: PathBuilder
    label: str = ""
    needs_midpoint: bool = False
    comparable: bool = True
    bend_of: str | None = None
    orders: bool = False


@dataclass(frozen=True)
class AlgorithmInfo:
    """A registered training algorithm: its trainer and its defaults for continuous networks.

    ``lr`` and ``momentum`` are the defaults of SGD (Nesterov when momentum > 0);
    binary networks use BinaryNet's own. ``min_replicas`` is the fewest
    ``replicas`` the trainer accepts (0: it does not use them).
    """

    name: str
    train: Trainer
    lr: float
    momentum: float
    min_replicas: int = 0
    description: str = ""


@dataclass(frozen=True)
class MatchingInfo:
    """A registered matching method; ``needs_data``: it runs the networks on a batch of
    their dataset (the batch size is then an option of every result it gives)."""

    name: str
    match: Matcher
    label: str = ""
    needs_data: bool = False


_PATH_KINDS: dict[str, PathKindInfo] = {}
_ALGORITHMS: dict[str, AlgorithmInfo] = {}
_MATCHINGS: dict[str, MatchingInfo] = {}


def _check_new(name: str, registry: dict[str, Any], what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{what} name {clip(repr(name), 100)} must be a Python identifier")
    if name in registry:
        raise DuplicateNameError(f"{what} `{name}` is already registered")


def _unknown(name: str, known: list[str], what: str) -> ConfigError:
    """An unknown-name error that offers close matches and lists every name."""
    text = str(name)
    close = difflib.get_close_matches(text, known, n=3) if len(text) < 100 else []
    hint = f"; did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
    return ConfigError(
        f"unknown {what} `{clip(text, 100)}`{hint} (choose one of {', '.join(known)})"
    )


def register_path_kind(
    name: str,
    *,
    label: str = "",
    needs_midpoint: bool = False,
    comparable: bool | None = None,
    bend_of: str | None = None,
    orders: bool = False,
) -> Callable[[B], B]:
    """Decorator registering ``build(ends) -> list[NetworkPath]`` as the path kind ``name``.

    ``comparable`` defaults to ``not needs_midpoint`` (a path through a
    midpoint cannot be drawn from the two entries alone). A name registered
    twice raises :class:`~canon.errors.DuplicateNameError`.
    """
    _check_new(name, _PATH_KINDS, "path kind")
    reachable = not needs_midpoint if comparable is None else comparable
    if needs_midpoint and reachable:
        raise ConfigError(f"path kind `{name}` needs a midpoint, so it cannot be comparable")
    if bend_of is not None and (not needs_midpoint or bend_of not in _PATH_KINDS):
        raise ConfigError(
            f"`bend_of` of path kind `{name}` must name a registered kind, and the kind "
            "must need a midpoint"
        )

    def decorate(build: B) -> B:
        _check_new(name, _PATH_KINDS, "path kind")
        _PATH_KINDS[name] = PathKindInfo(
            name, build, label or name, needs_midpoint, reachable, bend_of, orders
        )
        return build

    return decorate


def get_path_kind(name: str) -> PathKindInfo:
    """The registered path kind ``name``; an unknown name suggests close matches."""
    try:
        return _PATH_KINDS[name]
    except (KeyError, TypeError):
        raise _unknown(name, list(_PATH_KINDS), "path kind") from None


def list_path_kinds(pattern: str = "*", *, comparable: bool | None = None) -> list[str]:
    """Registered path kinds matching the fnmatch ``pattern``, in registration order.

    The order is meaningful (the built-ins start with :data:`DEFAULT_PATHS`),
    so the names are not sorted. ``comparable`` keeps only the kinds that can
    (``True``) or cannot (``False``) compare two networks directly.
    """
    return [
        k.name
        for k in _PATH_KINDS.values()
        if fnmatch.fnmatchcase(k.name, pattern)
        and (comparable is None or k.comparable == comparable)
    ]


def bend_kind(path: str) -> str:
    """The bend kind through a midpoint optimized from the ``path`` between two networks."""
    for kind in _PATH_KINDS.values():
        if kind.bend_of is not None and kind.bend_of == path:
            return kind.name
    starts = [k.bend_of for k in _PATH_KINDS.values() if k.bend_of is not None]
    raise ConfigError(f"`path` must be one of {', '.join(starts)}, got `{clip(str(path), 100)}`")


def register_algorithm(
    name: str,
    *,
    lr: float,
    momentum: float,
    min_replicas: int = 0,
    description: str = "",
) -> Callable[[B], B]:
    """Decorator registering ``trainer(setup) -> Fitted`` as the algorithm ``name``.

    A name registered twice raises :class:`~canon.errors.DuplicateNameError`.
    """
    _check_new(name, _ALGORITHMS, "algorithm")

    def decorate(trainer: B) -> B:
        _check_new(name, _ALGORITHMS, "algorithm")
        _ALGORITHMS[name] = AlgorithmInfo(name, trainer, lr, momentum, min_replicas, description)
        return trainer

    return decorate


def get_algorithm(name: str) -> AlgorithmInfo:
    """The registered algorithm ``name``; an unknown name suggests close matches."""
    try:
        return _ALGORITHMS[name]
    except (KeyError, TypeError):
        raise _unknown(name, list(_ALGORITHMS), "algorithm") from None


def list_algorithms(pattern: str = "*") -> list[str]:
    """Registered algorithms matching the fnmatch ``pattern``, in registration order."""
    return [n for n in _ALGORITHMS if fnmatch.fnmatchcase(n, pattern)]


def register_matching(name: str, *, label: str = "", needs_data: bool = False) -> Callable[[B], B]:
    """Decorator registering ``matcher(inputs) -> Alignment`` as the matching method ``name``.

    ``auto`` is reserved (it picks the architecture's default method); a name
    registered twice raises :class:`~canon.errors.DuplicateNameError`.
    """
    if name == "auto":
        raise ConfigError("`auto` is reserved for the architecture's default matching method")
    _check_new(name, _MATCHINGS, "matching method")

    def decorate(matcher: B) -> B:
        _check_new(name, _MATCHINGS, "matching method")
        _MATCHINGS[name] = MatchingInfo(name, matcher, label, needs_data)
        return matcher

    return decorate


def get_matching(name: str) -> MatchingInfo:
    """The registered matching method ``name``; an unknown name suggests close matches."""
    try:
        return _MATCHINGS[name]
    except (KeyError, TypeError):
        raise _unknown(name, ["auto", *_MATCHINGS], "matching method") from None


def list_matchings(pattern: str = "*") -> list[str]:
    """Registered matching methods matching the fnmatch ``pattern``, in registration order."""
    return [n for n in _MATCHINGS if fnmatch.fnmatchcase(n, pattern)]


def _deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported on the first call (so that this registry loads without torch)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Calls `{module}.{name}` (imported on first use)."
    return call


def _builtin_path(name: str, label: str, **flags: Any) -> None:
    register_path_kind(name, label=label, **flags)(
        _deferred("canon.engine.landscape", f"build_{name}")
    )


# DESIGN §3 "Paths": the main three first, then the bends, then the binary flips.
_builtin_path("linear", "linear")
_builtin_path("linear_aligned", "linear, aligned")
_builtin_path("geodesic", "geodesic (normalized, aligned)")
_builtin_path("bend", "one bend, geodesic legs", needs_midpoint=True, bend_of="geodesic")
_builtin_path("bend_linear", "one bend, linear legs", needs_midpoint=True, bend_of="linear")
_builtin_path(
    "bend_linear_aligned",
    "one bend, aligned linear legs",
    needs_midpoint=True,
    bend_of="linear_aligned",
)
_builtin_path("random_flip", "random flips", orders=True)
_builtin_path("random_flip_aligned", "random flips, aligned", orders=True)

# The paper's appendix A.1: batch 128, learning rates 0.02 (sgd) and 0.05 (rsgd) with
# Nesterov momentum 0.9. adv runs plain SGD; its default here, 0.2, departs from the
# paper's 0.02: without momentum 0.02 takes a tenth of sgd's effective step
# (0.02 / (1 - 0.9)), too slow for small datasets' few steps per epoch under early
# stopping; 0.2 matches sgd's step. `canon repro` passes the paper's 0.02.
register_algorithm(
    "sgd", lr=0.02, momentum=0.9, description="SGD, Nesterov momentum, cosine-annealed"
)(_deferred("canon.engine.train", "train_sgd"))
register_algorithm(
    "rsgd",
    lr=0.05,
    momentum=0.9,
    min_replicas=2,
    description="replicated SGD (Pittorino et al. 2021): the center of coupled replicas",
)(_deferred("canon.engine.train", "train_rsgd"))
register_algorithm(
    "adv",
    lr=0.2,
    momentum=0.0,
    description="adversarial initialization (Liu et al. 2020), then plain SGD (lr 0.2; the "
    "paper's: 0.02)",
)(_deferred("canon.engine.train", "train_adv"))

# DESIGN §3b "Matching": the paper's Alg. 2, weight matching, activation matching.
register_matching("incoming", label="incoming weights, forward order (Alg. 2)")(
    _deferred("canon.engine.matching", "by_incoming")
)
register_matching("weight", label="weight matching, coordinate descent over groups")(
    _deferred("canon.engine.matching", "by_weight")
)
register_matching("activation", label="activation correlation on a data batch", needs_data=True)(
    _deferred("canon.engine.matching", "by_activation")
)

#: The built-in path kinds (:func:`list_path_kinds` also sees kinds registered later).
PATH_KINDS: tuple[str, ...] = tuple(list_path_kinds())
#: The path kinds a comparison uses when none are named.
DEFAULT_PATHS: tuple[str, ...] = ("linear", "linear_aligned", "geodesic")
#: The paths a midpoint can be optimized from (the ``bend_of`` of the built-in bends).
MIDPOINT_PATHS: tuple[str, ...] = tuple(
    k.bend_of for k in _PATH_KINDS.values() if k.bend_of is not None
)
#: A midpoint's starting learning rate (Fig. 10: the sgd solutions' 0.02) and how many
#: times a training that diverges restarts at half of it
#: (:func:`~canon.engine.optimize_midpoint`); here so that the command line reads them
#: without torch.
MIDPOINT_LR = 0.02
MIDPOINT_LR_HALVINGS = 3
#: The largest of each that the command line and the service accept.
MIDPOINT_LR_MAX = 100.0
MIDPOINT_LR_HALVINGS_MAX = 10
#: The built-in training algorithms (:func:`list_algorithms` also sees later ones).
ALGORITHMS: tuple[str, ...] = tuple(list_algorithms())
#: The built-in matching methods, after ``auto`` (the architecture's default).
MATCHING_METHODS: tuple[str, ...] = ("auto", *list_matchings())
