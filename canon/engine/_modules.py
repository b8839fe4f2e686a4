"""Working copies of a caller's module, and running one with tensors passed in."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from canon.core import tied_names

__all__ = ["POINTS_TOGETHER_BYTES", "fit_together", "loaded", "working_copy"]

#: The most bytes of a path's points made together (each tensor's points in one step, a
#: few ops per tensor instead of per point and tensor: kernel launches on a GPU); beyond
#: it the points are made one at a time.
POINTS_TOGETHER_BYTES = 1 << 30


def fit_together(model: nn.Module, names: Iterable[str] | None, points: int) -> bool:
    """Whether ``points`` points' tensors of ``model`` (those in ``names``; every one when
    None) fit in :data:`POINTS_TOGETHER_BYTES`, counted at 4 bytes a number."""
    sizes = {n: t.numel() for n, t in model.state_dict(keep_vars=True).items()}
    wanted = sizes if names is None else names
    return bool(sum(sizes.get(n, 0) for n in wanted) * 4 * points <= POINTS_TOGETHER_BYTES)


def working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` with modules of its own (their modes and
    attributes can change without touching ``model``) and ``model``'s tensors where they
    are on ``device`` already, not copies of them: a copy for running points whose
    tensors are passed in (:func:`loaded`, ``functional_call``), which must never write
    into its own. Its tensors elsewhere are copied to ``device``."""
    shared = {
        id(t): t for t in itertools.chain(model.parameters(), model.buffers()) if t.device == device
    }
    return copy.deepcopy(model, shared).to(device)


@contextmanager
def loaded(module: nn.Module, tensors: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """``module`` holding ``tensors`` (by state-dict name; a tied name takes its first
    name's tensor; names not given keep the module's own) in place of its parameters and
    buffers while the block runs, and its own again afterwards, also on an error.

    What ``torch.func.functional_call`` does on every call, done once for many: a point
    run on many data batches pays the swap of its tensors (about 1 ms for a ResNet-20's
    128 on CPU) once, not per batch. A module that updates a buffer in place (BatchNorm
    in training mode) updates the tensor given.
    """
    tied = tied_names(module)
    names = list(module.state_dict(keep_vars=True))
    unknown = set(tensors) - set(names)
    if unknown:  # a tensor that would not be run is a caller's error, never ignored
        raise KeyError(f"the module has no tensor `{sorted(unknown)[0]}`")
    # the parameter and buffer dicts are written directly, as functional_call does: a
    # plain tensor in a parameter's place is what a module's forward reads
    slots: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for name in names:
            given = tensors.get(tied.get(name, name))
            if given is None:
                continue
            prefix, _, attr = name.rpartition(".")
            owner = module.get_submodule(prefix)
            slot: dict[str, Any] = (
                owner._parameters if attr in owner._parameters else owner._buffers
            )
            slots.append((slot, attr, slot[attr]))
            slot[attr] = given
        yield module
    finally:
        for slot, attr, own in reversed(slots):
            slot[attr] = own
