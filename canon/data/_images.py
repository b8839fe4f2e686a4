"""Image datasets read from their original binary files: MNIST, Fashion-MNIST, CIFAR-10.

Nothing is downloaded: the files must already be in the folder given in the spec
(``mnist:DIR``, ``fashion-mnist:DIR``, ``cifar10:DIR``). Pixels are standardized with a
single global mean and std of the train split; labels are int64 class indices 0..9.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from canon.data._dataset import Dataset, normalize_inputs
from canon.data._registry import register_dataset
from canon.errors import DatasetError

__all__ = ["read_idx"]

# IDX type codes (third magic byte) and their big-endian element types.
_IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_SUBFOLDER = "cifar-10-batches-bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_bytes(file: Path) -> bytes:
    raw = file.read_bytes()
    if file.name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{file}: broken or truncated gzip file: {exc}") from exc
    return raw


def _parse_idx(data: bytes, where: str) -> tuple[int, np.ndarray]:
    """Return ``(magic, array)`` for the IDX bytes ``data``; errors name ``where``."""
    if len(data) < 4:
        raise DatasetError(
            f"{where}: truncated IDX file: {len(data)} bytes, no 4-byte magic number"
        )
    magic = struct.unpack(">I", data[:4])[0]
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _IDX_TYPES or ndim == 0:
        raise DatasetError(
            f"{where}: not an IDX file: magic number 0x{magic:08x} is not "
            "00 00 <type 08/09/0B/0C/0D/0E> <ndim >= 1>"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{where}: truncated IDX file: {len(data)} bytes, the header needs {header}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated IDX file" if found < expected else "IDX file has trailing bytes"
        raise DatasetError(
            f"{where}: {problem}: dims {dims} need {expected} data bytes, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return magic, array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file (plain, or gzip-compressed) into an array of its stored dims.

    Validates the magic number (``00 00 <type> <ndim>``), the big-endian dimension
    sizes and that the data is exactly as long as the dims say (a truncated file raises
    DatasetError). Multi-byte values are converted to native byte order.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(f"{file}: IDX file not found")
    return _parse_idx(_read_bytes(file), str(file))[1]


def _missing_folder(name: str, folder: Path, what: str) -> DatasetError:
    return DatasetError(
        f"{name}: folder {folder} not found; put {what} in {folder} (nothing is downloaded)"
    )


def _load_mnist_like(name: str, title: str, path: str) -> Dataset:
    folder = Path(path).expanduser()
    what = f"the four {title} IDX files ({', '.join(_MNIST_FILES)}), each plain or .gz,"
    if not folder.is_dir():
        raise _missing_folder(name, folder, what)
    files: dict[str, Path] = {}
    missing: list[str] = []
    for stem in _MNIST_FILES:
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(f"{folder / stem}(.gz)")
        else:
            files[stem] = found
    if missing:
        raise DatasetError(
            f"{name}: {', '.join(missing)} not found; put {what} in {folder} "
            "(nothing is downloaded)"
        )
    arrays: dict[str, np.ndarray] = {}
    for stem, file in files.items():
        magic, array = _parse_idx(_read_bytes(file), str(file))
        want = _LABELS_MAGIC if "labels" in stem else _IMAGES_MAGIC
        if magic != want:
            kind = "labels: unsigned bytes, 1 dim" if want == _LABELS_MAGIC else "images: 3 dims"
            raise DatasetError(
                f"{name}: {file} has magic number 0x{magic:08x}, expected 0x{want:08x} ({kind})"
            )
        arrays[stem] = array
    images = {"train": arrays[_MNIST_FILES[0]], "test": arrays[_MNIST_FILES[2]]}
    labels = {"train": arrays[_MNIST_FILES[1]], "test": arrays[_MNIST_FILES[3]]}
    for split in ("train", "test"):
        if images[split].shape[0] != labels[split].shape[0]:
            raise DatasetError(
                f"{name}: {split} split has {images[split].shape[0]} images "
                f"but {labels[split].shape[0]} labels"
            )
        if labels[split].size and int(labels[split].max()) > 9:
            raise DatasetError(f"{name}: {split} labels exceed 9 (max {int(labels[split].max())})")
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise DatasetError(
            f"{name}: train images are {images['train'].shape[1:]} "
            f"but test images are {images['test'].shape[1:]}"
        )
    x_train, x_test = normalize_inputs(
        torch.from_numpy(images["train"][:, None]),
        torch.from_numpy(images["test"][:, None]),
        "global",
    )
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=torch.from_numpy(labels["train"].astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy(labels["test"].astype(np.int64)),
        num_classes=10,
        input_shape=(1, *images["train"].shape[1:]),
    )


@register_dataset("mnist")
def _mnist(path: str) -> Dataset:
    """MNIST from its four IDX files in ``path``: 60000/10000 images, shape (1, 28, 28)."""
    return _load_mnist_like("mnist", "MNIST", path)


@register_dataset("fashion-mnist")
def _fashion_mnist(path: str) -> Dataset:
    """Fashion-MNIST from its four IDX files in ``path`` (same layout and names as MNIST)."""
    return _load_mnist_like("fashion-mnist", "Fashion-MNIST", path)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    data = file.read_bytes()
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DatasetError(
            f"cifar10: {file} has {len(data)} bytes, not a whole number of "
            f"{_CIFAR_RECORD}-byte records (1 label byte + 3072 pixel bytes); truncated?"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if int(labels.max()) > 9:
        raise DatasetError(f"cifar10: {file} holds label {int(labels.max())}; labels must be 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


@register_dataset("cifar10")
def _cifar10(path: str) -> Dataset:
    """CIFAR-10 binary version from ``path`` (or ``path/cifar-10-batches-bin``): (3, 32, 32).

    Reads ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and ``test_batch.bin``;
    each record is 1 label byte followed by 3072 pixel bytes (R, G, B planes).
    """
    folder = Path(path).expanduser()
    names = (*_CIFAR_TRAIN, _CIFAR_TEST)
    what = (
        f"the CIFAR-10 binary files ({', '.join(names)}) in {folder} "
        f"or in {folder / _CIFAR_SUBFOLDER}"
    )
    if not folder.is_dir():
        raise DatasetError(
            f"cifar10: folder {folder} not found; put {what} (nothing is downloaded)"
        )
    base = folder
    inner = folder / _CIFAR_SUBFOLDER
    if not (folder / _CIFAR_TRAIN[0]).is_file() and inner.is_dir():
        base = inner
    missing = [str(base / n) for n in names if not (base / n).is_file()]
    if missing:
        raise DatasetError(
            f"cifar10: {', '.join(missing)} not found; put {what} (nothing is downloaded)"
        )
    train = [_read_cifar_batch(base / n) for n in _CIFAR_TRAIN]
    x_test_u8, y_test = _read_cifar_batch(base / _CIFAR_TEST)
    x_train, x_test = normalize_inputs(
        torch.from_numpy(np.concatenate([x for x, _ in train])),
        torch.from_numpy(x_test_u8.copy()),
        "global",
    )
    return Dataset(
        name="cifar10",
        x_train=x_train,
        y_train=torch.from_numpy(np.concatenate([y for _, y in train])),
        x_test=x_test,
        y_test=torch.from_numpy(y_test),
        num_classes=10,
        input_shape=(3, 32, 32),
    )
