"""Path kinds and training algorithms are registries, and every choice list derives from them."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
import torch

from canon.engine import kinds
from canon.engine.kinds import (
    ALGORITHMS,
    DEFAULT_PATHS,
    MIDPOINT_PATHS,
    PATH_KINDS,
    bend_kind,
    get_algorithm,
    get_path_kind,
    list_algorithms,
    list_path_kinds,
    register_algorithm,
    register_path_kind,
)
from canon.errors import ConfigError, DuplicateNameError

SMALL = ("mlp", {"in_features": 4, "hidden": [8], "classes": 3})


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(kinds, "_PATH_KINDS", dict(kinds._PATH_KINDS))
    monkeypatch.setattr(kinds, "_ALGORITHMS", dict(kinds._ALGORITHMS))


def data(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_builtin_kinds_in_order() -> None:
    """The built-in path kinds and algorithms keep their order; the derived lists agree."""
    assert PATH_KINDS == (
        "linear",
        "linear_aligned",
        "geodesic",
        "bend",
        "bend_linear",
        "bend_linear_aligned",
        "random_flip",
        "random_flip_aligned",
    )
    assert ALGORITHMS == ("sgd", "rsgd", "adv") == tuple(list_algorithms())
    assert DEFAULT_PATHS == ("linear", "linear_aligned", "geodesic")
    assert MIDPOINT_PATHS == ("geodesic", "linear", "linear_aligned")
    assert set(DEFAULT_PATHS) <= set(list_path_kinds(comparable=True))


def test_comparable_is_the_complement_of_needing_a_midpoint() -> None:
    """Comparable kinds are exactly those without a midpoint; bends name their base path."""
    comparable = list_path_kinds(comparable=True)
    assert comparable == [
        "linear",
        "linear_aligned",
        "geodesic",
        "random_flip",
        "random_flip_aligned",
    ]
    assert list_path_kinds(comparable=False) == list_path_kinds("bend*")
    for name in PATH_KINDS:
        info = get_path_kind(name)
        assert info.comparable == (not info.needs_midpoint)
        assert (info.bend_of is not None) == info.needs_midpoint
    assert {p: bend_kind(p) for p in MIDPOINT_PATHS} == {
        "geodesic": "bend",
        "linear": "bend_linear",
        "linear_aligned": "bend_linear_aligned",
    }
    assert get_path_kind("random_flip").orders and not get_path_kind("linear").orders


def test_unknown_names_suggest_close_ones() -> None:
    """An unknown path kind, algorithm or midpoint path is a ConfigError offering the closest."""
    with pytest.raises(ConfigError, match=r"unknown path kind `geodesc`; did you mean `geodesic`"):
        get_path_kind("geodesc")
    with pytest.raises(ConfigError, match=r"unknown algorithm `rsdg`; did you mean `rsgd`"):
        get_algorithm("rsdg")
    with pytest.raises(ConfigError, match="choose one of linear, linear_aligned"):
        get_path_kind("zigzag")
    with pytest.raises(ConfigError, match="`path` must be one of geodesic, linear"):
        bend_kind("bend")


@pytest.mark.usefixtures("scratch")
def test_registering_twice_raises() -> None:
    """A path kind or an algorithm registered twice raises; the first stays."""
    first = get_path_kind("linear")
    with pytest.raises(DuplicateNameError, match="path kind `linear` is already registered"):
        register_path_kind("linear")(lambda ends: [])
    assert get_path_kind("linear") is first
    with pytest.raises(DuplicateNameError, match="algorithm `sgd` is already registered"):
        register_algorithm("sgd", lr=0.1, momentum=0.0)(lambda setup: None)
    with pytest.raises(ConfigError, match="identifier"):
        register_path_kind("two words")
    with pytest.raises(ConfigError, match="cannot be comparable"):
        register_path_kind("odd", needs_midpoint=True, comparable=True)
    with pytest.raises(ConfigError, match="`bend_of`"):
        register_path_kind("odd", needs_midpoint=True, bend_of="nowhere")


@pytest.mark.usefixtures("scratch")
def test_a_registered_path_kind_is_used() -> None:
    """path_curve dispatches through the registry: a user kind is listed and evaluated."""
    from canon.core.paths import linear_path
    from canon.engine import path_curve
    from canon.engine.train import train

    @register_path_kind("backwards", label="linear, b to a")
    def backwards(ends):
        return [linear_path(ends.a, ends.b, 1 - ends.x)]

    assert "backwards" in list_path_kinds(comparable=True)
    assert get_path_kind("backwards").build is backwards
    xy = data()
    a = train(SMALL, xy, seed=0, epochs=2).state
    b = train(SMALL, xy, seed=1, epochs=2).state
    forth = path_curve(a, b, SMALL, xy, "linear", points=5, device="cpu")
    back = path_curve(a, b, SMALL, xy, "backwards", points=5, device="cpu")
    assert back.kind == "backwards"
    assert back.train_error == forth.train_error[::-1]


@pytest.mark.usefixtures("scratch")
def test_a_registered_algorithm_is_used() -> None:
    """train dispatches through the registry: a user algorithm's trainer and defaults apply."""
    from canon.engine.train import train, train_sgd

    calls = []

    @register_algorithm("plain", lr=0.1, momentum=0.0, min_replicas=0)
    def plain(setup):
        calls.append(setup.epochs)
        return train_sgd(setup)

    assert "plain" in list_algorithms()
    result = train(SMALL, data(), "plain", epochs=2)
    assert calls == [2]
    assert result.algo == "plain"
    assert result.options["lr"] == 0.1 and result.options["momentum"] == 0.0
    with pytest.raises(ConfigError, match="at least 2 replicas"):
        train(SMALL, data(), "rsgd", replicas=1)


def _choices(command: click.Command, option: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == option]
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def test_cli_choices_derive_from_the_registries() -> None:
    """The CLI's --path and --algo choices are the registries' names."""
    from canon.cli import _analysis_commands as commands
    from canon.cli import _plot_commands as plots

    assert _choices(commands.compare, "paths") == list_path_kinds(comparable=True)
    assert _choices(commands.table, "path") == list_path_kinds(comparable=True)
    assert _choices(commands.train, "algo") == list_algorithms()
    assert _choices(commands.midpoint, "path") == list(MIDPOINT_PATHS)
    (kinds_option,) = [p for p in plots.paths.params if p.name == "kinds"]
    assert kinds_option.default == ",".join(DEFAULT_PATHS)


def test_service_choices_derive_from_the_registries() -> None:
    """The service's path lists and its request schemas' enums are the registries' names."""
    pytest.importorskip("fastapi")
    from canon.service import _schemas, _work

    assert tuple(list_path_kinds(comparable=True)) == _work.COMPARABLE_PATHS
    assert _work.DEFAULT_PATHS == DEFAULT_PATHS
    assert _work.MIDPOINT_PATHS == MIDPOINT_PATHS
    compare = _schemas.CompareRequest.model_json_schema()
    assert compare["properties"]["paths"]["items"]["enum"] == list_path_kinds(comparable=True)
    midpoint = _schemas.MidpointRequest.model_json_schema()
    assert midpoint["properties"]["path"]["enum"] == list(MIDPOINT_PATHS)
    assert _schemas.CompareRequest(a="x", b="y").paths == list(DEFAULT_PATHS)


def test_plot_labels_come_from_the_registry() -> None:
    """A plot panel's title is the kind's registered label; an unregistered kind its name."""
    pytest.importorskip("matplotlib")
    from canon.plots._style import kind_label, kind_through_midpoint

    assert kind_label("bend") == get_path_kind("bend").label == "one bend, geodesic legs"
    assert kind_label("mystery") == "mystery"
    assert kind_through_midpoint("bend_linear") and not kind_through_midpoint("geodesic")
    assert not kind_through_midpoint("mystery")


def test_registries_load_without_torch() -> None:
    """Importing the registries (as the command line does) imports neither torch nor scipy."""
    code = (
        "import sys, canon.engine.kinds as k; k.list_path_kinds(); "
        "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter importing torch
def test_engine_exports_survive_submodule_imports() -> None:
    """`canon.engine.train` stays the function once the submodule of that name is imported."""
    code = (
        "import canon.engine, canon.engine.kinds as k; k.list_algorithms(); "
        "import canon.engine.train as sub; from canon.engine import train; "
        "from canon.engine.train import train as function; "
        "print(train is function is canon.engine.train is sub, callable(train))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True True"
