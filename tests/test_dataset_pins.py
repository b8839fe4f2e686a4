"""Datasets read from files are recorded pinned to their content.

A zoo caches results and measures errors under an entry's dataset spec. A spec that
names a path (``npz:PATH``) is recorded with the path absolute and the sha256 of the
content; a pinned spec is read only while the content still hashes to the pin, so no
result or error ever silently belongs to other data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from canon.architectures import build_model
from canon.cli import cli
from canon.data import load_dataset, pin_dataset
from canon.errors import DatasetError
from canon.zoo import Zoo

CONFIG = {"in_features": 64, "hidden": [12], "classes": 10}


def write_arrays(path: Path, start: int) -> None:
    """600 digits from ``start`` (wrapping) as an npz dataset with a test split."""
    digits = load_dataset("digits")
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    rows = np.arange(start, start + 800) % len(x)
    np.savez(path, x=x[rows[:600]], y=y[rows[:600]], x_test=x[rows[600:]], y_test=y[rows[600:]])


def nets(n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` seeded random MLP states."""
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model("mlp", CONFIG).state_dict())
    return out


def test_pin_makes_paths_absolute_and_names_the_content(tmp_path: Path) -> None:
    """A relative path is made absolute and pinned; a registered name is kept; a path that
    is not here is made absolute only; a folder's pin changes with any of its files."""
    write_arrays(tmp_path / "d.npz", 0)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        pinned = pin_dataset("npz:d.npz")
        missing = pin_dataset("npz:gone.npz")
    finally:
        os.chdir(here)
    head, _, digest = pinned.partition("#sha256=")
    assert head == f"npz:{tmp_path / 'd.npz'}" and len(digest) == 64
    assert missing == f"npz:{tmp_path / 'gone.npz'}"
    assert pin_dataset("digits") == "digits"
    assert pin_dataset(pinned) == pinned  # pinned again to the same content
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"1")
    before = pin_dataset(f"mnist:{folder}")
    (folder / "a.bin").write_bytes(b"2")
    assert pin_dataset(f"mnist:{folder}") != before


def test_a_pinned_file_is_read_only_while_it_holds_that_content(tmp_path: Path) -> None:
    """The pinned spec loads the same arrays as the bare one; once the file changes it is
    refused, saying what changed and how to name the new content."""
    path = tmp_path / "d.npz"
    write_arrays(path, 0)
    pinned = pin_dataset(f"npz:{path}")
    assert torch.equal(load_dataset(pinned).x_train, load_dataset(f"npz:{path}").x_train)
    write_arrays(path, 100)
    with pytest.raises(DatasetError, match="changed since it was recorded"):
        load_dataset(pinned)


def test_zoo_results_never_belong_to_other_data(tmp_path: Path) -> None:
    """Entries added with a relative npz path record it absolute and pinned. After the file
    changes, nothing new is computed on it (refused, the index unchanged); naming it
    again re-measures the entries, and their results equal a fresh zoo's."""
    data = tmp_path / "work" / "d.npz"
    data.parent.mkdir()
    write_arrays(data, 0)
    zoo = Zoo.init(tmp_path / "zoo")
    here = os.getcwd()
    os.chdir(data.parent)
    try:
        for i, state in enumerate(nets(2)):
            zoo.add(state, name=f"n{i}", architecture="mlp", config=CONFIG, dataset="npz:d.npz")
    finally:
        os.chdir(here)
    recorded = zoo["n0"].dataset
    assert recorded is not None and recorded.startswith(f"npz:{data}#sha256=")
    first = zoo.compare("n0", "n1", paths=["linear"], points=5, device="cpu")
    write_arrays(data, 100)  # the file changes in place
    index = (tmp_path / "zoo" / "canon.sqlite").read_bytes()
    refused = pytest.raises(DatasetError, match="changed since it was recorded")
    with Zoo.open(tmp_path / "zoo") as later, refused:  # the old content is not held now
        later.compare("n0", "n1", paths=["linear"], points=7, device="cpu")
    assert (tmp_path / "zoo" / "canon.sqlite").read_bytes() == index
    for name in ("n0", "n1"):
        zoo.edit(name, dataset=f"npz:{data}", device="cpu")
    with Zoo.open(tmp_path / "zoo") as later:
        again = later.compare("n0", "n1", paths=["linear"], points=5, device="cpu")
    fresh = Zoo.init(tmp_path / "fresh")
    for i, state in enumerate(nets(2)):
        fresh.add(state, name=f"n{i}", architecture="mlp", config=CONFIG, dataset=f"npz:{data}")
    expected = fresh.compare("n0", "n1", paths=["linear"], points=5, device="cpu")
    assert again.curves["linear"].train_error == expected.curves["linear"].train_error
    assert again.curves["linear"].train_error != first.curves["linear"].train_error
    assert zoo["n0"].metrics == fresh["n0"].metrics


def test_list_by_dataset_finds_pinned_entries(tmp_path: Path) -> None:
    """`canon list --dataset npz:PATH` (relative or absolute, with or without a pin) lists
    the entries recorded with that file; another file's are not listed."""
    root = tmp_path / "zoo"
    for name in ("d.npz", "e.npz"):
        write_arrays(tmp_path / name, 0)
    zoo = Zoo.init(root)
    for state, name in zip(nets(2), ("d", "e"), strict=True):
        dataset = f"npz:{tmp_path / f'{name}.npz'}"
        zoo.add(state, name=f"on-{name}", architecture="mlp", config=CONFIG, dataset=dataset)
    runner = CliRunner()

    def listed(dataset: str) -> list[str]:
        result = runner.invoke(cli, ["list", "--zoo", str(root), "--dataset", dataset, "--json"])
        assert result.exit_code == 0, result.output
        return [e["name"] for e in json.loads(result.output)["entries"]]

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert listed("npz:d.npz") == ["on-d"]
    finally:
        os.chdir(here)
    assert listed(f"npz:{tmp_path / 'd.npz'}") == ["on-d"]
    assert listed(zoo["on-e"].dataset or "") == ["on-e"]
    assert listed(f"npz:{tmp_path / 'D.npz'}") == []
