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
from torch import Tensor, nn

from canon._limits import clip
from canon.core.experts import StackedExperts, mark_router, router_weight
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
#: with its two last axes swapped (``-transposed``).
Stacked = Literal["in", "in-transposed", "down", "down-transposed"]


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


def _refused(path: str, module: nn.Module) -> str | None:
    """Why canon cannot follow the library's experts at ``path``; None if it can."""
    from transformers.integrations.moe import _default_apply_gate

    what = []
    if getattr(module, "has_bias", False):
        what.append("biases")
    if getattr(module, "has_post_expert_norm", False):
        what.append("a norm after each expert")
    if not getattr(module, "is_concatenated", True):
        what.append("gate and up rows interleaved")
    if module.has_gate and getattr(type(module), "_apply_gate", None) is not _default_apply_gate:
        what.append("a gate of their own")
    if not isinstance(getattr(module, "act_fn", None), nn.Module):
        what.append("no activation module")
    if not what:
        return None
    return (
        f"the experts `{clip(path, 120)}` ({type(module).__name__}) have "
        f"{' and '.join(what)}; canon follows stacked experts without biases whose gate "
        "is act(gate) * up (Mixtral's, Qwen's, OLMoE's, DeepSeek's)"
    )


def _canon_experts(module: nn.Module) -> StackedExperts:
    """canon's experts holding ``module``'s weights (a library's experts) in 2-D."""
    gated = bool(module.has_gate)
    w_in: Tensor = module.get_parameter("gate_up_proj" if gated else "up_proj")
    down: Tensor = module.get_parameter("down_proj")
    act = module.get_submodule("act_fn")
    if module.is_transposed:  # (experts, in, out) in the file: (experts, out, in) here
        w_in, down = w_in.transpose(1, 2), down.transpose(1, 2)
    experts, rows, hidden = w_in.shape
    intermediate = down.shape[2]
    if rows != intermediate * (2 if gated else 1) or tuple(down.shape[:2]) != (experts, hidden):
        raise UnsupportedModuleError(
            f"experts of shapes {list(w_in.shape)} and {list(down.shape)} do not agree",
            op="experts",
        )
    made = StackedExperts(experts, hidden, intermediate, act, gated, w_in.device, w_in.dtype)
    with torch.no_grad():
        getattr(made, made.in_name).copy_(w_in.reshape(experts * rows, hidden))
        made.down_proj.copy_(down.permute(1, 0, 2).reshape(hidden, experts * intermediate))
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
            why = _refused(where, child)
            if why is not None:
                raise UnsupportedModuleError(why, op=type(child).__name__, path=where)
            made = _canon_experts(child)
            setattr(parent, name, made)
            flip, e = child.is_transposed, made.experts
            found.append((f"{where}.{made.in_name}", "in-transposed" if flip else "in", e))
            found.append((f"{where}.down_proj", "down-transposed" if flip else "down", e))
            for other in parent.children():
                weight = router_weight(other, made.hidden) if other is not made else None
                if weight is not None and other.get_parameter(weight).shape[0] == made.experts:
                    mark_router(other)
    return tuple(found)


def canon_shape(how: Stacked, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape canon holds a library's stacked weight of ``shape`` in (a file's header
    checked before any tensor is read); ``shape`` itself when it is not 3-D."""
    if len(shape) != 3:
        return shape
    experts, a, b = shape
    if how.endswith("-transposed"):
        a, b = b, a
    return (experts * a, b) if how.startswith("in") else (a, experts * b)


def in_canon_layout(how: Stacked, t: Tensor) -> Tensor:
    """A library's stacked weight ``t`` as canon holds it (:func:`canon_shape`)."""
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
