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
from canon.core.trace import spec_from_module
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


def test_user_architecture_input_shape_goes_where_it_is_taken(tmp_path, monkeypatch):
    """A config's input_shape is passed to a factory that names it (it may need it to
    build) and not to one that forwards **kwargs to a class that refuses unknown keywords
    (torchvision's resnet18); either way the built module carries it for tracing."""
    (tmp_path / "shape_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Module):
                def __init__(self, width=3):
                    super().__init__()
                    self.conv = nn.Conv2d(3, width, 3)

                def forward(self, x):
                    return self.conv(x).flatten(1)

            def forwarding(**kwargs):
                return Net(**kwargs)

            def sized(width=3, input_shape=(3, 8, 8)):
                net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width))
                net.seen = tuple(input_shape)
                return net
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        forwarded = build_model("shape_nets:forwarding", {"width": 4, "input_shape": [3, 6, 6]})
        assert forwarded.input_shape == (3, 6, 6) and forwarded.conv.out_channels == 4
        assert spec_from_module(forwarded).output.weight == "conv.weight"  # traced
        sized = build_model("shape_nets:sized", {"input_shape": [3, 8, 8]})
        assert sized.seen == (3, 8, 8) and sized.input_shape == (3, 8, 8)
    finally:
        sys.modules.pop("shape_nets", None)


def test_user_architecture_in_a_submodule_is_named(tmp_path, monkeypatch):
    """`package:function` where the function lives in a submodule the package imports
    (torchvision:resnet18 for torchvision.models:resnet18) names that submodule."""
    package = tmp_path / "my_zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import models\n")
    (package / "models.py").write_text(
        "from torch import nn\n\ndef tiny():\n    return nn.Sequential(nn.Linear(4, 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"did you mean `my_zoo_pkg\.models:tiny`\?"):
            build_model("my_zoo_pkg:tiny")
        with pytest.raises(ConfigError, match=r"has no callable `other`$"):
            build_model("my_zoo_pkg:other")
        assert isinstance(build_model("my_zoo_pkg.models:tiny"), nn.Sequential)
    finally:
        for name in ("my_zoo_pkg", "my_zoo_pkg.models"):
            sys.modules.pop(name, None)
