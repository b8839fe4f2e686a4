"""A zoo of residual networks end to end: the CLI's add, train, compare (each matching
method), table, midpoint, plane and energy, and the service, on the built-in resnet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from servers import start_server

import canon
from canon.cli import cli
from canon.data import load_dataset

pytestmark = pytest.mark.slow  # trains networks and starts a server: about a minute

CONFIG = {"depth": 8, "width": 1, "in_channels": 1, "input_size": 8, "classes": 10}
ARCH = ["--arch", "resnet", "--config", json.dumps(CONFIG)]


def invoke(zoo: Path, *args: str) -> str:
    """Run a command in-process on ``zoo``; it must succeed; its stdout."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A zoo of three small ResNets on the digits as 1x8x8 images (an npz dataset)."""
    base = tmp_path_factory.mktemp("resnets")
    digits = load_dataset("digits", image=True)
    images = base / "digits-images.npz"
    np.savez(
        images,
        x=digits.x_train.numpy(),
        y=digits.y_train.numpy(),
        x_test=digits.x_test.numpy(),
        y_test=digits.y_test.numpy(),
    )
    dataset = f"npz:{images}"
    zoo = base / "zoo"
    invoke(zoo, "init")
    for seed in (0, 1):
        invoke(
            zoo, "train", *ARCH, "--dataset", dataset, "--seed", str(seed), "--epochs", "1",
            "--name", f"r{seed}",
        )  # fmt: skip
    torch.manual_seed(2)
    checkpoint = base / "r2.safetensors"
    canon.save_state(canon.build_model("resnet", CONFIG).state_dict(), checkpoint)
    invoke(zoo, "add", str(checkpoint), *ARCH, "--dataset", dataset, "--name", "r2")
    return zoo, images


def test_spec_shows_the_shared_streams(zoo: tuple[Path, Path]) -> None:
    """`canon spec` lists each stage's stream with all its producers."""
    result = CliRunner().invoke(cli, ["spec", "resnet", "--config", json.dumps(CONFIG)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("produced by stem.conv + BatchNorm stem.norm, stages.0.blocks.0.conv2") == 1


def test_compare_with_each_matching_method(zoo: tuple[Path, Path]) -> None:
    """compare works with every matching method and records the one it used."""
    path = zoo[0]
    curves = {}
    for method in ("auto", "incoming", "weight", "activation"):
        out = invoke(
            path, "compare", "r0", "r1", "--path", "geodesic", "--points", "5", "--match",
            method, "--json",
        )  # fmt: skip
        result = json.loads(out)
        curves[method] = result["curves"]["geodesic"]
        assert result["distances"]["geodesic"] > 0
    assert curves["auto"]["options"]["method"] == "weight"  # residual: weight matching
    assert curves["activation"]["options"]["match_batch"] == 512
    assert curves["auto"] == curves["weight"]
    for curve in curves.values():
        assert len(curve["train_error"]) == 5


def test_table_midpoint_plane_energy(zoo: tuple[Path, Path]) -> None:
    """table, midpoint, plane and energy run on residual networks."""
    path = zoo[0]
    table = json.loads(invoke(path, "table", "r0", "r1", "r2", "--points", "5", "--json"))
    matrix = np.array(table["matrix"])
    assert matrix.shape == (3, 3) and np.all(matrix == matrix.T)
    assert table["options"]["method"] == "weight"
    out = invoke(path, "midpoint", "r0", "r1", "--name", "m01", "--epochs", "1", "--json")
    assert "bend_barrier" in json.loads(out)["entry"]["metrics"]
    grid = json.loads(invoke(path, "plane", "r0", "r1", "r2", "--grid", "3", "--json"))
    assert np.array(grid["errors"]).shape == (3, 3)
    energy = json.loads(invoke(path, "energy", "r0", "--sigma", "0.1", "--draws", "2", "--json"))
    assert len(energy["mean"]) == 1


def test_service_compares_residual_networks(zoo: tuple[Path, Path], tmp_path: Path) -> None:
    """canon serve runs a comparison job on a zoo of ResNets, weight-matched."""
    server = start_server(zoo[0], tmp_path / "serve.log")
    try:
        request = {"a": "r0", "b": "r2", "paths": ["linear_aligned"], "points": 5}
        response = server.post("/api/compare", json=request)
        assert response.status_code in (200, 202), response.text
        if response.status_code == 202:
            server.wait_job(response.json()["id"])
            response = server.post("/api/compare", json=request)
        curve = response.json()["curves"]["linear_aligned"]
        assert curve["options"]["method"] == "weight"
        entries = server.get("/api/entries").json()
        assert {e["name"] for e in entries["entries"]} >= {"r0", "r1", "r2"}
    finally:
        server.stop()
