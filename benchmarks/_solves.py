"""The linear assignment solves canon's matching makes: recorded, and as scipy's arrays
(the floor the alignment benchmarks measure canonicalization against)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

import canon.core.permutations as core_permutations


def _each_solve(fn: Callable[[], object], seen: Callable[[Any, int], None]) -> None:
    """Run ``fn``, calling ``seen(similarity, blocks)`` for every solve canon's matching
    makes (a blocked solve, which calls the solver once per block, counted once)."""
    original = core_permutations.solve_assignment  # what matching's `assign` calls
    depth = 0

    def watching(similarity: Any, blocks: int = 1) -> torch.Tensor:
        nonlocal depth
        if depth == 0:
            seen(similarity, blocks)
        depth += 1
        try:
            return original(similarity, blocks)
        finally:
            depth -= 1

    core_permutations.solve_assignment = watching  # type: ignore[attr-defined]
    try:
        fn()
    finally:
        core_permutations.solve_assignment = original  # type: ignore[attr-defined]


def recorded_solves(fn: Callable[[], object]) -> list[tuple[torch.Tensor, int]]:
    """Every (similarity, blocks) that canon's matching hands to its solver while ``fn`` runs."""
    solves: list[tuple[torch.Tensor, int]] = []

    def record(similarity: Any, blocks: int) -> None:
        whole = similarity if isinstance(similarity, torch.Tensor) else similarity[:, :]
        solves.append((whole.detach().clone(), blocks))

    _each_solve(fn, record)
    return solves


def solve_floor(fn: Callable[[], object]) -> float:
    """Seconds scipy's ``linear_sum_assignment`` alone takes on every matrix canon's
    matching solves while ``fn`` runs, each timed as it comes (none is kept: a large
    mixture's thousands of expert-pair blocks would not fit)."""
    total = 0.0

    def time_it(similarity: Any, blocks: int) -> None:
        nonlocal total
        for cost in lap_blocks(similarity, blocks):  # a lazy similarity: its blocks alone
            start = time.perf_counter()
            linear_sum_assignment(cost, maximize=True)
            total += time.perf_counter() - start

    _each_solve(fn, time_it)
    return total


def lap_blocks(similarity: Any, blocks: int) -> list[Any]:
    """The matrices one solve amounts to (one per diagonal block), as float64 arrays."""
    n = similarity.shape[0] // blocks
    return [
        similarity[b * n : (b + 1) * n, b * n : (b + 1) * n].double().cpu().numpy()
        for b in range(blocks)
    ]
