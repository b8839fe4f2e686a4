"""Recomputing BatchNorm running statistics at points along a path."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from canon.core.paths import NetworkPath, PointValues

__all__ = ["has_batchnorm", "with_recomputed_statistics"]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model has BatchNorm layers."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def with_recomputed_statistics(
    path: NetworkPath,
    model: nn.Module,
    x: Tensor,
    points: Sequence[int],
    batches: int,
    batch_size: int,
) -> NetworkPath:
    """``path`` with the BN running statistics at ``points`` recomputed on training data.

    For each of those points the network is run with its BatchNorm layers in
    training mode (every other layer in eval mode) over the first ``batches``
    batches of ``batch_size`` inputs of ``x``, accumulating the exact average
    of the batch statistics (momentum None). Other points keep the path's
    statistics.
    """
    work = copy.deepcopy(model).to(x.device).eval()
    norms = {name: m for name, m in work.named_modules() if isinstance(m, _BatchNorm)}
    stats = [f"{name}.{s}" for name in norms for s in ("running_mean", "running_var")]
    tables = {s: torch.stack([path.tensors[s].at(k) for k in range(len(path))]) for s in stats}
    chosen = set(points)
    with torch.no_grad():
        for k in range(len(path)):
            if k not in chosen:
                continue
            work.load_state_dict(path.state(k))
            for m in norms.values():
                m.reset_running_stats()
                m.momentum = None
                m.train()
            for start in range(0, min(batches * batch_size, x.shape[0]), batch_size):
                work(x[start : start + batch_size])
            for m in norms.values():
                m.eval()
            for s in stats:
                tables[s][k] = work.get_buffer(s)
    tensors = dict(path.tensors)
    tensors.update({s: PointValues(values) for s, values in tables.items()})
    return NetworkPath(path.x, tensors)
