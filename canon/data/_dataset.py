"""The :class:`Dataset` container and the helpers every loader shares.

Conventions (checked when a :class:`Dataset` is made):

* inputs ``x_*`` are float32 of shape ``(n, *input_shape)``;
* classification (``num_classes >= 2``): labels ``y_*`` are int64 class indices in
  ``0 .. num_classes - 1``;
* binary tasks with a single output unit (``num_classes == 1``): labels are float32 in
  ``{-1.0, +1.0}``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from canon.errors import DatasetError

__all__ = [
    "Dataset",
    "Normalization",
    "labels_to_tensors",
    "normalize_inputs",
    "split_indices",
]

Normalization = Literal["feature", "global", "none"]

_CHUNK_ROWS = 4096


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test pair of input and label tensors plus the facts a model needs about them.

    ``x_train``/``x_test`` are float32 ``(n, *input_shape)``. For classification
    (``num_classes >= 2``) ``y_train``/``y_test`` are int64 class indices in
    ``0 .. num_classes - 1``; for binary tasks with one output unit (``num_classes == 1``)
    they are float32 values in ``{-1, +1}``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.num_classes < 1:
            raise DatasetError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        for split in ("train", "test"):
            x: torch.Tensor = getattr(self, f"x_{split}")
            y: torch.Tensor = getattr(self, f"y_{split}")
            _check_split(self.name, split, x, y, self.num_classes, self.input_shape)

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    @property
    def is_binary(self) -> bool:
        """Whether this is a single-output ±1 task (``num_classes == 1``)."""
        return self.num_classes == 1

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy whose four tensors live on ``device`` (self if already there)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={self.x_train.device})"
        )


def _check_split(
    name: str,
    split: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    input_shape: tuple[int, ...],
) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DatasetError(f"{name}: x_{split} and y_{split} must be torch tensors")
    if x.dtype != torch.float32:
        raise DatasetError(f"{name}: x_{split} must be float32, got {x.dtype}")
    if tuple(x.shape[1:]) != input_shape:
        raise DatasetError(
            f"{name}: x_{split} has per-sample shape {tuple(x.shape[1:])}, "
            f"but input_shape is {input_shape}"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DatasetError(
            f"{name}: y_{split} must be 1-D with one label per sample of x_{split} "
            f"({x.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.numel() == 0:
        return
    if num_classes == 1:
        if y.dtype != torch.float32:
            raise DatasetError(f"{name}: ±1 labels y_{split} must be float32, got {y.dtype}")
        if not bool(((y == 1.0) | (y == -1.0)).all()):
            raise DatasetError(f"{name}: y_{split} of a binary task must hold only -1 and +1")
    else:
        if y.dtype != torch.int64:
            raise DatasetError(f"{name}: class labels y_{split} must be int64, got {y.dtype}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise DatasetError(
                f"{name}: y_{split} holds labels in [{low}, {high}], "
                f"outside 0 .. {num_classes - 1} (num_classes={num_classes})"
            )


def split_indices(
    n: int, test_fraction: float, seed: int, *, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/test split of ``range(n)``: ``round(test_fraction * n)`` test indices.

    Both index arrays are sorted; each split gets at least one sample.
    """
    if n < 2:
        raise DatasetError(
            f"{where}: need at least 2 samples to split into train and test, got {n}"
        )
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _feature_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(x.shape[0], -1).double()
    mean = flat.mean(dim=0)
    std = flat.std(dim=0, correction=0)
    # Constant features: leave them centered (at 0) instead of dividing by zero.
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean, std


def _global_stats(x: torch.Tensor) -> tuple[float, float]:
    flat = x.reshape(x.shape[0], -1)
    starts = range(0, int(flat.shape[0]), _CHUNK_ROWS)
    total = 0.0
    for start in starts:
        total += float(flat[start : start + _CHUNK_ROWS].double().sum())
    count = flat.numel()
    mean = total / count
    sq = 0.0
    for start in starts:
        sq += float((flat[start : start + _CHUNK_ROWS].double() - mean).square().sum())
    std = math.sqrt(sq / count)
    return mean, (std if std > 1e-12 else 1.0)


def normalize_inputs(
    x_train: torch.Tensor, x_test: torch.Tensor, mode: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardize both splits with statistics of the train split; return float32 tensors.

    ``"feature"``: per-feature mean and (population, ddof=0) std, features with zero
    train std are only centered; ``"global"``: one mean and std over every entry of the
    train split (used for images); ``"none"``: only cast to float32.
    """
    if mode == "global":
        if x_train.shape[0] == 0:
            return x_train.to(torch.float32), x_test.to(torch.float32)
        g_mean, g_std = _global_stats(x_train)
        # Fresh float32 copies normalized in place: large image sets are not duplicated twice.
        return (
            x_train.to(torch.float32, copy=True).sub_(g_mean).div_(g_std),
            x_test.to(torch.float32, copy=True).sub_(g_mean).div_(g_std),
        )
    x_train = x_train.to(torch.float32)
    x_test = x_test.to(torch.float32)
    if mode == "none" or x_train.shape[0] == 0:
        return x_train, x_test
    if mode == "feature":
        mean, std = _feature_stats(x_train)
        out = []
        for x in (x_train, x_test):
            flat = (x.reshape(x.shape[0], -1).double() - mean) / std
            out.append(flat.to(torch.float32).reshape(x.shape))
        return out[0], out[1]
    raise DatasetError(f"unknown normalization mode {mode!r}")


def labels_to_tensors(
    where: str,
    y_train: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Turn raw label arrays into canon's label convention; return ``(y_train, y_test, C)``.

    Labels that are all -1/+1 (with at least one -1) become float32 ±1 with ``C = 1``;
    otherwise labels must be non-negative integers and become int64 class indices with
    ``C = num_classes`` or ``max(label) + 1`` (at least 2).
    """
    ys = []
    for split, y in (("y", y_train), ("y_test", y_test)):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DatasetError(f"{where}: {split} must be 1-D labels, got shape {tuple(y.shape)}")
        if y.dtype == torch.bool or y.is_complex():
            raise DatasetError(f"{where}: {split} must hold numeric labels, got {y.dtype}")
        ys.append(y.to(torch.float64))
    both = torch.cat(ys)
    if not bool(torch.isfinite(both).all()) or not bool((both == both.round()).all()):
        raise DatasetError(f"{where}: labels must be integers (class indices) or ±1 values")
    if both.numel() and bool(((both == 1) | (both == -1)).all()) and bool((both == -1).any()):
        if num_classes not in (None, 1):
            raise DatasetError(
                f"{where}: labels are ±1 (a binary single-output task), "
                f"but num_classes={num_classes} was requested"
            )
        return ys[0].to(torch.float32), ys[1].to(torch.float32), 1
    if num_classes == 1:
        raise DatasetError(
            f"{where}: num_classes=1 means a binary task with ±1 labels, "
            "but the labels are not all -1/+1"
        )
    if both.numel() and float(both.min()) < 0:
        raise DatasetError(
            f"{where}: class labels must be >= 0 (or all ±1 for a binary task), "
            f"got minimum {int(both.min())}"
        )
    top = int(both.max()) + 1 if both.numel() else 0
    if num_classes is None:
        num_classes = max(top, 2)
    elif top > num_classes:
        raise DatasetError(
            f"{where}: labels reach {top - 1}, which does not fit num_classes={num_classes}"
        )
    return ys[0].to(torch.int64), ys[1].to(torch.int64), num_classes
