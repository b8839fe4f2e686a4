"""What each per-unit op of a traced network does to its units' scale and sign.

The tracer (:mod:`canon.core.trace`) reads a unit group's symmetry off the ops
its units pass through (DESIGN §3, §3b): ``scale`` when every op is
positively homogeneous, ``sign`` when every op is odd, else ``none``. This
module is the catalogue: activations, pooling, reshapes and read-outs by
module class, function and method name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from canon.core.modules import Sign, sign_ste

__all__ = ["Op", "function_op", "library_response_norm", "module_op", "op_name"]


@dataclass(frozen=True)
class Op:
    """What a per-unit op does to a unit's scale and sign."""

    name: str
    homogeneous: bool  # f(a x) = a f(x) for a > 0
    odd: bool  # f(-x) = -f(x)
    invariant: bool = False  # f(a x) = f(x) for a > 0
    kind: str = "elementwise"  # elementwise | pool | reshape | readout | reduce


def _relu(name: str) -> Op:
    return Op(name, homogeneous=True, odd=False)


def linear(name: str, kind: str = "elementwise") -> Op:
    """An op that commutes with any per-unit factor (identity, averaging, reshaping)."""
    return Op(name, homogeneous=True, odd=True, kind=kind)


def plain(name: str) -> Op:
    """An elementwise op with no scale or sign symmetry (GELU, SiLU, norm layers...)."""
    return Op(name, homogeneous=False, odd=False)


_TANH = Op("tanh", homogeneous=False, odd=True)
_SIGN = Op("sign", homogeneous=False, odd=True, invariant=True)
_MAXPOOL = Op("max_pool", homogeneous=True, odd=False, kind="pool")
_AVGPOOL = linear("avg_pool", "pool")
# nearest, linear, bilinear... : each output a fixed combination of one channel's inputs
_UPSAMPLE = linear("interpolate", "pool")
RESHAPE = linear("reshape", "reshape")
READOUT = linear("readout", "readout")

_MODULE_OPS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Op], ...] = (
    ((nn.ReLU, nn.LeakyReLU), _relu("relu")),
    (nn.Tanh, _TANH),
    (nn.Softsign, Op("softsign", homogeneous=False, odd=True)),
    (nn.Hardtanh, Op("hardtanh", homogeneous=False, odd=False)),
    (Sign, _SIGN),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _MAXPOOL),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _MAXPOOL),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _AVGPOOL),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _AVGPOOL),
    (nn.Upsample, _UPSAMPLE),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity), linear("identity")),
    (nn.Flatten, RESHAPE),
    (
        (
            nn.ReLU6,
            nn.GELU,
            nn.SiLU,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.ELU,
            nn.CELU,
            nn.SELU,
            nn.Sigmoid,
            nn.Softplus,
            nn.Mish,
        ),
        plain("activation"),
    ),
)

_FUNCTION_OPS: dict[Callable[..., Any], Op] = {
    F.relu: _relu("relu"),
    torch.relu: _relu("relu"),
    F.relu_: _relu("relu"),
    torch.relu_: _relu("relu"),
    F.leaky_relu: _relu("leaky_relu"),
    torch.tanh: _TANH,
    F.tanh: _TANH,
    torch.sign: _SIGN,
    sign_ste: _SIGN,
    F.max_pool1d: _MAXPOOL,
    F.max_pool2d: _MAXPOOL,
    F.max_pool3d: _MAXPOOL,
    F.adaptive_max_pool1d: _MAXPOOL,
    F.adaptive_max_pool2d: _MAXPOOL,
    F.avg_pool1d: _AVGPOOL,
    F.avg_pool2d: _AVGPOOL,
    F.adaptive_avg_pool1d: _AVGPOOL,
    F.adaptive_avg_pool2d: _AVGPOOL,
    F.interpolate: _UPSAMPLE,
    F.dropout: linear("dropout"),
    torch.flatten: RESHAPE,
    torch.sum: READOUT,
    torch.mean: READOUT,
    F.relu6: plain("relu6"),
    F.gelu: plain("gelu"),
    F.silu: plain("silu"),
    F.hardswish: plain("hardswish"),
    F.hardsigmoid: plain("hardsigmoid"),
    F.elu: plain("elu"),
    F.selu: plain("selu"),
    F.celu: plain("celu"),
    F.mish: plain("mish"),
    F.softplus: plain("softplus"),
    F.sigmoid: plain("sigmoid"),
    torch.sigmoid: plain("sigmoid"),
    torch.clone: linear("clone"),  # Zamba2's copy of the embeddings for its shared block
    torch.clamp: plain("clamp"),  # by numbers, the same for every unit (Bailing's MLPs)
}

_METHOD_OPS: dict[str, Op] = {
    "relu": _relu("relu"),
    "relu_": _relu("relu"),
    "tanh": _TANH,
    "sign": _SIGN,
    "sigmoid": plain("sigmoid"),
    "clamp": plain("clamp"),
    "flatten": RESHAPE,
    "view": RESHAPE,
    "reshape": RESHAPE,
    "reshape_as": RESHAPE,  # to another tensor's shape (LeViT's BatchNorm over tokens)
    "view_as": RESHAPE,
    "squeeze": RESHAPE,
    "unsqueeze": RESHAPE,
    "contiguous": linear("contiguous"),
    "clone": linear("clone"),
    "to": linear("to"),  # a dtype or device change
    "float": linear("float"),
    "type_as": linear("type_as"),
    "sum": READOUT,
    "mean": READOUT,
}


def module_op(module: nn.Module) -> Op | None:
    """The op a leaf module applies to each unit, or None if canon does not know it."""
    for types, op in _MODULE_OPS:
        if isinstance(module, types):
            return op
    if library_activation(module):
        return plain(type(module).__name__)
    return None


#: Modules of libraries whose every activation class is elementwise (GELU variants, SiLU,
#: ReLU squared, ...): canon keeps them whole and permutes their units, nothing more.
_ACTIVATION_MODULES = frozenset({"transformers.activations"})


def library_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an activation of a library whose activations are all
    elementwise (:data:`_ACTIVATION_MODULES`) with no parameter but single numbers, the
    same for every unit (Apertus's xIELU learns two)."""
    return type(module).__module__ in _ACTIVATION_MODULES and all(
        p.numel() == 1 for p in module.parameters()
    )


def library_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a library's own LayerNorm or RMSNorm over the last axis
    (``LlamaRMSNorm``, ``T5LayerNorm``, Nemotron's ``LayerNorm1P``, whose gain is its
    weight plus one): a class named ``...RMSNorm``, ``...LayerNorm`` or ``...LayerNorm1P``
    with no submodules and only a 1-D ``weight`` (and ``bias``) of one length, or no
    parameter at all (nanochat's RMSNorm, Gemma's norm of the values).

    Such a norm commutes with a permutation of the units it normalizes (and nothing else),
    which is all canon assumes of it.
    """
    name = type(module).__name__
    if not name.endswith(_NORM_NAMES) or next(module.children(), None) is not None:
        return False
    params = dict(module.named_parameters(recurse=False))
    if not params:
        return not any(b.numel() > 1 for b in module.buffers(recurse=False))
    if "weight" not in params or not set(params) <= {"weight", "bias"}:
        return False
    return len({tuple(p.shape) for p in params.values()}) == 1 and params["weight"].ndim == 1


_NORM_NAMES = ("RMSNorm", "LayerNorm", "LayerNorm1P")


def library_response_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a library's global response norm (ConvNeXt V2's GRN: each
    channel scaled by its spatial norm over the mean of all channels', plus a ``weight``
    and ``bias`` per channel, and its input): a class named ``...GRN`` or
    ``...ResponseNorm`` with no submodules and only a ``weight`` and ``bias`` of one
    shape with one axis longer than 1 (timm's ``(dim,)``, transformers' ``(1, 1, 1, dim)``).

    Like a norm it commutes with a permutation of the channels (its tensors permuted
    alike) and nothing else, which canon checks by running it."""
    name = type(module).__name__
    if not name.endswith(("GRN", "ResponseNorm")) or next(module.children(), None) is not None:
        return False
    params = dict(module.named_parameters(recurse=False))
    shapes = {tuple(p.shape) for p in params.values()}
    if set(params) != {"weight", "bias"} or len(shapes) != 1:
        return False
    return sum(n > 1 for n in shapes.pop()) == 1


def op_name(node: fx.Node) -> str:
    """A readable name for the op of a graph node."""
    target = node.target
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def function_op(node: fx.Node) -> Op | None:
    """The op a function or method call applies to each unit, or None if unknown."""
    if node.op == "call_function" and _inactive_stochastic_depth(node):
        return linear("identity")
    if node.op == "call_function":
        return _FUNCTION_OPS.get(node.target)  # type: ignore[arg-type]
    if node.op == "call_method":
        return _METHOD_OPS.get(str(node.target))
    return None


def _inactive_stochastic_depth(node: fx.Node) -> bool:
    """Whether ``node`` calls torchvision's ``stochastic_depth(input, p, mode, training)``
    (kept whole by torch.fx) with ``training`` False, as in the eval-mode graph canon
    traces: it returns its input (EfficientNet's and ConvNeXt's blocks)."""
    target = node.target
    if getattr(target, "__name__", "") != "stochastic_depth" or not str(
        getattr(target, "__module__", "")
    ).startswith("torchvision."):
        return False
    training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
    return training is False
