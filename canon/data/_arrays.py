"""Datasets read from array files: ``npz:PATH`` and ``safetensors:PATH``.

Both formats hold arrays ``x`` (inputs, ``(n, ...)``) and ``y`` (labels, ``(n,)``), and
optionally ``x_test`` and ``y_test``. Without a test pair, a seeded random split of
``x``/``y`` is made as for ``digits`` (options ``test_fraction``, ``seed``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from canon.data._checks import check_choice, check_fraction, check_int, check_optional_int
from canon.data._dataset import (
    Dataset,
    Normalization,
    labels_to_tensors,
    normalize_inputs,
    split_indices,
)
from canon.data._registry import register_dataset
from canon.errors import DatasetError

__all__ = ["dataset_from_arrays"]

_LAYOUT = "arrays x and y (optionally x_test and y_test)"
_NORMALIZE_CHOICES = ("auto", "feature", "global", "none")


def existing_file(where: str, path: str, what: str) -> Path:
    """Return ``path`` as a Path, or raise DatasetError saying which file is missing."""
    file = Path(path).expanduser()
    if not file.is_file():
        state = "is a folder, not a file" if file.is_dir() else "not found"
        raise DatasetError(f"{where}: {file} {state}; expected {what} (nothing is downloaded)")
    return file


def _check_inputs(where: str, key: str, x: torch.Tensor) -> None:
    if x.is_complex():
        raise DatasetError(f"{where}: array {key} must be real (bool, int or float), got {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DatasetError(
            f"{where}: array {key} must have shape (n, ...) with n >= 1 and at least one "
            f"feature dimension, got {tuple(x.shape)}"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise DatasetError(f"{where}: array {key} contains NaN or Inf")


def dataset_from_arrays(
    name: str,
    arrays: dict[str, torch.Tensor],
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    num_classes: int | None = None,
    normalize: str = "auto",
) -> Dataset:
    """Build a normalized :class:`Dataset` from tensors ``x``, ``y`` (and ``x_test``, ``y_test``).

    Without ``x_test``/``y_test`` a seeded split of ``x``/``y`` is made. ``normalize``:
    ``"auto"`` standardizes 2-D inputs per feature and image-like inputs (3-D and more)
    with one global mean/std; ``"feature"``, ``"global"`` or ``"none"`` force a mode.
    Labels follow :func:`labels_to_tensors` (±1 labels make a binary task).
    """
    test_fraction = check_fraction(name, "test_fraction", test_fraction)
    seed = check_int(name, "seed", seed, minimum=0)
    num_classes = check_optional_int(name, "num_classes", num_classes, minimum=1)
    normalize = check_choice(name, "normalize", normalize, _NORMALIZE_CHOICES)
    found = ", ".join(sorted(arrays)) or "none"
    for key in ("x", "y"):
        if key not in arrays:
            raise DatasetError(f"{name}: no array {key!r} (found: {found}); expected {_LAYOUT}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError(f"{name}: x_test and y_test must come together (found: {found})")
    x, y = arrays["x"], arrays["y"]
    _check_inputs(name, "x", x)
    if y.shape[:1] != x.shape[:1]:
        raise DatasetError(f"{name}: x has {x.shape[0]} samples but y has shape {tuple(y.shape)}")
    if "x_test" in arrays:
        x_test, y_test = arrays["x_test"], arrays["y_test"]
        _check_inputs(name, "x_test", x_test)
        if x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"{name}: x_test samples have shape {tuple(x_test.shape[1:])}, "
                f"x samples {tuple(x.shape[1:])}"
            )
        if y_test.shape[:1] != x_test.shape[:1]:
            raise DatasetError(
                f"{name}: x_test has {x_test.shape[0]} samples "
                f"but y_test has shape {tuple(y_test.shape)}"
            )
        x_train, y_train = x, y
    else:
        train_idx, test_idx = split_indices(int(x.shape[0]), test_fraction, seed, where=name)
        tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    y_train, y_test, classes = labels_to_tensors(name, y_train, y_test, num_classes)
    mode: Normalization
    if normalize == "auto":
        mode = "feature" if x.ndim == 2 else "global"
    else:
        mode = (
            "feature" if normalize == "feature" else "global" if normalize == "global" else "none"
        )
    x_train, x_test = normalize_inputs(x_train, x_test, mode)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=classes,
        input_shape=tuple(x.shape[1:]),
    )


def _read_npz(file: Path) -> dict[str, torch.Tensor]:
    """Arrays from a NumPy ``.npz`` file, read with ``allow_pickle=False`` (never unpickled)."""
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"npz: cannot read {file} as an .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"npz: {file} holds a single array, not an .npz archive of {_LAYOUT}")
    arrays: dict[str, torch.Tensor] = {}
    with archive:
        for key in archive.files:
            try:
                value = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                # Object arrays need pickle, which is refused: that lands here too.
                raise DatasetError(f"npz: cannot read array {key!r} of {file}: {exc}") from exc
            if value.dtype.kind not in "biuf":
                raise DatasetError(
                    f"npz: array {key!r} of {file} has dtype {value.dtype}; "
                    "only bool, integer and float arrays are accepted"
                )
            arrays[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
    return arrays


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file (read with ``safetensors.torch.load_file``)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise DatasetError(f"safetensors: cannot read {file}: {exc}") from exc


def _register_array_file(
    fmt: str, what: str, read: Callable[[Path], dict[str, torch.Tensor]]
) -> None:
    """Register the dataset ``fmt``: the arrays that ``read`` gets from a file (``what``),
    made into a dataset by :func:`dataset_from_arrays`."""

    @register_dataset(fmt)
    def load(
        path: str,
        *,
        test_fraction: float = 0.25,
        seed: int = 0,
        num_classes: int | None = None,
        normalize: str = "auto",
    ) -> Dataset:
        arrays = read(existing_file(fmt, path, f"{what} with {_LAYOUT}"))
        return dataset_from_arrays(
            fmt,
            arrays,
            test_fraction=test_fraction,
            seed=seed,
            num_classes=num_classes,
            normalize=normalize,
        )

    load.__doc__ = read.__doc__


_register_array_file("npz", "an .npz file", _read_npz)
_register_array_file("safetensors", "a .safetensors file", _read_safetensors)
