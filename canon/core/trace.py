"""Derive a :class:`~canon.core.spec.Spec` from an ``nn.Module`` by tracing it with torch.fx.

The traced graph must be a chain: Linear/Conv layers, each optionally followed
directly by BatchNorm, joined by per-unit ops (activations, pooling, dropout,
identity, flatten/view/reshape). Every hidden layer becomes a unit group whose
symmetry is read off the ops between it and the next layer:

- all ops positively homogeneous (ReLU, leaky ReLU, max/avg pooling, no
  activation): ``scale``;
- all ops odd (tanh, sign, avg pooling): ``sign``;
- otherwise ``none`` (permutations only).

A sign activation reached through positively homogeneous ops makes the group
scale-invariant. A sum or mean over the unit axis (a committee machine's fixed
read-out) ends the network without an output layer. Anything else, residual
additions included, is rejected with an error that names the op and the
module path.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from canon.core.modules import BinaryConv2d, BinaryLinear, Sign, sign_ste
from canon.core.spec import (
    BatchNormTensors,
    OutgoingAxis,
    OutputLayer,
    Spec,
    Symmetry,
    TensorInfo,
    UnitGroup,
    dtype_name,
)
from canon.errors import UnsupportedModuleError

__all__ = ["spec_from_module", "tensors_of", "tracer"]


@dataclass(frozen=True)
class _Op:
    """What a per-unit op does to a unit's scale and sign."""

    name: str
    homogeneous: bool  # f(a x) = a f(x) for a > 0
    odd: bool  # f(-x) = -f(x)
    invariant: bool = False  # f(a x) = f(x) for a > 0
    kind: str = "elementwise"  # elementwise | pool | reshape | readout


def _relu(name: str) -> _Op:
    return _Op(name, homogeneous=True, odd=False)


def _linear(name: str, kind: str = "elementwise") -> _Op:
    return _Op(name, homogeneous=True, odd=True, kind=kind)


_TANH = _Op("tanh", homogeneous=False, odd=True)
_SIGN = _Op("sign", homogeneous=False, odd=True, invariant=True)
_MAXPOOL = _Op("max_pool", homogeneous=True, odd=False, kind="pool")
_AVGPOOL = _linear("avg_pool", "pool")
_RESHAPE = _linear("reshape", "reshape")
_READOUT = _linear("readout", "readout")

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

_MODULE_OPS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], _Op], ...] = (
    ((nn.ReLU, nn.LeakyReLU), _relu("relu")),
    (nn.Tanh, _TANH),
    (Sign, _SIGN),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _MAXPOOL),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _MAXPOOL),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _AVGPOOL),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _AVGPOOL),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity), _linear("identity")),
    (nn.Flatten, _RESHAPE),
)

_FUNCTION_OPS: dict[Callable[..., Any], _Op] = {
    F.relu: _relu("relu"),
    torch.relu: _relu("relu"),
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
    F.dropout: _linear("dropout"),
    torch.flatten: _RESHAPE,
    torch.sum: _READOUT,
    torch.mean: _READOUT,
}

_METHOD_OPS: dict[str, _Op] = {
    "relu": _relu("relu"),
    "tanh": _TANH,
    "sign": _SIGN,
    "flatten": _RESHAPE,
    "view": _RESHAPE,
    "reshape": _RESHAPE,
    "contiguous": _linear("contiguous"),
    "sum": _READOUT,
    "mean": _READOUT,
}


@dataclass(frozen=True)
class _Layer:
    path: str
    size: int  # output units (features or channels)
    has_bias: bool


@dataclass(frozen=True)
class _Flow:
    """What reaches a node: the last layer, its BatchNorm and the ops since."""

    layer: _Layer | None
    batchnorm: BatchNormTensors | None = None
    ops: tuple[_Op, ...] = ()
    ended: bool = False  # a read-out summed the units away


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (*_LAYERS, *_BATCHNORMS, Sign)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def tracer() -> fx.Tracer:
    """The torch.fx tracer canon uses: layers, BatchNorm and sign activations are leaves."""
    return _Tracer()


def tensors_of(model: nn.Module) -> tuple[TensorInfo, ...]:
    """Every tensor of ``model``'s state dict: name, shape, dtype, parameter or buffer, binary.

    Needs no forward pass, so a module built on the meta device costs nothing here.
    """
    parameters = {name for name, _ in model.named_parameters()}
    binary = {
        f"{path}.weight"
        for path, m in model.named_modules()
        if isinstance(m, (BinaryLinear, BinaryConv2d))
    }
    return tuple(
        TensorInfo(name, tuple(t.shape), dtype_name(t.dtype), name in parameters, name in binary)
        for name, t in model.state_dict().items()
    )


def spec_from_module(model: nn.Module, input_shape: Sequence[int] | None = None) -> Spec:
    """Derive the structure spec of ``model`` by tracing it with torch.fx.

    ``input_shape`` is the shape of one input sample (no batch axis). Without
    it, canon uses ``model.input_shape`` if the model has one, or
    ``(in_features,)`` when the first layer is ``nn.Linear``. The model is not
    changed (its train/eval flags are restored after shape propagation).
    """
    shape = _input_shape(model, input_shape)
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many kinds; name the cause
        raise UnsupportedModuleError(
            f"cannot trace {type(model).__name__} with torch.fx: {exc}", op="trace"
        ) from exc
    gm = fx.GraphModule(model, graph)
    _propagate_shapes(model, gm, shape)
    return _Walker(gm).spec(model)


def _input_shape(model: nn.Module, given: Sequence[int] | None) -> tuple[int, ...]:
    if given is not None:
        return tuple(int(s) for s in given)
    own = getattr(model, "input_shape", None)
    if own is not None:
        return tuple(int(s) for s in own)
    first = next((m for m in model.modules() if isinstance(m, (*_LAYERS, *_BATCHNORMS))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise UnsupportedModuleError(
        f"cannot tell the input shape of {type(model).__name__}: pass `input_shape` "
        "(one sample, without the batch axis, e.g. (1, 28, 28)) or set `model.input_shape`",
        op="input_shape",
    )


def _propagate_shapes(model: nn.Module, gm: fx.GraphModule, shape: tuple[int, ...]) -> None:
    flags = {m: m.training for m in model.modules()}
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    try:
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((2, *shape), dtype=dtype, device=device))
    except Exception as exc:
        raise UnsupportedModuleError(
            f"{type(model).__name__} does not run on an input of shape {list(shape)}: {exc}",
            op="shape",
        ) from exc
    finally:
        for m, training in flags.items():
            m.training = training


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.keys())[-1] if stack else ""
    return f"module `{path}`" if path else "the top-level forward"


def _is_tensor(arg: object) -> bool:
    return isinstance(arg, fx.Node) and "tensor_meta" in arg.meta


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


class _Walker:
    """Walks a traced chain and collects the unit groups in forward order."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.flows: dict[fx.Node, _Flow] = {}
        self.groups: list[UnitGroup] = []
        self.seen_layers: set[str] = set()
        self.consumed: set[fx.Node] = set()

    def spec(self, model: nn.Module) -> Spec:
        output: OutputLayer | None = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.flows[node] = _Flow(layer=None)
            elif node.op == "get_attr":
                raise UnsupportedModuleError(
                    f"`{node.target}` is used directly in forward ({_where(node)}); canon "
                    "supports parameters only inside nn.Linear, nn.Conv and nn.BatchNorm",
                    op="get_attr",
                    path=str(node.target),
                )
            elif node.op == "output":
                output = self._output(node)
            elif _is_tensor(node):
                self._step(node)
        return Spec(groups=tuple(self.groups), output=output, tensors=tensors_of(model))

    # -- one node ---------------------------------------------------------

    def _step(self, node: fx.Node) -> None:
        inputs = [a for a in (*node.args, *node.kwargs.values()) if _is_tensor(a)]
        name = _op_name(node)
        if len(inputs) != 1:
            what = "residual additions and other multi-input ops are"
            if node.target in (operator.add, torch.add, "add", "add_", operator.iadd):
                what = "residual additions are"
            raise UnsupportedModuleError(
                f"unsupported op `{name}` in {_where(node)}: {what} not supported "
                "(canon handles chains of layers)",
                op=name,
                path=_where(node),
            )
        source = inputs[0]
        assert isinstance(source, fx.Node)
        if source in self.consumed:
            raise UnsupportedModuleError(
                f"the output of `{source.name}` feeds two branches ({_where(node)}); "
                "canon handles chains of layers",
                op="branch",
                path=_where(node),
            )
        self.consumed.add(source)
        flow = self.flows[source]
        if node.op == "call_module":
            module = self.gm.get_submodule(str(node.target))
            path = str(node.target)
            if isinstance(module, _LAYERS):
                self.flows[node] = self._layer(node, path, module, flow, _shape(source))
                return
            if isinstance(module, _BATCHNORMS):
                self.flows[node] = self._batchnorm(node, path, module, flow)
                return
            op = _module_op(module)
            if op is None:
                raise UnsupportedModuleError(
                    f"unsupported module {type(module).__name__} at `{path}`; canon supports "
                    "Linear, Conv1d/2d, BatchNorm1d/2d, ReLU, LeakyReLU, Tanh, sign, pooling, "
                    "Flatten, Dropout and Identity",
                    op=type(module).__name__,
                    path=path,
                )
        else:
            op = _function_op(node)
        self.flows[node] = self._apply(node, op, flow, _shape(source), _shape(node))

    def _layer(
        self, node: fx.Node, path: str, module: nn.Module, flow: _Flow, in_shape: tuple[int, ...]
    ) -> _Flow:
        assert isinstance(module, _LAYERS)
        if path in self.seen_layers:
            raise UnsupportedModuleError(
                f"layer `{path}` is called more than once; shared layers are not supported",
                op="shared layer",
                path=path,
            )
        self.seen_layers.add(path)
        if isinstance(module, nn.Linear):
            size, fan_in = module.out_features, module.in_features
            if len(in_shape) != 2:
                raise UnsupportedModuleError(
                    f"linear layer `{path}` gets an input of shape {list(in_shape)}; canon "
                    "supports linear layers on flat (batch, features) inputs",
                    op="Linear",
                    path=path,
                )
        else:
            size, fan_in = module.out_channels, module.in_channels
            if module.groups != 1 or module.padding_mode != "zeros":
                raise UnsupportedModuleError(
                    f"convolution `{path}` uses groups={module.groups}, "
                    f"padding_mode={module.padding_mode!r}; canon supports groups=1 "
                    "with zero padding",
                    op=type(module).__name__,
                    path=path,
                )
        if flow.ended:
            raise UnsupportedModuleError(
                f"layer `{path}` follows a sum over the units; a read-out must end the network",
                op="readout",
                path=path,
            )
        if flow.layer is not None:
            prev = flow.layer
            block = fan_in // prev.size
            if isinstance(module, nn.Linear) and fan_in != prev.size * block:
                raise UnsupportedModuleError(
                    f"linear layer `{path}` has {fan_in} inputs, not a multiple of the "
                    f"{prev.size} units of `{prev.path}`",
                    op="Linear",
                    path=path,
                )
            if not isinstance(module, nn.Linear) and block != 1:
                raise UnsupportedModuleError(
                    f"convolution `{path}` does not take the {prev.size} channels of "
                    f"`{prev.path}` as its input channels",
                    op=type(module).__name__,
                    path=path,
                )
            self._close(flow, (OutgoingAxis(f"{path}.weight", 1, block),))
        return _Flow(layer=_Layer(path, size, module.bias is not None))

    def _batchnorm(self, node: fx.Node, path: str, module: nn.Module, flow: _Flow) -> _Flow:
        assert isinstance(module, _BATCHNORMS)
        if flow.layer is None or flow.ops or flow.batchnorm is not None:
            raise UnsupportedModuleError(
                f"BatchNorm `{path}` must directly follow a Linear or Conv layer",
                op=type(module).__name__,
                path=path,
            )
        if not (module.affine and module.track_running_stats):
            raise UnsupportedModuleError(
                f"BatchNorm `{path}` needs affine=True and track_running_stats=True",
                op=type(module).__name__,
                path=path,
            )
        if module.num_features != flow.layer.size:
            raise UnsupportedModuleError(
                f"BatchNorm `{path}` has {module.num_features} features but follows "
                f"`{flow.layer.path}` with {flow.layer.size} units",
                op=type(module).__name__,
                path=path,
            )
        bn = BatchNormTensors(
            weight=f"{path}.weight",
            bias=f"{path}.bias",
            running_mean=f"{path}.running_mean",
            running_var=f"{path}.running_var",
            eps=float(module.eps),
        )
        return _Flow(layer=flow.layer, batchnorm=bn)

    def _apply(
        self,
        node: fx.Node,
        op: _Op,
        flow: _Flow,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
    ) -> _Flow:
        if flow.layer is None and op.kind != "readout":
            return flow  # before the first layer anything goes: it is the input
        if flow.ended:
            raise UnsupportedModuleError(
                f"op `{op.name}` in {_where(node)} follows a sum over the units",
                op=op.name,
                path=_where(node),
            )
        ok = {
            "elementwise": out_shape == in_shape,
            "pool": len(in_shape) >= 3 and out_shape[:2] == in_shape[:2],
            "reshape": out_shape == in_shape
            or (
                len(out_shape) == 2
                and out_shape[0] == in_shape[0]
                and out_shape[1] == math.prod(in_shape[1:])
            ),
            "readout": _is_unit_readout(node, in_shape, out_shape),
        }[op.kind]
        if not ok:
            raise UnsupportedModuleError(
                f"op `{op.name}` in {_where(node)} maps shape {list(in_shape)} to "
                f"{list(out_shape)}, which mixes units; canon supports per-unit ops, "
                "flattening (batch, channels, ...) to (batch, features) and sums over units",
                op=op.name,
                path=_where(node),
            )
        if op.kind == "readout":
            self._close(flow, ())
            return _Flow(layer=None, ended=True)
        return _Flow(layer=flow.layer, batchnorm=flow.batchnorm, ops=(*flow.ops, op))

    def _close(self, flow: _Flow, outgoing: tuple[OutgoingAxis, ...]) -> None:
        layer = flow.layer
        assert layer is not None
        symmetry: Symmetry = "none"
        if outgoing and all(o.homogeneous for o in flow.ops):
            symmetry = "scale"
        elif outgoing and all(o.odd for o in flow.ops):
            symmetry = "sign"
        self.groups.append(
            UnitGroup(
                name=layer.path,
                size=layer.size,
                symmetry=symmetry,
                weight=f"{layer.path}.weight",
                bias=f"{layer.path}.bias" if layer.has_bias else None,
                batchnorm=flow.batchnorm,
                outgoing=outgoing,
                scale_invariant=_scale_invariant(flow.ops),
            )
        )

    def _output(self, node: fx.Node) -> OutputLayer | None:
        result = node.args[0]
        if not _is_tensor(result):
            raise UnsupportedModuleError(
                "the model must return one tensor (the logits)", op="output", path="output"
            )
        assert isinstance(result, fx.Node)
        flow = self.flows[result]
        if flow.ended:
            return None
        layer = flow.layer
        if layer is None:
            raise UnsupportedModuleError(
                "the model has no Linear or Conv layer", op="output", path="output"
            )
        if flow.batchnorm is not None:
            raise UnsupportedModuleError(
                f"BatchNorm after the output layer `{layer.path}` is not supported",
                op="BatchNorm",
                path=layer.path,
            )
        bad = [o.name for o in flow.ops if not (o.homogeneous or o.invariant)]
        if bad:
            raise UnsupportedModuleError(
                f"op `{bad[0]}` after the output layer `{layer.path}`: the output layer's "
                "global scale would not be a symmetry; return the logits",
                op=bad[0],
                path=layer.path,
            )
        return OutputLayer(
            weight=f"{layer.path}.weight",
            bias=f"{layer.path}.bias" if layer.has_bias else None,
            size=layer.size,
        )


def _scale_invariant(ops: tuple[_Op, ...]) -> bool:
    for op in ops:
        if op.invariant:
            return True
        if not op.homogeneous:
            return False
    return False


def _is_unit_readout(node: fx.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return len(in_shape) == 2 and dim in (1, -1, (1,), [1]) and out_shape[0] == in_shape[0]


def _module_op(module: nn.Module) -> _Op | None:
    for types, op in _MODULE_OPS:
        if isinstance(module, types):
            return op
    return None


def _op_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def _function_op(node: fx.Node) -> _Op:
    op: _Op | None = None
    if node.op == "call_function":
        op = _FUNCTION_OPS.get(node.target)  # type: ignore[arg-type]
    elif node.op == "call_method":
        op = _METHOD_OPS.get(str(node.target))
    if op is None:
        name = _op_name(node)
        raise UnsupportedModuleError(
            f"unsupported op `{name}` in {_where(node)}",
            op=name,
            path=_where(node),
        )
    return op
