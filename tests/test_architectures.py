"""The architecture registry: lookups, configs, user architectures."""

from __future__ import annotations

import sys
import textwrap

import pytest
from torch import nn

from canon.architectures import (
    build_model,
    get_architecture,
    list_architectures,
    register_architecture,
    resolve_config,
)
from canon.architectures._builtin import MLPConfig
from canon.errors import ConfigError, DuplicateNameError, UnknownNameError


def test_list_with_filter():
    """list_architectures filters with fnmatch patterns."""
    assert list_architectures("binary_*") == ["binary_conv", "binary_mlp"]
    assert "mlp" in list_architectures()


def test_unknown_name_suggests():
    """An unknown name raises with a did-you-mean."""
    with pytest.raises(UnknownNameError, match="did you mean `lenet`"):
        get_architecture("lenett")


def test_registering_twice_raises():
    """A name cannot be registered twice."""
    with pytest.raises(DuplicateNameError, match="`mlp` is already registered"):
        register_architecture("mlp", MLPConfig)(lambda c: nn.Linear(1, 1))


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"hiden": [3]}, "unknown config key.*`hiden`.*valid keys: in_features, hidden"),
        ({"hidden": 3}, "`hidden` of `mlp` must be a list"),
        ({"in_features": "7"}, "`in_features` of `mlp` must be an integer"),
        ({"activation": "gelu"}, "`activation` of `mlp` must be one of"),
        ({"hidden": [0]}, "`hidden` of `mlp` must be a list of .*integers from 1 to 1048576"),
    ],
)
def test_bad_configs(config, pattern):
    """Bad configs are rejected with the key at fault named."""
    with pytest.raises(ConfigError, match=pattern):
        build_model("mlp", config)


def test_resolve_config_fills_defaults():
    """resolve_config gives the full JSON-ready config."""
    config = resolve_config("lenet", {"padding": 2})
    assert config["padding"] == 2 and config["channels"] == [20, 50] and config["hidden"] == 500


def test_paper_lenet_shapes():
    """lenet defaults are the paper's: conv 20 and 50 5x5 filters, fc 500."""
    model = build_model("lenet")
    assert model.conv1.weight.shape == (20, 1, 5, 5)
    assert model.conv2.weight.shape == (50, 20, 5, 5)
    assert model.fc1.weight.shape == (500, 50 * 4 * 4)


def test_user_architecture(tmp_path, monkeypatch):
    """`module:function` loads a user factory called with the config."""
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def make(width=3):
                return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))

            def not_a_model():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_nets:make", {"width": 5})
    assert model[0].out_features == 5
    with pytest.raises(ConfigError, match=r"returned int, not an nn\.Module"):
        build_model("my_nets:not_a_model")
    with pytest.raises(ConfigError, match="has no callable `missing`"):
        build_model("my_nets:missing")
    with pytest.raises(ConfigError, match="cannot import module `no_such_module`"):
        build_model("no_such_module:make")
    sys.modules.pop("my_nets", None)
