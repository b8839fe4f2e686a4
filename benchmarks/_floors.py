"""The plain loops the benchmarks' floors time: what a path's evaluation cannot avoid."""

from __future__ import annotations

import torch
from torch import nn


def count_wrong(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> int:
    """``net``'s wrong predictions on every input, ``batch`` rows at a time, in inference
    mode: one network's share of a path's floor."""
    with torch.inference_mode():
        wrong = torch.zeros((), device=x.device)
        for start in range(0, x.shape[0], batch):
            logits = net(x[start : start + batch])
            wrong += (logits.argmax(1) != y[start : start + batch]).sum()
        return int(wrong)


def recompute_batchnorm(net: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> None:
    """``net``'s BatchNorm statistics recomputed as a path recomputes them at a point: its
    BatchNorm layers in train mode with cumulative averages over the first ``batches``
    batches of ``batch_size`` inputs (as far as the data goes)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
                m.train()
        for start in range(0, min(batches * batch_size, x.shape[0]), batch_size):
            net(x[start : start + batch_size])
    net.eval()
