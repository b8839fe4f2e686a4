"""Derive a :class:`~canon.core.spec.Spec` from an ``nn.Module`` by tracing it with torch.fx.

The walker follows every tensor of the traced graph and knows, for each, which
axis carries which *unit space*: the units a layer produces. A layer
(Linear, or Conv with groups=1) consumes the space of its input and starts a
new one; per-unit ops (activations, pooling, dropout, reshapes, permutes,
norm layers, depthwise convolutions, per-channel parameters) keep the space;
adding or multiplying two tensors joins their spaces into one (a residual
stream, DESIGN §3b). Every space becomes a unit group, its producers the
layers that start it, and its symmetry is read off every op it passes
through:

- all ops positively homogeneous (ReLU, leaky ReLU, max/avg pooling, add,
  no activation): ``scale``;
- all ops odd (tanh, sign, avg pooling): ``sign``;
- otherwise ``none`` (permutations only: GELU, SiLU, ReLU6, norm layers).

A sign activation reached through positively homogeneous ops makes the group
scale-invariant. A sum or mean over the unit axis (a committee machine's fixed
read-out) ends the network without an output layer. Multi-head attention
gives two ``linear`` groups per call (:mod:`canon.core.attention_steps`).
Anything else (concatenating units, grouped convolutions) is rejected with
an error that names the op and the module path.

A forward that symbolic tracing cannot follow (Hugging Face transformers'
models) is recorded by running it once (:mod:`canon.core.record`); a tied
output layer (a language model's head that is its token embedding) is the
embedding's tensor, listed once.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import threading
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from canon.core.experts import StackedExperts, is_router
from canon.core.modules import BinaryConv2d, BinaryLinear, Sign
from canon.core.ops import library_activation, library_norm, library_response_norm
from canon.core.record import record
from canon.core.spec import Spec, TensorInfo, dtype_name
from canon.core.unit_spaces import BATCHNORMS, LAYERS, WHAT_TO_DO, Walker, tied_names
from canon.errors import UnsupportedModuleError

__all__ = ["activations", "load_into", "spec_from_module", "tensors_of", "traced", "tracer"]


def _known_layer(m: nn.Module) -> bool:
    """Whether ``m`` is a layer or BatchNorm that canon follows as one op: of one of those
    classes and computing what that class computes, or one of canon's own layers. A
    subclass with a forward of its own (an activation inside a BatchNorm, a
    standardized weight with a per-filter gain) computes something else: it is traced
    into like any other module, so that what it does is seen."""
    if isinstance(m, (BinaryLinear, BinaryConv2d)):
        return True
    kind = type(m)
    return any(
        isinstance(m, base)
        and all(getattr(kind, name, None) is getattr(base, name, None) for name in _FORWARDS)
        for base in (*LAYERS, *BATCHNORMS)
    )


# the methods a layer's output comes from (a convolution's forward calls _conv_forward)
_FORWARDS = ("forward", "_conv_forward")


# torch.fx's tracer patches torch functions process-wide while it runs, and a graph module
# that fails prints to the process's stderr: one trace at a time (service threads, jobs)
_TRACING = threading.RLock()


class _Tracer(fx.Tracer):
    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        with _TRACING:
            return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if _known_layer(m) or isinstance(m, (Sign, StackedExperts)) or is_router(m):
            return True
        if isinstance(m, nn.MultiheadAttention):  # torch's own forward only
            return type(m).forward is nn.MultiheadAttention.forward
        if library_activation(m) or library_norm(m) or library_response_norm(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def tracer() -> fx.Tracer:
    """The torch.fx tracer canon uses: layers, BatchNorm, sign activations and
    ``nn.MultiheadAttention`` (whose functional form fx cannot follow) are leaves."""
    return _Tracer()


def tensors_of(model: nn.Module) -> tuple[TensorInfo, ...]:
    """Every tensor of ``model``'s state dict: name, shape, dtype, parameter or buffer, binary.
    A tied tensor appears once, under its first name (:func:`~canon.core.unit_spaces.tied_names`).

    Needs no forward pass, so a module built on the meta device costs nothing here.
    """
    parameters = {name for name, _ in model.named_parameters()}
    tied = tied_names(model)
    binary = {
        f"{path}.weight"
        for path, m in model.named_modules()
        if isinstance(m, (BinaryLinear, BinaryConv2d))
    }
    return tuple(
        TensorInfo(name, tuple(t.shape), dtype_name(t.dtype), name in parameters, name in binary)
        for name, t in model.state_dict().items()
        if name not in tied
    )


def spec_from_module(model: nn.Module, input_shape: Sequence[int] | None = None) -> Spec:
    """Derive the structure spec of ``model`` by tracing it.

    ``input_shape`` is the shape of one input sample (no batch axis). Without
    it, canon uses ``model.input_shape`` if the model has one, or
    ``(in_features,)`` when the first layer is ``nn.Linear``. The model is
    traced in eval mode (what canon evaluates) and not changed: its
    train/eval flags are restored afterwards.

    torch.fx's symbolic tracer is tried first; a forward it cannot follow
    (Python that depends on values, decorators: Hugging Face transformers'
    models) is recorded by running it once on zeros instead
    (:func:`~canon.core.record.record`; token ids when the model's main input is
    ``input_ids``). Both give the walker the same kind of graph.
    """
    shape = _input_shape(model, input_shape)
    try:
        with _TRACING, _eval(model):
            gm = _graph(model, shape)
        names = frozenset(model.state_dict())
        try:
            groups, output = Walker(gm, tied_names(model), names).walk()
        except UnsupportedModuleError:
            if _kept_whole(gm) is None:
                raise
            # a function torch.fx kept whole (``torch.fx.wrap``: torchvision's Swin runs
            # its attention in one): its insides, as a run of the model records them
            with _TRACING, _eval(model):
                gm = _recorded(model, shape)
            groups, output = Walker(gm, tied_names(model), names).walk()
    except UnsupportedModuleError as exc:
        note = _own_forwards(model)
        if not note:
            raise
        raise UnsupportedModuleError(f"{exc} ({note})", op=exc.op, path=exc.path) from exc
    return Spec(groups, output, tensors=tensors_of(model))


def _kept_whole(gm: fx.GraphModule) -> str | None:
    """The name of the first function of a library (not torch's) that the symbolic graph
    calls whole (``torch.fx.wrap``), or None."""
    for node in gm.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, types.FunctionType):
            continue
        if str(getattr(target, "__module__", "")).partition(".")[0] not in ("torch", "canon"):
            return target.__name__
    return None


def _own_forwards(model: nn.Module) -> str:
    """A note naming the first modules of ``model`` that are layers or BatchNorms with a
    forward of their own (:func:`_known_layer`), which canon traced into; '' if none."""
    found = [
        f"`{path}` ({type(m).__name__})"
        for path, m in model.named_modules()
        if isinstance(m, (*LAYERS, *BATCHNORMS)) and not _known_layer(m)
    ]
    if not found:
        return ""
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return (
        f"{', '.join(found[:3])}{more} subclass a layer or BatchNorm with a forward of its "
        "own, which canon does not take for the plain layer: it follows what that forward "
        "does, and refuses what it cannot follow"
    )


def load_into(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load ``state`` (a spec's tensors: a tied tensor under its first name only) into
    ``model``; any other missing or unexpected name is an error, as in
    ``load_state_dict``."""
    given: dict[str, Tensor] = OrderedDict(state)
    # the module's own per-module metadata (its versions), which some modules' loaders
    # read (torchvision's MNASNet refuses a state without it); a plain dict has none
    given._metadata = getattr(model.state_dict(), "_metadata", {})  # type: ignore[attr-defined]
    result = model.load_state_dict(given, strict=False)
    missing = set(result.missing_keys) - set(tied_names(model))
    if missing or result.unexpected_keys:
        raise KeyError(
            f"state does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )


def activations(model: nn.Module, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
    """The values of the graph nodes named ``wanted`` (a spec's taps) when ``model`` runs
    on ``x``, from the graph :func:`spec_from_module` derives the spec from."""
    with _eval(model), torch.inference_mode():
        try:
            gm = traced(model)
        except UnsupportedModuleError:
            return record(model, x, _Tracer().is_leaf_module, frozenset(wanted)).kept
        if not wanted <= {n.name for n in gm.graph.nodes}:  # the spec's graph was recorded
            return record(model, x, _Tracer().is_leaf_module, frozenset(wanted)).kept
        recorder = _Keeper(gm, wanted)
        recorder.run(x)
    return recorder.kept


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside, its modules' train/eval flags restored after."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, training in flags.items():
            m.training = training


def _graph(model: nn.Module, shape: tuple[int, ...]) -> fx.GraphModule:
    """The shape-annotated graph of ``model``: symbolically traced, else recorded."""
    try:
        gm = traced(model)
    except UnsupportedModuleError as traced_error:
        try:
            return _recorded(model, shape)
        except Exception as exc:
            raise UnsupportedModuleError(
                f"{traced_error} Running it once to record its graph failed too: "
                f"{type(exc).__name__}: {_first_line(exc)}{WHAT_TO_DO}",
                op="trace",
            ) from exc
    _propagate_shapes(model, gm, shape)
    return gm


def _recorded(model: nn.Module, shape: tuple[int, ...]) -> fx.GraphModule:
    """``model``'s graph recorded by running it on zeros. A model on the meta device whose
    forward reads a value (``.item()`` in a mask's set-up) runs as a zero-filled copy on the
    CPU instead, the graph still over ``model``."""
    leaf = _Tracer().is_leaf_module
    try:
        gm = record(model, _zeros(model, shape), leaf).gm
    except Exception:
        if not _on_meta(model):
            raise
        copy = _zero_copy(model)
        gm = fx.GraphModule(model, record(copy, _zeros(copy, shape), leaf).gm.graph)
    _check_all_used(model, gm)
    return gm


def _check_all_used(model: nn.Module, gm: fx.GraphModule) -> None:
    """Refuse a recorded graph that leaves a tensor of the state dict unread: the run on
    zeros took one branch of the forward, and what the other branches do with their
    layers is not known (the symmetries they would have to keep could be others)."""
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            used.add(str(node.target))
        elif node.op == "call_module":
            sub = gm.get_submodule(str(node.target))
            used.update(f"{node.target}.{name}" for name in sub.state_dict())
    # a BatchNorm's step counter is read in training mode only: eval outputs never see it
    counters = {
        f"{path}.num_batches_tracked"
        for path, m in model.named_modules()
        if isinstance(m, BATCHNORMS)
    }
    tied = tied_names(model)
    used |= {tied[n] for n in used if n in tied}  # read by another name (T5's shared table)
    unread = [
        n for n in model.state_dict() if n not in used and n not in tied and n not in counters
    ]
    if unread:
        listed = ", ".join(f"`{n}`" for n in unread[:3])
        more = f" and {len(unread) - 3} more" if len(unread) > 3 else ""
        raise UnsupportedModuleError(
            f"run once on zeros, {type(model).__name__} never read {listed}{more}: its forward "
            "takes other branches on other inputs, whose structure canon cannot tell",
            op="trace",
        )


def _on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))


def _zero_copy(model: nn.Module) -> nn.Module:
    """A copy of meta-device ``model`` on the CPU: its meta tensors zero, any other tensor
    with its value."""
    copy = deepcopy(model).to_empty(device="cpu")
    with torch.no_grad():
        for (_, new), (_, old) in zip(
            itertools.chain(
                copy.named_parameters(remove_duplicate=False),
                copy.named_buffers(remove_duplicate=False),
            ),
            itertools.chain(
                model.named_parameters(remove_duplicate=False),
                model.named_buffers(remove_duplicate=False),
            ),
            strict=True,
        ):
            if old.is_meta:
                new.zero_()
            else:
                new.copy_(old)
    return copy


def _zeros(model: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """A batch of two zero inputs of ``shape``: token ids for a model whose main input is
    ``input_ids`` (transformers' convention), else numbers of the parameters' dtype."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    if getattr(model, "main_input_name", None) == "input_ids":
        return torch.zeros((2, *shape), dtype=torch.long, device=device)
    dtype = param.dtype if param is not None else torch.float32
    return torch.zeros((2, *shape), dtype=dtype, device=device)


def traced(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by canon's tracer (:func:`tracer`), as a graph module."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many kinds; name the cause
        raise UnsupportedModuleError(_untraceable(model, exc), op="trace") from exc
    return fx.GraphModule(model, graph)


def _first_line(exc: BaseException) -> str:
    said = str(exc).strip().splitlines()
    return said[0][:200] if said else ""


def _untraceable(model: nn.Module, exc: Exception) -> str:
    """Which tracer failed on ``model`` and its own words (first line)."""
    said = _first_line(exc)
    cause = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return (
        f"cannot trace {type(model).__name__}: torch.fx symbolic tracing (canon's tracer) "
        f"stopped with `{cause}`."
    )


def _input_shape(model: nn.Module, given: Sequence[int] | None) -> tuple[int, ...]:
    if given is not None:
        return tuple(int(s) for s in given)
    own = getattr(model, "input_shape", None)
    if own is not None:
        return tuple(int(s) for s in own)
    first = next((m for m in model.modules() if isinstance(m, (*LAYERS, *BATCHNORMS))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise UnsupportedModuleError(
        f"cannot tell the input shape of {type(model).__name__}: pass `input_shape` "
        "(one sample, without the batch axis, e.g. (1, 28, 28)) or set `model.input_shape`",
        op="input_shape",
    )


class _Keeper(fx.Interpreter):
    """Runs a traced model and keeps the outputs of the named nodes."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.kept: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            self.kept[n.name] = out
        return out


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and records in each node's ``meta["tensor_meta"]`` what torch.fx's
    ShapeProp records there (shape, dtype, ...; a tuple of them for a tuple of tensors).

    ShapeProp itself imports torch's symbolic-shapes machinery (and with it torch._dynamo)
    on its first node, seconds of every process that traces a model, for fake-tensor
    support canon never uses.
    """

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        found = False

        def metadata(value: object) -> object:
            nonlocal found
            if isinstance(value, torch.Tensor):
                found = True
                return _extract_tensor_metadata(value)
            return value

        meta = map_aggregate(result, metadata)  # type: ignore[arg-type]  # any value passes
        if found:
            n.meta["tensor_meta"] = meta
        return result


def _propagate_shapes(model: nn.Module, gm: fx.GraphModule, shape: tuple[int, ...]) -> None:
    try:
        # a graph module that fails prints its generated code's frame; the error says it
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            _ShapeRecorder(gm).run(_zeros(model, shape))
    except Exception as exc:
        raise UnsupportedModuleError(
            f"{type(model).__name__} does not run on an input of shape {list(shape)}: {exc}",
            op="shape",
        ) from exc
