"""Dataset registry: named, seeded, normalized train/test datasets; nothing is downloaded.

>>> from canon.data import load_dataset
>>> ds = load_dataset("digits", limit_train=256)  # doctest: +SKIP
>>> ds = load_dataset("mnist:/data/mnist", adv=True)  # doctest: +SKIP

Built-in names: ``digits``, ``hmm``, ``gaussian``, ``grammar`` (made in memory), ``npz:PATH``,
``safetensors:PATH`` (array files), ``mnist:DIR``, ``fashion-mnist:DIR``, ``cifar10:DIR``
(original binary files already on disk). Every dataset also takes the options
``limit_train``, ``limit_test``, ``limit_seed``, ``adv``, ``adv_zero_fraction`` and
``adv_seed``. Inputs are float32 standardized with train-split statistics (per feature
for vectors, one global mean/std for images, none for the ±1 inputs of ``hmm``); labels
are int64 class indices, or float32 ±1 for single-output binary tasks
(``num_classes == 1``).
"""

from __future__ import annotations

from canon.data import _arrays, _images, _synthetic  # noqa: F401  (register the built-ins)
from canon.data._arrays import dataset_from_arrays as dataset_from_arrays
from canon.data._dataset import Dataset as Dataset
from canon.data._images import read_idx as read_idx
from canon.data._registry import COMMON_OPTIONS as COMMON_OPTIONS
from canon.data._registry import dataset_options as dataset_options
from canon.data._registry import list_datasets as list_datasets
from canon.data._registry import load_dataset as load_dataset
from canon.data._registry import pin_dataset as pin_dataset
from canon.data._registry import register_dataset as register_dataset
from canon.data._transforms import adversarial as adversarial
from canon.data._transforms import subset as subset

__all__ = [
    "COMMON_OPTIONS",
    "Dataset",
    "adversarial",
    "dataset_from_arrays",
    "dataset_options",
    "list_datasets",
    "load_dataset",
    "pin_dataset",
    "read_idx",
    "register_dataset",
    "subset",
]
