"""Building blocks that canon's architectures use and its tracer understands.

``Sign`` is the sign activation; ``BinaryLinear`` and ``BinaryConv2d`` keep
real latent weights in the state dict and use their signs in the forward
pass (BinaryNet). Gradients pass straight through the sign where the input
lies in [-1, 1] (the usual straight-through estimator).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BinaryConv2d", "BinaryLinear", "Sign", "sign_ste"]


class _SignSTE(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        out: Tensor = torch.sign(x)
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        out: Tensor = grad * (x.abs() <= 1).to(grad.dtype)
        return out


def sign_ste(x: Tensor) -> Tensor:
    """sign(x) in the forward pass; gradient 1 on |x| <= 1 and 0 elsewhere."""
    out: Tensor = _SignSTE.apply(x)  # type: ignore[no-untyped-call]
    return out


class Sign(nn.Module):
    """The sign activation (odd, and invariant to the scale of its input)."""

    def forward(self, x: Tensor) -> Tensor:
        return sign_ste(x)


class BinaryLinear(nn.Linear):
    """A linear layer whose forward pass uses the signs of its latent weights.

    The output is divided by sqrt(fan_in) (a positive constant: the signs, and
    so the binary network's function, are unchanged) so that pre-activations
    stay of order one, where the straight-through gradient of a following
    sign activation is non-zero.
    """

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = F.linear(x, sign_ste(self.weight), self.bias)
        return out * float(self.weight[0].numel() ** -0.5)


class BinaryConv2d(nn.Conv2d):
    """A 2-D convolution whose forward pass uses the signs of its latent weights
    (output divided by sqrt(fan_in), as in :class:`BinaryLinear`)."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self._conv_forward(x, sign_ste(self.weight), self.bias)
        return out * float(self.weight[0].numel() ** -0.5)
