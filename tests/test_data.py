"""Tests of the dataset registry ``canon.data`` (tiny files written to tmp_path; no downloads)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import canon.data._registry as registry_module
from canon.data import (
    Dataset,
    adversarial,
    dataset_options,
    list_datasets,
    load_dataset,
    read_idx,
    register_dataset,
    subset,
)
from canon.errors import ConfigError, DatasetError, DuplicateNameError, UnknownNameError

MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (independent of the library's parser)."""
    code = IDX_CODES[array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(
    folder: Path, *, gz: bool | tuple[bool, ...] = False, n_train: int = 6, n_test: int = 4
) -> dict[str, np.ndarray]:
    """Write the four MNIST-style IDX files of random 28x28 images; return the raw arrays."""
    rng = np.random.default_rng(123)
    arrays = {
        MNIST_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        MNIST_NAMES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        MNIST_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        MNIST_NAMES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    for (name, array), zipped in zip(arrays.items(), flags, strict=True):
        data = idx_bytes(array)
        if zipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def global_standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference normalization with one mean/std of the train split."""
    mean, std = train.astype(np.float64).mean(), train.astype(np.float64).std()
    return (train - mean) / std, (test - mean) / std


def assert_standardized(x: torch.Tensor, *, per_feature: bool) -> None:
    """Train inputs have mean ~0 and std ~1 (per feature, or over all entries)."""
    flat = x.reshape(x.shape[0], -1).double()
    if per_feature:
        assert flat.mean(0).abs().max() < 1e-5
        assert (flat.std(0, correction=0) - 1).abs().max() < 1e-4
    else:
        assert abs(float(flat.mean())) < 1e-5
        assert abs(float(flat.std(correction=0)) - 1) < 1e-4


def same_tensors(a: Dataset, b: Dataset) -> bool:
    """Whether the four tensors of two datasets are bitwise identical."""
    return all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("x_train", "y_train", "x_test", "y_test")
    )


# --------------------------------------------------------------------------- registry


def test_list_datasets_has_builtins_and_filters() -> None:
    """list_datasets names every built-in dataset and filters with fnmatch patterns."""
    names = list_datasets()
    for name in ("digits", "hmm", "gaussian", "npz", "safetensors", "mnist", "fashion-mnist"):
        assert name in names
    assert "cifar10" in names
    assert list_datasets("*mnist") == ["fashion-mnist", "mnist"]
    assert list_datasets("nothing*") == []


def test_unknown_name_suggests_close_match() -> None:
    """An unknown dataset name raises UnknownNameError (a KeyError) with a did-you-mean."""
    with pytest.raises(UnknownNameError, match=r"did you mean 'mnist'") as info:
        load_dataset("mnsit:/somewhere")
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="digits"):
        load_dataset("digtis")


def test_unknown_option_is_rejected_naming_valid_ones() -> None:
    """An unknown option raises ConfigError listing the valid options (and a close match)."""
    with pytest.raises(ConfigError, match="test_fraction") as info:
        load_dataset("digits", sed=3)
    assert "did you mean 'seed'" in str(info.value)
    assert "limit_train" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("digits", {"test_fraction": 1.5}),
        ("digits", {"seed": -1}),
        ("digits", {"image": "yes"}),
        ("digits", {"limit_train": 0}),
        ("digits", {"adv": 1}),
        ("digits", {"adv_zero_fraction": 1.2}),
        ("hmm", {"D": 2.5}),
        ("gaussian", {"classes": 1}),
    ],
)
def test_bad_option_values_raise_config_error(spec: str, options: dict[str, object]) -> None:
    """Option values of the wrong type or range raise ConfigError naming the option."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        load_dataset(spec, **options)


def test_path_rules() -> None:
    """File datasets need a path; path-less datasets refuse one; both forms can't mix."""
    with pytest.raises(ConfigError, match=r"needs the folder it is in: .*--dataset mnist:PATH"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="takes no path"):
        load_dataset("digits:/tmp")
    with pytest.raises(ConfigError, match="not both"):
        load_dataset("npz:/a.npz", path="/b.npz")
    assert "path" in dataset_options("npz")
    assert "path" not in dataset_options("digits")
    assert dataset_options("digits")["test_fraction"] == 0.25


def test_register_dataset_and_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered loader is loadable with its options; registering a name twice fails."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_dataset("tiny-test")
    def tiny(*, n: int = 4) -> Dataset:
        x = torch.zeros(n, 3)
        y = torch.zeros(n, dtype=torch.int64)
        return Dataset("tiny-test", x, y, x, y, num_classes=2, input_shape=(3,))

    assert load_dataset("tiny-test", n=7).num_train == 7
    with pytest.raises(DuplicateNameError):
        register_dataset("tiny-test")(tiny)
    with pytest.raises(DuplicateNameError):
        register_dataset("digits")(tiny)
    with pytest.raises(ConfigError, match="reserved"):

        @register_dataset("bad-test")
        def bad(*, adv: bool = False) -> Dataset:
            raise AssertionError


def test_dataset_validates_conventions() -> None:
    """Dataset rejects wrong dtypes, shapes and out-of-range labels; to() copies tensors."""
    x = torch.zeros(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    ds = Dataset("t", x, y, x, y, num_classes=3, input_shape=(3,))
    assert ds.to("cpu").num_train == 4 and "train=4" in repr(ds)
    with pytest.raises(DatasetError, match="outside"):
        Dataset("t", x, y, x, y, num_classes=2, input_shape=(3,))
    with pytest.raises(DatasetError, match="float32"):
        Dataset("t", x.double(), y, x, y, num_classes=3, input_shape=(3,))
    with pytest.raises(DatasetError, match="input_shape"):
        Dataset("t", x, y, x, y, num_classes=3, input_shape=(1, 3))
    with pytest.raises(DatasetError, match="-1 and \\+1"):
        Dataset("t", x, y.float(), x, y.float(), num_classes=1, input_shape=(3,))


# --------------------------------------------------------------------------- synthetic


def test_digits_split_and_standardization() -> None:
    """digits: seeded 75/25 split of 1797 samples, per-feature standardized train split."""
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert (ds.num_train, ds.num_test) == (1348, 449)
    assert ds.input_shape == (64,) and ds.num_classes == 10
    assert ds.y_train.dtype == torch.int64 and ds.x_train.dtype == torch.float32
    raw_x, raw_y = load_digits(return_X_y=True)
    labels = torch.cat([ds.y_train, ds.y_test]).sort().values
    assert torch.equal(labels, torch.from_numpy(np.sort(raw_y)))
    flat = ds.x_train.double()
    std = flat.std(0, correction=0)
    constant = std < 1e-9
    assert constant.any()  # pixel 0 is always blank: centered, not divided by zero
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()
    assert flat[:, constant].abs().max() == 0
    assert flat.mean(0).abs().max() < 1e-6
    assert (std[~constant] - 1).abs().max() < 1e-5
    # Test inputs use train statistics: a constant train pixel maps raw value v to v - mean.
    assert not torch.allclose(
        ds.x_test.double().mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-6
    )
    half = load_dataset("digits", test_fraction=0.5)
    assert (half.num_train, half.num_test) == (899, 898)  # round(898.5) == 898
    img = load_dataset("digits", image=True)
    assert img.input_shape == (1, 8, 8) and img.x_train.shape == (1348, 1, 8, 8)
    assert torch.equal(img.x_train.reshape(-1, 64), ds.x_train)
    assert raw_x.shape == (1797, 64)


def test_synthetic_determinism() -> None:
    """Same options give bitwise-identical tensors; a different seed gives different ones."""
    for spec, seed_option in (("digits", "seed"), ("hmm", "seed"), ("gaussian", "seed")):
        kwargs: dict[str, object] = {"limit_train": 100, "adv": True}
        if spec == "hmm":
            kwargs.update(D=21, P=150, N=40, P_test=30)
        if spec == "gaussian":
            kwargs.update(dim=10)
        a = load_dataset(spec, **kwargs)
        b = load_dataset(spec, **kwargs)
        assert same_tensors(a, b), spec
        c = load_dataset(spec, **{**kwargs, seed_option: 1})
        assert not same_tensors(a, c), spec
        d = load_dataset(spec, **{**kwargs, "adv_seed": 1})
        assert not torch.equal(a.x_train, d.x_train), spec
        assert not torch.equal(a.y_train, d.y_train), spec
        e = load_dataset(spec, **{**kwargs, "limit_seed": 1})
        assert not torch.equal(a.x_train, e.x_train), spec


def test_hmm_matches_independent_recomputation() -> None:
    """hmm inputs are sign(F xi / sqrt(D)) and labels the teacher's sign(w_T . xi), all ±1."""
    D, P, N, P_test, seed = 11, 60, 30, 25, 3
    ds = load_dataset("hmm", D=D, P=P, N=N, P_test=P_test, seed=seed)
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal(D)
    proj = rng.standard_normal((N, D))
    for split, count in (("train", P), ("test", P_test)):
        xi = rng.standard_normal((count, D))
        want_y = np.where(xi @ teacher >= 0, 1.0, -1.0)
        want_x = np.where(xi @ proj.T / math.sqrt(D) >= 0, 1.0, -1.0)
        assert np.array_equal(getattr(ds, f"y_{split}").numpy(), want_y)
        assert np.array_equal(getattr(ds, f"x_{split}").numpy(), want_x)
    assert ds.num_classes == 1 and ds.input_shape == (N,)
    assert ds.y_train.dtype == torch.float32
    assert set(ds.y_train.tolist()) == {-1.0, 1.0}
    default = load_dataset("hmm")
    assert (default.num_train, default.num_test, default.input_shape) == (1503, 1000, (1000,))
    assert (default.x_train.abs() == 1).all()  # ±1 inputs, not standardized


def test_gaussian_balanced_and_separable() -> None:
    """gaussian: class-balanced splits, standardized features, well separated means."""
    ds = load_dataset("gaussian", classes=3, dim=5, n_train=100, n_test=61, separation=10.0)
    assert ds.x_train.shape == (100, 5) and ds.num_classes == 3
    assert sorted(ds.y_train.bincount().tolist()) == [33, 33, 34]
    assert sorted(ds.y_test.bincount().tolist()) == [20, 20, 21]
    assert_standardized(ds.x_train, per_feature=True)
    means = torch.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(3)])
    predicted = torch.cdist(ds.x_test, means).argmin(1)
    assert (predicted == ds.y_test).float().mean() > 0.95
    overlapping = load_dataset("gaussian", classes=3, dim=5, separation=0.0)
    means = torch.stack([overlapping.x_train[overlapping.y_train == k].mean(0) for k in range(3)])
    assert (
        torch.cdist(overlapping.x_test, means).argmin(1) == overlapping.y_test
    ).float().mean() < 0.6


# --------------------------------------------------------------------------- subsets and ADV


def test_limit_takes_seeded_subset() -> None:
    """limit_train/limit_test keep a seeded subset of the original rows, in order."""
    full = load_dataset("gaussian", n_train=200, n_test=100)
    small = load_dataset("gaussian", n_train=200, n_test=100, limit_train=30, limit_test=10)
    assert (small.num_train, small.num_test) == (30, 10)
    rows = [int((full.x_train == row).all(1).nonzero()[0]) for row in small.x_train]
    assert rows == sorted(rows) and len(set(rows)) == 30
    assert torch.equal(full.y_train[rows], small.y_train)
    other = load_dataset("gaussian", n_train=200, n_test=100, limit_train=30, limit_seed=5)
    assert not torch.equal(other.x_train, small.x_train)
    assert subset(full, limit_train=10_000) is full


def test_adversarial_variant() -> None:
    """ADV: random train labels, exactly round(f*d) zeroed entries per input, test unchanged."""
    ds = load_dataset("gaussian", classes=4, dim=20, n_train=400)
    adv = adversarial(ds, zero_fraction=0.1, seed=0)
    assert adv.name == "gaussian+adv"
    assert (ds.x_train != 0).all()
    zeros = adv.x_train == 0
    assert (zeros.sum(1) == 2).all()
    assert torch.equal(adv.x_train[~zeros], ds.x_train[~zeros])
    changed = (adv.y_train != ds.y_train).float().mean()
    assert 0.6 < changed < 0.9  # uniform random labels over 4 classes change ~75%
    assert adv.y_train.min() >= 0 and adv.y_train.max() <= 3
    assert torch.equal(adv.x_test, ds.x_test) and torch.equal(adv.y_test, ds.y_test)
    assert same_tensors(load_dataset("gaussian", classes=4, dim=20, n_train=400, adv=True), adv)
    half = adversarial(ds, zero_fraction=0.5, seed=1)
    assert (half.x_train == 0).float().mean() == 0.5
    assert torch.equal(adversarial(ds, zero_fraction=0.0).x_train, ds.x_train)


def test_adversarial_binary_labels_stay_pm1() -> None:
    """ADV of a ±1 task draws ±1 float labels and zeroes about the right fraction of pixels."""
    ds = load_dataset("hmm", D=15, P=300, N=50, P_test=10)
    adv = load_dataset("hmm", D=15, P=300, N=50, P_test=10, adv=True, adv_zero_fraction=0.2)
    assert adv.y_train.dtype == torch.float32
    assert set(adv.y_train.tolist()) == {-1.0, 1.0}
    assert 0.3 < (adv.y_train != ds.y_train).float().mean() < 0.7
    assert (adv.x_train == 0).float().mean() == pytest.approx(0.2)


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize(
    ("name", "gz"), [("mnist", False), ("fashion-mnist", True), ("mnist", (True, False) * 2)]
)
def test_mnist_like_loads_idx_files(tmp_path: Path, name: str, gz: bool | tuple[bool, ...]) -> None:
    """MNIST-style IDX files (plain, .gz or mixed) load with shapes, labels, global norm."""
    raw = write_mnist(tmp_path, gz=gz)
    ds = load_dataset(f"{name}:{tmp_path}")
    assert ds.name == name and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert torch.equal(ds.y_train, torch.from_numpy(raw[MNIST_NAMES[1]].astype(np.int64)))
    assert torch.equal(ds.y_test, torch.from_numpy(raw[MNIST_NAMES[3]].astype(np.int64)))
    want_train, want_test = global_standardize(raw[MNIST_NAMES[0]], raw[MNIST_NAMES[2]])
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), want_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test[:, 0].numpy(), want_test, atol=1e-5)
    assert_standardized(ds.x_train, per_feature=False)


def test_idx_dims_come_from_file(tmp_path: Path) -> None:
    """input_shape follows the IDX dims; read_idx decodes big-endian multi-byte types."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 7, 9), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    for name, arr in zip(MNIST_NAMES, (images, labels, images[:2], labels[:2]), strict=True):
        (tmp_path / name).write_bytes(idx_bytes(arr))
    ds = load_dataset("mnist", path=tmp_path)
    assert ds.input_shape == (1, 7, 9) and ds.x_test.shape == (2, 1, 7, 9)
    ints = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    (tmp_path / "ints.idx").write_bytes(idx_bytes(ints))
    assert np.array_equal(read_idx(tmp_path / "ints.idx"), ints.astype(np.int32))
    floats = np.array([1.5, -2.25], dtype=">f4")
    (tmp_path / "floats.idx.gz").write_bytes(gzip.compress(idx_bytes(floats)))
    assert np.array_equal(read_idx(tmp_path / "floats.idx.gz"), floats)


def test_truncated_or_corrupt_idx_is_clear_error(tmp_path: Path) -> None:
    """A truncated IDX file (plain or gz) or a wrong magic number raises a DatasetError."""
    write_mnist(tmp_path)
    images = tmp_path / MNIST_NAMES[0]
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated IDX"):
        load_dataset(f"mnist:{tmp_path}")
    zipped = tmp_path / "gz"
    write_mnist(zipped, gz=True)
    labels = zipped / f"{MNIST_NAMES[3]}.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_dataset(f"mnist:{zipped}")
    swapped = tmp_path / "swapped"
    arrays = write_mnist(swapped)
    (swapped / MNIST_NAMES[1]).write_bytes(idx_bytes(arrays[MNIST_NAMES[0]]))
    with pytest.raises(DatasetError, match="magic number 0x00000803, expected 0x00000801"):
        load_dataset(f"mnist:{swapped}")
    (tmp_path / "junk").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_missing_mnist_files_are_named(tmp_path: Path) -> None:
    """A missing IDX file or folder raises DatasetError naming it and what to put where."""
    write_mnist(tmp_path)
    (tmp_path / MNIST_NAMES[3]).unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset(f"fashion-mnist:{tmp_path}")
    message = str(info.value)
    assert f"{tmp_path / MNIST_NAMES[3]}(.gz) not found" in message
    assert "train-images-idx3-ubyte(.gz)" not in message  # present files are not blamed
    assert "Fashion-MNIST" in message and "nothing is downloaded" in message
    with pytest.raises(DatasetError, match=r"folder .*nowhere not found"):
        load_dataset(f"mnist:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder: Path, per_batch: int = 3, n_test: int = 2) -> tuple[np.ndarray, ...]:
    """Write six tiny CIFAR-10 binary batches; return (train pixels, labels, test ...)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, count in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [
        ("test_batch.bin", n_test)
    ]:
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        parts.append((pixels.reshape(count, 3, 32, 32), labels))
    train_x = np.concatenate([p for p, _ in parts[:5]])
    train_y = np.concatenate([y for _, y in parts[:5]])
    return train_x, train_y, parts[5][0], parts[5][1]


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    """CIFAR-10 batches (also inside cifar-10-batches-bin/) load with shapes and labels."""
    train_x, train_y, test_x, test_y = write_cifar(tmp_path / "cifar-10-batches-bin")
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert torch.equal(ds.y_train, torch.from_numpy(train_y.astype(np.int64)))
    assert torch.equal(ds.y_test, torch.from_numpy(test_y.astype(np.int64)))
    want_train, want_test = global_standardize(train_x, test_x)
    np.testing.assert_allclose(ds.x_train.numpy(), want_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), want_test, atol=1e-5)
    assert_standardized(ds.x_train, per_feature=False)
    direct = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-bin'}")
    assert same_tensors(ds, direct)


def test_cifar10_missing_or_truncated(tmp_path: Path) -> None:
    """A missing CIFAR batch is named; a batch that is not whole records is rejected."""
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DatasetError, match=r"test_batch\.bin not found") as info:
        load_dataset(f"cifar10:{tmp_path}")
    assert "data_batch_1.bin not found" not in str(info.value)
    write_cifar(tmp_path)
    batch = tmp_path / "data_batch_4.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"data_batch_4\.bin .*3073-byte records"):
        load_dataset(f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------- npz and safetensors


def test_npz_with_test_arrays(tmp_path: Path) -> None:
    """npz with x, y, x_test, y_test: per-feature normalization from train statistics."""
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, (40, 6))
    x_test = rng.normal(5.0, 3.0, (9, 6))
    y, y_test = rng.integers(0, 4, 40), rng.integers(0, 4, 9)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.input_shape == (6,) and ds.num_classes == 4
    assert torch.equal(ds.y_train, torch.from_numpy(y)) and ds.y_test.dtype == torch.int64
    mean, std = x.mean(0), x.std(0)
    np.testing.assert_allclose(ds.x_train.numpy(), (x - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), (x_test - mean) / std, atol=1e-5)
    assert_standardized(ds.x_train, per_feature=True)
    raw = load_dataset(f"npz:{tmp_path / 'd.npz'}", normalize="none", num_classes=7)
    assert np.array_equal(raw.x_train.numpy(), x.astype(np.float32)) and raw.num_classes == 7


def test_npz_split_images_and_binary_labels(tmp_path: Path) -> None:
    """npz without a test pair is split by seed; image inputs get one global mean/std."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 1, 4, 4)).astype(np.uint8)
    y = np.where(rng.random(20) < 0.5, -1, 1)
    np.savez(tmp_path / "img.npz", x=x, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'img.npz'}")
    assert (ds.num_train, ds.num_test) == (15, 5)
    assert ds.input_shape == (1, 4, 4) and ds.num_classes == 1
    assert ds.y_train.dtype == torch.float32
    assert set(torch.cat([ds.y_train, ds.y_test]).tolist()) <= {-1.0, 1.0}
    assert_standardized(ds.x_train, per_feature=False)
    again = load_dataset(f"npz:{tmp_path / 'img.npz'}")
    other = load_dataset(f"npz:{tmp_path / 'img.npz'}", seed=1)
    assert same_tensors(ds, again) and not same_tensors(ds, other)


class _Tripwire:
    """An object whose unpickling would set a flag: proves nothing is unpickled."""

    fired = False

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_fire_tripwire, ())


def _fire_tripwire() -> None:
    _Tripwire.fired = True


def test_npz_refuses_pickles_and_bad_files(tmp_path: Path) -> None:
    """An object-array npz is rejected without unpickling; other bad npz files too."""
    objects = np.empty(3, dtype=object)
    objects[:] = [_Tripwire(), _Tripwire(), _Tripwire()]
    np.savez(tmp_path / "evil.npz", x=objects, y=np.zeros(3))
    with pytest.raises(DatasetError, match="cannot read array 'x'"):
        load_dataset(f"npz:{tmp_path / 'evil.npz'}")
    assert not _Tripwire.fired
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DatasetError, match=r"no array 'y' \(found: labels, x\)"):
        load_dataset(f"npz:{tmp_path / 'noy.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DatasetError, match=r"junk\.npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    np.savez(tmp_path / "frac.npz", x=np.zeros((4, 2)), y=np.array([0.5, 1, 2, 0]))
    with pytest.raises(DatasetError, match="labels must be integers"):
        load_dataset(f"npz:{tmp_path / 'frac.npz'}")


def test_safetensors_file(tmp_path: Path) -> None:
    """safetensors with x, y, x_test, y_test loads normalized with the right labels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=gen) * 4 + 2
    x_test = torch.randn(8, 5, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)
    y_test = torch.randint(0, 3, (8,), generator=gen)
    save_file({"x": x, "y": y, "x_test": x_test, "y_test": y_test}, str(tmp_path / "d.st"))
    ds = load_dataset("safetensors", path=tmp_path / "d.st")
    assert ds.input_shape == (5,) and ds.num_classes == 3
    assert torch.equal(ds.y_train, y) and torch.equal(ds.y_test, y_test)
    mean, std = x.double().mean(0), x.double().std(0, correction=0)
    torch.testing.assert_close(ds.x_test.double(), (x_test.double() - mean) / std)
    assert_standardized(ds.x_train, per_feature=True)
    (tmp_path / "bad.st").write_bytes(b"\x00" * 5)
    with pytest.raises(DatasetError, match=r"bad\.st"):
        load_dataset(f"safetensors:{tmp_path / 'bad.st'}")


@pytest.mark.parametrize("name", ["npz", "safetensors"])
def test_missing_array_file_is_named(tmp_path: Path, name: str) -> None:
    """A missing npz/safetensors file raises DatasetError naming the file."""
    missing = tmp_path / "absent.file"
    with pytest.raises(DatasetError, match=f"{name}: .*absent.file not found"):
        load_dataset(f"{name}:{missing}")


def test_grammar_is_a_seeded_markov_language() -> None:
    """Windows slide over one text (each window's label is the next window's last token),
    each pair of tokens is followed by at most `branching` tokens, the same seed gives
    the same tensors, and impossible options are refused."""
    ds = load_dataset("grammar", vocab=6, order=2, branching=2, context=5, n_train=300)
    x, y = ds.x_train.long(), ds.y_train
    assert ds.input_shape == (5,) and ds.num_classes == 6 and x.dtype == torch.int64
    assert torch.equal(x[1:, :-1], x[:-1, 1:]) and torch.equal(y[:-1], x[1:, -1])
    follows: dict[tuple[int, int], set[int]] = {}
    for window, label in zip(x.tolist(), y.tolist(), strict=True):
        follows.setdefault((window[-2], window[-1]), set()).add(label)
    assert max(len(s) for s in follows.values()) <= 2
    again = load_dataset("grammar", vocab=6, order=2, branching=2, context=5, n_train=300)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    with pytest.raises(DatasetError, match="branching"):
        load_dataset("grammar", vocab=3, branching=4)
    with pytest.raises(DatasetError, match="contexts"):
        load_dataset("grammar", vocab=256, order=4)
