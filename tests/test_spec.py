"""Structure specs: traced specs equal hand-checked structures; unsupported modules are named."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from strategies import Conv1dNet, FunctionalConvNet, NestedMLP, models
from torch import nn

from canon.architectures import build_model
from canon.core import Spec, spec_from_module, traced
from canon.core.spec import BatchNormTensors as BN
from canon.core.spec import CarriedAxis, OutputLayer, Producer, UnitGroup
from canon.core.spec import OutgoingAxis as Out
from canon.errors import UnsupportedModuleError


def bn(path: str, eps: float = 1e-5) -> BN:
    return BN(f"{path}.weight", f"{path}.bias", f"{path}.running_mean", f"{path}.running_var", eps)


def chain(
    name: str,
    size: int,
    symmetry: str,
    weight: str,
    bias: str | None,
    batchnorm: BN | None,
    outgoing: tuple[Out, ...],
    scale_invariant: bool = False,
) -> UnitGroup:
    """A group with one producer: a hidden layer of a chain network."""
    return UnitGroup(
        name, size, symmetry, (Producer(weight, bias, batchnorm),), outgoing, scale_invariant
    )


def structure(spec: Spec) -> Spec:
    """The spec without its tensor inventory (checked separately)."""
    return Spec(groups=spec.groups, output=spec.output)


B0, B1, B2 = (f"stages.{i}.blocks.0." for i in range(3))
S1, S2 = B1 + "shortcut.", B2 + "shortcut."


def conv_bn(conv: str, norm: str) -> Producer:
    """A bias-free convolution followed by BatchNorm, producing into a group."""
    return Producer(f"{conv}.weight", None, bn(norm))


A0 = "blocks.0."
_HEAD = OutputLayer("head.weight", "head.bias", 5)


def _stream(inputs: tuple[str, ...]) -> UnitGroup:
    """The gpt's residual stream: made by the embeddings, the attention's output
    projection and the MLP; read by the projections, the MLP and the head; LayerNorm: `none`."""
    return UnitGroup(
        "tokens",
        8,
        "none",
        (
            Producer(A0 + "attn.proj.weight", A0 + "attn.proj.bias"),
            Producer(A0 + "out.weight", A0 + "out.bias"),
        ),
        (
            *(Out(f"{A0}attn.{n}.weight") for n in inputs),
            Out(A0 + "fc.weight"),
            Out("head.weight"),
        ),
        carried=(
            CarriedAxis("tokens.weight", 1),
            CarriedAxis("positions", 2),
            *(CarriedAxis(f"{A0}{ln}.{p}") for ln in ("ln1", "ln2") for p in ("weight", "bias")),
            CarriedAxis("ln.weight"),
            CarriedAxis("ln.bias"),
        ),
    )


def _attention(
    query: str, key: tuple[str, int], value: str, value_start: int
) -> tuple[UnitGroup, UnitGroup]:
    """The two linear groups of one attention (two heads of 4): queries with the key rows
    as outgoing axes, values with the output projection's columns; one link."""
    q, k, v = (f"{A0}attn.{n}" for n in (query, key[0], value))
    link = f"{q}#heads"
    return (
        UnitGroup(
            q,
            8,
            "linear",
            (Producer(q + ".weight", q + ".bias"),),
            (Out(k + ".weight", 0, 1, key[1]), Out(k + ".bias", 0, 1, key[1])),
            heads=2,
            link=link,
        ),
        UnitGroup(
            v if not value_start else f"{v}@{value_start}",
            8,
            "linear",
            (Producer(v + ".weight", v + ".bias", None, value_start),),
            (Out(A0 + "attn.proj.weight"),),
            heads=2,
            link=link,
        ),
    )


def _mlp_hidden() -> UnitGroup:
    return chain(
        A0 + "fc", 32, "none", A0 + "fc.weight", A0 + "fc.bias", None, (Out(A0 + "out.weight"),)
    )


EXPECTED = {
    "mlp relu": (
        ("mlp", {"in_features": 5, "hidden": [4, 3], "classes": 2}),
        Spec(
            groups=(
                chain("fc1", 4, "scale", "fc1.weight", "fc1.bias", None, (Out("fc2.weight"),)),
                chain("fc2", 3, "scale", "fc2.weight", "fc2.bias", None, (Out("out.weight"),)),
            ),
            output=OutputLayer("out.weight", "out.bias", 2),
        ),
    ),
    "mlp tanh bn": (
        ("mlp", {"in_features": 5, "hidden": [4], "activation": "tanh", "batchnorm": True}),
        Spec(
            groups=(
                chain("fc1", 4, "sign", "fc1.weight", "fc1.bias", bn("bn1"), (Out("out.weight"),)),
            ),
            output=OutputLayer("out.weight", "out.bias", 10),
        ),
    ),
    "mlp sign no bias": (
        ("mlp", {"in_features": 5, "hidden": [4], "activation": "sign", "bias": False}),
        Spec(
            groups=(chain("fc1", 4, "sign", "fc1.weight", None, None, (Out("out.weight"),), True),),
            output=OutputLayer("out.weight", None, 10),
        ),
    ),
    "lenet": (
        ("lenet", {}),  # the paper's: 28x28 -> conv 24 -> pool 12 -> conv 8 -> pool 4
        Spec(
            groups=(
                chain(
                    "conv1", 20, "scale", "conv1.weight", "conv1.bias", None, (Out("conv2.weight"),)
                ),
                chain(
                    "conv2",
                    50,
                    "scale",
                    "conv2.weight",
                    "conv2.bias",
                    None,
                    (Out("fc1.weight", 1, 16),),
                ),
                chain("fc1", 500, "scale", "fc1.weight", "fc1.bias", None, (Out("out.weight"),)),
            ),
            output=OutputLayer("out.weight", "out.bias", 10),
        ),
    ),
    "vgg": (
        ("vgg", {"layers": [4, "M", 6, 6, "M"], "input_size": 8, "hidden": [5]}),
        Spec(
            groups=(
                chain(
                    "conv1",
                    4,
                    "scale",
                    "conv1.weight",
                    "conv1.bias",
                    bn("bn1"),
                    (Out("conv2.weight"),),
                ),
                chain(
                    "conv2",
                    6,
                    "scale",
                    "conv2.weight",
                    "conv2.bias",
                    bn("bn2"),
                    (Out("conv3.weight"),),
                ),
                chain(
                    "conv3",
                    6,
                    "scale",
                    "conv3.weight",
                    "conv3.bias",
                    bn("bn3"),
                    (Out("fc1.weight", 1, 4),),
                ),
                chain("fc1", 5, "scale", "fc1.weight", "fc1.bias", None, (Out("out.weight"),)),
            ),
            output=OutputLayer("out.weight", "out.bias", 10),
        ),
    ),
    "binary_mlp": (
        ("binary_mlp", {"in_features": 6, "hidden": [5, 4], "classes": 3}),
        Spec(
            groups=(
                chain("fc1", 5, "sign", "fc1.weight", None, None, (Out("fc2.weight"),), True),
                chain("fc2", 4, "sign", "fc2.weight", None, None, (Out("out.weight"),), True),
            ),
            output=OutputLayer("out.weight", None, 3),
        ),
    ),
    "committee": (
        ("committee", {"in_features": 6, "hidden": 5}),
        Spec(
            groups=(chain("hidden", 5, "none", "hidden.weight", None, None, (), True),),
            output=None,
        ),
    ),
    "perceptron": (
        ("perceptron", {"in_features": 6}),
        Spec(groups=(), output=OutputLayer("out.weight", None, 1)),
    ),
    "binary_conv": (
        ("binary_conv", {"input_size": 20, "channels": [3, 4], "hidden": [6, 5]}),
        Spec(
            groups=(
                # max-pool before the sign breaks the odd symmetry: permutations only
                chain("conv1", 3, "none", "conv1.weight", None, None, (Out("conv2.weight"),), True),
                chain(
                    "conv2", 4, "none", "conv2.weight", None, None, (Out("fc1.weight", 1, 4),), True
                ),
                chain("fc1", 6, "sign", "fc1.weight", None, None, (Out("fc2.weight"),), True),
                chain("fc2", 5, "sign", "fc2.weight", None, None, (Out("out.weight"),), True),
            ),
            output=OutputLayer("out.weight", None, 10),
        ),
    ),
    "resnet": (
        # depth 8: one block per stage; the block computes its projection shortcut first
        ("resnet", {"depth": 8}),
        Spec(
            groups=(
                UnitGroup(
                    "stem.conv",
                    16,
                    "scale",
                    (conv_bn("stem.conv", "stem.norm"), conv_bn(B0 + "conv2", B0 + "norm2")),
                    (Out(B0 + "conv1.weight"), Out(S1 + "conv.weight"), Out(B1 + "conv1.weight")),
                ),
                UnitGroup(
                    B0 + "conv1",
                    16,
                    "scale",
                    (conv_bn(B0 + "conv1", B0 + "norm1"),),
                    (Out(B0 + "conv2.weight"),),
                ),
                UnitGroup(
                    S1 + "conv",
                    32,
                    "scale",
                    (conv_bn(S1 + "conv", S1 + "norm"), conv_bn(B1 + "conv2", B1 + "norm2")),
                    (Out(S2 + "conv.weight"), Out(B2 + "conv1.weight")),
                ),
                UnitGroup(
                    B1 + "conv1",
                    32,
                    "scale",
                    (conv_bn(B1 + "conv1", B1 + "norm1"),),
                    (Out(B1 + "conv2.weight"),),
                ),
                UnitGroup(
                    S2 + "conv",
                    64,
                    "scale",
                    (conv_bn(S2 + "conv", S2 + "norm"), conv_bn(B2 + "conv2", B2 + "norm2")),
                    (Out("head.weight"),),
                ),
                UnitGroup(
                    B2 + "conv1",
                    64,
                    "scale",
                    (conv_bn(B2 + "conv1", B2 + "norm1"),),
                    (Out(B2 + "conv2.weight"),),
                ),
            ),
            output=OutputLayer("head.weight", "head.bias", 10),
        ),
    ),
    **{
        f"gpt {kind}": (
            # one block: the stream is named after the token embedding, which starts it
            ("gpt", {"vocab": 5, "context": 3, "width": 8, "heads": 2, "depth": 1, **config}),
            Spec(groups=(_stream(inputs), *attention, _mlp_hidden()), output=_HEAD),
        )
        for kind, config, inputs, attention in (
            ("separate", {}, ("q", "k", "v"), _attention("q", ("k", 0), "v", 0)),
            ("fused", {"fused": True}, ("qkv",), _attention("qkv", ("qkv", 8), "qkv", 16)),
        )
    },
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_builtin_spec_matches_hand_checked_structure(case):
    """For every built-in architecture the traced spec equals its hand-checked structure."""
    (name, config), expected = EXPECTED[case]
    model = build_model(name, config)
    spec = spec_from_module(model)
    assert structure(spec) == expected
    assert {t.name: t.shape for t in spec.tensors} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


def test_every_builtin_has_a_hand_checked_spec():
    """No built-in architecture is left without a hand-checked structure."""
    from canon.architectures import list_architectures

    assert {name for (name, _), _ in EXPECTED.values()} == set(list_architectures())


def test_custom_functional_module():
    """Functional calls (F.relu, F.max_pool2d, view, torch.tanh) trace like modules do."""
    spec = spec_from_module(FunctionalConvNet(3, 5, 2))
    assert structure(spec) == Spec(
        groups=(
            chain(
                "conv", 3, "scale", "conv.weight", "conv.bias", bn("bn"), (Out("fc.weight", 1, 16),)
            ),
            chain("fc", 5, "sign", "fc.weight", "fc.bias", None, (Out("head.weight"),)),
        ),
        output=OutputLayer("head.weight", "head.bias", 2),
    )


def test_nested_custom_modules():
    """Nested custom modules and Sequentials keep their module paths; leaky ReLU is `scale`."""
    spec = spec_from_module(NestedMLP(4, 3, 2))
    assert [(g.name, g.symmetry, g.scale_invariant) for g in spec.groups] == [
        ("body.0.linear", "scale", False),
        ("body.1.linear", "sign", True),
    ]
    assert spec.groups[0].outgoing == (Out("body.1.linear.weight"),)


def test_conv1d_bn_avgpool():
    """Conv1d, BatchNorm1d, AvgPool1d and reshape are supported; blocks follow the length."""
    spec = spec_from_module(Conv1dNet(4, 2))
    assert spec.groups[0].outgoing == (Out("out.weight", 1, 3),)
    assert spec.groups[0].producers[0].batchnorm == bn("bn")


@given(models())
def test_spec_json_round_trip(model):
    """Spec.to_dict / from_dict is a lossless round trip."""
    spec = spec_from_module(model)
    assert Spec.from_dict(spec.to_dict()) == spec


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        return self.out(h + F.relu(self.b(h)))


class WithGELU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 3), nn.GELU())
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(x))


class WithSoftmaxFn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.softmax(self.fc(x), dim=1))


class BranchAndConcat(nn.Module):
    """Units side by side with a parameter's values, which are no layer's units."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.extra = nn.Parameter(torch.zeros(1, 3))
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.a(x), self.extra.expand(len(x), 3)], dim=1))


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(torch.relu(self.fc(x))))


class BNAfterActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(torch.relu(self.fc(x))))


class GroupedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, groups=2)
        self.out = nn.Linear(4 * 2 * 2, 2)
        self.input_shape = (2, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)).flatten(1))


class InputSkip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)) + x)


class ReflectGrouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, groups=2, padding=1, padding_mode="reflect")
        self.out = nn.Linear(4, 2)
        self.input_shape = (2, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)).mean((2, 3)))


def test_grouped_convolutions_permute_within_their_groups() -> None:
    """A grouped conv on the input and one with a channel multiplier (groups = in < out):
    the units each makes permute within its groups (tests/test_grouped_conv.py)."""
    assert [g.blocks for g in spec_from_module(GroupedConv()).groups] == [2]
    assert [g.blocks for g in spec_from_module(ChannelMultiplier()).groups] == [2, 2]


class ChannelMultiplier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3)
        self.conv = nn.Conv2d(2, 4, 3, groups=2)
        self.out = nn.Linear(4, 2)
        self.input_shape = (1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(torch.relu(self.stem(x))).mean((2, 3)))


class ParamConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.extra = nn.Parameter(torch.zeros(1, 3))
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.extra, torch.relu(self.fc(x))], dim=0)
        return self.out(h)


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (WithSoftmaxFn(), r"unsupported op `softmax` in the top-level forward"),
        (BranchAndConcat(), r"op `cat` .*concatenates units|feeds two branches"),
        (Shared(), r"layer `fc` is called again on other inputs"),
        (InputSkip(), r"op `add` in the top-level forward combines the network's input"),
        (ReflectGrouped(), r"convolution `conv` uses groups=2 .*padding_mode='reflect'"),
        (ParamConcat(), r"op `cat` .*concatenates along the batch axis"),
    ],
)
def test_unsupported_modules_are_named(model, pattern):
    """Anything canon cannot follow is one clear error naming the op and module path."""
    with pytest.raises(UnsupportedModuleError, match=pattern):
        spec_from_module(model)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else self.fc(-x)


def _passing_through(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def wrapped(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return forward(self, *args, **kwargs)

    return wrapped


class TransformersLike(nn.Module):
    """Stands for a transformers model: its forward wrapped as theirs are (the class's module
    is what canon reads to say so; transformers itself is not needed)."""

    __module__ = "transformers.models.gpt2.modeling_gpt2"

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    @_passing_through
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return self.fc(input_ids)


class PythonDtypes(DataDependent):
    """Branches on values, and makes tensors with Python's types as their dtype (a
    recorded graph's code cannot write a type: it holds the dtype torch took)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = torch.tensor(1, dtype=int) * torch.ones((), dtype=bool)
        x = x * one.to(x.dtype) + torch.zeros((), dtype=float).to(x.dtype)
        return self.fc(x) if x.sum() > 0 else self.fc(-x)


@pytest.mark.parametrize("model", [DataDependent(), TransformersLike(), PythonDtypes()])
def test_forwards_symbolic_tracing_cannot_follow_are_recorded(model: nn.Module) -> None:
    """Python that branches on values, a forward wrapped as transformers wraps theirs:
    torch.fx cannot trace them, so canon records the graph by running the model once."""
    with pytest.raises(UnsupportedModuleError, match=r"torch\.fx symbolic tracing"):
        traced(model)
    spec = spec_from_module(model, (4,))
    assert spec.groups == () and spec.output == OutputLayer("fc.weight", "fc.bias", 3)


class NeedsNonZero(DataDependent):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(x.any()):
            raise ValueError("needs a non-zero input")
        return self.fc(x)


def test_models_neither_traced_nor_run_say_why_twice() -> None:
    """A model the tracer cannot follow and that fails on the recording run: both causes,
    in their own words, and what canon follows."""
    with pytest.raises(UnsupportedModuleError) as caught:
        spec_from_module(NeedsNonZero(), (4,))
    message = str(caught.value)
    assert "torch.fx symbolic tracing" in message
    assert "failed too: ValueError: needs a non-zero input" in message
    assert "canon follows Linear and Conv layers" in message


def test_residual_stream_is_one_shared_group():
    """An identity shortcut joins the groups on both sides: one group, two producers."""
    spec = spec_from_module(Residual())
    assert [(g.name, g.symmetry, g.weights) for g in spec.groups] == [
        ("a", "scale", ("a.weight", "b.weight"))
    ]
    assert spec.groups[0].outgoing == (Out("b.weight"), Out("out.weight"))
    assert spec.shared


def test_non_homogeneous_ops_leave_permutations_only():
    """GELU and a BatchNorm after an activation: symmetry `none`, BN tensors only permuted."""
    assert [g.symmetry for g in spec_from_module(WithGELU()).groups] == ["none"]
    spec = spec_from_module(BNAfterActivation())
    (group,) = spec.groups
    assert group.symmetry == "none" and group.producers[0].batchnorm is None
    assert {c.name for c in group.carried} == {
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    }


def test_unknown_input_shape_is_explained():
    """A conv net without an input shape asks for `input_shape`."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedModuleError, match="pass `input_shape`"):
        spec_from_module(model)
    assert spec_from_module(model, input_shape=(1, 4, 4)).groups[0].outgoing == (
        Out("2.weight", 1, 4),
    )


def test_tracing_leaves_the_model_unchanged():
    """Tracing restores train/eval flags and does not touch BN running statistics."""
    model = build_model("mlp", {"in_features": 4, "hidden": [3], "batchnorm": True})
    model.train()
    model.fc1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec_from_module(model)
    assert model.training and not model.fc1.training and model.bn1.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class Branches(nn.Module):
    """Two layers, one of them taken by the inputs a zero input does not stand for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.other = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() <= 0 else self.other(x)


def test_a_recorded_forward_must_read_every_tensor() -> None:
    """The recording run takes one branch: a layer it never reads is refused, by name."""
    with pytest.raises(UnsupportedModuleError, match=r"never read `other\.weight`, `other\.bias`"):
        spec_from_module(Branches(), (4,))


def test_groups_reached_only_through_linear_ops_are_marked() -> None:
    """Units between two layers with no activation (or only additions and average pooling)
    keep any invertible mixing as a symmetry, which canon does not remove: the spec says so
    for them and only for them, and the mark survives serialization."""
    model = nn.Sequential(
        nn.Linear(4, 5), nn.Identity(), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)
    )
    spec = spec_from_module(model)
    marks = {g.name: g.linear_only for g in spec.groups}
    assert marks == {"0": True, "2": False}
    again = Spec.from_dict(spec.to_dict())
    assert {g.name: g.linear_only for g in again.groups} == marks
    relu_only = spec_from_module(build_model("mlp", {"in_features": 4, "hidden": [3, 3]}))
    assert not any(g.linear_only for g in relu_only.groups)
    assert "linear_only" not in str(relu_only.to_dict())  # earlier specs serialize as before
