"""transformers' mixture-of-experts layers in canon's layout.

transformers holds a layer's experts as 3-D weights (``gate_up_proj``: experts x 2I x
hidden, ``down_proj``: experts x hidden x I; transposed in some models) and picks a
kernel for them at run time. canon replaces each such module by its own
:class:`~canon.core.experts.StackedExperts`: the same weights, under the same names, as
2-D matrices whose rows (``gate_up_proj``) or columns (``down_proj``) stack the experts,
so that every unit sits on one axis; the module's sibling with one weight row per expert
is its router (:func:`~canon.core.experts.mark_router`). A library's file holds the 3-D
weights; :func:`in_canon_layout` and :func:`canon_shape` turn them into canon's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon._limits import clip
from canon.core.experts import (
    ClampedGLU,
    ClampedSwiGLU,
    Glu,
    StackedExperts,
    mark_router,
    router_weight,
)
from canon.errors import UnsupportedModuleError

__all__ = [
    "ExpertPiece",
    "Stacked",
    "assembled",
    "canon_shape",
    "in_canon_layout",
    "piece_shape",
    "stack_library_experts",
]

#: How a library's file holds one of canon's stacked weights: the input weight (``in``:
#: experts x rows x hidden) or ``down_proj`` (``down``: experts x hidden x I), each maybe
#: with its two last axes swapped (``-transposed``); their biases (``in-bias``: experts x
#: rows, held as one row each; ``down-bias``: experts x hidden, held as hidden x experts).
Stacked = Literal["in", "in-transposed", "down", "down-transposed", "in-bias", "down-bias"]


def _is_library_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers experts module (its class decorated with
    ``use_experts_implementation``: the flags it sets, 3-D weights)."""
    down = getattr(module, "down_proj", None)
    return (
        type(module).__module__.startswith("transformers.")
        and hasattr(module, "has_gate")
        and hasattr(module, "is_transposed")
        and isinstance(down, Tensor)
        and down.ndim == 3
    )


def _glu(module: nn.Module) -> Glu | str | None:
    """The two-input gate of a library's gated experts: None for ``act(gate) * up``
    (transformers' default); else canon's gate that computes the library's on random
    pre-activations (GPT-OSS's clamped SwiGLU, HY-V4's and Bailing's clamped gates), or
    why there is none."""
    from transformers.integrations.moe import _default_apply_gate

    apply = getattr(type(module), "_apply_gate", None)
    if not module.has_gate or apply is _default_apply_gate or apply is None:
        return None
    alpha = getattr(module, "alpha", None)
    limit = next(
        (v for v in (getattr(module, n, None) for n in ("limit", "swiglu_limit")) if v), None
    )
    act = _activation(module)
    # None: ``act(gate) * up`` after all (Bailing's without a limit)
    candidates: list[Glu | None] = [None] if act is not None else []
    if isinstance(limit, (int, float)):
        clamped = act or nn.SiLU()
        candidates += [ClampedGLU(clamped, limit), ClampedGLU(clamped, limit, act_first=True)]
        if isinstance(alpha, (int, float)):
            candidates.insert(0, ClampedSwiGLU(alpha, limit))
    gen = torch.Generator().manual_seed(0)
    rows = 2 * int(module.get_parameter("down_proj").shape[2 if not module.is_transposed else 1])
    scale = 2 * limit if isinstance(limit, (int, float)) else 4.0  # past the clamps
    h = torch.randn(5, rows, generator=gen, dtype=torch.float64, device="cpu") * scale
    interleaved = not getattr(module, "is_concatenated", True)
    gate, up = (h[:, 0::2], h[:, 1::2]) if interleaved else h.chunk(2, dim=-1)
    with torch.no_grad():
        theirs = apply(module, h)
        for glu in candidates:
            ours = glu(gate, up) if glu is not None else act(gate) * up  # type: ignore[misc]
            if torch.allclose(theirs, ours):
                return glu
    return "a gate of their own"


#: Activations a library's experts hold as functions, and the module each one is.
_ACTIVATIONS: dict[object, type[nn.Module]] = {
    F.silu: nn.SiLU, F.gelu: nn.GELU, F.relu: nn.ReLU, torch.tanh: nn.Tanh,
}  # fmt: skip


def _activation(module: nn.Module) -> nn.Module | None:
    """The experts' activation as a module: theirs, or the one a known function is."""
    act = getattr(module, "act_fn", None)
    if isinstance(act, nn.Module):
        return act
    known = _ACTIVATIONS.get(act)
    return known() if known is not None else None


def _refused(path: str, module: nn.Module, glu: Glu | str | None) -> str | None:
    """Why canon cannot follow the library's experts at ``path``; None if it can."""
    what = []
    if getattr(module, "has_post_expert_norm", False):
        what.append("a norm after each expert")
    if isinstance(glu, str):
        what.append(glu)
    if glu is None and _activation(module) is None:
        what.append("an activation canon does not know")
    if not what:
        return None
    return (
        f"the experts `{clip(path, 120)}` ({type(module).__name__}) have "
        f"{' and '.join(what)}; canon follows stacked experts whose gate is act(gate) * up "
        "(Mixtral's, Qwen's, OLMoE's, DeepSeek's), GPT-OSS's clamped SwiGLU or a clamped "
        "act(gate) * up (HY-V4's, Bailing's)"
    )


def _canon_experts(module: nn.Module, glu: Glu | None) -> StackedExperts:
    """canon's experts holding ``module``'s weights (a library's experts) in 2-D."""
    gated = bool(module.has_gate)
    name = "gate_up_proj" if gated else "up_proj"
    w_in: Tensor = module.get_parameter(name)
    down: Tensor = module.get_parameter("down_proj")
    if module.is_transposed:  # (experts, in, out) in the file: (experts, out, in) here
        w_in, down = w_in.transpose(1, 2), down.transpose(1, 2)
    experts, rows, hidden = w_in.shape
    intermediate = down.shape[2]
    if rows != intermediate * (2 if gated else 1) or tuple(down.shape[:2]) != (experts, hidden):
        raise UnsupportedModuleError(
            f"experts of shapes {list(w_in.shape)} and {list(down.shape)} do not agree",
            op="experts",
        )
    bias = bool(getattr(module, "has_bias", False))
    act = _activation(module) if glu is None else nn.Identity()
    assert act is not None  # checked by _refused
    made = StackedExperts(
        experts, hidden, intermediate, act, gated, w_in.device, w_in.dtype,
        interleaved=not getattr(module, "is_concatenated", True), bias=bias, glu=glu,
    )  # fmt: skip
    held = made.state_dict(keep_vars=True)
    with torch.no_grad():
        held[name].copy_(in_canon_layout("in", w_in))
        held["down_proj"].copy_(in_canon_layout("down", down))
        if bias:
            held[f"{name}_bias"].copy_(
                in_canon_layout("in-bias", module.get_parameter(f"{name}_bias"))
            )
            held["down_proj_bias"].copy_(
                in_canon_layout("down-bias", module.get_parameter("down_proj_bias"))
            )
    return made


def stack_library_experts(net: nn.Module) -> tuple[tuple[str, Stacked, int], ...]:
    """Replace every transformers experts module of ``net`` by canon's, and mark its
    router; returns how the library's files hold each replaced weight: (canon's name, how,
    the number of experts)."""
    found: list[tuple[str, Stacked, int]] = []
    for path, parent in list(net.named_modules()):
        for name, child in list(parent.named_children()):
            if not _is_library_experts(child):
                continue
            where = f"{path}.{name}" if path else name
            glu = _glu(child)
            why = _refused(where, child, glu)
            if why is not None or isinstance(glu, str):
                raise UnsupportedModuleError(str(why), op=type(child).__name__, path=where)
            made = _canon_experts(child, glu)
            setattr(parent, name, made)
            flip, e = "-transposed" if child.is_transposed else "", made.experts
            found.append((f"{where}.{made.in_name}", f"in{flip}", e))  # type: ignore[arg-type]
            found.append((f"{where}.down_proj", f"down{flip}", e))  # type: ignore[arg-type]
            if made.down_proj_bias is not None:
                found.append((f"{where}.{made.in_name}_bias", "in-bias", e))
                found.append((f"{where}.down_proj_bias", "down-bias", e))
            for other in parent.children():
                weight = router_weight(other, made.hidden) if other is not made else None
                if weight is not None and other.get_parameter(weight).shape[0] == made.experts:
                    mark_router(other)
    return tuple(found)


def canon_shape(how: Stacked, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape canon holds a library's stacked weight of ``shape`` in (a file's header
    checked before any tensor is read); ``shape`` itself when it is not the library's."""
    if how.endswith("-bias"):
        if len(shape) != 2:
            return shape
        return (shape[0] * shape[1],) if how == "in-bias" else (shape[1], shape[0])
    if len(shape) != 3:
        return shape
    experts, a, b = shape
    if how.endswith("-transposed"):
        a, b = b, a
    return (experts * a, b) if how.startswith("in") else (a, experts * b)


def in_canon_layout(how: Stacked, t: Tensor) -> Tensor:
    """A library's stacked weight ``t`` as canon holds it (:func:`canon_shape`)."""
    if how == "in-bias":
        return t.reshape(-1).contiguous()
    if how == "down-bias":
        return t.t().contiguous()
    if how.endswith("-transposed"):
        t = t.transpose(1, 2)
    if how.startswith("in"):
        return t.reshape(-1, t.shape[2]).contiguous()
    return t.permute(1, 0, 2).reshape(t.shape[1], -1).contiguous()


@dataclass(frozen=True)
class ExpertPiece:
    """One expert's 2-D weight in a file that holds each expert's own (the Hub's Mixtral:
    ``experts.3.w1.weight``): a part of canon's stacked weight ``target``, ``part`` of
    ``parts`` (gate then up) of expert ``expert``."""

    target: str
    expert: int
    part: int
    parts: int


def piece_shape(how: Stacked, shape: tuple[int, ...], experts: int, parts: int) -> tuple[int, ...]:
    """The shape of one expert's part of canon's stacked weight of ``shape``."""
    rows, cols = shape
    if how == "in":
        return (rows // (experts * parts), cols)
    return (rows, cols // experts)


def assembled(how: Stacked, pieces: Mapping[tuple[int, int], Tensor], experts: int) -> Tensor:
    """canon's stacked weight from every expert's parts (by (expert, part)): an input
    weight's rows expert by expert, its parts in order in each; ``down_proj``'s columns
    expert by expert."""
    ordered = [pieces[key] for key in sorted(pieces)]
    return torch.cat(ordered, dim=0 if how == "in" else 1)
