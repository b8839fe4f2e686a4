"""The plain loops the benchmarks' floors time: what a path's evaluation cannot avoid."""

from __future__ import annotations

from typing import Any

import torch
from _timing import median_time, synchronizer
from torch import nn

from canon.architectures import build_model
from canon.engine import Evaluator
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


class PairFloors:
    """One table pair's floors: ``points`` networks pre-built as modules, each run on every
    input by a plain loop at the evaluator's batch size (the rows it runs at once:
    10,000 for the MLPs), in inference mode; and for networks with BatchNorm (the
    built-in ``resnet``), the statistics of the interior ``points - 2`` recomputed by a
    plain loop as the table recomputes them (the default 20 batches of 256 inputs, as far
    as the data goes: each network's BatchNorm layers in train mode with cumulative
    averages)."""

    def __init__(
        self,
        arch: str,
        config: dict[str, Any],
        points: int,
        x: torch.Tensor,
        y: torch.Tensor,
        device: torch.device,
    ) -> None:
        self.networks = [build_model(arch, config).to(device).eval() for _ in range(points)]
        self.x, self.y, self.device = x.to(device), y.to(device), device
        self.batch = Evaluator(self.networks[0], self.x, self.y, device).rows()
        self.has_batchnorm = arch == "resnet"

    def forward(self) -> None:
        """Every network on every input."""
        for net in self.networks:
            count_wrong(net, self.x, self.y, self.batch)

    def batchnorm(self) -> None:
        """The interior networks' BatchNorm statistics recomputed (networks with BatchNorm)."""
        for net in self.networks[1:-1]:
            recompute_batchnorm(net, self.x, 20, 256)

    def measure(self, repeats: int, warm_up: bool = True) -> dict[str, float]:
        """The floors' median times over ``repeats`` runs: ``floor_s`` and, for networks
        with BatchNorm, ``bn_floor_s``."""
        sync = synchronizer(self.device)
        out = {"floor_s": median_time(self.forward, repeats, sync, warm_up)}
        if self.has_batchnorm:
            out["bn_floor_s"] = median_time(self.batchnorm, repeats, sync, warm_up)
        return out
