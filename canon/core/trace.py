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
Anything else (concatenating units, grouped convolutions, rotary embeddings)
is rejected with an error that names the op and the module path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from canon.core.modules import BinaryConv2d, BinaryLinear, Sign
from canon.core.spec import Spec, TensorInfo, dtype_name
from canon.core.unit_spaces import BATCHNORMS, LAYERS, WHAT_TO_DO, Walker
from canon.errors import UnsupportedModuleError

__all__ = ["spec_from_module", "tensors_of", "traced", "tracer"]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (*LAYERS, *BATCHNORMS, Sign, nn.MultiheadAttention)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def tracer() -> fx.Tracer:
    """The torch.fx tracer canon uses: layers, BatchNorm, sign activations and
    ``nn.MultiheadAttention`` (whose functional form fx cannot follow) are leaves."""
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
    ``(in_features,)`` when the first layer is ``nn.Linear``. The model is
    traced in eval mode (what canon evaluates) and not changed: its
    train/eval flags are restored afterwards.
    """
    shape = _input_shape(model, input_shape)
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        gm = traced(model)
        _propagate_shapes(model, gm, shape)
    finally:
        for m, training in flags.items():
            m.training = training
    groups, output = Walker(gm).walk()
    return Spec(groups, output, tensors=tensors_of(model))


def traced(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by canon's tracer (:func:`tracer`), as a graph module."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many kinds; name the cause
        raise UnsupportedModuleError(_untraceable(model, exc), op="trace") from exc
    return fx.GraphModule(model, graph)


def _untraceable(model: nn.Module, exc: Exception) -> str:
    """Which tracer failed on ``model``, its own words (first line), and what canon supports."""
    name = type(model).__name__
    said = str(exc).strip().splitlines()
    cause = f"{type(exc).__name__}: {said[0][:200]}" if said else type(exc).__name__
    message = (
        f"cannot trace {name}: torch.fx symbolic tracing (canon's tracer) stopped with "
        f"`{cause}`. It cannot follow Python control flow that depends on tensor values, "
        "nor a forward wrapped in a decorator taking *args/**kwargs"
    )
    if type(model).__module__.split(".")[0] == "transformers":
        return (
            f"{message}. Hugging Face transformers models are not supported yet: their "
            "forward is not symbolically traceable this way, and canon does not yet derive "
            f"attention's symmetries{WHAT_TO_DO}"
        )
    return message + WHAT_TO_DO


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
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            _ShapeRecorder(gm).run(torch.zeros((2, *shape), dtype=dtype, device=device))
    except Exception as exc:
        raise UnsupportedModuleError(
            f"{type(model).__name__} does not run on an input of shape {list(shape)}: {exc}",
            op="shape",
        ) from exc
