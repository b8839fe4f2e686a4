"""Record a network's graph by running it once: every torch-level call on its tensors.

torch.fx's symbolic tracer cannot follow a forward whose Python depends on
values, on decorators taking ``*args/**kwargs`` or on keyword-only inputs
(Hugging Face transformers' models). Running the model once on a concrete
input under a :class:`~torch.overrides.TorchFunctionMode` sees every torch
function, Tensor method and operator applied to a tensor, in the vocabulary
symbolic tracing records (``call_function`` with the function or operator,
``call_method`` with the method's name, ``get_attr`` for a parameter or
buffer); the modules canon's tracer keeps whole (layers, norms, activations:
:func:`~canon.core.trace.tracer`) are recorded as one ``call_module`` node
each, their insides not. Python control flow is resolved for this input,
which is what a spec describes: the structure for inputs of this shape.

Every node carries ``meta["tensor_meta"]`` (what torch.fx's ShapeProp
writes), so the graph is ready for the walker
(:class:`~canon.core.unit_spaces.Walker`).
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

# the dtypes torch's functions take Python's scalar types for
_PYTHON_DTYPES: dict[type, torch.dtype] = {
    bool: torch.bool, int: torch.int64, float: torch.float64, complex: torch.complex128,
}  # fmt: skip

__all__ = ["OPAQUE_FUNCTIONS", "Recorded", "is_opaque", "main_output", "record"]

#: Functions of model libraries that a recording keeps as one ``call_function`` node each,
#: their insides not, found by name in the modules that define the model's classes: the
#: gated delta rule of Qwen3.5's, Qwen3-Next's and OLMo Hybrid's linear attention (chunks
#: of the sequence in Python loops, in-place writes into slices). The walker pins every
#: unit they read (:mod:`canon.core.unit_spaces`): nothing says which of them may move.
OPAQUE_FUNCTIONS = (
    "torch_chunk_gated_delta_rule",
    "torch_recurrent_gated_delta_rule",
    "mamba_selective_scan",
    "mamba2_chunk_scan",
    "chunk_kimi_delta_attention",
)

_OPAQUE: set[Callable[..., Any]] = set()  # the graph nodes' targets that call them
_WRAPPING = threading.Lock()
_ACTIVE = threading.local()  # the recorder of this thread's recording, if one runs

# Tensor's operator methods as the operator symbolic tracing records; (op, swapped args).
_OPERATORS: dict[str, tuple[Callable[..., Any], bool]] = {
    "__add__": (operator.add, False),
    "__radd__": (operator.add, True),
    "__iadd__": (operator.iadd, False),
    "__sub__": (operator.sub, False),
    "__rsub__": (operator.sub, True),
    "__isub__": (operator.isub, False),
    "__mul__": (operator.mul, False),
    "__rmul__": (operator.mul, True),
    "__imul__": (operator.imul, False),
    "__truediv__": (operator.truediv, False),
    "__rtruediv__": (operator.truediv, True),
    "__itruediv__": (operator.itruediv, False),
    "__floordiv__": (operator.floordiv, False),
    "__matmul__": (operator.matmul, False),
    "__rmatmul__": (operator.matmul, True),
    "__pow__": (operator.pow, False),
    "__rpow__": (operator.pow, True),
    "__neg__": (operator.neg, False),
    "__getitem__": (operator.getitem, False),
    "__and__": (operator.and_, False),
    "__or__": (operator.or_, False),
    "__invert__": (operator.invert, False),
    "__eq__": (operator.eq, False),
    "__ne__": (operator.ne, False),
    "__lt__": (operator.lt, False),
    "__le__": (operator.le, False),
    "__gt__": (operator.gt, False),
    "__ge__": (operator.ge, False),
    "__mod__": (operator.mod, False),
}


class Recorded:
    """A recorded run: the graph module over the model, and the value of every node that
    :func:`record` was asked to keep (by node name)."""

    def __init__(self, gm: fx.GraphModule, kept: dict[str, Tensor]) -> None:
        self.gm = gm
        self.kept = kept


def main_output(value: object) -> Tensor | None:
    """The tensor a network's forward returns: itself, a mapping's ``logits`` (else its
    first tensor: ``last_hidden_state``), a sequence's first tensor; None without one."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Mapping):
        logits = value.get("logits")
        if isinstance(logits, Tensor):
            return logits
        values: Iterator[object] = iter(value.values())
    elif isinstance(value, (tuple, list)):
        values = iter(value)
    else:
        return None
    for item in values:
        found = main_output(item)
        if found is not None:
            return found
    return None


def record(
    model: nn.Module,
    x: Tensor,
    is_leaf: Callable[[nn.Module, str], bool],
    keep: frozenset[str] = frozenset(),
) -> Recorded:
    """Run ``model(x)`` once and record the graph of the torch calls on its tensors.

    Modules for which ``is_leaf(module, path)`` holds are one ``call_module``
    node each. The graph's output is :func:`main_output` of what the model
    returns. ``keep`` names nodes whose values the result keeps (activations).
    The model runs as it is (its train/eval flags, its device, no gradients).
    """
    paths = {id(m): path for path, m in model.named_modules(remove_duplicate=False)}
    # the state dict's tensors (not a non-persistent buffer: rotary frequencies are constants)
    named: dict[int, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        named.setdefault(id(t), name)
    recorder = _Recorder(named, keep)
    _wrap_opaque(model)
    leaves: list[nn.Module] = []  # the leaf module being run (at most one: no nesting)

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        path = paths.get(id(module))
        if path is None:
            return
        recorder.within.append((path, type(module)))
        if leaves or path == "" or not is_leaf(module, path):
            return
        leaves.append(module)
        recorder.enter(path, args)

    def after(module: nn.Module, args: tuple[Any, ...], output: object) -> None:
        if id(module) not in paths:
            return
        if leaves and leaves[-1] is module:
            leaves.pop()
            recorder.leave(output)
        recorder.within.pop()

    pre = register_module_forward_pre_hook(before)
    post = register_module_forward_hook(after)
    _ACTIVE.recorder = recorder
    try:
        with torch.no_grad(), recorder:
            result = model(recorder.input(x))
    finally:
        _ACTIVE.recorder = None
        pre.remove()
        post.remove()
    recorder.finish(result)
    return Recorded(fx.GraphModule(model, recorder.graph), recorder.kept)


def is_opaque(target: object) -> bool:
    """Whether ``target`` (a graph node's) is one of :data:`OPAQUE_FUNCTIONS`, recorded whole."""
    return callable(target) and target in _OPAQUE


def _wrap_opaque(model: nn.Module) -> None:
    """Put a wrapper in place of each of :data:`OPAQUE_FUNCTIONS` that the modules defining
    ``model``'s classes hold. The wrapper records one node in a recording of its thread
    and is the function itself anywhere else (other threads, later runs), so it stays."""
    names = {type(m).__module__ for m in model.modules()}
    with _WRAPPING:
        for module in (sys.modules.get(n) for n in names):
            for attr in OPAQUE_FUNCTIONS:
                fn = getattr(module, attr, None)
                if callable(fn) and not getattr(fn, "_canon_opaque", False):
                    setattr(module, attr, _opaque_wrapper(fn, attr))


def _opaque_wrapper(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` recorded whole: one node whose target, a plain function named ``name``, calls
    it (the library's may be a callable object that a graph cannot name)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    _OPAQUE.add(call)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recorder: _Recorder | None = getattr(_ACTIVE, "recorder", None)
        if recorder is None or recorder.inside is not None:
            return fn(*args, **kwargs)
        recorder.inside = (name, args)
        try:
            result = fn(*args, **kwargs)
        finally:
            recorder.inside = None
        recorder._add("call_function", call, args, kwargs, result)
        return result

    wrapper._canon_opaque = True  # type: ignore[attr-defined]
    return wrapper


#: The most entries of a constant checked for being all zeros.
ZEROS_CHECKED = 1 << 16


def all_zeros(t: Tensor) -> bool:
    """Whether ``t`` (at most :data:`ZEROS_CHECKED` entries, not on the meta device) holds
    zeros only: a constant that may stand for a part of a bias no file holds."""
    return t.numel() <= ZEROS_CHECKED and not t.is_meta and not bool(t.any())


class _Recorder(TorchFunctionMode):
    """Builds the graph as torch calls happen; tensors are known by identity (every
    recorded tensor is kept alive until the end, so no identity is reused)."""

    def __init__(self, named: dict[int, str], keep: frozenset[str]) -> None:
        super().__init__()
        self.graph = fx.Graph()
        self.named = named
        self.keep = keep
        self.kept: dict[str, Tensor] = {}
        self.nodes: dict[int, fx.Node] = {}
        self.alive: list[Tensor] = []
        self.inside: tuple[str, tuple[Any, ...]] | None = None  # a leaf module being run
        self.constants = 0
        self.within: list[tuple[str, type]] = []  # the modules running now, outermost first

    # -- values ------------------------------------------------------------------

    def input(self, x: Tensor) -> Tensor:
        node = self.graph.placeholder("x")
        self._bind(node, x)
        return x

    def _bind(self, node: fx.Node, value: Tensor) -> None:
        node.meta["tensor_meta"] = _extract_tensor_metadata(value)
        self.nodes[id(value)] = node
        self.alive.append(value)
        if node.name in self.keep:
            self.kept[node.name] = value

    def _node_of(self, t: Tensor) -> fx.Node:
        found = self.nodes.get(id(t))
        if found is not None:
            return found
        name = self.named.get(id(t))
        if name is not None:
            node = self.graph.get_attr(name)
        else:  # made outside torch's functions (a tensor the model holds as a plain attribute)
            self.constants += 1
            node = self.graph.placeholder(f"constant_{self.constants}")
            # zeros the model holds (timm's key bias) may stand for a part of a bias
            node.meta["zeros"] = all_zeros(t)
        self._bind(node, t)
        return node

    def _args(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            return self._node_of(value)
        if isinstance(value, (tuple, list)):
            return type(value)(self._args(v) for v in value)
        if isinstance(value, dict):
            return {k: self._args(v) for k, v in value.items()}
        if isinstance(value, (slice,)):
            return slice(self._args(value.start), self._args(value.stop), self._args(value.step))
        if isinstance(value, type) and value in _PYTHON_DTYPES:
            # ``torch.tensor(0, dtype=int)``: the dtype torch takes the type for (a type
            # is no argument the graph's code can write)
            return _PYTHON_DTYPES[value]
        return value

    def _add(
        self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
    ) -> None:
        node = self.graph.create_node(kind, target, self._args(args), self._args(kwargs))
        if len(self.within) > 1:  # where the walker's messages say the op is
            node.meta["nn_module_stack"] = dict([self.within[-1 if kind != "call_module" else -2]])
        if isinstance(result, Tensor):
            self._bind(node, result)
        elif isinstance(result, (tuple, list)) and any(isinstance(r, Tensor) for r in result):
            node.meta["tensor_meta"] = tuple(
                _extract_tensor_metadata(r) if isinstance(r, Tensor) else r for r in result
            )
            for i, item in enumerate(result):
                if isinstance(item, Tensor):
                    self._bind(self.graph.call_function(operator.getitem, (node, i)), item)

    # -- leaf modules --------------------------------------------------------------

    def enter(self, path: str, args: tuple[Any, ...]) -> None:
        self.inside = (path, args)

    def leave(self, output: object) -> None:
        assert self.inside is not None
        path, args = self.inside
        self.inside = None
        self._add("call_module", path, args, {}, output)

    def finish(self, result: object) -> None:
        out = main_output(result)
        self.graph.output(self._node_of(out) if out is not None else None)

    # -- torch calls ------------------------------------------------------------------

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.inside is None and _holds_tensor(result):
            kind, target, args = _call_of(func, args)
            if kind:
                self._add(kind, target, args, kwargs, result)
        return result


def _holds_tensor(value: object) -> bool:
    if isinstance(value, Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(isinstance(v, Tensor) for v in value)


def _call_of(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any, tuple[Any, ...]]:
    """The node kind, target and arguments symbolic tracing records for ``func(*args)``;
    kind "" for what it does not record (a property's getter)."""
    name = getattr(func, "__name__", "")
    if name in _OPERATORS:
        op, swapped = _OPERATORS[name]
        return "call_function", op, (args[1], args[0], *args[2:]) if swapped else args
    if name == "__get__":  # a property (x.T, x.data): recorded by the property's name
        owner = getattr(func, "__self__", None)
        prop = getattr(owner, "__name__", "")
        return ("call_method", prop, args) if prop else ("", None, args)
    if getattr(torch.Tensor, name, None) is func:
        return "call_method", name, args
    return "call_function", func, args
