"""The memory layout in which a device runs a network's image inputs fastest.

On CPU, PyTorch's convolutions run channels-last (NHWC) inputs faster than the default
NCHW ones, and the layout carries through BatchNorm, activations, pooling and residual
sums. Measured on 2 CPU cores, alternating the two layouts:
- the evaluator on a 9-point path: a CIFAR ResNet-20 1.5x faster (10.5 s against 16 s
  on 2,000 inputs), torchvision's vgg11_bn 1.07x (making its 129M-weight points costs
  as much as running them);
- plain forward loops: ResNet-20 1.2x, mobilenet_v2 1.2x, vgg11_bn 1.13x, resnet18
  1.08x; a small ViT (a patch convolution, then attention) the same either way;
- a ResNet-20 training step (batch 128, SGD) 1.35x; a table's pair of ResNet-20s with
  BatchNorm recomputed 1.62x (30.4 s against 49.3 s on 2,000 inputs).
The values are the same up to the order of the convolutions' sums (a few ulps).
:data:`CHANNELS_LAST` says which device types use it; ``benchmarks/bench_layout.py``
measures both layouts on a device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["CHANNELS_LAST", "input_layout", "template_sample"]

#: Whether convnets' image batches run channels-last, by device type: on CPU as measured
#: above; on CUDA too, as ``benchmarks/bench_layout.py --device cuda`` measured on an
#: NVIDIA H200 (1,000 inputs, 5 points): ResNet-20 1.12x, vgg11_bn 1.25x, resnet18 1.05x,
#: mobilenet_v2 1.12x.
CHANNELS_LAST: dict[str, bool] = {"cpu": True, "cuda": True}


def template_sample(model: nn.Module, x: Tensor) -> Tensor:
    """The first of the inputs ``x`` as ``model`` itself runs it: floating inputs in the
    dtype of its parameters (the data may be in a path's wider working dtype), for a
    probe of the module as built."""
    sample = x[:1]
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is None or not sample.is_floating_point():
        return sample
    return sample.to(first.dtype)


def _same(x: Tensor) -> Tensor:
    return x


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def input_layout(
    model: nn.Module, device: torch.device, sample: Tensor
) -> Callable[[Tensor], Tensor]:
    """How to lay out a batch of ``model``'s inputs on ``device`` before a forward pass:
    channels-last where :data:`CHANNELS_LAST` says so for the device type (CPU, CUDA), for a
    network with 2-D convolutions whose inputs (``sample``, a batch of them on
    ``device``) are 4-D floating tensors, provided it runs them; else as they are. The
    network is tried once, in eval and inference mode (its modes are
    restored, its state untouched), on one channels-last input: one that reads its
    activations as contiguous NCHW memory (``x.view(n, -1)`` after a convolution) keeps
    the inputs as they are. Each batch is copied when it is run, so the data is never
    held twice."""
    if (
        not CHANNELS_LAST.get(device.type, False)
        or sample.ndim != 4
        or not sample.is_floating_point()
        or not any(isinstance(m, nn.Conv2d) for m in model.modules())
    ):
        return _same
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.inference_mode():
            model.eval()(_channels_last(template_sample(model, sample)))
    except Exception:  # whatever the network's own code raises on such memory
        return _same
    finally:
        for m, training in modes:
            m.training = training
    return _channels_last
