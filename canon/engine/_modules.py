"""Working copies of a caller's module."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

__all__ = ["working_copy"]


def working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` with modules of its own (their modes and
    attributes can change without touching ``model``) and ``model``'s tensors where they
    are on ``device`` already, not copies of them: a copy for running points whose
    tensors are passed in (``functional_call``), which must never write into its own.
    Its tensors elsewhere are copied to ``device``."""
    shared = {
        id(t): t for t in itertools.chain(model.parameters(), model.buffers()) if t.device == device
    }
    return copy.deepcopy(model, shared).to(device)
