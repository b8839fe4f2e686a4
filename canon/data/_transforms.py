"""Seeded transformations of a whole :class:`Dataset`: subsets and the ADV variant."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from canon.data._checks import check_fraction, check_int, check_optional_int
from canon.data._dataset import Dataset

__all__ = ["adversarial", "subset"]

_CHUNK_ROWS = 8192


def _take(
    x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(x.shape[0])
    if limit is None or limit >= n:
        return x, y
    rng = np.random.default_rng([seed, stream])
    index = torch.from_numpy(np.sort(rng.choice(n, size=limit, replace=False))).to(x.device)
    return x.index_select(0, index), y.index_select(0, index)


def subset(
    dataset: Dataset,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Return a copy keeping a seeded random subset of at most ``limit_*`` samples per split.

    ``None`` (or a limit at least the split size) keeps that split whole. The kept samples
    stay in their original order, and the inputs are not re-normalized, so a subset is
    scaled exactly like the full dataset it came from.
    """
    where = f"subset of {dataset.name}"
    limit_train = check_optional_int(where, "limit_train", limit_train, minimum=1)
    limit_test = check_optional_int(where, "limit_test", limit_test, minimum=1)
    seed = check_int(where, "seed", seed, minimum=0)
    x_train, y_train = _take(dataset.x_train, dataset.y_train, limit_train, seed, 0)
    x_test, y_test = _take(dataset.x_test, dataset.y_test, limit_test, seed, 1)
    if x_train is dataset.x_train and x_test is dataset.x_test:
        return dataset
    return dataclasses.replace(
        dataset, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )


def adversarial(dataset: Dataset, zero_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Return the ADV variant: random train labels and a fraction of each input zeroed.

    This is the data used for adversarial initialization (Liu et al. 2020): every train
    label is redrawn independently and uniformly (a class index in ``0 .. C-1``, or ±1 for
    a binary task), and in every train input exactly ``round(zero_fraction * d)`` of its
    ``d`` entries (scalar pixels/features of the normalized input), chosen uniformly at
    random, are set to 0. The test split is returned unchanged. The name gains ``+adv``.
    """
    where = f"adversarial variant of {dataset.name}"
    zero_fraction = check_fraction(
        where, "zero_fraction", zero_fraction, allow_zero=True, allow_one=True
    )
    seed = check_int(where, "seed", seed, minimum=0)
    gen = torch.Generator().manual_seed(seed)
    n = dataset.num_train
    device = dataset.x_train.device
    if dataset.is_binary:
        labels = torch.randint(0, 2, (n,), generator=gen).to(torch.float32) * 2.0 - 1.0
    else:
        labels = torch.randint(0, dataset.num_classes, (n,), generator=gen, dtype=torch.int64)
    d = math.prod(dataset.input_shape)
    k = round(zero_fraction * d)
    x = dataset.x_train.reshape(n, d).clone()
    if k > 0:
        for start in range(0, n, _CHUNK_ROWS):
            rows = min(_CHUNK_ROWS, n - start)
            # The k largest of d i.i.d. uniforms sit at a uniformly random k-subset.
            picked = torch.rand(rows, d, generator=gen).topk(k, dim=1).indices
            x[start : start + rows].scatter_(1, picked.to(device), 0.0)
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}+adv",
        x_train=x.reshape(dataset.x_train.shape),
        y_train=labels.to(device),
    )
