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

import itertools
import math
import operator
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from canon.core.attention_steps import MATMUL, AttentionSteps, per_axis
from canon.core.expert_steps import ExpertSteps
from canon.core.experts import StackedExperts, is_router
from canon.core.ops import (
    READOUT,
    Op,
    function_op,
    library_activation,
    library_norm,
    library_response_norm,
    linear,
    module_op,
    op_name,
    plain,
)
from canon.core.record import all_zeros, is_opaque
from canon.core.spec import (
    BatchNormTensors,
    CarriedAxis,
    OutgoingAxis,
    OutputLayer,
    Symmetry,
    Tap,
    UnitGroup,
    claimed_twice,
)
from canon.core.walk_values import (
    ADD,
    CARVE,
    CAT,
    DIV,
    LAYERNORMS,
    MUL,
    NEW,
    PERMUTE,
    POSITIONS,
    WHAT_TO_DO,
    Attended,
    Concat,
    Ended,
    Fixed,
    Grouped,
    HeadParts,
    HeadRanges,
    Heads,
    Joined,
    JoinedHeads,
    Made,
    Opaque,
    Param,
    Parts,
    Pieces,
    Positions,
    Scores,
    Sliced,
    Space,
    Spread,
    Stacked,
    Unfollowed,
    Units,
    Value,
    Woven,
    attribute,
    check_commutes,
    hidden_units,
    is_tensor,
    location,
    one_tensor,
    permuted_dims,
    pin_all,
    shape_of,
    spaces_in,
    unit_axis_of,
    unsupported,
)
from canon.errors import UnsupportedModuleError

__all__ = ["BATCHNORMS", "LAYERS", "WHAT_TO_DO", "Walker", "tied_names"]


LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCENORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

_REDUCE = {
    torch.mean: "mean",
    torch.sum: "sum",
    torch.amax: "amax",
    "mean": "mean",
    "sum": "sum",
    "amax": "amax",
}


_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


#: ops that rank their input's entries, giving (values, positions)
_RANKINGS = ("topk", "sort")
#: ops that give the positions of their input's largest or smallest entries alone
_POSITIONS = ("argsort", "argmax", "argmin")


@dataclass(frozen=True)
class _BatchNormCall:
    """What the walker needs of one BatchNorm: where its tensors are, its eps and width,
    whether it has all four (affine, tracking statistics), the names of those it has."""

    path: str
    eps: float
    features: int
    complete: bool
    tensors: tuple[str, ...]

    @classmethod
    def of(cls, module: nn.Module, path: str) -> _BatchNormCall:
        """The facts of a BatchNorm module at ``path``."""
        assert isinstance(module, BATCHNORMS)
        return cls(
            path,
            float(module.eps),
            int(module.num_features),
            bool(module.affine and module.track_running_stats),
            tuple(n for n, t in module.state_dict().items() if t.ndim >= 1),
        )


def _own_call(
    node: fx.Node, function: object, names: tuple[str, ...]
) -> tuple[str, dict[str, object]] | None:
    """For a call of ``function`` (arguments ``names`` by position, then by keyword) whose
    tensor arguments after the first are all one module's own (``path.<name>``, read by
    ``get_attr``; a ``bias`` may be None): that path and the arguments; else None. What a
    layer's own forward, traced into, calls on its tensors."""
    if node.op != "call_function" or node.target is not function:
        return None
    given: dict[str, object] = {**dict(zip(names, node.args, strict=False)), **node.kwargs}
    own = {n: v for n, v in given.items() if isinstance(v, fx.Node) and n != names[0]}
    if "weight" not in own and "running_mean" not in own:
        return None
    own = {n: _zeroed_in_parts(v, node) or v for n, v in own.items()}
    first = next(iter(own.values()))
    path = str(first.target).rpartition(".")[0]
    for name, value in own.items():
        if value.op != "get_attr" or str(value.target) != f"{path}.{name}":
            return None
    return path, given


def _zeroed_in_parts(value: fx.Node, call: fx.Node) -> fx.Node | None:
    """For a clone of a parameter (``get_attr``) whose only other uses before ``call`` zero
    whole thirds of it in place (Swin V2's query-key-value bias, the keys' third zeroed
    before ``F.linear``): that parameter; else None. The zeroed entries are never read,
    and a fused projection's units move within their third, so the thirds zeroed stay
    zero under every move of the parameter's entries."""
    if value.op != "call_method" or value.target != "clone" or len(value.args) != 1:
        return None
    source = value.args[0]
    shape = shape_of(value) if isinstance(source, fx.Node) else None
    if not isinstance(source, fx.Node) or source.op != "get_attr" or not shape:
        return None
    third = shape[0] // 3
    for use in value.users:
        if use is call:
            continue
        picked = use.args[1] if use.target is operator.getitem and len(use.args) == 2 else None
        if (
            not isinstance(picked, slice)
            or picked.step not in (None, 1)
            or third * 3 != shape[0]
            or (picked.start or 0) % third
            or (picked.stop if picked.stop is not None else shape[0]) - (picked.start or 0) != third
            or not use.users
            or any(u.op != "call_method" or u.target != "zero_" for u in use.users)
        ):
            return None
    return source


#: ``torch.addcmul(input, tensor1, tensor2)``: input + value * tensor1 * tensor2
_ADDCMUL = {torch.addcmul, "addcmul"}


def _dead(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes none of whose results reach the output: a branch the forward computes
    and drops (SigLIP's image classifier runs its vision tower's pooling head, then
    averages the tokens instead). A write in place (``x.add_(y)``, ``x[i] = y``) reaches
    the output when the tensor it writes may: one it reads first, followed back through
    the ops that made it (views among them), is live."""
    graph = gm.graph
    writers = [n for n in graph.nodes if _writes(gm, n)]
    live: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:
        while stack:
            node = stack.pop()
            if node in live:
                continue
            live.add(node)
            stack.extend(node.all_input_nodes)
        stack = [w for w in writers if w not in live and _reaches(_written(w), live)]
    return {n for n in graph.nodes if n not in live and n.op != "placeholder"}


def _reaches(written: set[fx.Node], live: set[fx.Node]) -> bool:
    """Whether a write into ``written`` may reach the output: one of them is live, or is
    a module's own tensor (another read of it would be a node of its own)."""
    return bool(written & live) or any(n.op == "get_attr" for n in written)


def _written(node: fx.Node) -> set[fx.Node]:
    """The tensors a write in place may change: the one it is given first and those it
    may be a view of (back through views, reshapes, picks and casts of their first
    argument)."""
    found: set[fx.Node] = set()
    step = node.args[0] if node.args else None
    while isinstance(step, fx.Node) and step not in found:
        found.add(step)
        aliases = step.op in ("call_method", "call_function") and op_name(step) in _ALIASES
        step = step.args[0] if aliases and step.args else None
    return found


#: Ops whose result may share its first argument's memory (a write into it writes there).
_ALIASES = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze",
    "unsqueeze", "transpose", "permute", "t", "expand", "expand_as", "narrow", "select",
    "split", "chunk", "unbind", "tensor_split", "movedim", "moveaxis", "swapaxes",
    "swapdims", "contiguous", "to", "type", "type_as", "float", "double", "half",
    "bfloat16", "detach", "as_strided", "diagonal", "getitem", "real", "imag",
    "view_as_real", "view_as_complex", "broadcast_to", "unfold", "T", "mT",
}  # fmt: skip


def _writes(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may write into a tensor it is given (``x.add_(y)``, ``x[i] = y``,
    ``torch.relu_(x)``, a layer built with ``inplace=True``)."""
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(str(node.target)), "inplace", False))
    if node.target in (operator.setitem, operator.iadd, operator.imul, operator.isub):
        return True
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return (
        node.op in ("call_method", "call_function")
        and name.endswith("_")
        and not name.endswith("__")
    )


def _conv_arguments(node: fx.Node) -> dict[str, Any]:
    """A call of ``F.conv1d``/``F.conv2d``'s arguments by name."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    return {**dict(zip(names, node.args, strict=False)), **node.kwargs}


def _viewed_attribute(node: fx.Node) -> str | None:
    """The name of the module tensor that ``node`` is (``get_attr``) or a view of
    (``squeeze``, ``unsqueeze``, ``view``, ``reshape`` of it); else None."""
    views = ("squeeze", "unsqueeze", "view", "reshape")
    functions = (torch.squeeze, torch.unsqueeze, torch.reshape)
    while node.op in ("call_method", "call_function") and (
        node.target in views or node.target in functions
    ):
        first = node.args[0] if node.args else None
        if not isinstance(first, fx.Node):
            return None
        node = first
    return str(node.target) if node.op == "get_attr" else None


def _used_directly(name: str, where: str) -> UnsupportedModuleError:
    """The refusal of a parameter whose use canon cannot follow."""
    return unsupported(
        f"parameter `{name}` is used directly in forward ({where}) in a way canon "
        "cannot follow; canon supports parameters inside layers and norm layers, and "
        "per-unit parameters multiplied or added to hidden units",
        "get_attr",
        name,
    )


class Walker(AttentionSteps, ExpertSteps):
    """Walks a traced, shape-propagated graph and collects the unit groups."""

    def __init__(
        self,
        gm: fx.GraphModule,
        tied: dict[str, str] | None = None,
        names: frozenset[str] | None = None,
    ) -> None:
        self.gm = gm
        self.values: dict[fx.Node, Value] = {}
        self.order: dict[fx.Node, int] = {}
        # each layer's first call: the units it read, the space it made
        self.calls: dict[str, tuple[Units | None, Space]] = {}
        self.tables = {}
        self.input = Space(size=0, pinned=True)
        self.output: OutputLayer | None = None
        self.output_space: Space | None = None
        self.attentions = []
        self.fills = {}
        self.parts = {}
        self.cut_spaces = []
        self.inner = []
        self.routers = {}
        # the model's ties, not the graph's: the graph holds only what the forward read
        self.tied = tied_names(gm) if tied is None else tied
        # every name of a tied tensor: the one the state dict keeps may be either end's
        # (XLM-RoBERTa's keeps its output layer's, RoBERTa's its embedding's)
        self.shared = set(self.tied) | set(self.tied.values())
        self.names = names  # the model's state dict (None: every tensor the graph reads)
        self.from_input: set[fx.Node] = set()  # the nodes computed from the network's input

    # -- the walk ------------------------------------------------------------

    def walk(self) -> tuple[tuple[UnitGroup, ...], OutputLayer | None]:
        """The unit groups in forward order and the output layer. Nodes whose results
        never reach the output are passed over (:func:`_dead`)."""
        dead = _dead(self.gm)
        for index, node in enumerate(self.gm.graph.nodes):
            self.order[node] = index
            if node in dead:
                continue
            if _reads_input(node, self.from_input):
                self.from_input.add(node)
            if node.op != "output" and self._number(node):
                continue  # a number (Gemma's embed_scale, cast), not the input
            if node.op == "placeholder":
                self.values[node] = Units(self.input, 1)
            elif node.op == "get_attr":
                if is_tensor(node):
                    self.values[node] = Param(str(node.target), 0)
            elif node.op == "output":
                self._output(node)
            elif is_tensor(node):
                self._step(node)
        self._check_unfollowed()
        groups = self._groups()
        _check_disjoint(groups)
        return groups, self.output

    def _module_at(self, node: fx.Node) -> nn.Module | None:
        """The module a ``call_module`` node calls; None for any other node."""
        return self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None

    def _check_unfollowed(self) -> None:
        """Refuse units not followed (:class:`Unfollowed`) that no function recorded whole
        or ranking reads: a tensor holding them that none of its users takes further (a
        write in place into a tensor of its own, which the walk cannot tell to be
        harmless)."""
        for node, value in self.values.items():
            if isinstance(value, Unfollowed) and not any(
                isinstance(self.values.get(user), (Unfollowed, Opaque))
                or op_name(user) in _POSITIONS  # positions alone (:meth:`_ranked`)
                for user in node.users
            ):
                raise value.error

    def _number(self, node: fx.Node) -> bool:
        """Whether ``node`` is a one-number tensor made from no tracked value: a tensor the
        model held as a plain attribute (recorded as ``constant_N``,
        :mod:`canon.core.record`), or one computed from such alone. A factor like any
        number, not the network's input."""
        if not one_tensor(node) or math.prod(shape_of(node)) != 1:
            return False
        if node.op == "placeholder":
            return node.name.startswith("constant_")
        return node.op in ("call_function", "call_method") and not self._inputs(node)

    def _inputs(self, node: fx.Node) -> list[tuple[fx.Node, Value]]:
        found: list[fx.Node] = []
        # ``a.type_as(b)`` reads only b's dtype, ``a.reshape_as(b)`` its shape;
        # ``x.new_zeros(shape)`` only x's dtype and device
        alike = ("type_as", "reshape_as", "view_as")
        read = node.args[:1] if node.target in alike else (node.args, node.kwargs)
        if node.op == "call_method" and node.target in NEW:
            read = (node.args[1:], node.kwargs)
        fx.node.map_arg(read, found.append)
        return [(n, self.values[n]) for n in found if n in self.values]

    def _step(self, node: fx.Node) -> None:
        if node.op == "call_method" and node.target == "copy_" and self._fill(node):
            return
        inputs = self._inputs(node)
        name = op_name(node)
        if any(isinstance(v, Ended) for _, v in inputs):
            raise unsupported(
                f"op `{name}` in {location(node)} follows a sum over the units",
                name,
                location(node),
            )
        cut = _cut_positions(node, inputs)
        if cut is not None:
            self.values[node] = cut
            return
        if any(isinstance(v, Positions) for _, v in inputs):
            if node.target is not operator.getitem or len(inputs) != 1:
                raise unsupported(
                    f"op `{name}` in {location(node)} reads a tuple of parts", name, location(node)
                )
            self.values[node] = cast(Positions, inputs[0][1]).value
            return
        if self._ranked(node, inputs):
            return
        if is_opaque(node.target) or any(isinstance(v, Opaque) for _, v in inputs):
            self.values[node] = self._opaque(node, inputs)
            return
        unfollowed = [v for _, v in inputs if isinstance(v, Unfollowed)]
        if unfollowed:
            self.values[node] = self._still_unfollowed(node, inputs, unfollowed[0])
            return
        attention = (
            Heads, Scores, Parts, Stacked, Attended, Sliced, HeadParts, Spread, Woven, Grouped,
            HeadRanges, JoinedHeads,
        )  # fmt: skip
        # attention on single heads: each of q, k, v one layer's outputs as (batch, 1,
        # tokens, d), no attention value yet (SegFormer's and PVT's first stage, one head)
        single = node.target is F.scaled_dot_product_attention or (
            node.target in MATMUL and len(hidden_units(inputs)) == 2
        )
        inputs = self._single_heads(node, inputs) or inputs
        pieces = [v for _, v in inputs if isinstance(v, Pieces)]
        if pieces:
            index = node.args[1] if len(node.args) > 1 else None
            picked = node.target is operator.getitem and len(inputs) == 1
            if not (picked and isinstance(index, int)):
                raise unsupported(
                    f"op `{name}` in {location(node)} reads a tuple of parts", name, location(node)
                )
            self.values[node] = pieces[0].values[index]
            return
        if any(isinstance(v, attention) for _, v in inputs) or single:
            try:
                self.values[node] = self._attention_step(node, inputs)
            except UnsupportedModuleError as error:
                # heads the walk does not follow (viewed, compared): fine for a function
                # recorded whole, refused anywhere else (:class:`Unfollowed`)
                self.values[node] = Unfollowed(tuple(spaces_in([v for _, v in inputs])), error)
            return
        if any(isinstance(v, Concat) for _, v in inputs):
            self.values[node] = self._side_by_side(node, inputs)
            return
        hidden = hidden_units(inputs)
        joined = self._joined(node, inputs) if not hidden else None
        if joined is not None:
            self.values[node] = joined
            return
        if hidden and any(isinstance(v, Joined) for _, v in inputs):
            self.values[node] = self._linear_with_joined_bias(node, inputs)
            return
        # a convolution's weights read through views (before they count as a fixed tensor)
        conv = self._functional_conv(node) if hidden else None
        if conv is not None:
            path, layer = conv
            if layer.groups == 1:
                self.values[node] = self._layer(node, layer, inputs, path=path)
            else:
                self.values[node] = self._grouped_conv(node, layer, hidden, path=path)
            return
        filtered = self._filtered(node, hidden) if hidden else None
        if filtered is not None:
            self.values[node] = filtered
            return
        fixed = [v for _, v in inputs if isinstance(v, Fixed)]
        module = self._module_at(node)
        if isinstance(module, StackedExperts):
            self.values[node] = self._experts(node, module, inputs)
            return
        if module is not None and is_router(module):
            self.values[node] = self._router(node, module, inputs)
            return
        # a layer applied to parameters and constants alone (Swin V2's position-bias MLP over
        # its table of coordinates, MPNet's and T5's relative-position embedding read by
        # bucket) computes a tensor that no symmetry moves, as its parameters are
        own = isinstance(module, (*LAYERS, nn.Embedding)) and not any(
            n in self.from_input or not isinstance(v, (Param, Units)) for n, v in inputs
        )
        if fixed or (own and inputs):
            names = tuple(dict.fromkeys(n for f in fixed for n in f.names))
            if hidden and self._promote(fixed, node):
                self._step(node)
                return
            if hidden and node.target in ADD | MUL | DIV and module is None:
                # parameters through functions other than views (Qwen3.5's decay rate
                # -exp(A_log)) times units: fine for a function recorded whole, whose
                # units stay where they are (the parameters do not move)
                spaces = tuple(spaces_in([v for _, v in hidden]))
                self.values[node] = Unfollowed(spaces, _used_directly(names[0], location(node)))
                return
            if hidden:
                raise _used_directly(names[0], location(node))
            params = tuple(v.name for _, v in inputs if isinstance(v, Param))
            if module is not None:
                params += tuple(f"{node.target}.{n}" for n, _ in module.named_parameters())
            lookup = node if isinstance(module, (nn.Embedding, *LAYERS)) else None
            if len(inputs) == len(fixed) == 1:
                lookup = fixed[0].lookup
            self.values[node] = Fixed(tuple(dict.fromkeys(names + params)), lookup)
            return
        gated = self._gated_copies(node, module, hidden)
        if gated is not None:
            self.values[node] = gated
            return
        # a linear layer, or a convolution over all channels, reads repeated units
        reads = isinstance(module, LAYERS) and getattr(module, "groups", 1) == 1
        if any(u.repeat > 1 for _, u in hidden) and not reads:
            copies = [(n, _side_by_side_copies(v)) for n, v in inputs]
            try:
                self._check_repeated(node, module, hidden)
            except UnsupportedModuleError:
                if not any(isinstance(v, Concat) for _, v in copies):
                    raise
                # copies of a space side by side (GhostNet's two halves), as any units side
                # by side: added to a stream, convolved depthwise
                self.values[node] = self._side_by_side(node, copies)
                return
        if isinstance(module, nn.MultiheadAttention):
            self.values[node] = self._multihead(node, module, inputs)
            return
        # a layer's or BatchNorm's own forward, traced into (timm's Linear, BatchNormAct2d)
        bn = self._functional_batchnorm(node) if hidden else None
        if bn is not None:
            self.values[node] = self._batchnorm(node, bn, *hidden[0])
            return
        linear_layer = self._functional_linear(node) if hidden else None
        if linear_layer is not None:
            self.values[node] = self._layer(node, linear_layer[1], inputs, path=linear_layer[0])
            return
        table = self._functional_embedding(node)
        if isinstance(module, nn.Embedding) or table is not None:
            path = str(node.target) if table is None else table[0]
            if hidden:
                raise unsupported(f"embedding `{path}` reads hidden units", "Embedding", path)
            width = module.embedding_dim if isinstance(module, nn.Embedding) else table[1]  # type: ignore[index]
            self.values[node] = self._embedding(node, path, width)
            return
        if hidden and node.target in CARVE:
            self.values[node] = self._carve(node, *hidden[0])
            return
        if hidden and node.target in CAT:
            self.values[node] = self._concat(node, inputs, hidden)
            return
        if hidden and node.target in (torch.where, "where"):
            self.values[node] = self._choose(node, inputs, hidden)
            return
        if hidden and node.target is operator.getitem and len(inputs) == 1:
            try:
                self.values[node] = self._index(node, *hidden[0])
            except UnsupportedModuleError as error:
                # units picked apart (GLM-5's indexer's keys in interleaved pairs): fine
                # where only a ranking or a function recorded whole reads them
                self.values[node] = Unfollowed(tuple(spaces_in([hidden[0][1]])), error)
            return
        if isinstance(module, LAYERS) and (
            not isinstance(module, nn.Linear) and module.groups != 1
        ):
            self.values[node] = self._grouped_conv(node, module, hidden)
            return
        if isinstance(module, LAYERS):
            self.values[node] = self._layer(node, module, inputs)
            return
        if not hidden:
            masked = any(isinstance(v, Units) for _, v in inputs)
            params = tuple(v.name for _, v in inputs if isinstance(v, Param))
            if masked and node.target in MUL and params:
                self.values[node] = self._masked_param(node, inputs)
            elif masked and params:  # parameters and the input: rotary angles, a bias table
                self.values[node] = Fixed(params)
            elif masked:
                self.values[node] = Units(self.input, 1)  # before the first layer: the input
            elif inputs and all(isinstance(v, Param) for _, v in inputs):
                self.values[node] = self._param_view(node, inputs)
            else:
                self.values[node] = Units(self.input, 1)
            return
        source, units = hidden[0]
        assert isinstance(units, Units)
        if module is not None:
            self.values[node] = self._module(node, module, source, units, inputs)
            return
        target = node.target
        if target in ADD or target in MUL or target in DIV or target in _ADDCMUL:
            self.values[node] = self._arithmetic(node, inputs, hidden)
        elif target in PERMUTE:
            self.values[node] = self._permute(node, source, units)
        elif target in POSITIONS:
            self.values[node] = self._positions(node, source, units)
        elif target is F.layer_norm or target is F.group_norm:
            self.values[node] = self._functional_norm(node, source, units, inputs)
        elif target in _REDUCE and self._reduced_dims(node) is not None:
            self.values[node] = self._reduce(node, source, units)
        else:
            op = function_op(node)
            if op is None:
                # refused unless what it computes only reaches a function recorded whole
                # (Mamba's time step, ``dt_proj.weight @ x``, read by its scan alone)
                refusal = unsupported(
                    f"unsupported op `{name}` in {location(node)}", name, location(node)
                )
                self.values[node] = Unfollowed(tuple(spaces_in([u for _, u in hidden])), refusal)
                return
            self.values[node] = self._apply(node, op, source, units, hidden)

    def _opaque(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value:
        """A function recorded whole, or an op on what it computed (:class:`Opaque`): every
        unit it reads is pinned; a layer reading its result makes new units from it as
        from the network's input."""
        module = self._module_at(node)
        if isinstance(module, LAYERS) and isinstance(inputs[0][1], Opaque):
            if not isinstance(module, nn.Linear) and module.groups != 1:
                raise unsupported(
                    f"grouped convolution `{node.target}` reads what a function recorded "
                    "whole computed",
                    type(module).__name__,
                    str(node.target),
                )
            pin_all([v for _, v in inputs[1:]])
            return self._layer(node, module, [(inputs[0][0], Units(self.input, 1))])
        pin_all([v for _, v in inputs])
        return Opaque()

    def _gated_copies(
        self, node: fx.Node, module: nn.Module | None, hidden: list[tuple[fx.Node, Units]]
    ) -> Units | None:
        """Attention's output (with grouped-query attention, each value head once per query
        head that shares it) times a gate of one unit per query head and dimension, a
        function of a layer's rows read nowhere else (Qwen3.5's and Qwen3-Next's ``out *
        sigmoid(gate)``, the gate the second half of each query head's rows): the output,
        its value units carrying the gate's rows (one copy per query head of a group, only
        permuted: the gate is no linear function of them). None for any other op."""
        if module is not None or node.target not in MUL or len(hidden) != 2:
            return None
        (_, first), (_, second) = hidden
        outputs = {id(a.value.root()): a for a in self.attentions}
        found = [
            (c, g) for c, g in ((first, second), (second, first)) if id(c.space.root()) in outputs
        ]
        if len(found) != 1:
            return None
        copies, gate = found[0]
        value, space = copies.space.root(), gate.space.root()
        d = value.size // outputs[id(value)].heads
        if not (
            (copies.repeat == 1 or copies.head == d)
            and gate.repeat == 1
            and (copies.axis, copies.block, gate.block) == (gate.axis, 1, 1)
            and space.size == value.size * copies.repeat
            and len(space.producers) == 1
            and not (space.pieces or space.outgoing or space.carried or space.batchnorms)
            and not (space.pinned or space.heads_only or space.carved or space.parent)
            and all(op.kind == "elementwise" for _, op in space.ops)
            and self._read_once(space)
        ):
            return None
        made, r = space.producers[0], copies.repeat
        if made.bias_parts:
            return None
        bias_start = made.start if made.bias_start is None else made.bias_start
        if made.stride == 0:  # query head h's gates: rows start + h * d ...
            step = d
        elif made.head == d:  # ... or start + h * stride
            step = made.stride
        else:
            return None
        value.carried += [
            CarriedAxis(name, 0, head=d, start=start + i * step, stride=r * step)
            for name, start in ((made.weight, made.start), (made.bias, bias_start))
            if name is not None
            for i in range(r)
        ]
        space.pinned = True  # its rows move with the value units, as carried above
        value.gated = True
        return copies

    def _read_once(self, space: Space) -> bool:
        """Whether every tensor walked so far that holds ``space``'s units has one user (so
        none is read again later)."""
        return all(
            len(n.users) == 1
            for n, v in self.values.items()
            if isinstance(v, Units) and v.space.root() is space
        )

    def _ranked(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> bool:
        """Which entries of units the walk does not follow (:class:`Unfollowed`), or of what
        a function recorded whole computed (:class:`Opaque`), are largest: DeepSeek-V3.2's
        sparse-attention indexer, a top-k of scores from layers of its own. Their units
        are pinned, so that no symmetry changes the values ranked (the layers reading
        followed units move with them): the positions a ranking gives (``topk`` and
        ``sort``'s indices, ``argsort``, ``argmax``, ``argmin``) are then constants (no
        value), its values what a function recorded whole computes. False (nothing done)
        for any other node."""
        name = op_name(node)
        if len(inputs) == 1 and node.target in (operator.getitem, getattr):
            source, value = inputs[0]
            picked = node.args[1] if len(node.args) > 1 else None
            ranked = isinstance(value, Opaque) and op_name(source) in _RANKINGS
            return ranked and picked in (1, "indices")  # the positions: a constant
        if name not in (*_RANKINGS, *_POSITIONS) or not inputs:
            return False
        if not all(isinstance(v, (Unfollowed, Opaque)) for _, v in inputs):
            return False
        pin_all([v for _, v in inputs])
        if name in _RANKINGS:
            self.values[node] = Opaque()  # (values, indices)
        return True

    def _still_unfollowed(
        self, node: fx.Node, inputs: list[tuple[fx.Node, Value]], value: Unfollowed
    ) -> Unfollowed:
        """An op on :class:`Unfollowed` units, other than a layer's, with parameters, numbers
        or more units (Qwen3-Next's queries, keys and values joined for their convolution,
        Kimi Linear's decay chosen by ``torch.where``): all of them not followed."""
        module = self._module_at(node)
        others = [v for _, v in inputs if v is not value]
        # units that may stay (not attention's but heads: the queries of an attention the
        # walk does not follow, met by its keys, DeepSeek-V3.2's indexer)
        held = (Unfollowed, Units, Heads, JoinedHeads, Concat)
        if (module is None or module_op(module) is not None) and all(
            isinstance(v, (Param, Fixed, *held)) for v in others
        ):
            more = spaces_in([v for v in others if isinstance(v, held)])
            return Unfollowed((*value.spaces, *more), value.error) if more else value
        raise value.error

    # -- layers ----------------------------------------------------------------

    def _joined(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Joined | None:
        """``torch.cat`` of whole one-axis parameters and zeros (a buffer no file holds, or a
        tensor the model holds as a plain attribute): the parts of a bias a layer's forward
        builds; else None."""
        if node.target not in CAT or len(shape_of(node)) != 1:
            return None
        listed = node.args[0] if node.args else node.kwargs.get("tensors")
        if not isinstance(listed, (list, tuple)) or not inputs:
            return None
        value = dict(inputs)
        parts: list[tuple[int, int, str | None]] = []
        first = 0
        for part in listed:
            if not isinstance(part, fx.Node) or len(shape_of(part)) != 1:
                return None
            size = shape_of(part)[0]
            held = value.get(part)
            name = held.name if isinstance(held, Param) else ""
            whole = attribute(self.gm, name) if name else None
            zeros = bool(part.meta.get("zeros"))
            if whole is not None and self.names is not None and name not in self.names:
                # a buffer no file holds (timm's key bias): it stands for zeros, or nothing
                zeros = all_zeros(whole)
            elif whole is not None and tuple(whole.shape) == (size,):
                parts.append((first, size, name))
                first += size
                continue
            if zeros:
                parts.append((first, size, None))
            else:
                return None
            first += size
        return Joined(tuple(parts))

    def _linear_with_joined_bias(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Units:
        """``F.linear(x, layer.weight, bias)`` with a bias joined from parts, of a layer
        that has none of its own (timm's fused query-key-value projection): that layer,
        the joined bias taken apart with its outputs."""
        at, name = location(node), op_name(node)
        given = {**dict(zip(("input", "weight", "bias"), node.args, strict=False)), **node.kwargs}
        weight, bias = given.get("weight"), given.get("bias")
        path = str(weight.target).rpartition(".")[0] if isinstance(weight, fx.Node) else ""
        w = attribute(self.gm, f"{path}.weight") if path else None
        joined = self.values.get(bias) if isinstance(bias, fx.Node) else None
        if not (
            node.target is F.linear
            and isinstance(weight, fx.Node)
            and weight.op == "get_attr"
            and w is not None
            and w.ndim == 2
            and attribute(self.gm, f"{path}.bias") is None
            and isinstance(joined, Joined)
            and sum(n for _, n, _ in joined.parts) == w.shape[0]
        ):
            raise unsupported(
                f"op `{name}` in {at} reads a tensor joined from parameters; canon follows "
                "such a tensor as the bias of a linear layer that has none of its own",
                name,
                at,
            )
        source = given["input"]
        assert isinstance(source, fx.Node) and w is not None
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        units = self._layer(node, layer, [(source, self.values[source])], path=path)
        space = units.space.root()
        space.producers[-1] = replace(space.producers[-1], bias_parts=joined.parts)
        return units

    def _promote(self, fixed: list[Fixed], node: fx.Node) -> bool:
        """Whether ``fixed`` is one lookup in an embedding by a constant index, or a layer
        over constants (or a view of either alone), that ``node`` meets with hidden units:
        a table of positions added to the tokens' embeddings (GPT-2's, BERT's), projected
        position features (EdgeNeXt's). The table or layer then starts a space of units, as
        any embedding or layer does, and the steps from it to ``node`` are walked again."""
        if len(fixed) != 1 or fixed[0].lookup is None:
            return False
        lookup = fixed[0].lookup
        table = self.gm.get_submodule(str(lookup.target))
        if isinstance(table, nn.Embedding):
            self.values[lookup] = self._embedding(lookup, str(lookup.target), table.embedding_dim)
        else:  # a layer over constants (EdgeNeXt's Fourier position features, projected)
            assert isinstance(table, LAYERS)
            source = lookup.args[0]
            assert isinstance(source, fx.Node)
            self.values[lookup] = self._layer(lookup, table, [(source, Units(self.input, 1))])
        step = lookup.next
        while step is not node:
            value = self.values.get(step)
            if isinstance(value, Fixed) and value.lookup is lookup:
                self._step(step)
            step = step.next
        return True

    def _functional_embedding(self, node: fx.Node) -> tuple[str, int] | None:
        """For ``F.embedding`` of a module's own ``weight`` with no ``max_norm`` (an
        Embedding subclass's forward traced into: Gemma's scaled embedding): its path and
        width; else None."""
        call = _own_call(node, F.embedding, ("input", "weight", "padding_idx", "max_norm"))
        if call is None or call[1].get("max_norm") is not None:
            return None
        table = attribute(self.gm, f"{call[0]}.weight")
        return None if table is None or table.ndim != 2 else (call[0], int(table.shape[1]))

    def _functional_linear(self, node: fx.Node) -> tuple[str, nn.Linear] | None:
        """For ``F.linear`` on exactly one module's ``weight`` and ``bias`` (a Linear
        subclass's own forward, traced into): its path and a weightless Linear of its
        shape; else None."""
        call = _own_call(node, F.linear, ("input", "weight", "bias"))
        w = None if call is None else attribute(self.gm, f"{call[0]}.weight")
        if call is None or w is None or w.ndim != 2:
            return None
        out_features, in_features = w.shape
        bias = call[1].get("bias") is not None
        return call[0], nn.Linear(in_features, out_features, bias=bias, device="meta")

    def _across_positions(self, node: fx.Node, module: nn.Linear, path: str, units: Units) -> Units:
        """A linear layer over an axis of positions (MLP-Mixer's and ResMLP's token mixing,
        the tokens moved to the last axis): the same map of the positions for every unit,
        so the units stay on their axis and permute through it; they scale through it
        only without a bias. The layer's weights index positions: no symmetry moves
        them."""
        if units.repeat != 1 or path in self.calls:
            raise unsupported(
                f"linear layer `{path}` mixes positions of units laid out side by side, or is "
                "called again",
                "Linear",
                path,
            )
        space = units.space.root()
        op = linear("mix positions") if module.bias is None else plain("mix positions")
        space.ops.append((self.order[node], op))
        return Units(space, units.axis)

    def _functional_conv(self, node: fx.Node) -> tuple[str, nn.Conv1d | nn.Conv2d] | None:
        """For ``F.conv1d``/``F.conv2d`` on a module's own ``weight`` (read through views
        that give back its shape: LFM2's and Mamba's causal depthwise convolution,
        ``weight.squeeze(1)`` then ``unsqueeze(1)``) and ``bias``: its path and a
        weightless convolution of its shape and the call's groups; else None. Its
        padding and stride act on the positions alone: they do not matter to the units."""
        if node.op != "call_function" or node.target not in (F.conv1d, F.conv2d):
            return None
        given = _conv_arguments(node)
        weight, bias = given.get("weight"), given.get("bias")
        source = _viewed_attribute(weight) if isinstance(weight, fx.Node) else None
        if source is None or not source.endswith(".weight"):
            return None
        path = source.removesuffix(".weight")
        held = attribute(self.gm, source)
        groups = given.get("groups", 1)
        kind = nn.Conv1d if node.target is F.conv1d else nn.Conv2d
        if held is None or held.ndim != (3 if kind is nn.Conv1d else 4):
            return None
        if not isinstance(weight, fx.Node) or shape_of(weight) != tuple(held.shape):
            return None
        if not isinstance(groups, int) or groups < 1:
            return None
        if bias is not None and (
            not isinstance(bias, fx.Node)
            or bias.op != "get_attr"
            or str(bias.target) != f"{path}.bias"
        ):
            return None
        out_channels, fan_in, *kernel = held.shape
        layer = kind(
            fan_in * groups, out_channels, kernel[0], groups=groups, bias=bias is not None,
            device="meta",
        )  # fmt: skip  # the kernel's size does not matter to the units
        return path, layer

    def _filtered(self, node: fx.Node, hidden: list[tuple[fx.Node, Units]]) -> Units | None:
        """``F.conv2d(x, filt, groups=channels)`` with one fixed filter for every channel,
        held by the code and not the weights (timm's ``BlurPool2d``, the anti-aliasing of
        TResNet and ``resnetaa*``): the same linear map of each channel's positions, so
        the units stay and permute through it; None for any other call."""
        if node.op != "call_function" or node.target not in (F.conv1d, F.conv2d):
            return None
        given = _conv_arguments(node)
        weight, source = given.get("weight"), given.get("input")
        if len(hidden) != 1 or hidden[0][0] is not source or given.get("bias") is not None:
            return None
        units = hidden[0][1]
        base = weight
        while isinstance(base, fx.Node) and base.target in ("expand", "expand_as", "to"):
            base = base.args[0]
        name = str(base.target) if isinstance(base, fx.Node) and base.op == "get_attr" else None
        held = attribute(self.gm, name) if name is not None else None
        stored = self.names is None or name in self.names
        channels = shape_of(source)[1] if len(shape_of(source)) > 1 else 0
        if held is None or stored or held.is_meta or held.shape[1:2] != (1,):
            return None
        if units.axis != 1 or units.block != 1 or units.repeat != 1 or units.space.pinned:
            return None
        if given.get("groups") != channels or not bool((held == held[:1]).all()):
            return None
        space = units.space.root()
        space.ops.append((self.order[node], linear("fixed filter")))
        return Units(space, 1)

    def _layer(
        self,
        node: fx.Node,
        module: nn.Module,
        inputs: list[tuple[fx.Node, Value]],
        path: str | None = None,
    ) -> Units:
        """A layer (called as a module at ``node``, or a Linear's own forward traced into,
        at ``path``): it makes a new space of units from the ones it reads."""
        path = str(node.target) if path is None else path
        source, units = inputs[0]
        if not isinstance(units, Units):
            raise unsupported(f"layer `{path}` reads a parameter", type(module).__name__, path)
        in_shape, out_shape = shape_of(source), shape_of(node)
        if isinstance(module, nn.Linear):
            size, fan_in = module.out_features, module.in_features
            axis = len(out_shape) - 1
            if not units.space.pinned and units.axis < len(in_shape) - 1 and units.block == 1:
                return self._across_positions(node, module, path, units)
            if not units.space.pinned and units.axis != len(in_shape) - 1:
                raise unsupported(
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
                raise unsupported(
                    f"convolution `{path}` uses padding_mode={module.padding_mode!r}; canon "
                    "supports zero padding",
                    type(module).__name__,
                    path,
                )
            if not units.space.pinned and (units.axis != 1 or units.block != 1):
                raise unsupported(
                    f"convolution `{path}` does not read its input's units as channels",
                    type(module).__name__,
                    path,
                )
        if path in self.calls:
            return self._called_again(node, path, units, axis)
        weight = f"{path}.weight"
        table = self.tables.get(self.tied.get(weight, weight))
        if table is not None and not units.space.pinned and units.block == units.repeat == 1:
            # an output layer that is an embedding's table reads the units that table
            # writes (ALBERT's language-model head, after its own projection and norm)
            self._join(table.root(), units.space.root(), node)
        if not units.space.pinned:
            space = units.space.root()
            if fan_in != space.size * units.block * units.repeat:
                raise unsupported(
                    f"layer `{path}` has {fan_in} inputs, not the {space.size} units "
                    f"(x {units.block}) it reads",
                    type(module).__name__,
                    path,
                )
            layout = {"repeat": units.repeat, "head": units.head}
            space.outgoing.append(
                (self.order[node], OutgoingAxis(f"{path}.weight", 1, units.block, **layout))
            )
            if units.repeat == 1:  # repeated units are read where they are made
                space.taps.setdefault(source.name, Tap(source.name, units.axis, units.block))
        return self._made(node, path, module, size, axis, units)

    def _made(
        self, node: fx.Node, path: str, module: nn.Module, size: int, axis: int, read: Units | None
    ) -> Units:
        """The new space of units a layer at ``path`` makes at ``node`` (on ``axis``), from
        ``read`` (None: units of several layers side by side)."""
        new = Space(size=size, created=self.order[node], origin=path)
        bias = f"{path}.bias" if module.bias is not None else None
        new.producers.append(Made(self.order[node], path, f"{path}.weight", bias))
        self.calls[path] = (read, new)
        return Units(new, axis, layer=path)

    def _called_again(self, node: fx.Node, path: str, units: Units, axis: int) -> Units:
        """A layer called once more (ALBERT applies one layer at every depth): the same
        weights, so the units it reads are the ones it read before (their spaces join)
        and the units it makes are the ones it made."""
        first, made = self.calls[path]
        layout = (units.block, units.repeat, units.head)
        if (
            first is None
            or first.space.pinned != units.space.pinned
            or (not units.space.pinned and layout != (first.block, first.repeat, first.head))
        ):
            raise unsupported(
                f"layer `{path}` is called again on other inputs than its first call's (the "
                "network's input, hidden units, or their layout); canon follows a shared layer "
                "that reads the same units every time",
                "shared layer",
                path,
            )
        if not units.space.pinned:
            self._join(first.space.root(), units.space.root(), node)
        return Units(made.root(), axis)

    def _grouped_conv(
        self,
        node: fx.Node,
        module: nn.Module,
        hidden: list[tuple[fx.Node, Units]],
        path: str | None = None,
    ) -> Units:
        """A grouped or depthwise convolution (called as a module at ``node``, or its
        weights used by a function call, at ``path``)."""
        assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        path = str(node.target) if path is None else path
        depthwise = module.groups == module.in_channels == module.out_channels
        if module.padding_mode != "zeros":
            raise unsupported(
                f"convolution `{path}` uses groups={module.groups} "
                f"({module.in_channels} -> {module.out_channels} channels), "
                f"padding_mode={module.padding_mode!r}; canon supports grouped and depthwise "
                "convolutions with zero padding",
                type(module).__name__,
                path,
            )
        if not depthwise:
            return self._grouped(node, module, hidden, path)
        if not hidden:
            return Units(self.input, 1)
        _, units = hidden[0]
        assert isinstance(units, Units)
        space = units.space.root()
        # a depthwise filter moves with its channel; it is linear in it unless it adds a bias
        space.carried.append(CarriedAxis(f"{path}.weight", 0))
        op = linear("depthwise conv")
        if module.bias is not None:
            space.carried.append(CarriedAxis(f"{path}.bias", 0))
            op = plain("depthwise conv with bias")
        space.ops.append((self.order[node], op))
        return Units(space, 1)

    def _grouped(
        self,
        node: fx.Node,
        module: nn.Conv1d | nn.Conv2d | nn.Conv3d,
        hidden: list[tuple[fx.Node, Units]],
        path: str,
    ) -> Units:
        """A grouped convolution (ResNeXt's, RegNet's): each output group reads only its
        input group, so the units it reads and the units it makes permute within their
        groups (``blocks``); its weight holds an input unit's entries in its group's rows
        (``OutgoingAxis.groups``)."""
        groups = module.groups
        read = hidden[0][1] if hidden else None
        if read is not None and path in self.calls:
            return self._called_again(node, path, read, 1)
        if read is not None:
            space = read.space.root()
            blocks = math.lcm(space.blocks, groups)
            if read.axis != 1 or read.block != 1 or read.repeat != 1 or space.size % blocks:
                raise unsupported(
                    f"convolution `{path}` (groups={groups}) reads units that are not its "
                    "channels, or whose groups do not agree with other layers' on them",
                    type(module).__name__,
                    path,
                )
            space.blocks = blocks
            space.outgoing.append(
                (self.order[node], OutgoingAxis(f"{path}.weight", 1, groups=groups))
            )
            space.taps.setdefault(hidden[0][0].name, Tap(hidden[0][0].name, 1))
        made = self._made(node, path, module, module.out_channels, 1, read)
        made.space.blocks = groups
        return made

    # -- modules that keep the units -------------------------------------------

    def _module(
        self,
        node: fx.Node,
        module: nn.Module,
        source: fx.Node,
        units: Units,
        inputs: list[tuple[fx.Node, Value]],
    ) -> Value:
        path = str(node.target)
        if isinstance(module, BATCHNORMS):
            return self._batchnorm(node, _BatchNormCall.of(module, path), source, units)
        if isinstance(module, (*LAYERNORMS, *_INSTANCENORMS, nn.GroupNorm)) or library_norm(module):
            tensors = [f"{path}.{n}" for n, t in module.state_dict().items() if t.ndim >= 1]
            groups = module.num_groups if isinstance(module, nn.GroupNorm) else None
            shape = getattr(module, "normalized_shape", None)
            if library_norm(module):
                shape = _library_norm_shape(module, path, source, units)
            return self._norm(node, units, source, tensors, shape, groups)
        if library_response_norm(module):  # ConvNeXt V2's GRN: run once, then per channel
            return self._response_norm(node, module, source, units)
        op = module_op(module)
        if library_activation(module):  # known by the library it comes from: run it once
            check_commutes(module, path, shape_of(source), units.axis, parameters=False)
        if op is None:
            raise unsupported(
                f"unsupported module {type(module).__name__} at `{path}`; canon supports "
                "Linear, Conv (grouped and depthwise too), BatchNorm, LayerNorm, GroupNorm, "
                "elementwise activations, pooling, Flatten, Dropout and Identity",
                type(module).__name__,
                path,
            )
        return self._apply(node, op, source, units, hidden_units(inputs))

    def _response_norm(
        self, node: fx.Node, module: nn.Module, source: fx.Node, units: Units
    ) -> Units:
        """A global response norm (:func:`~canon.core.ops.library_response_norm`): checked
        by running it to commute with a permutation of the units it reads, its weight and
        bias permuted alike; they are carried along their own unit axis, and no factor
        of a unit is kept (each is scaled by the mean over all of them)."""
        path = str(node.target)
        weight = module.get_parameter("weight")
        if units.block != 1 or units.repeat != 1 or weight.numel() != units.space.root().size:
            raise unsupported(
                f"norm layer `{path}` ({type(module).__name__}) has {weight.numel()} weights, "
                "not one per unit it reads",
                type(module).__name__,
                path,
            )
        check_commutes(module, path, shape_of(source), units.axis)
        space = units.space.root()
        axis = unit_axis_of(weight)
        space.carried += [CarriedAxis(f"{path}.{n}", axis) for n in ("weight", "bias")]
        space.ops.append((self.order[node], plain("norm")))
        return Units(space, units.axis)

    def _functional_batchnorm(self, node: fx.Node) -> _BatchNormCall | None:
        """``F.batch_norm`` in eval mode on exactly the running statistics, weight and bias
        of one module (what a BatchNorm's own forward calls, traced into); else None."""
        names = ("input", "running_mean", "running_var", "weight", "bias", "training")
        call = _own_call(node, F.batch_norm, names)
        if call is None or call[1].get("training", True) is not False:
            return None
        path, given = call
        mean = attribute(self.gm, f"{path}.running_mean")
        eps = given.get("eps", 1e-5)
        if any(given.get(n) is None for n in names[1:5]) or mean is None or mean.ndim != 1:
            return None
        if not isinstance(eps, (int, float)):
            return None
        return _BatchNormCall(path, float(eps), int(mean.shape[0]), True, _BN_TENSORS)

    def _batchnorm(self, node: fx.Node, bn: _BatchNormCall, source: fx.Node, units: Units) -> Units:
        """A BatchNorm (called as a module, or by its own forward traced into): attached to
        the layer right before it, else its tensors only permuted."""
        path = bn.path
        space = units.space.root()
        if units.axis != 1 or units.block != 1:
            raise unsupported(
                f"BatchNorm `{path}` does not normalize its input's units", "BatchNorm", path
            )
        attaches = (
            units.layer is not None
            and len(source.users) == 1
            and units.layer not in space.batchnorms
            and bn.complete
            and bn.features == space.size
        )
        if attaches:
            assert units.layer is not None
            space.batchnorms[units.layer] = BatchNormTensors(
                weight=f"{path}.weight",
                bias=f"{path}.bias",
                running_mean=f"{path}.running_mean",
                running_var=f"{path}.running_var",
                eps=bn.eps,
            )
            return Units(space, 1)
        # anywhere else (after an activation, on a stream) it is only permuted
        space.carried += [CarriedAxis(f"{path}.{name}", 0) for name in bn.tensors]
        space.ops.append((self.order[node], plain("batchnorm")))
        return Units(space, 1)

    def _norm(
        self,
        node: fx.Node,
        units: Units,
        source: fx.Node,
        tensors: list[str],
        normalized_shape: Any,
        groups: int | None,
    ) -> Units:
        """LayerNorm / RMSNorm / GroupNorm / InstanceNorm: the units are only permuted."""
        space = units.space.root()
        ndim = len(shape_of(source))
        where = location(node)
        if units.block != 1:
            raise unsupported(f"a norm layer in {where} reads flattened units", "norm", where)
        layout = {"repeat": units.repeat, "head": units.head}
        if normalized_shape is not None:
            first = ndim - len(tuple(normalized_shape))
            if units.axis < first:  # normalizes each unit over other axes: per unit
                space.ops.append((self.order[node], plain("norm")))
                return Units(space, units.axis, repeat=units.repeat, head=units.head)
            axis = units.axis - first
        else:
            if units.axis != 1:
                raise unsupported(
                    f"a norm layer in {where} does not normalize over the unit axis", "norm", where
                )
            axis = 0
        if groups is not None and groups > 1:
            if units.repeat > 1:
                raise unsupported(f"GroupNorm in {where} reads repeated units", "GroupNorm", where)
            blocks = math.lcm(space.blocks, groups)
            if space.size % blocks:
                raise unsupported(
                    f"GroupNorm in {where} groups {space.size} units in {groups} groups, which "
                    f"does not agree with the other norm layers on these units",
                    "GroupNorm",
                    where,
                )
            space.blocks = blocks
        space.carried.extend(CarriedAxis(name, axis, **layout) for name in tensors)
        space.ops.append((self.order[node], plain("norm")))
        return Units(space, units.axis, repeat=units.repeat, head=units.head)

    def _functional_norm(
        self,
        node: fx.Node,
        source: fx.Node,
        units: Units,
        inputs: list[tuple[fx.Node, Value]],
    ) -> Units:
        params = [v.name for _, v in inputs if isinstance(v, Param)]
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
        units: Units,
        hidden: list[tuple[fx.Node, Units]],
    ) -> Value:
        name = op_name(node)
        where = location(node)
        if len(hidden) != 1:
            raise unsupported(
                f"unsupported op `{name}` in {where}: it combines several hidden tensors",
                name,
                where,
            )
        if op.kind == "reshape":
            try:
                return self._reshape(node, op, source, units)
            except UnsupportedModuleError as error:
                if node.target not in _VIEWS:
                    raise
                # a view the walk does not follow: fine for a recorded function (OLMo
                # Hybrid's output gate, viewed as rows of one head each)
                return Unfollowed(tuple(spaces_in([units])), error)
        if op.kind == "readout":
            return self._reduce(node, source, units)
        in_shape, out_shape = shape_of(source), shape_of(node)
        ok = out_shape == in_shape
        if op.kind == "pool":
            ok = (
                len(out_shape) == len(in_shape)
                and out_shape[: units.axis + 1] == in_shape[: units.axis + 1]
            )
        if not ok:
            raise unsupported(
                f"op `{op.name}` in {where} maps shape {list(in_shape)} to "
                f"{list(out_shape)}, which mixes units; canon supports per-unit ops, "
                "flattening (batch, channels, ...) to (batch, features) and sums over units",
                op.name,
                where,
            )
        space = units.space.root()
        space.ops.append((self.order[node], op))
        return Units(space, units.axis, units.block, repeat=units.repeat, head=units.head)

    def _reshape(
        self, node: fx.Node, op: Op, source: fx.Node, units: Units
    ) -> Units | Heads | Stacked:
        """A view that keeps the unit axis whole, or flattens the axes after it into blocks."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        before = math.prod(in_shape[: units.axis])
        after = math.prod(in_shape[units.axis + 1 :])
        width = in_shape[units.axis]
        space = units.space.root()
        # only axes of size 1 added or dropped, the layer's output read by nothing else
        # (GPT-BigCode's `c_attn(x).unsqueeze(1)`): still that layer's output
        same = [s for s in in_shape if s != 1] == [s for s in out_shape if s != 1]
        layer = units.layer if same and len(source.users) == 1 else None
        for j in range(len(out_shape)):
            if math.prod(out_shape[:j]) != before:
                continue
            if out_shape[j] == width:
                return Units(space, j, units.block, layer, units.repeat, units.head)
            if out_shape[j] == width * after and j == len(out_shape) - 1:
                return Units(space, j, units.block * after, None, units.repeat, units.head)
        merged = self._merged_before(node, source, units)
        if merged is not None:
            return merged
        if units.repeat > 1:
            raise unsupported(
                f"op `{op_name(node)}` in {location(node)} maps repeated units of shape "
                f"{list(in_shape)} to {list(out_shape)}, which mixes them",
                op_name(node),
                location(node),
            )
        heads = self._split_heads(node, source, units)
        if heads is not None:
            return heads
        stacked = self._stack_heads(node, source, units)
        if stacked is not None:
            return stacked
        where = location(node)
        raise unsupported(
            f"op `{op_name(node)}` in {where} maps shape {list(in_shape)} to {list(out_shape)}, "
            "which mixes units; canon supports per-unit ops, flattening (batch, channels, ...) "
            "to (batch, features) and sums over units",
            op_name(node),
            where,
        )

    def _merged_before(self, node: fx.Node, source: fx.Node, units: Units) -> Units | None:
        """A view that merges axes just before the unit axis into it, the unit axis last
        (timm's patch merging: (…, 2, 2, C) flattened to (…, 4C)): each unit repeated
        once per position of the merged axes, in runs of the space's size."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        space = units.space.root()
        if units.block != 1 or units.axis != len(in_shape) - 1 or len(out_shape) < 1:
            return None
        if units.repeat > 1 and units.head != space.size:
            return None  # runs of a head's units, repeated: merged positions interleave them
        width = in_shape[units.axis]
        copies = out_shape[-1] // width if out_shape[-1] % width == 0 else 0
        first = len(in_shape) - 1
        while first > 0 and math.prod(in_shape[first : units.axis]) < copies:
            first -= 1
        if (
            copies < 2
            or math.prod(in_shape[first : units.axis]) != copies
            or tuple(out_shape[:-1]) != tuple(in_shape[:first])
        ):
            return None
        space.ops.append((self.order[node], linear("merge positions into units")))
        return Units(space, len(out_shape) - 1, repeat=copies * units.repeat, head=space.size)

    def _check_repeated(
        self, node: fx.Node, module: nn.Module | None, hidden: list[tuple[fx.Node, Units]]
    ) -> None:
        """Repeated units (grouped-query attention's output, copies side by side) may pass
        through ops that keep their shape and are linear (contiguous, dropout), views and
        position moves that keep the unit axis whole, and norm layers over the whole axis
        (Swin's patch merging) before a linear layer reads them."""
        op = module_op(module) if module is not None else function_op(node)
        one = len(hidden) == 1
        keeps = one and shape_of(node) == shape_of(hidden[0][0])
        elementwise = (
            keeps and op is not None and op.homogeneous and op.odd and op.kind == "elementwise"
        )
        view = one and op is not None and op.kind == "reshape"
        moved = one and module is None and node.target in POSITIONS
        # an index that takes everything (GhostNet's x[:, :out] of its two halves)
        everything = keeps and node.target is operator.getitem
        norm = one and (
            isinstance(module, LAYERNORMS)
            or (module is not None and library_norm(module))
            or node.target is F.layer_norm
        )
        if not (elementwise or view or moved or norm or everything):
            at = location(node)
            raise unsupported(
                f"op `{op_name(node)}` in {at} reads repeated units (grouped-query attention's "
                "output, copies side by side); canon supports a linear layer reading them, "
                "after views, norm layers and linear per-unit ops",
                op_name(node),
                at,
            )

    def _index(self, node: fx.Node, source: fx.Node, units: Units) -> Units:
        """``x[...]`` that picks positions on other axes and keeps every unit (``x[:, -1]``:
        a sequence model's last position)."""
        index = node.args[1]
        entries = list(index) if isinstance(index, tuple) else [index]
        ndim = len(shape_of(source))
        if entries.count(Ellipsis) == 1:
            dots = entries.index(Ellipsis)
            fill = ndim - (len(entries) - 1 - entries.count(None))
            entries[dots : dots + 1] = [slice(None)] * fill
        axis, new_axis = 0, units.axis
        width = shape_of(source)[units.axis]
        for entry in entries:
            if entry is None:
                new_axis += axis <= units.axis
                continue
            bounds = (entry.start, entry.stop, entry.step) if isinstance(entry, slice) else ()
            everything = (
                isinstance(entry, slice)
                and all(b is None or isinstance(b, int) for b in bounds)
                and entry.indices(width) == (0, width, 1)
            )
            if axis == units.axis and not everything:
                return self._sliced_part(node, source, units, entries, axis, new_axis)
            if isinstance(entry, int) and axis < units.axis:
                new_axis -= 1
            elif not isinstance(entry, (int, slice)):
                break
            axis += 1
        else:
            if units.block == 1:  # repeated units stay repeated
                return replace(units, space=units.space.root(), axis=new_axis, layer=None)
        at = location(node)
        raise unsupported(
            f"indexing in {at} picks among the units; canon supports indexing other axes "
            "with numbers and slices (x[:, -1])",
            "getitem",
            at,
        )

    def _sliced_part(
        self,
        node: fx.Node,
        source: fx.Node,
        units: Units,
        entries: list[Any],
        axis: int,
        new_axis: int,
    ) -> Units:
        """``qkv[..., a:b]``: a contiguous part of one layer's outputs, taken along the
        unit axis (Phi-3's fused projection cut into queries, keys and values by slices):
        a space of its own, the layer's rows from ``a`` on its producer."""
        at = location(node)
        entry = entries[axis]
        rest = entries[axis + 1 :]
        space = units.space.root()
        width = shape_of(source)[units.axis]
        bounds = entry.indices(width) if isinstance(entry, slice) else None
        plain = bounds is not None and bounds[2] == 1 and bounds[0] < bounds[1]
        whole = all(e == slice(None) for e in rest)
        one_layer = units.layer is not None and len(space.producers) == 1 and units.block == 1
        if plain and whole and units.block == units.repeat == 1 and not one_layer:
            assert bounds is not None
            return Units(self._cut(node, space, bounds[0], bounds[1]), new_axis)
        if not (plain and whole and one_layer):
            raise unsupported(
                f"indexing in {at} picks among the units; canon supports indexing other axes "
                "with numbers and slices (x[:, -1]), and a slice of one layer's outputs along "
                "their unit axis (a fused projection cut into parts)",
                "getitem",
                at,
            )
        assert bounds is not None
        start, stop, _ = bounds
        space.carved = True
        made = space.producers[0]
        part = self._part_space(node, made, stop - start, made.start + start)
        part.taps.setdefault(f"{source.name}@{start}", Tap(source.name, units.axis, 1, start))
        return Units(part, new_axis)

    def _side_by_side(
        self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]
    ) -> Concat | Units | Pieces:
        """A step on several layers' units side by side (:class:`Concat`): their ``cat``,
        then per-unit ops, pooling, BatchNorm, flattening, a ``split`` into ranges, and the
        linear or convolutional layer that reads them all (each part's units its columns
        from the part's start)."""
        at, name = location(node), op_name(node)
        if node.target in CAT:
            return self._concatenated(node, inputs)
        if node.target in CARVE and len(inputs) == 1:
            return self._pieces(node, *inputs[0])  # type: ignore[arg-type]
        if node.target is operator.getitem and len(inputs) == 1:
            taken = self._concat_slice(node, *inputs[0])  # type: ignore[arg-type]
            if taken is not None:
                return taken
        if node.target in ADD or node.target in MUL:
            added = self._added_side_by_side(node, inputs)
            if added is not None:
                return added
        module = self._module_at(node)
        found = [(n, v) for n, v in inputs if isinstance(v, Concat)]
        others = [v for _, v in inputs if not isinstance(v, Concat)]
        bn = self._functional_batchnorm(node)
        if isinstance(module, BATCHNORMS):
            bn = _BatchNormCall.of(module, str(node.target))
        norm = self._side_by_side_layernorm(node, module)
        plain_params = (bn is not None or norm is not None) and all(
            isinstance(v, Param) for v in others
        )
        conv = self._functional_conv(node)
        if conv is not None and _depthwise(conv[1]) and len(found) == 1 and found[0][1].axis == 1:
            # OLMo Hybrid's queries, keys and values, convolved as one call on a layer's weight
            return self._side_by_side_depthwise(node, conv[1], found[0][1], path=conv[0])
        if len(found) != 1 or (others and not plain_params):
            raise unsupported(
                f"op `{name}` in {at} combines units of several layers side by side with other "
                "tensors",
                name,
                at,
            )
        source, concat = found[0]
        if bn is not None:
            return self._side_by_side_norm(node, bn.path, bn.tensors, source, concat, 1)
        if norm is not None:
            return self._side_by_side_norm(node, *norm, source, concat, len(shape_of(node)) - 1)
        if node.target in PERMUTE:
            return replace(
                concat, axis=permuted_dims(node, len(shape_of(source))).index(concat.axis)
            )
        if isinstance(module, LAYERS) and _depthwise(module) and concat.axis == 1:
            return self._side_by_side_depthwise(node, module, concat)
        if isinstance(module, LAYERS):
            return self._read_side_by_side(node, module, source, concat)
        op = module_op(module) if module is not None else function_op(node)
        in_shape, out_shape = shape_of(source), shape_of(node)
        keeps = in_shape == out_shape or (
            op is not None
            and op.kind == "pool"
            and len(out_shape) == len(in_shape)
            and out_shape[: concat.axis + 1] == in_shape[: concat.axis + 1]
        )
        if op is not None and op.kind in ("elementwise", "pool") and keeps:
            for units, _ in concat.parts:
                if not units.space.pinned:
                    units.space.root().ops.append((self.order[node], op))
            return concat
        dims = self._reduced_dims(node) if node.target in _REDUCE else None
        reduced = {d % len(in_shape) for d in dims} if dims is not None else {concat.axis}
        if concat.axis not in reduced and concat.block == 1:  # a mean over positions
            reduce = Op("max", True, False) if _REDUCE.get(node.target) == "amax" else None
            for units, _ in concat.parts:
                if not units.space.pinned:
                    units.space.root().ops.append((self.order[node], reduce or linear("mean")))
            keep = len(out_shape) == len(in_shape)
            gone = 0 if keep else sum(1 for d in reduced if d < concat.axis)
            return replace(concat, axis=concat.axis - gone)
        if op is not None and op.kind == "reshape":
            before = math.prod(in_shape[: concat.axis])
            after = math.prod(in_shape[concat.axis + 1 :])
            width = in_shape[concat.axis]
            for j in range(len(out_shape)):
                if math.prod(out_shape[:j]) != before:
                    continue
                if out_shape[j] == width:
                    return replace(concat, axis=j)
                if out_shape[j] == width * after and j == len(out_shape) - 1:
                    parts = tuple((u, start * after) for u, start in concat.parts)
                    return Concat(parts, j, concat.block * after)
        raise unsupported(
            f"op `{name}` in {at} reads units of several layers side by side; canon follows "
            "per-unit ops, pooling, BatchNorm, flattening and a linear or convolutional layer "
            "reading them",
            name,
            at,
        )

    def _concat_slice(
        self, node: fx.Node, source: fx.Node, concat: Concat
    ) -> Units | Concat | None:
        """``x[:, a:b]`` of several layers' units side by side, along their axis (DPN's dual
        paths taken apart): units ``a`` to ``b``, each layer's cut where the slice ends
        inside it; or slices of positions alone (a causal convolution's output trimmed to
        the sequence: OLMo Hybrid's), the units side by side as they were; None for any
        other index."""
        shape = shape_of(source)
        entries = per_axis(node.args[1], len(shape))
        if entries is None or concat.block != 1:
            return None
        rest = [e for axis, e in enumerate(entries) if axis != concat.axis]
        entry = entries[concat.axis]
        if entry == slice(None) and all(isinstance(e, slice) for e in rest):
            return concat
        if not isinstance(entry, slice) or any(e != slice(None) for e in rest):
            return None
        start, stop, step = entry.indices(shape[concat.axis])
        if step != 1 or start >= stop:
            return None
        return self._range(node, concat, shape[concat.axis], start, stop, (start, stop))

    def _added_side_by_side(
        self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]
    ) -> Units | Concat | None:
        """Several layers' units side by side added to (or multiplied by) one space's
        units, or other layers' side by side (MixNet's residual after its mixed
        convolution, its squeeze-excitation gate): each is cut wherever a part of any of
        them ends, and the ranges added together join; None for anything else."""
        values = [v for _, v in inputs if isinstance(v, (Units, Concat))]
        flat = all(v.block == 1 and v.axis == values[0].axis for v in values)
        pinned = any(isinstance(v, Units) and (v.space.pinned or v.repeat > 1) for v in values)
        if len(values) != 2 or len(inputs) != 2 or not flat or pinned:
            return None
        width = shape_of(node)[values[0].axis]
        ends = {0, width}
        for v in values:  # where a part, or a range cut before, starts
            if isinstance(v, Concat):
                ends.update(first for _, first in v.parts)
            else:
                ends.update(first for first, _ in v.space.root().pieces)
        bounds = tuple(sorted(ends))
        ranges: list[tuple[Units, int]] = []
        for a, b in itertools.pairwise(bounds):
            first, *others = (self._range(node, v, width, a, b, bounds) for v in values)
            for other in others:  # no part ends inside a range: each is one space's units
                assert isinstance(first, Units) and isinstance(other, Units)
                self._join(first.space, other.space, node)
            assert isinstance(first, Units)
            ranges.append((Units(first.space.root(), first.axis), a))
        whole = [v for v in values if isinstance(v, Units)]
        if whole:
            return Units(whole[0].space.root(), whole[0].axis)
        return Concat(tuple(ranges), values[0].axis)

    def _concatenated(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Concat | Units:
        """``torch.cat`` along the units' axis of several layers' outputs (each whole, or
        itself such a concatenation): their units side by side; a space again when they
        are its ranges, in order and all of them."""
        at, name = location(node), op_name(node)
        listed = node.args[0] if node.args else node.kwargs.get("tensors")
        ndim = len(shape_of(node))
        given = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        dim = given % ndim if isinstance(given, int) else -1
        value = dict(inputs)
        parts: list[tuple[Units, int]] = []
        first = 0
        for part in listed if isinstance(listed, (list, tuple)) else ():
            held = value.get(part) if isinstance(part, fx.Node) else None
            if isinstance(held, Units) and held.block == held.repeat == 1:
                held = Concat(((held, 0),), held.axis)
            if not (isinstance(held, Concat) and dim == held.axis and held.block == 1):
                raise unsupported(
                    f"op `{name}` in {at} concatenates units with other tensors, or along "
                    "another axis; canon follows several layers' outputs side by side along "
                    "their units",
                    name,
                    at,
                )
            assert isinstance(part, fx.Node)
            parts += [(units, first + start) for units, start in held.parts]
            first += shape_of(part)[held.axis]
        whole = self._whole_again(parts)
        return Units(whole, dim) if whole is not None else Concat(tuple(parts), dim)

    def _side_by_side_layernorm(
        self, node: fx.Node, module: nn.Module | None
    ) -> tuple[str, tuple[str, ...]] | None:
        """For a LayerNorm over the last axis alone (a module, or ``F.layer_norm`` on one
        module's own weight and bias): its path and tensors; else None."""
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            path = str(node.target)
            return path, tuple(n for n, t in module.state_dict().items() if t.ndim >= 1)
        call = _own_call(node, F.layer_norm, ("input", "normalized_shape", "weight", "bias"))
        if call is None or len(tuple(call[1].get("normalized_shape") or ())) != 1:  # type: ignore[arg-type]
            return None
        return call[0], tuple(n for n in ("weight", "bias") if call[1].get(n) is not None)

    def _side_by_side_norm(
        self,
        node: fx.Node,
        path: str,
        tensors: tuple[str, ...],
        source: fx.Node,
        concat: Concat,
        axis: int,
    ) -> Concat:
        """A BatchNorm (over axis 1) or LayerNorm (over the last axis) of several layers'
        units side by side (DenseNet's, RDNet's): each part carries its entries of the
        norm's tensors, which only permute."""
        if concat.axis != axis or concat.block != 1:
            raise unsupported(
                f"norm layer `{path}` does not normalize its input's units", "norm", path
            )
        for units, start in concat.parts:
            if units.space.pinned:
                continue
            space = units.space.root()
            space.carried += [CarriedAxis(f"{path}.{n}", 0, start=start) for n in tensors]
            space.ops.append((self.order[node], plain("norm")))
        return concat

    def _side_by_side_depthwise(
        self, node: fx.Node, module: nn.Module, concat: Concat, path: str | None = None
    ) -> Concat:
        """A depthwise convolution (the module called at ``node``, or a call on the weights
        of the one at ``path``) of several layers' units side by side: each part carries
        its channels' filters (and bias), which only permute."""
        path = str(node.target) if path is None else path
        bias = getattr(module, "bias", None) is not None
        op = plain("depthwise conv with bias") if bias else linear("depthwise conv")
        for units, start in concat.parts:
            if units.space.pinned:
                continue
            space = units.space.root()
            space.carried.append(CarriedAxis(f"{path}.weight", 0, start=start))
            if bias:
                space.carried.append(CarriedAxis(f"{path}.bias", 0, start=start))
            space.ops.append((self.order[node], op))
        return concat

    def _read_side_by_side(
        self, node: fx.Node, module: nn.Module, source: fx.Node, concat: Concat
    ) -> Units:
        """A linear or convolutional layer reading several layers' units side by side: each
        part's units are its columns from the part's start; it makes a new space."""
        path = str(node.target)
        assert isinstance(module, LAYERS)
        linear_layer = isinstance(module, nn.Linear)
        axis = len(shape_of(node)) - 1 if linear_layer else 1
        weight = module.weight
        size, fan_in = weight.shape[0], shape_of(source)[concat.axis]
        grouped = not linear_layer and getattr(module, "groups", 1) != 1
        wanted = len(shape_of(source)) - 1 if linear_layer else 1
        if (
            grouped
            or path in self.calls
            or concat.axis != wanted
            or (not linear_layer and concat.block != 1)
            or fan_in != weight.shape[1]
        ):
            raise unsupported(
                f"layer `{path}` reads units of several layers side by side in a way canon does "
                "not follow (grouped, called again, or not over the units' axis)",
                type(module).__name__,
                path,
            )
        order = self.order[node]
        for units, start in concat.parts:
            if units.space.pinned:
                continue  # the network's input among them: its columns stay
            space = units.space.root()
            read = OutgoingAxis(f"{path}.weight", 1, concat.block, start=start)
            space.outgoing.append((order, read))
            tap = Tap(source.name, concat.axis, concat.block, start)
            space.taps.setdefault(f"{source.name}@{start}", tap)
        return self._made(node, path, module, size, axis, None)

    def _concat(
        self,
        node: fx.Node,
        inputs: list[tuple[fx.Node, Value]],
        hidden: list[tuple[fx.Node, Units]],
    ) -> Units | Concat:
        """``torch.cat`` along an axis other than the units' (a class token before the
        patches): the hidden tensors' spaces join, a parameter among them is carried.
        Along the units' axis, copies of one space's units side by side (DINOv2's class
        token next to the mean of its patches): each unit held once per copy."""
        at, name = location(node), op_name(node)
        out_ndim = len(shape_of(node))
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        first = hidden[0][1]
        listed = node.args[0] if node.args else node.kwargs.get("tensors")
        if isinstance(listed, (list, tuple)) and len(listed) == 1:
            # one tensor: itself (DenseNet's first layer concatenates one), though no longer
            # a layer's own output for a BatchNorm to attach to
            return replace(first, layer=None)
        if isinstance(dim, int) and dim % out_ndim == first.axis:
            every = isinstance(listed, (list, tuple)) and len(hidden) == len(listed)
            whole = self._whole_again(_in_a_row(hidden)) if every else None
            if whole is not None:  # a space's ranges, in order: the space
                return Units(whole, first.axis)
            if len({id(u.space.root()) for _, u in hidden}) > 1:
                return self._side_by_side(node, inputs)  # type: ignore[return-value]
            return self._copies(node, inputs, hidden)
        if not isinstance(dim, int) or first.block != 1:
            raise unsupported(f"op `{name}` in {at} concatenates units", name, at)
        if dim % out_ndim == 0:
            raise unsupported(f"op `{name}` in {at} concatenates along the batch axis", name, at)
        self._join_all(node, [u for _, u in hidden])
        space = first.space.root()
        for n, value in inputs:
            if isinstance(value, Units) and value.space.pinned:
                raise unsupported(
                    f"op `{name}` in {at} concatenates the network's input with hidden units",
                    name,
                    at,
                )
            if isinstance(value, Param):
                view = shape_of(n)
                if len(view) != out_ndim or view[first.axis] != space.size:
                    raise unsupported(
                        f"parameter `{value.name}` in {at} is not one value per unit", name, at
                    )
                space.carried.append(CarriedAxis(value.name, first.axis - value.axis))
        space.ops.append((self.order[node], plain("concatenate")))
        return Units(space, first.axis)

    def _choose(
        self,
        node: fx.Node,
        inputs: list[tuple[fx.Node, Value]],
        hidden: list[tuple[fx.Node, Units]],
    ) -> Units:
        """``torch.where(mask, token, x)``: positions where a condition that does not
        depend on the hidden units holds take a parameter, one value per unit, instead
        of the units (DINOv2's and BEiT's mask token): the parameter is carried."""
        at, name = location(node), op_name(node)
        args = [self.values.get(a) if isinstance(a, fx.Node) else a for a in node.args[:3]]
        condition, *choices = args
        params = [(n, v) for n, v in inputs if isinstance(v, Param)]
        fits = (
            len(args) == 3
            and isinstance(condition, Units)
            and condition.space.pinned
            and len(hidden) == 1
            and len(params) == 1
            and all(c is hidden[0][1] or c is params[0][1] for c in choices)
        )
        if not fits:
            raise unsupported(
                f"op `{name}` in {at} chooses between hidden units and another tensor; canon "
                "follows a choice, by a condition on the input, between the units and a "
                "parameter holding one value per unit",
                name,
                at,
            )
        units = hidden[0][1]
        (n, param) = params[0]
        space = units.space.root()
        if units.block != 1 or units.repeat != 1:
            raise unsupported(f"op `{name}` in {at} chooses between laid-out units", name, at)
        own = self._per_unit_axis(node, n, param, units)
        if own is None:
            raise unsupported(
                f"parameter `{param.name}` in {at} is not one value per unit", name, at
            )
        space.carried.append(CarriedAxis(param.name, own))
        space.ops.append((self.order[node], plain("masked choice")))
        return Units(space, units.axis)

    def _per_unit_axis(
        self, node: fx.Node, view: fx.Node, param: Param, units: Units
    ) -> int | None:
        """The axis of ``param`` that holds one value per unit of ``units`` where ``node``
        broadcasts its ``view`` against them (a token, a bias), or None if it holds other
        values or its values meet another axis."""
        tensor = attribute(self.gm, param.name)
        size = units.space.root().size
        if tensor is None or tensor.numel() != size or size not in tensor.shape:
            return None
        own = list(tensor.shape).index(size)
        placed = param.axis + own + len(shape_of(node)) - len(shape_of(view))
        return own if placed == units.axis else None

    def _copies(
        self,
        node: fx.Node,
        inputs: list[tuple[fx.Node, Value]],
        hidden: list[tuple[fx.Node, Units]],
    ) -> Units:
        """``cat`` along the unit axis of tensors that each hold all of one space's units
        in their order: every unit ``repeat`` times, a copy after the other."""
        at, name = location(node), op_name(node)
        space = hidden[0][1].space.root()
        plain_copies = len(hidden) == len(inputs) > 1 and all(
            u.space.root() is space
            and not space.pinned
            and (u.axis, u.block, u.repeat) == (hidden[0][1].axis, 1, 1)
            and shape_of(n)[u.axis] == space.size
            for n, u in hidden
        )
        if not plain_copies:
            raise unsupported(f"op `{name}` in {at} concatenates units", name, at)
        space.ops.append((self.order[node], linear("concatenate copies")))
        return Units(space, hidden[0][1].axis, repeat=len(hidden), head=space.size)

    def _positions(self, node: fx.Node, source: fx.Node, units: Units) -> Units:
        """Padding, rolling or flipping along axes other than the units' (Swin's windows:
        positions padded to a multiple of the window and shifted by half of one). Each
        unit's values move, or gain values, together: a per-unit op, linear unless the
        padding is a constant other than zero. Along the unit axis, refused."""
        ndim = len(shape_of(source))
        touched, op = _positions_touched(node, ndim)
        if units.axis in touched or shape_of(node)[units.axis] != shape_of(source)[units.axis]:
            at, name = location(node), op_name(node)
            raise unsupported(
                f"op `{name}` in {at} pads or moves along the unit axis; canon supports "
                "padding, rolling and flipping the other axes (positions)",
                name,
                at,
            )
        space = units.space.root()
        space.ops.append((self.order[node], op))
        return Units(space, units.axis, units.block, repeat=units.repeat, head=units.head)

    def _permute(self, node: fx.Node, source: fx.Node, units: Units) -> Units:
        dims = permuted_dims(node, len(shape_of(source)))
        return Units(units.space.root(), dims.index(units.axis), units.block, layer=units.layer)

    def _reduced_dims(self, node: fx.Node) -> tuple[int, ...] | None:
        dim: Any = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dim is None:
            return None
        return tuple(dim) if isinstance(dim, (list, tuple)) else (int(dim),)

    def _reduce(self, node: fx.Node, source: fx.Node, units: Units) -> Value:
        """A mean, sum or max over axes: pooling if the unit axis stays, else a read-out."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        dims = self._reduced_dims(node)
        where = location(node)
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
                raise unsupported(
                    f"op `{name}` in {where} maps shape {list(in_shape)} to {list(out_shape)}, "
                    "which mixes units; canon supports per-unit ops, flattening (batch, "
                    "channels, ...) to (batch, features) and sums over units",
                    name,
                    where,
                )
            space.read_out = True
            space.taps.setdefault(source.name, Tap(source.name, units.axis, units.block))
            space.ops.append((self.order[node], READOUT))
            return Ended()
        keep = len(out_shape) == ndim
        axis = units.axis if keep else units.axis - sum(1 for d in reduced if d < units.axis)
        op = (
            Op("max", homogeneous=True, odd=False)
            if _REDUCE.get(node.target) == "amax"
            else (linear("mean"))
        )
        space.ops.append((self.order[node], op))
        return Units(space, axis, units.block)

    def _arithmetic(
        self,
        node: fx.Node,
        inputs: list[tuple[fx.Node, Value]],
        hidden: list[tuple[fx.Node, Units]],
    ) -> Units | Unfollowed:
        """x + y, x * y, x / y, ``addcmul(beta, alpha, x)`` with hidden units, parameters
        or numbers (with the network's input per unit: a pending pin, :class:`Unfollowed`)."""
        where = location(node)
        name = op_name(node)
        target = node.target
        out_ndim = len(shape_of(node))
        placed = []
        for n, v in hidden:
            assert isinstance(v, Units)
            placed.append(Units(v.space.root(), v.axis + out_ndim - len(shape_of(n)), v.block))
        # one layer's single output scaling every unit of a position (Qwen2-MoE's
        # sigmoid(shared_expert_gate(x)) * shared_expert(x)): a factor, as the input's are
        gates = [
            u for (n, v), u in zip(hidden, placed, strict=True)
            if u.space.size == 1 and shape_of(n)[v.axis] == 1
        ]  # fmt: skip
        gated = target in MUL and len(placed) == 2 and len(gates) == 1
        if gated:
            gates[0].space.factor = True
            placed = [u for u in placed if u is not gates[0]]
        first = placed[0]
        masks = [n for n, v in inputs if isinstance(v, Units) and v.space.pinned]
        # a factor from the input that is the same for every unit (a mask of positions)
        per_position = target in MUL and all(
            len(shape_of(n)) <= out_ndim - first.axis - 1 or shape_of(n)[first.axis - out_ndim] == 1
            for n in masks
        )
        if masks and not per_position:
            error = unsupported(
                f"op `{name}` in {where} combines the network's input with hidden units; the "
                "input's axes cannot be permuted",
                name,
                where,
            )
            # fine where only a function recorded whole reads the result (Falcon-H1's
            # per-channel multipliers, a plain tensor, on what its scan reads)
            return Unfollowed(tuple(spaces_in([u for _, u in hidden])), error)
        self._join_all(node, placed)
        space = first.space.root()
        params = [(n, v) for n, v in inputs if isinstance(v, Param)]
        for n, param in params:
            assert isinstance(param, Param)
            view = shape_of(n)
            if math.prod(view) == 1:
                continue  # one learnable number for all units: no unit moves it
            at = param.axis + out_ndim - len(view)
            own = first.axis - (out_ndim - len(view))  # the unit axis among the parameter's
            per_unit = self._per_unit_axis(node, n, param, first) if first.block == 1 else None
            if at == first.axis and view[param.axis] == space.size and first.block == 1:
                space.carried.append(CarriedAxis(param.name, 0))
            elif n.op == "get_attr" and own >= 0 and view[own] == space.size and first.block == 1:
                space.carried.append(CarriedAxis(param.name, own))  # e.g. positions x units
            elif per_unit is not None:  # broadcast (and scaled per position: a mask token)
                space.carried.append(CarriedAxis(param.name, per_unit))
            else:
                raise unsupported(
                    f"parameter `{param.name}` in {where} is not one value per unit",
                    name,
                    where,
                )
        scalar_only = len(inputs) == 1
        if target in _ADDCMUL:  # beta + alpha * x (ResMLP's affine): a shift and a scale
            if len(placed) != 1:
                raise unsupported(f"op `{name}` in {where} multiplies hidden tensors", name, where)
            op = plain("affine")
        elif target in ADD:
            op = linear("add") if len(placed) > 1 and not params else plain("shift")
        elif len(placed) > 1:
            op = plain("product")
        else:  # a number, per-unit parameters or per-position factors: linear in each unit
            op = linear("scale") if scalar_only or params or masks or gated else plain("product")
        space.ops.append((self.order[node], op))
        return Units(space, first.axis, first.block)

    def _masked_param(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Param:
        """A parameter times factors that come from the input (a mask of positions) and
        do not vary along any axis the parameter spans: each of its values stays in its
        place, scaled per position (DINOv2's ``mask_token * mask``)."""
        params = [(n, v) for n, v in inputs if isinstance(v, Param)]
        out_ndim = len(shape_of(node))
        where = location(node)
        factors = [n for n, v in inputs if not isinstance(v, Param)]
        n, param = params[0]
        tensor = attribute(self.gm, param.name)
        at = param.axis + out_ndim - len(shape_of(n))  # the tensor's first axis
        spans = (
            [] if tensor is None else [at + i for i, size in enumerate(tensor.shape) if size > 1]
        )
        shapes = [(1,) * (out_ndim - len(shape_of(f))) + shape_of(f) for f in factors]
        fits = (
            len(params) == 1
            and bool(factors)
            and tensor is not None
            and all(shape[a] == 1 for shape in shapes for a in spans if 0 <= a < out_ndim)
        )
        if not fits:
            raise unsupported(
                f"parameter `{param.name}` is multiplied by the network's input ({where}) "
                "along the axes it holds; canon follows a parameter scaled per position by a "
                "mask",
                op_name(node),
                where,
            )
        return Param(param.name, at)

    def _param_view(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value:
        """A reshape of a parameter keeps track of where its first axis goes; a cast or
        copy keeps it as it is."""
        source, value = inputs[0]
        assert isinstance(value, Param)
        casts = ("to", "float", "double", "half", "bfloat16", "type_as", "contiguous", "clone")
        same = shape_of(node) == shape_of(source)
        if node.op == "call_method" and node.target in casts and same:
            return value  # its dtype or device changed, or a copy
        if node.op == "call_method" and node.target in ("reshape", "view", "unsqueeze", "expand"):
            in_shape, out_shape = shape_of(source), shape_of(node)
            if node.target == "expand" and len(out_shape) >= len(in_shape):
                # broadcast along axes of size 1, new axes in front: every axis stays
                return Param(value.name, value.axis + len(out_shape) - len(in_shape))
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if node.target == "unsqueeze" and isinstance(dim, int):
                return Param(value.name, value.axis + (dim % len(out_shape) <= value.axis))
            tensor = attribute(self.gm, value.name)
            spanned = [] if tensor is None else [i for i, n in enumerate(tensor.shape) if n > 1]
            if len(spanned) == 1 and math.prod(in_shape) == math.prod(out_shape):
                # one axis of values (one per unit): where it goes places the rest
                held = [j for j, n in enumerate(out_shape) if n > 1]
                if len(held) == 1:
                    return Param(value.name, held[0] - spanned[0])
            before = math.prod(in_shape[: value.axis])
            for j in range(len(out_shape)):
                if math.prod(out_shape[:j]) == before and out_shape[j] == in_shape[value.axis]:
                    return Param(value.name, j)
        # computed from parameters alone (gathered by an index, ...): nothing moves them,
        # so where the result meets hidden units decides (:class:`Fixed`)
        return Fixed(tuple(dict.fromkeys(v.name for _, v in inputs if isinstance(v, Param))))

    def _join_all(self, node: fx.Node, units: list[Units]) -> None:
        """Join the spaces of tensors that ``node`` combines; their units must sit alike."""
        first = units[0]
        for other in units[1:]:
            if (other.axis, other.block) != (first.axis, first.block):
                at = location(node)
                raise unsupported(
                    f"op `{op_name(node)}` in {at} combines tensors whose units sit on "
                    "different axes",
                    op_name(node),
                    at,
                )
            self._join(first.space, other.space, node)

    def _join(self, a: Space, b: Space, node: fx.Node) -> None:
        a, b = a.root(), b.root()
        if a is b:
            return
        if a.size != b.size:
            where = location(node)
            raise unsupported(
                f"op `{op_name(node)}` in {where} adds {a.size} units to {b.size} units",
                op_name(node),
                where,
            )
        if a.pieces and b.pieces:
            if [(f, p.size) for f, p in a.pieces] != [(f, p.size) for f, p in b.pieces]:
                where = location(node)
                raise unsupported(
                    f"op `{op_name(node)}` in {where} adds units cut into ranges in two ways",
                    op_name(node),
                    where,
                )
            for (_, mine), (_, theirs) in zip(a.pieces, b.pieces, strict=True):
                self._join(mine, theirs, node)
        b.parent = a
        a.pieces = a.pieces or b.pieces
        a.carved = a.carved or b.carved
        a.pinned = a.pinned or b.pinned
        a.gated = a.gated or b.gated
        if b.heads_only:  # what moves as one space moves only as the more pinned allows
            a.pin(b.free)
        a.producers += b.producers
        a.batchnorms |= b.batchnorms
        a.outgoing += b.outgoing
        a.carried += b.carried
        a.ops += b.ops
        a.taps |= b.taps
        a.blocks = math.lcm(a.blocks, b.blocks)
        if b.created < a.created:
            a.created, a.origin = b.created, b.origin
        a.read_out = a.read_out or b.read_out

    # -- the end -----------------------------------------------------------------

    def _untie(self, space: Space) -> None:
        """Drop the outgoing axes of tied weights (a language model's output layer that is
        its token embedding): the tensor they name is the one the group carries on that
        axis already, so it moves once. Any other tie is refused."""
        kept = []
        for order, axis in space.outgoing:
            primary = self.tied.get(axis.name, axis.name)
            if axis.name not in self.shared:
                kept.append((order, axis))
                continue
            if not any(c.name == primary and c.axis == axis.axis for c in space.carried):
                raise unsupported(
                    f"`{axis.name}` is tied to `{primary}`, which does not move with the same "
                    "units; canon supports a tied output layer that reads the units its "
                    "embedding writes",
                    "tied weights",
                    axis.name,
                )
        space.outgoing = kept

    def _output(self, node: fx.Node) -> None:
        result = node.args[0]
        if not is_tensor(result):
            raise unsupported("the model must return one tensor (the logits)", "output", "output")
        assert isinstance(result, fx.Node)
        value = self.values.get(result)
        if isinstance(value, Ended):
            return
        if isinstance(value, Unfollowed):
            raise value.error
        if not isinstance(value, Units) or value.space.pinned:
            raise unsupported("the model has no Linear or Conv layer", "output", "output")
        space = value.space.root()
        made = space.producers[0]
        path = made.path
        if space.outgoing or space.carried:
            raise unsupported(
                f"the output of `{path}` is also read or added elsewhere; canon needs the "
                "logits to come from one last layer",
                "output",
                path,
            )
        if space.batchnorms:
            raise unsupported(
                f"BatchNorm after the output layer `{path}` is not supported", "BatchNorm", path
            )
        self.output_space = space
        capped = any(not (op.homogeneous or op.invariant) for _, op in space.ops)
        if made.weight in self.shared or capped or len(space.producers) > 1:
            # tied to the embedding, or read by an op that is not positively homogeneous
            # (Gemma 2's and nanochat's soft-capping tanh): the output layer's scale is no
            # symmetry, so nothing rescales the logits; several output layers summed
            # (DeiT's class and distillation heads, averaged) keep their scales too
            return
        self.output = OutputLayer(weight=made.weight, bias=made.bias, size=space.size)

    def _groups(self) -> tuple[UnitGroup, ...]:
        spaces: dict[int, Space] = {}
        held = [v.space for v in self.values.values() if isinstance(v, Units)]
        # ranges that only a concatenation or another range holds
        held += [piece for space in self.cut_spaces for _, piece in space.pieces]
        for space in (s.root() for s in held + self.inner):
            if not space.pinned and space is not self.output_space:
                spaces[id(space)] = space
        in_attention = self._attention_spaces()
        self._spread_pieces(in_attention)
        found = self._attention_groups(_group)
        for space in spaces.values():
            if id(space) in in_attention:
                continue
            if space.heads_only:
                # viewed as heads that no attention reads, their dimensions pinned by a norm
                # over each (its weights index them): nothing here knows the heads, so
                # none move
                continue
            if space.carved:
                if space.outgoing or space.carried or space.batchnorms:
                    path = space.producers[0].path
                    raise unsupported(
                        f"the outputs of `{path}` are cut into parts and also used whole",
                        "split",
                        path,
                    )
                continue
            if not space.producers:
                # made by a lookup table alone, read by a layer (ALBERT's factorized
                # embedding): moved by no symmetry, as the network's input is not
                continue
            if space.factor and not (space.outgoing or space.carried or space.batchnorms):
                continue  # one unit read by nothing but the product it gates: nothing moves
            self._untie(space)
            found.append((space.created, _group(space)))
        return tuple(group for _, group in sorted(found, key=lambda item: item[0]))


_VIEWS = {"reshape", torch.reshape, "view", "flatten", torch.flatten}
_SPLITS = {torch.tensor_split, "tensor_split", torch.split, "split", torch.chunk, "chunk"}


def _cut_positions(node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Positions | None:
    """``tensor_split``, ``split`` or ``chunk`` of units or heads along an axis that holds
    none of their units (positions): the parts hold them alike; None for any other op."""
    if node.target not in _SPLITS or len(inputs) != 1:
        return None
    source, value = inputs[0]
    if not isinstance(value, (Units, Heads)):
        return None
    ndim = len(shape_of(source))
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if not isinstance(dim, int) or not -ndim <= dim < ndim:
        return None
    held = (value.axis,) if isinstance(value, Units) else (value.head_axis, value.dim_axis)
    if dim % ndim in held or (isinstance(value, Units) and value.space.pinned):
        return None
    return Positions(value)


def tied_names(module: nn.Module) -> dict[str, str]:
    """Each name of a parameter or buffer that is another's tensor (tied weights), mapped
    to the first name it has in the state dict."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        primary = first.setdefault(id(t), name)
        if primary != name:
            tied[name] = primary
    return tied


def _depthwise(module: nn.Module) -> bool:
    """Whether ``module`` is a depthwise convolution (groups = in = out channels, zero
    padding)."""
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        and module.groups == module.in_channels == module.out_channels
        and module.padding_mode == "zeros"
    )


def _reads_input(node: fx.Node, from_input: set[fx.Node]) -> bool:
    """Whether ``node`` is the network's input or computed from it (a tensor the model
    holds as a plain attribute, recorded as ``constant_N``, is not)."""
    if node.op == "placeholder":
        return not node.name.startswith("constant_")
    if node.target in ("size", "dim") or (
        node.target is getattr and node.args[1:2] in (("shape",), ("dtype",), ("device",))
    ):
        return False  # the input's shape (symbolic tracing), not its values
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return any(n in from_input for n in found)


def _positions_touched(node: fx.Node, ndim: int) -> tuple[set[int], Op]:
    """The axes a pad, roll or flip node changes, and the per-unit op it is."""
    args, kwargs = node.args, node.kwargs
    if node.target in (F.pad, torch.constant_pad_nd):
        pad: Any = kwargs.get("pad", args[1] if len(args) > 1 else ())
        if node.target is F.pad:
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            value = kwargs.get("value", args[3] if len(args) > 3 else None)
        else:
            mode, value = "constant", kwargs.get("value", args[2] if len(args) > 2 else 0)
        # the amounts come in pairs, from the last axis backwards
        touched = {ndim - 1 - i // 2 for i, amount in enumerate(pad) if amount != 0}
        zero = mode != "constant" or not value
        return touched, linear("pad") if zero else plain("pad")
    rolled = node.target in (torch.roll, "roll")
    at = 2 if rolled else 1
    dims: Any = kwargs.get("dims", args[at] if len(args) > at else None)
    if node.op == "call_method" and not rolled and len(args) > 2:
        dims = args[1:]  # x.flip(1, 2)
    if dims is None:  # a roll of the flattened tensor
        return set(range(ndim)), linear(op_name(node))
    listed = dims if isinstance(dims, (list, tuple)) else (dims,)
    return {int(d) % ndim for d in listed}, linear(op_name(node))


def _recorded_scalar(node: fx.Node) -> bool:
    """Whether a placeholder is a one-number tensor the model held as a plain attribute
    (recorded as ``constant_N``, :mod:`canon.core.record`): a factor like any number."""
    return node.name.startswith("constant_") and is_tensor(node) and math.prod(shape_of(node)) == 1


def _library_norm_shape(
    module: nn.Module, path: str, source: fx.Node, units: Units
) -> tuple[int, ...] | None:
    """How a library's norm layer (:func:`~canon.core.ops.library_norm`, known by its
    class name only) treats the units it reads, checked by running it
    (:func:`_check_commutes`, its weight and bias permuted with the units): its weight's
    shape when the units are its input's last axis (a LayerNorm over them); None when
    they are another axis (a channels-first LayerNorm: normalized over the units, its
    tensors carried as a GroupNorm's are)."""
    shape = shape_of(source)
    weight = module.state_dict().get("weight")
    width = shape[units.axis] if weight is None else int(weight.shape[0])
    if units.block != 1 or shape[units.axis] != width:
        raise unsupported(
            f"norm layer `{path}` ({type(module).__name__}) has {width} weights, not one per "
            f"unit of the axis it reads",
            type(module).__name__,
            path,
        )
    check_commutes(module, path, shape, units.axis)
    return (width,) if units.axis == len(shape) - 1 else None


def _side_by_side_copies(value: Value) -> Value:
    """Copies of one space's units side by side (a ``cat`` of them) as that space's units
    side by side with themselves; any other value as it is."""
    if not isinstance(value, Units) or value.repeat == 1 or value.block != 1:
        return value
    space = value.space.root()
    if value.head != space.size:
        return value
    one = Units(space, value.axis)
    return Concat(tuple((one, k * space.size) for k in range(value.repeat)), value.axis)


def _in_a_row(hidden: list[tuple[fx.Node, Units]]) -> list[tuple[Units, int]]:
    """The units of tensors concatenated along their unit axis, each with its first entry
    on that axis."""
    starts = itertools.accumulate((shape_of(n)[u.axis] for n, u in hidden), initial=0)
    return [(u, start) for (_, u), start in zip(hidden, starts, strict=False)]


def _check_disjoint(groups: tuple[UnitGroup, ...]) -> None:
    """Reject a tensor that moves with two separate groups (one per-unit parameter
    multiplying the outputs of two layers whose units are not joined)."""
    twice = claimed_twice(groups)
    if twice:
        name, axis, owners = twice[0]
        raise unsupported(
            f"tensor `{name}` (axis {axis}) is applied to the units of "
            f"{' and '.join(f'`{o}`' for o in owners)}, which permute separately; "
            "a per-unit tensor shared by several layers is not supported",
            "shared tensor",
            name,
        )


def _group(space: Space) -> UnitGroup:
    producers = sorted(space.producers)
    for made in producers:
        if made.bias_parts:
            raise unsupported(
                f"the bias of `{made.path}` is joined from parts as it runs, and its "
                "outputs are used whole; canon follows such a bias where the outputs are "
                "cut into those parts (queries, keys and values)",
                "cat",
                made.path,
            )
    outgoing = tuple(axis for _, axis in sorted(space.outgoing, key=lambda o: o[0]))
    ops = tuple(op for _, op in sorted(space.ops, key=lambda o: o[0]))
    symmetry: Symmetry = "none"
    if outgoing and all(o.homogeneous for o in ops):
        symmetry = "scale"
    elif outgoing and all(o.odd for o in ops):
        symmetry = "sign"
    return UnitGroup(
        heads=space.heads,
        link=space.link,
        linear_only=bool(outgoing) and all(o.homogeneous and o.odd for o in ops),
        name=space.origin or producers[0].path,
        size=space.size,
        symmetry=symmetry,
        producers=tuple(made.producer(space.batchnorms.get(made.path)) for made in producers),
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
