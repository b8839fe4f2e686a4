"""Figures: every plot kind writes PNG, SVG and PDF with labelled axes; `canon plot` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import canon
from canon import plots
from canon.cli import cli
from canon.data import load_dataset
from canon.engine import local_energy, path_curve, plane
from canon.errors import ConfigError
from canon.zoo import Zoo

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF"}
ALGOS = ("rsgd", "sgd", "adv")
MLP = ("mlp", {"in_features": 64, "hidden": [12], "classes": 10})
COMMITTEE = ("committee", {"in_features": 1000, "hidden": 3})


def written(path: Path, fmt: str) -> bool:
    """The file exists, is not empty and starts as its format must."""
    data = path.read_bytes()
    if fmt == "svg":
        return b"<svg" in data[:2000]
    return len(data) > 1000 and data.startswith(MAGIC[fmt])


def labelled(fig) -> list:
    """The figure's visible data axes (colour bars left out); each must have both labels."""
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    return axes


def random_state(model: tuple, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for an architecture."""
    torch.manual_seed(seed)
    return canon.build_model(*model).state_dict()


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, loaded once."""
    return load_dataset("digits")


@pytest.fixture(scope="module")
def records(digits):
    """Real result records on random MLPs: curves per pair class, local energies, a plane."""
    states = {a: [random_state(MLP, 10 * i + k) for k in range(2)] for i, a in enumerate(ALGOS)}
    curves: dict[str, list] = {}
    for a in ALGOS:
        for kind in ("linear", "linear_aligned", "geodesic", "bend"):
            curve = path_curve(
                states[a][0],
                states[a][1],
                MLP,
                digits,
                kind,
                points=5,
                device="cpu",
                midpoint=states["sgd"][0],
            )
            curves.setdefault(f"{a}-{a}", []).append(curve)
    energies = {
        a: [local_energy(s, MLP, digits, [0.1, 0.5], draws=2, device="cpu") for s in group]
        for a, group in states.items()
    }
    tests = {a: [0.1 * i, 0.1 * i + 0.05] for i, a in enumerate(ALGOS)}
    a, b = states["rsgd"][0], states["adv"][0]
    c = canon.align(b, a, canon.spec_from_module(canon.build_model(*MLP))).state
    raw = plane(a, b, c, MLP, digits, grid=4, device="cpu")
    normalized = plane(a, b, c, MLP, digits, grid=4, normalized=True, device="cpu")
    return {"curves": curves, "energies": energies, "tests": tests, "plane": (raw, normalized)}


@pytest.fixture(scope="module")
def binary_records():
    """Random committee machines on the hidden manifold model: flip curves and flip energies."""
    hmm = load_dataset("hmm", D=21, P=63, N=40, P_test=50)
    net = ("committee", {"in_features": 40, "hidden": 3})
    points = []
    for size in (1, 2):
        states = {
            a: [random_state(net, 5 * i + k + size) for k in range(2)] for i, a in enumerate(ALGOS)
        }
        curves = {
            f"{a}-{a}": [
                path_curve(s[0], s[1], net, hmm, kind, points=5, device="cpu", orders=2)
                for kind in ("random_flip", "random_flip_aligned")
            ]
            for a, s in states.items()
        }
        energies = {
            a: [local_energy(x, net, hmm, [0.05, 0.1], draws=2, device="cpu") for x in s]
            for a, s in states.items()
        }
        tests = {a: [0.3, 0.35] for a in ALGOS}
        points.append(plots.ScalingPoint(size, energies, tests, curves))
    return points


@pytest.mark.slow  # draws every figure; test_cli_plot_writes_the_figure stays fast
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_every_plot_writes_each_format(tmp_path, records, binary_records, fmt):
    """Each plot function writes a non-empty file of the format its suffix names."""
    raw, normalized = records["plane"]
    drawn = {
        "curves": plots.plot_curves(
            {c.kind: c for c in records["curves"]["sgd-sgd"][:3]}, tmp_path / f"curves.{fmt}"
        ),
        "paths": plots.plot_path_classes(records["curves"], tmp_path / f"paths.{fmt}"),
        "energy": plots.plot_local_energy(
            records["energies"], tmp_path / f"energy.{fmt}", test_errors=records["tests"]
        ),
        "plane": plots.plot_plane(raw, normalized, tmp_path / f"plane.{fmt}"),
        "hamming": plots.plot_hamming_paths(binary_records[0].curves, tmp_path / f"hamming.{fmt}"),
        "binary": plots.plot_binary_scaling(binary_records, tmp_path / f"binary.{fmt}"),
    }
    for name, fig in drawn.items():
        assert written(tmp_path / f"{name}.{fmt}", fmt), name
        labelled(fig)


def test_line_plots_have_legends(records, binary_records):
    """Curves, paths, local energy and the binary figures label every line in a legend."""
    figures = [
        plots.plot_path_classes(records["curves"], kinds=["linear", "geodesic", "bend"]),
        plots.plot_local_energy(records["energies"], test_errors=records["tests"]),
        plots.plot_hamming_paths(binary_records[1].curves),
        plots.plot_binary_scaling(binary_records),
    ]
    for fig in figures:
        for ax in labelled(fig):
            assert ax.get_legend() is not None
            assert len(ax.get_legend().get_texts()) >= 1
    paths = figures[0]
    assert [ax.get_title() for ax in paths.axes[:3]] == [
        "linear",
        "geodesic (normalized, aligned)",
        "one bend, geodesic legs",
    ]


def test_comparison_legend_leaves_the_curves_free(records):
    """The comparison figure's legend lies outside the axes, so it never hides the peak."""
    fig = plots.plot_curves({c.kind: c for c in records["curves"]["sgd-sgd"][:3]}, None)
    fig.canvas.draw()
    (ax,) = fig.axes
    box, area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert len(ax.get_legend().get_texts()) == 3
    assert not box.overlaps(area)


def test_path_classes_show_mean_of_pairs(records):
    """The line of a class is the mean error over its pairs, the band their spread."""
    group = [c for c in records["curves"]["adv-adv"] if c.kind == "linear"]
    x, mean, std = plots.class_curve(group * 2)
    assert x == group[0].x
    assert mean == pytest.approx(group[0].train_error)
    assert std == pytest.approx([0.0] * len(x))


@pytest.mark.slow  # `canon plot distances/table` stay fast
def test_distances_and_table_from_a_zoo(tmp_path, digits):
    """Distance and table figures read a zoo's tables; the classes come from the algo tag."""
    with Zoo.open(tmp_path / "zoo") as zoo:
        for i, algo in enumerate(ALGOS * 2):
            zoo.add(
                random_state(MLP, i),
                name=f"n{i}",
                architecture=MLP[0],
                config=MLP[1],
                dataset="digits",
                tags={"algo": algo},
            )
        tables = [zoo.barrier_table(metric=m, device="cpu") for m in ("euclidean", "geodesic")]
        barrier = zoo.barrier_table(path="linear", points=5, device="cpu")
    classes = {e: ALGOS[int(e[1:]) % 3] for e in tables[0].names}
    groups = plots.class_pairs(tables[1], classes)
    assert set(groups) == {"rsgd-rsgd", "sgd-sgd", "adv-adv", "rsgd-sgd", "rsgd-adv", "sgd-adv"}
    assert sum(len(v) for v in groups.values()) == 15
    fig = plots.plot_distances(tables, classes, tmp_path / "d.png")
    assert [ax.get_ylabel() for ax in labelled(fig)] == [
        "Euclidean distance\n(raw parameters)",
        "geodesic distance\n(normalized, aligned)",
    ]
    assert written(tmp_path / "d.png", "png")
    fig = plots.plot_table(barrier, tmp_path / "t.pdf")
    assert written(tmp_path / "t.pdf", "pdf")
    assert "barrier along linear paths" in fig.axes[0].get_title()


@pytest.mark.parametrize(
    ("name", "fmt", "message"),
    [
        ("fig.gif", None, "must end in .png, .svg, .pdf"),
        ("fig.png", "svg", "does not match"),
        ("fig", "tiff", "`format` must be one of png, svg, pdf"),
    ],
)
def test_bad_file_names_are_config_errors(records, tmp_path, name, fmt, message):
    """An unknown suffix or format, or a suffix that contradicts the format, is refused."""
    with pytest.raises(ConfigError, match=message):
        plots.plot_path_classes(records["curves"], tmp_path / name, fmt=fmt)
    assert not list(tmp_path.iterdir())


def test_format_without_suffix_is_added(records, tmp_path):
    """A path without a suffix takes the format's (PNG by default)."""
    plots.plot_local_energy(records["energies"], tmp_path / "energy")
    plots.plot_local_energy(records["energies"], tmp_path / "energy2", fmt="svg")
    assert written(tmp_path / "energy.png", "png")
    assert written(tmp_path / "energy2.svg", "svg")


def test_pair_classes_put_the_flatter_class_first():
    """Pair classes read flatter first (rsgd, sgd, adv) and order within-class pairs first."""
    assert plots.pair_class("adv", "rsgd") == "rsgd-adv"
    assert plots.pair_class("sgd", "sgd") == "sgd-sgd"
    assert plots.order_classes(["sgd-adv", "adv-adv", "rsgd-sgd", "rsgd-rsgd"]) == [
        "rsgd-rsgd",
        "adv-adv",
        "rsgd-sgd",
        "sgd-adv",
    ]


# -- canon plot ------------------------------------------------------------------------------


def invoke(zoo: Path, *args: str, code: int = 0) -> str:
    """Run `canon ARGS` in-process on ``zoo``; check the exit code; its stdout."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
    assert result.exit_code == code, (args, result.output)
    return result.stdout


@pytest.fixture(scope="module")
def plot_zoo(tmp_path_factory):
    """A zoo of random MLPs on digits (two per algorithm, one midpoint) and committee
    machines on the default hmm."""
    path = tmp_path_factory.mktemp("plot") / "zoo"
    with Zoo.open(path) as zoo:
        for i, algo in enumerate(ALGOS * 2):
            zoo.add(
                random_state(MLP, i),
                name=f"mlp-{algo}-{i // 3}",
                architecture=MLP[0],
                config=MLP[1],
                dataset="digits",
                tags={"algo": algo, "net": "mlp"},
            )
        zoo.add(
            random_state(MLP, 99),
            name="mid",
            architecture=MLP[0],
            config=MLP[1],
            dataset="digits",
            kind="midpoint",
            parents=("mlp-sgd-0", "mlp-sgd-1"),
            tags={"path": "geodesic"},
        )
        for i, algo in enumerate(ALGOS[:2] * 2):
            zoo.add(
                random_state(COMMITTEE, i),
                name=f"cm-{algo}-{i // 2}",
                architecture=COMMITTEE[0],
                config=COMMITTEE[1],
                dataset="hmm",
                tags={"algo": algo, "net": "cm"},
            )
    return path


@pytest.mark.parametrize(
    ("args", "fmt"),
    [
        (["paths", "--tag", "net=mlp", "--points", "5", "--max-pairs", "1"], "png"),
        (["bend", "--tag", "net=mlp", "--points", "5"], "svg"),
        (["energy", "mlp-sgd-0", "mlp-adv-0", "--sigma", "0.2", "--draws", "2"], "pdf"),
        (["plane", "mlp-rsgd-0", "mlp-adv-0", "--grid", "3"], "png"),
        (["distances", "--tag", "net=mlp", "--metric", "geodesic"], "png"),
        (["table", "--tag", "net=cm", "--metric", "hamming_aligned_fraction"], "png"),
        (["hamming", "--tag", "net=cm", "--points", "5"], "png"),
    ],
)
def test_cli_plot_writes_the_figure(plot_zoo, tmp_path, args, fmt):
    """`canon plot KIND` reads the zoo, writes the figure and reports it with --json."""
    out = tmp_path / f"figure.{fmt}"
    payload = json.loads(invoke(plot_zoo, "plot", *args, "--out", str(out), "--json"))
    assert payload["kind"] == args[0]
    assert payload["out"] == str(out)
    assert payload["data"]
    assert written(out, fmt)


def test_cli_plot_paths_data_by_class(plot_zoo, tmp_path):
    """`canon plot paths --json` gives every pair's curves grouped by pair class."""
    out = tmp_path / "p"
    payload = json.loads(
        invoke(
            plot_zoo,
            "plot",
            "paths",
            "--tag",
            "net=mlp",
            "--kinds",
            "geodesic",
            "--points",
            "5",
            "--out",
            str(out),
            "--format",
            "svg",
            "--json",
        )
    )
    assert payload["out"] == str(out) + ".svg"
    assert set(payload["data"]) == {
        "rsgd-rsgd",
        "sgd-sgd",
        "adv-adv",
        "rsgd-sgd",
        "rsgd-adv",
        "sgd-adv",
    }
    assert len(payload["data"]["rsgd-adv"]) == 4
    assert all(c["kind"] == "geodesic" for g in payload["data"].values() for c in g)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plot", "scatter"], "unknown plot kind `scatter`"),
        (["plot", "paths", "--kinds", "linear,zigzag"], "unknown path kind(s) `zigzag`"),
        (["plot", "paths", "--out", "fig.gif"], "must end in .png, .svg, .pdf"),
        (["plot", "table", "--format", "bmp"], "`format` must be one of png, svg, pdf"),
        (["plot", "energy", "--out", "e.pdf", "--format", "png"], "does not match"),
        (["plot", "paths", "--by", "colour", "--tag", "net=mlp"], "has no tag `colour`"),
        (["plot", "bend", "--tag", "net=cm"], "no midpoint entries"),
        (["plot", "distances", "--metric", "cosine"], "unknown distance `cosine`"),
        (["plot", "plane", "mlp-sgd-0", "nobody"], "no entry `nobody`"),
    ],
)
def test_cli_plot_bad_input_is_one_line_error(plot_zoo, tmp_path, monkeypatch, args, message):
    """Bad kinds, formats, files, tags and names exit 1 with a one-line error, no file."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [*args, "--zoo", str(plot_zoo), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".png", ".svg", ".pdf", ".gif")]
