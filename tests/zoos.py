"""Zoos for tests: random networks added once per module, and fresh copies per test."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from canon.architectures import build_model
from canon.zoo import Zoo


def random_zoo(
    root: Path, net: tuple[str, Mapping[str, Any]], count: int, name: str = "n{}"
) -> Path:
    """A zoo at ``root`` of ``count`` networks of ``net`` (architecture, config) with
    random weights (seeds 0, 1, ...) on digits, not evaluated when added; named by
    ``name`` formatted with the seed."""
    with Zoo.open(root) as z:
        for seed in range(count):
            torch.manual_seed(seed)
            state = build_model(net[0], dict(net[1])).state_dict()
            z.add(state, name=name.format(seed), architecture=net[0], config=dict(net[1]),
                  dataset="digits", evaluate=False)  # fmt: skip
    return root


def copy_zoo(template: Path, where: Path) -> Zoo:
    """A fresh copy of the zoo at ``template`` in ``where``, open."""
    shutil.copytree(template, where)
    return Zoo.open(where)
