"""Measurements over a zoo's entries grouped into classes of solutions (the paper's
sections 4 and 5): error curves per class of pairs, optimized bend paths through the
zoo's midpoints, local energies per class, and the plane through three networks.

Classes come from a tag (``algo`` by default: ``rsgd``, ``sgd``, ``adv``). A pair
of entries belongs to the pair class ``"first-second"``, flatter class first
(``rsgd-sgd``, never ``sgd-rsgd``), and its curves run from the flatter entry
to the other, as in the paper's figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from canon.engine import DEFAULT_PATHS, bend_kind
from canon.errors import ConfigError
from canon.plots import order_classes, pair_class

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from canon.core import Spec
    from canon.engine import LocalEnergy, PathCurve, PlaneResult
    from canon.zoo import Entry, Zoo

__all__ = [
    "BEND_KINDS",
    "Progress",
    "bend_curves",
    "class_of",
    "energies_by_class",
    "entry_pairs_by_class",
    "normalized_distance",
    "path_curves",
    "plane_sections",
]

Progress = Callable[[int, int], None]
#: The bend path kind measured through a midpoint optimized from each starting path.
BEND_KINDS = {path: bend_kind(path) for path in DEFAULT_PATHS}


def class_of(entries: Sequence[Entry], by: str = "algo") -> dict[str, str]:
    """Each entry's class: the value of its tag ``by`` (an entry without it is an error)."""
    classes: dict[str, str] = {}
    for e in entries:
        value = e.tags.get(by)
        if value is None:
            raise ConfigError(f"entry `{e.name}` has no tag `{by}`; tag it or choose another --by")
        classes[e.name] = value
    return classes


def entry_pairs_by_class(
    entries: Sequence[Entry],
    classes: Mapping[str, str],
    *,
    within_only: bool = False,
    per_class: int | None = None,
) -> dict[str, list[tuple[Entry, Entry]]]:
    """Pairs of entries grouped by pair class, each pair ordered flatter class first.

    Within a class every pair (by name order); across two classes the pairs
    (i, i), (i, i+1), ... cycle through the members so that a truncated list
    (``per_class``) still uses every member. ``within_only`` keeps only pairs of
    one class (``rsgd-rsgd``, ...), as the paper's binary-network figures do.
    """
    members: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: e.name):
        members.setdefault(classes[e.name], []).append(e)
    groups: dict[str, list[tuple[Entry, Entry]]] = {}
    for first, second in itertools.combinations_with_replacement(order_classes(members), 2):
        if first == second:
            pairs = list(itertools.combinations(members[first], 2))
        elif within_only:
            continue
        else:
            left, right = members[first], members[second]
            pairs = [
                (left[i], right[(i + k) % len(right)])
                for k in range(len(right))
                for i in range(len(left))
            ]
        if pairs:
            groups[pair_class(first, second)] = pairs[:per_class]
    return groups


def _each_pair(
    pairs: Mapping[str, Sequence[tuple[Entry, Entry]]], progress: Progress | None
) -> Iterator[tuple[str, Entry, Entry]]:
    """Every pair with its class; ``progress(done, total)`` after each pair is dealt with."""
    total = sum(len(group) for group in pairs.values())
    done = 0
    for cls, group in pairs.items():
        for a, b in group:
            yield cls, a, b
            done += 1
            if progress is not None:
                progress(done, total)


def path_curves(
    zoo: Zoo,
    pairs: Mapping[str, Sequence[tuple[Entry, Entry]]],
    kinds: Sequence[str] = DEFAULT_PATHS,
    *,
    points: int = 25,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> dict[str, list[PathCurve]]:
    """Error curves of every pair along each path kind, grouped by pair class.

    Computed by :meth:`Zoo.compare`, so pairs already cached in the zoo are not
    recomputed. Each curve runs from the pair's first entry to its second.
    """
    curves: dict[str, list[PathCurve]] = {}
    for cls, a, b in _each_pair(pairs, progress):
        comparison = zoo.compare(a, b, paths=kinds, points=points, device=device)
        curves.setdefault(cls, []).extend(comparison.curves.values())
    return curves


def bend_curves(
    zoo: Zoo,
    pairs: Mapping[str, Sequence[tuple[Entry, Entry]]],
    *,
    points: int = 25,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> dict[str, list[PathCurve]]:
    """Error along the single-bend paths through the zoo's optimized midpoints (Fig. 3).

    For every pair, each ``midpoint`` entry whose parents are the pair's two
    entries gives one curve: ``bend`` (geodesic legs), ``bend_linear`` or
    ``bend_linear_aligned``, after the path the midpoint was optimized from
    (its ``path`` tag, as ``canon midpoint`` records it).
    """
    by_parents: dict[frozenset[str], list[Entry]] = {}
    for m in zoo.select(kind="midpoint"):
        by_parents.setdefault(frozenset(m.parents), []).append(m)
    curves: dict[str, list[PathCurve]] = {}
    for cls, a, b in _each_pair(pairs, progress):
        for m in by_parents.get(frozenset((a.id, b.id)), []):
            if m.tags.get("path", "geodesic") not in BEND_KINDS:
                continue
            curve = zoo.bend_curve(a, b, m, points=points, device=device)
            curves.setdefault(cls, []).append(curve)
    return curves


def energies_by_class(
    zoo: Zoo,
    entries: Sequence[Entry],
    classes: Mapping[str, str],
    *,
    sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    draws: int = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> tuple[dict[str, list[LocalEnergy]], dict[str, list[float]]]:
    """Local energy of every entry on its dataset (Fig. 1), and its test error, per class.

    The test error is the entry's recorded ``test_error`` metric (NaN when the
    zoo has none for it).
    """
    energies: dict[str, list[LocalEnergy]] = {}
    tests: dict[str, list[float]] = {}
    for done, e in enumerate(entries, start=1):
        result = zoo.energy(e, sigmas=sigmas, draws=draws, seed=seed, device=device)
        cls = classes[e.name]
        energies.setdefault(cls, []).append(result)
        tests.setdefault(cls, []).append(float(e.metrics.get("test_error", float("nan"))))
        if progress is not None:
            progress(done, len(entries))
    return energies, tests


def plane_sections(
    zoo: Zoo,
    a: Entry,
    b: Entry,
    c: Entry | None = None,
    *,
    grid: int = 21,
    margin: float = 0.2,
    device: str | torch.device = "auto",
) -> tuple[PlaneResult, PlaneResult]:
    """Train error on the plane through a, b and c, raw and normalized (Fig. 4).

    Without ``c``, the third network is b aligned to a (not normalized), the
    paper's choice: the plane then holds both the unaligned and the aligned
    copy of b, and the raw section shows the linear and linear-aligned paths.
    """
    return (
        zoo.plane(a, b, c, grid=grid, margin=margin, normalized=False, device=device),
        zoo.plane(a, b, c, grid=grid, margin=margin, normalized=True, device=device),
    )


def normalized_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec) -> float:
    """The Euclidean distance between a and b once both are normalized and b is aligned to a
    (all parameters): the distance of the paper's Fig. 5."""
    from canon.core import canonicalize, normalize
    from canon.core.geometry import flat

    names = spec.parameters
    first = flat(normalize(a, spec), names).double()
    second = flat(canonicalize(b, spec, reference=a), names).double()
    return float((first - second).norm())
