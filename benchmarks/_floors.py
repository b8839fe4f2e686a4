"""The plain loops the benchmarks' floors time: what a path's evaluation cannot avoid."""

from __future__ import annotations

import torch
from torch import nn

from canon.engine.layout import input_layout


def count_wrong(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> int:
    """``net``'s wrong predictions on every input, ``batch`` rows at a time, in inference
    mode, its inputs in the layout canon runs them in (channels-last for a convnet on
    CPU, the faster one): one network's share of a path's floor."""
    layout = input_layout(net, x.device, x)
    with torch.inference_mode():
        wrong = torch.zeros((), device=x.device)
        for start in range(0, x.shape[0], batch):
            logits = net(layout(x[start : start + batch]))
            wrong += (logits.argmax(1) != y[start : start + batch]).sum()
        return int(wrong)


def recompute_batchnorm(net: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> None:
    """``net``'s BatchNorm statistics recomputed as a path recomputes them at a point: its
    BatchNorm layers in train mode with cumulative averages over the first ``batches``
    batches of ``batch_size`` inputs (as far as the data goes), laid out as for
    :func:`count_wrong`. ``net`` comes in eval mode and leaves in it."""
    layout = input_layout(net, x.device, x)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.train()
        ends = range(0, min(batches * batch_size, x.shape[0]), batch_size)
        for count, start in enumerate(ends, 1):
            for m in norms:  # momentum None's factor, given as a number: no host sync
                m.momentum = 1.0 / count
            net(layout(x[start : start + batch_size]))
    net.eval()
