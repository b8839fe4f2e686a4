"""The walk over a traced graph that finds a network's unit groups (DESIGN §3, §3b).

Every tensor of the graph is one of: the input (or anything computed from it
alone: never permuted), a parameter used directly in ``forward`` (a view of
it), or hidden units: a *unit space* on one axis, in blocks of ``block``
entries per unit after a flatten. Layers start spaces; per-unit ops keep
them; adding or multiplying two hidden tensors joins their spaces (a
union-find). At the end each space is one unit group: its producers, the
consuming layers' input axes, the tensors carried along, and the symmetry
read off every op it passed through.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from canon.core.ops import READOUT, Op, function_op, linear, module_op, op_name, plain
from canon.core.spec import (
    BatchNormTensors,
    CarriedAxis,
    OutgoingAxis,
    OutputLayer,
    Producer,
    Symmetry,
    Tap,
    UnitGroup,
)
from canon.errors import UnsupportedModuleError

__all__ = ["BATCHNORMS", "LAYERS", "WHAT_TO_DO", "Walker"]

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYERNORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm,) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
_INSTANCENORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", operator.sub, torch.sub, "sub"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV = {operator.truediv, torch.div, "div", "div_"}
_PERMUTE = {"permute", torch.permute, "transpose", torch.transpose}
_REDUCE = {
    torch.mean: "mean",
    torch.sum: "sum",
    torch.amax: "amax",
    "mean": "mean",
    "sum": "sum",
    "amax": "amax",
}


@dataclass(eq=False)
class _Space:
    """Units that permute together: a node of the union-find over unit spaces."""

    size: int
    pinned: bool = False  # the network's input: never permuted
    parent: _Space | None = None
    producers: list[tuple[int, str, bool]] = field(default_factory=list)  # (order, path, bias)
    batchnorms: dict[str, BatchNormTensors] = field(default_factory=dict)
    outgoing: list[tuple[int, OutgoingAxis]] = field(default_factory=list)
    carried: list[CarriedAxis] = field(default_factory=list)
    ops: list[tuple[int, Op]] = field(default_factory=list)
    taps: dict[str, Tap] = field(default_factory=dict)
    blocks: int = 1
    read_out: bool = False

    def root(self) -> _Space:
        space = self
        while space.parent is not None:
            space = space.parent
        return space


@dataclass(frozen=True)
class _Units:
    """A tensor whose ``axis`` holds a space's units (``block`` entries each)."""

    space: _Space
    axis: int
    block: int = 1
    layer: str | None = None  # set on a layer's direct output: a BatchNorm may attach to it


@dataclass(frozen=True)
class _Param:
    """A view of a parameter used directly in forward; its first axis sits at ``axis``."""

    name: str
    axis: int


@dataclass(frozen=True)
class _Ended:
    """What follows a sum over the units (a committee machine's read-out)."""


_Value = _Units | _Param | _Ended


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.keys())[-1] if stack else ""
    return f"module `{path}`" if path else "the top-level forward"


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _is_tensor(arg: object) -> bool:
    return isinstance(arg, fx.Node) and "tensor_meta" in arg.meta


#: Appended to every error about what canon cannot follow: what it can, and what to do.
WHAT_TO_DO = (
    "; canon follows Linear and Conv layers (groups=1 or depthwise), residual additions, "
    "products, BatchNorm/LayerNorm/GroupNorm, elementwise activations, pooling and reshapes: "
    "write this part of forward with those (`canon spec` shows what canon derived)"
)


def _unsupported(message: str, op: str, path: str) -> UnsupportedModuleError:
    """The error for what the walk cannot follow: the op, where, and what to do."""
    hint = "" if "canon supports" in message or "; return" in message else WHAT_TO_DO
    return UnsupportedModuleError(message + hint, op=op, path=path)


def _hidden(inputs: list[tuple[fx.Node, _Value]]) -> list[tuple[fx.Node, _Units]]:
    """The inputs that hold hidden units (not the network's input, not parameters)."""
    return [(n, v) for n, v in inputs if isinstance(v, _Units) and not v.space.pinned]


class Walker:
    """Walks a traced, shape-propagated graph and collects the unit groups."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.values: dict[fx.Node, _Value] = {}
        self.order: dict[fx.Node, int] = {}
        self.seen_layers: set[str] = set()
        self.input = _Space(size=0, pinned=True)
        self.output: OutputLayer | None = None
        self.output_space: _Space | None = None

    # -- the walk ------------------------------------------------------------

    def walk(self) -> tuple[tuple[UnitGroup, ...], OutputLayer | None]:
        """The unit groups in forward order and the output layer."""
        for index, node in enumerate(self.gm.graph.nodes):
            self.order[node] = index
            if node.op == "placeholder":
                self.values[node] = _Units(self.input, 1)
            elif node.op == "get_attr":
                if _is_tensor(node):
                    self.values[node] = _Param(str(node.target), 0)
            elif node.op == "output":
                self._output(node)
            elif _is_tensor(node):
                self._step(node)
        return self._groups(), self.output

    def _inputs(self, node: fx.Node) -> list[tuple[fx.Node, _Value]]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), found.append)
        return [(n, self.values[n]) for n in found if n in self.values]

    def _step(self, node: fx.Node) -> None:
        inputs = self._inputs(node)
        name = op_name(node)
        if any(isinstance(v, _Ended) for _, v in inputs):
            raise _unsupported(
                f"op `{name}` in {_where(node)} follows a sum over the units",
                name,
                _where(node),
            )
        hidden = _hidden(inputs)
        module = self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, LAYERS) and (
            not isinstance(module, nn.Linear) and module.groups != 1
        ):
            self.values[node] = self._grouped_conv(node, module, hidden)
            return
        if isinstance(module, LAYERS):
            self.values[node] = self._layer(node, module, inputs)
            return
        if not hidden:
            if any(isinstance(v, _Units) for _, v in inputs):
                self.values[node] = _Units(self.input, 1)  # before the first layer: the input
            elif inputs and all(isinstance(v, _Param) for _, v in inputs):
                self.values[node] = self._param_view(node, inputs)
            else:
                self.values[node] = _Units(self.input, 1)
            return
        source, units = hidden[0]
        assert isinstance(units, _Units)
        if module is not None:
            self.values[node] = self._module(node, module, source, units, inputs)
            return
        target = node.target
        if target in _ADD or target in _MUL or target in _DIV:
            self.values[node] = self._arithmetic(node, inputs, hidden)
        elif target in _PERMUTE:
            self.values[node] = self._permute(node, source, units)
        elif target is F.layer_norm or target is F.group_norm:
            self.values[node] = self._functional_norm(node, source, units, inputs)
        elif target in _REDUCE and self._reduced_dims(node) is not None:
            self.values[node] = self._reduce(node, source, units)
        else:
            op = function_op(node)
            if op is None:
                raise _unsupported(f"unsupported op `{name}` in {_where(node)}", name, _where(node))
            self.values[node] = self._apply(node, op, source, units, hidden)

    # -- layers ----------------------------------------------------------------

    def _layer(
        self, node: fx.Node, module: nn.Module, inputs: list[tuple[fx.Node, _Value]]
    ) -> _Units:
        path = str(node.target)
        if path in self.seen_layers:
            raise _unsupported(
                f"layer `{path}` is called more than once; shared layers are not supported",
                "shared layer",
                path,
            )
        self.seen_layers.add(path)
        source, units = inputs[0]
        if not isinstance(units, _Units):
            raise _unsupported(f"layer `{path}` reads a parameter", type(module).__name__, path)
        in_shape, out_shape = _shape(source), _shape(node)
        if isinstance(module, nn.Linear):
            size, fan_in = module.out_features, module.in_features
            axis = len(out_shape) - 1
            if not units.space.pinned and units.axis != len(in_shape) - 1:
                raise _unsupported(
                    f"linear layer `{path}` reads an input of shape {list(in_shape)} whose units "
                    f"are on axis {units.axis}; canon supports linear layers over the unit axis",
                    "Linear",
                    path,
                )
        else:
            assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
            size, fan_in = module.out_channels, module.in_channels
            axis = 1
            if module.padding_mode != "zeros":
                raise _unsupported(
                    f"convolution `{path}` uses padding_mode={module.padding_mode!r}; canon "
                    "supports zero padding",
                    type(module).__name__,
                    path,
                )
            if not units.space.pinned and (units.axis != 1 or units.block != 1):
                raise _unsupported(
                    f"convolution `{path}` does not read its input's units as channels",
                    type(module).__name__,
                    path,
                )
        if not units.space.pinned:
            space = units.space.root()
            if fan_in != space.size * units.block:
                raise _unsupported(
                    f"layer `{path}` has {fan_in} inputs, not the {space.size} units "
                    f"(x {units.block}) it reads",
                    type(module).__name__,
                    path,
                )
            space.outgoing.append(
                (self.order[node], OutgoingAxis(f"{path}.weight", 1, units.block))
            )
            space.taps.setdefault(source.name, Tap(source.name, units.axis, units.block))
        new = _Space(size=size)
        new.producers.append((self.order[node], path, module.bias is not None))
        return _Units(new, axis, layer=path)

    def _grouped_conv(
        self, node: fx.Node, module: nn.Module, hidden: list[tuple[fx.Node, _Units]]
    ) -> _Units:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        path = str(node.target)
        depthwise = module.groups == module.in_channels == module.out_channels
        if not depthwise or module.padding_mode != "zeros":
            raise _unsupported(
                f"convolution `{path}` uses groups={module.groups} "
                f"({module.in_channels} -> {module.out_channels} channels), "
                f"padding_mode={module.padding_mode!r}; canon supports groups=1 and depthwise "
                "convolutions (groups = in = out channels) with zero padding",
                type(module).__name__,
                path,
            )
        self.seen_layers.add(path)
        if not hidden:
            return _Units(self.input, 1)
        _, units = hidden[0]
        assert isinstance(units, _Units)
        space = units.space.root()
        # a depthwise filter moves with its channel; it is linear in it unless it adds a bias
        space.carried.append(CarriedAxis(f"{path}.weight", 0))
        op = linear("depthwise conv")
        if module.bias is not None:
            space.carried.append(CarriedAxis(f"{path}.bias", 0))
            op = plain("depthwise conv with bias")
        space.ops.append((self.order[node], op))
        return _Units(space, 1)

    # -- modules that keep the units -------------------------------------------

    def _module(
        self,
        node: fx.Node,
        module: nn.Module,
        source: fx.Node,
        units: _Units,
        inputs: list[tuple[fx.Node, _Value]],
    ) -> _Value:
        path = str(node.target)
        if isinstance(module, BATCHNORMS):
            return self._batchnorm(node, module, source, units)
        if isinstance(module, (*_LAYERNORMS, *_INSTANCENORMS, nn.GroupNorm)):
            tensors = [f"{path}.{n}" for n, t in module.state_dict().items() if t.ndim >= 1]
            groups = module.num_groups if isinstance(module, nn.GroupNorm) else None
            shape = getattr(module, "normalized_shape", None)
            return self._norm(node, units, source, tensors, shape, groups)
        op = module_op(module)
        if op is None:
            raise _unsupported(
                f"unsupported module {type(module).__name__} at `{path}`; canon supports "
                "Linear, Conv (groups=1 or depthwise), BatchNorm, LayerNorm, GroupNorm, "
                "elementwise activations, pooling, Flatten, Dropout and Identity",
                type(module).__name__,
                path,
            )
        return self._apply(node, op, source, units, _hidden(inputs))

    def _batchnorm(
        self, node: fx.Node, module: nn.Module, source: fx.Node, units: _Units
    ) -> _Units:
        assert isinstance(module, BATCHNORMS)
        path = str(node.target)
        space = units.space.root()
        if units.axis != 1 or units.block != 1:
            raise _unsupported(
                f"BatchNorm `{path}` does not normalize its input's units",
                type(module).__name__,
                path,
            )
        attaches = (
            units.layer is not None
            and len(source.users) == 1
            and units.layer not in space.batchnorms
            and module.affine
            and module.track_running_stats
            and module.num_features == space.size
        )
        if attaches:
            assert units.layer is not None
            space.batchnorms[units.layer] = BatchNormTensors(
                weight=f"{path}.weight",
                bias=f"{path}.bias",
                running_mean=f"{path}.running_mean",
                running_var=f"{path}.running_var",
                eps=float(module.eps),
            )
            return _Units(space, 1)
        # anywhere else (after an activation, on a stream) it is only permuted
        for name, t in module.state_dict().items():
            if t.ndim >= 1:
                space.carried.append(CarriedAxis(f"{path}.{name}", 0))
        space.ops.append((self.order[node], plain("batchnorm")))
        return _Units(space, 1)

    def _norm(
        self,
        node: fx.Node,
        units: _Units,
        source: fx.Node,
        tensors: list[str],
        normalized_shape: Any,
        groups: int | None,
    ) -> _Units:
        """LayerNorm / RMSNorm / GroupNorm / InstanceNorm: the units are only permuted."""
        space = units.space.root()
        ndim = len(_shape(source))
        where = _where(node)
        if units.block != 1:
            raise _unsupported(f"a norm layer in {where} reads flattened units", "norm", where)
        if normalized_shape is not None:
            first = ndim - len(tuple(normalized_shape))
            if units.axis < first:  # normalizes each unit over other axes: per unit
                space.ops.append((self.order[node], plain("norm")))
                return _Units(space, units.axis)
            axis = units.axis - first
        else:
            if units.axis != 1:
                raise _unsupported(
                    f"a norm layer in {where} does not normalize over the unit axis", "norm", where
                )
            axis = 0
        if groups is not None and groups > 1:
            blocks = math.lcm(space.blocks, groups)
            if space.size % blocks:
                raise _unsupported(
                    f"GroupNorm in {where} groups {space.size} units in {groups} groups, which "
                    f"does not agree with the other norm layers on these units",
                    "GroupNorm",
                    where,
                )
            space.blocks = blocks
        space.carried.extend(CarriedAxis(name, axis) for name in tensors)
        space.ops.append((self.order[node], plain("norm")))
        return _Units(space, units.axis)

    def _functional_norm(
        self,
        node: fx.Node,
        source: fx.Node,
        units: _Units,
        inputs: list[tuple[fx.Node, _Value]],
    ) -> _Units:
        params = [v.name for _, v in inputs if isinstance(v, _Param)]
        if node.target is F.group_norm:
            groups = node.args[1] if len(node.args) > 1 else node.kwargs.get("num_groups")
            return self._norm(node, units, source, params, None, int(groups))  # type: ignore[arg-type]
        shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
        return self._norm(node, units, source, params, tuple(shape), None)  # type: ignore[arg-type]

    # -- ops on units -------------------------------------------------------------

    def _apply(
        self,
        node: fx.Node,
        op: Op,
        source: fx.Node,
        units: _Units,
        hidden: list[tuple[fx.Node, _Units]],
    ) -> _Value:
        name = op_name(node)
        where = _where(node)
        if len(hidden) != 1:
            raise _unsupported(
                f"unsupported op `{name}` in {where}: it combines several hidden tensors",
                name,
                where,
            )
        if op.kind == "reshape":
            return self._reshape(node, op, source, units)
        if op.kind == "readout":
            return self._reduce(node, source, units)
        in_shape, out_shape = _shape(source), _shape(node)
        ok = out_shape == in_shape
        if op.kind == "pool":
            ok = (
                len(out_shape) == len(in_shape)
                and out_shape[: units.axis + 1] == in_shape[: units.axis + 1]
            )
        if not ok:
            raise _unsupported(
                f"op `{op.name}` in {where} maps shape {list(in_shape)} to "
                f"{list(out_shape)}, which mixes units; canon supports per-unit ops, "
                "flattening (batch, channels, ...) to (batch, features) and sums over units",
                op.name,
                where,
            )
        space = units.space.root()
        space.ops.append((self.order[node], op))
        return _Units(space, units.axis, units.block)

    def _reshape(self, node: fx.Node, op: Op, source: fx.Node, units: _Units) -> _Units:
        """A view that keeps the unit axis whole, or flattens the axes after it into blocks."""
        in_shape, out_shape = _shape(source), _shape(node)
        before = math.prod(in_shape[: units.axis])
        after = math.prod(in_shape[units.axis + 1 :])
        width = in_shape[units.axis]
        space = units.space.root()
        for j in range(len(out_shape)):
            if math.prod(out_shape[:j]) != before:
                continue
            if out_shape[j] == width:
                return _Units(space, j, units.block)
            if out_shape[j] == width * after and j == len(out_shape) - 1:
                return _Units(space, j, units.block * after)
        where = _where(node)
        raise _unsupported(
            f"op `{op_name(node)}` in {where} maps shape {list(in_shape)} to {list(out_shape)}, "
            "which mixes units; canon supports per-unit ops, flattening (batch, channels, ...) "
            "to (batch, features) and sums over units",
            op_name(node),
            where,
        )

    def _permute(self, node: fx.Node, source: fx.Node, units: _Units) -> _Units:
        ndim = len(_shape(source))
        args: list[Any] = list(node.args[1:])
        if node.target in ("transpose", torch.transpose):
            a, b = (int(x) % ndim for x in args[:2])
            dims = list(range(ndim))
            dims[a], dims[b] = dims[b], dims[a]
        else:
            flat = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            dims = [int(d) % ndim for d in flat]
        return _Units(units.space.root(), dims.index(units.axis), units.block)

    def _reduced_dims(self, node: fx.Node) -> tuple[int, ...] | None:
        dim: Any = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dim is None:
            return None
        return tuple(dim) if isinstance(dim, (list, tuple)) else (int(dim),)

    def _reduce(self, node: fx.Node, source: fx.Node, units: _Units) -> _Value:
        """A mean, sum or max over axes: pooling if the unit axis stays, else a read-out."""
        in_shape, out_shape = _shape(source), _shape(node)
        dims = self._reduced_dims(node)
        where = _where(node)
        name = op_name(node)
        ndim = len(in_shape)
        reduced = {d % ndim for d in dims} if dims is not None else set(range(ndim))
        space = units.space.root()
        if units.axis in reduced:
            readout = (
                name in ("sum", "mean")
                and ndim == 2
                and reduced == {1}
                and out_shape[0] == in_shape[0]
                and units.block == 1
            )
            if not readout:
                raise _unsupported(
                    f"op `{name}` in {where} maps shape {list(in_shape)} to {list(out_shape)}, "
                    "which mixes units; canon supports per-unit ops, flattening (batch, "
                    "channels, ...) to (batch, features) and sums over units",
                    name,
                    where,
                )
            space.read_out = True
            space.taps.setdefault(source.name, Tap(source.name, units.axis, units.block))
            space.ops.append((self.order[node], READOUT))
            return _Ended()
        keep = len(out_shape) == ndim
        axis = units.axis if keep else units.axis - sum(1 for d in reduced if d < units.axis)
        op = (
            Op("max", homogeneous=True, odd=False)
            if _REDUCE.get(node.target) == "amax"
            else (linear("mean"))
        )
        space.ops.append((self.order[node], op))
        return _Units(space, axis, units.block)

    def _arithmetic(
        self,
        node: fx.Node,
        inputs: list[tuple[fx.Node, _Value]],
        hidden: list[tuple[fx.Node, _Units]],
    ) -> _Units:
        """x + y, x * y, x / y with hidden units, parameters or numbers."""
        where = _where(node)
        name = op_name(node)
        target = node.target
        out_ndim = len(_shape(node))
        if any(isinstance(v, _Units) and v.space.pinned for _, v in inputs):
            raise _unsupported(
                f"op `{name}` in {where} combines the network's input with hidden units; the "
                "input's axes cannot be permuted",
                name,
                where,
            )
        placed = []
        for n, v in hidden:
            assert isinstance(v, _Units)
            placed.append(_Units(v.space.root(), v.axis + out_ndim - len(_shape(n)), v.block))
        first = placed[0]
        for other in placed[1:]:
            if (other.axis, other.block) != (first.axis, first.block):
                raise _unsupported(
                    f"op `{name}` in {where} combines tensors whose units sit on different axes",
                    name,
                    where,
                )
            self._join(first.space, other.space, node)
        space = first.space.root()
        params = [(n, v) for n, v in inputs if isinstance(v, _Param)]
        for n, param in params:
            assert isinstance(param, _Param)
            view = _shape(n)
            if math.prod(view) == 1:
                continue  # one learnable number for all units: no unit moves it
            at = param.axis + out_ndim - len(view)
            if at != first.axis or view[param.axis] != space.size or first.block != 1:
                raise _unsupported(
                    f"parameter `{param.name}` in {where} is not one value per unit",
                    name,
                    where,
                )
            space.carried.append(CarriedAxis(param.name, 0))
        scalar_only = len(inputs) == 1
        if target in _ADD:
            op = linear("add") if len(placed) > 1 and not params else plain("shift")
        elif len(placed) > 1:
            op = plain("product")
        else:
            op = linear("scale") if scalar_only or params else plain("product")
        space.ops.append((self.order[node], op))
        return _Units(space, first.axis, first.block)

    def _param_view(self, node: fx.Node, inputs: list[tuple[fx.Node, _Value]]) -> _Value:
        """A reshape of a parameter keeps track of where its first axis goes."""
        source, value = inputs[0]
        assert isinstance(value, _Param)
        if node.op == "call_method" and node.target in ("reshape", "view", "unsqueeze", "expand"):
            in_shape, out_shape = _shape(source), _shape(node)
            before = math.prod(in_shape[: value.axis])
            for j in range(len(out_shape)):
                if math.prod(out_shape[:j]) == before and out_shape[j] == in_shape[value.axis]:
                    return _Param(value.name, j)
        where = _where(node)
        raise _unsupported(
            f"parameter `{value.name}` is used directly in forward ({where}) in a way canon "
            "cannot follow; canon supports parameters inside layers and norm layers, and "
            "per-unit parameters multiplied or added to hidden units",
            "get_attr",
            value.name,
        )

    def _join(self, a: _Space, b: _Space, node: fx.Node) -> None:
        a, b = a.root(), b.root()
        if a is b:
            return
        if a.size != b.size:
            where = _where(node)
            raise _unsupported(
                f"op `{op_name(node)}` in {where} adds {a.size} units to {b.size} units",
                op_name(node),
                where,
            )
        b.parent = a
        a.producers += b.producers
        a.batchnorms |= b.batchnorms
        a.outgoing += b.outgoing
        a.carried += b.carried
        a.ops += b.ops
        a.taps |= b.taps
        a.blocks = math.lcm(a.blocks, b.blocks)
        a.read_out = a.read_out or b.read_out

    # -- the end -----------------------------------------------------------------

    def _output(self, node: fx.Node) -> None:
        result = node.args[0]
        if not _is_tensor(result):
            raise _unsupported("the model must return one tensor (the logits)", "output", "output")
        assert isinstance(result, fx.Node)
        value = self.values.get(result)
        if isinstance(value, _Ended):
            return
        if not isinstance(value, _Units) or value.space.pinned:
            raise _unsupported("the model has no Linear or Conv layer", "output", "output")
        space = value.space.root()
        _, path, has_bias = space.producers[0]
        if len(space.producers) != 1 or space.outgoing or space.carried:
            raise _unsupported(
                f"the output of `{path}` is also read or added elsewhere; canon needs the "
                "logits to come from one last layer",
                "output",
                path,
            )
        if space.batchnorms:
            raise _unsupported(
                f"BatchNorm after the output layer `{path}` is not supported", "BatchNorm", path
            )
        bad = [
            op.name
            for _, op in sorted(space.ops, key=lambda o: o[0])
            if not (op.homogeneous or op.invariant)
        ]
        if bad:
            raise _unsupported(
                f"op `{bad[0]}` after the output layer `{path}`: the output layer's "
                "global scale would not be a symmetry; return the logits",
                bad[0],
                path,
            )
        self.output = OutputLayer(
            weight=f"{path}.weight", bias=f"{path}.bias" if has_bias else None, size=space.size
        )
        self.output_space = space

    def _groups(self) -> tuple[UnitGroup, ...]:
        spaces: dict[int, _Space] = {}
        for value in self.values.values():
            if isinstance(value, _Units):
                space = value.space.root()
                if not space.pinned and space is not self.output_space:
                    spaces[id(space)] = space
        ordered = sorted(spaces.values(), key=lambda s: min(p[0] for p in s.producers))
        return tuple(_group(space) for space in ordered)


def _group(space: _Space) -> UnitGroup:
    producers = sorted(space.producers)
    outgoing = tuple(axis for _, axis in sorted(space.outgoing, key=lambda o: o[0]))
    ops = tuple(op for _, op in sorted(space.ops, key=lambda o: o[0]))
    symmetry: Symmetry = "none"
    if outgoing and all(o.homogeneous for o in ops):
        symmetry = "scale"
    elif outgoing and all(o.odd for o in ops):
        symmetry = "sign"
    return UnitGroup(
        name=producers[0][1],
        size=space.size,
        symmetry=symmetry,
        producers=tuple(
            Producer(f"{path}.weight", f"{path}.bias" if bias else None, space.batchnorms.get(path))
            for _, path, bias in producers
        ),
        outgoing=outgoing,
        scale_invariant=_scale_invariant(ops),
        carried=tuple(dict.fromkeys(space.carried)),
        blocks=space.blocks,
        taps=tuple(space.taps.values()),
    )


def _scale_invariant(ops: tuple[Op, ...]) -> bool:
    for op in ops:
        if op.invariant:
            return True
        if not op.homogeneous:
            return False
    return False
