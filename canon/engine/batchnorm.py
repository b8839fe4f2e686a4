"""Recomputing BatchNorm running statistics at points along a path."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from canon.core.paths import NetworkPath, PointValues, at_points
from canon.engine._modules import fit_together, loaded, working_copy
from canon.engine.layout import input_layout

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
    of the batch statistics (as momentum None would) in fresh tensors. Other points keep
    the path's statistics. ``model`` is not touched, nor copied tensor by tensor.
    """
    work = working_copy(model, x.device).eval()
    layout = input_layout(work, x.device, x)
    norms = {
        name: m
        for name, m in work.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }
    tables = {kind: _table(path, [f"{name}.{kind}" for name in norms]) for kind in _STATS}
    for m in norms.values():
        m.train()
    ks = sorted(set(points))
    # the points made together where they fit (a few ops per tensor, not per point)
    together = None
    if fit_together(work, None, len(ks)):
        together = {n: at_points(t, ks) for n, t in path.tensors.items()}
    with torch.no_grad():
        for j, k in enumerate(ks):
            state = path.state(k) if together is None else {n: v[j] for n, v in together.items()}
            # BN's training updates land in point k's rows of the tables, reset first
            fresh: dict[str, Tensor] = {}
            for kind, (flat, views) in tables.items():
                flat[k].fill_(_START[kind])
                fresh.update({name: view[k] for name, view in views.items()})
            counters = torch.zeros(len(norms), dtype=torch.long, device=x.device)
            fresh.update(
                {f"{name}.num_batches_tracked": counters[i] for i, name in enumerate(norms)}
            )
            with loaded(work, {**state, **fresh}):
                ends = range(0, min(batches * batch_size, x.shape[0]), batch_size)
                for count, start in enumerate(ends, 1):
                    # the plain average over the batches: the factor momentum=None takes
                    # (1 / batches so far), given as a number; with None each layer reads
                    # its counter off the device at every batch (a host sync on a GPU)
                    for m in norms.values():
                        m.momentum = 1.0 / count
                    work(layout(x[start : start + batch_size]))
            del state  # before the next point is made: one held at a time
    tensors = dict(path.tensors)
    for _, views in tables.values():
        tensors.update({name: PointValues(view) for name, view in views.items()})
    return NetworkPath(path.x, tensors)


#: The running statistics a point's recomputation starts from.
_STATS = ("running_mean", "running_var")
_START = {"running_mean": 0.0, "running_var": 1.0}


def _table(path: NetworkPath, names: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """The values of the 1-D tensors ``names`` at every point of ``path``, in one new
    [points, all their entries] buffer, and each tensor's view of it ([points, entries]):
    a point's row of every tensor is reset by one op."""
    n = len(path)
    if not names:
        return torch.zeros(n, 0, device=path.x.device), {}
    values = [at_points(path.tensors[name], range(n)) for name in names]
    flat = torch.cat([v.reshape(n, -1) for v in values], dim=1)
    views, start = {}, 0
    for name, v in zip(names, values, strict=True):
        size = v[0].numel()
        views[name] = flat[:, start : start + size]
        start += size
    return flat, views
