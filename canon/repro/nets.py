"""The reproduction's two networks that need an input adapter, as user architectures.

A zoo records each entry's dataset by name only (``digits``, ``npz:PATH``), so the
networks adapt to the inputs those names give:

- ``canon.repro.nets:lenet_digits``: the paper's LeNet-like net (built-in ``lenet``)
  on scikit-learn's 8x8 digits, which ``digits`` gives as flat vectors of 64: a
  reshape to 1x8x8 images comes first (5x5 filters with padding 2 keep 8x8).
- ``canon.repro.nets:committee_pm1``: the binary committee machine (built-in
  ``committee``) on hidden-manifold data stored as ``npz:PATH``. canon's npz
  loader standardizes every input feature, which maps a feature's values -1 and
  +1 to two numbers of the same signs; a sign on the inputs comes first and gives
  back the ±1 inputs exactly, so the network computes exactly the committee
  machine of the paper on the paper's HMM inputs.

Both add no parameters: the structure spec, normalization, alignment and
distances are those of the built-in networks.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from canon.architectures import build_model
from canon.core.modules import Sign

__all__ = ["ToImage", "committee_pm1", "lenet_digits"]


class ToImage(nn.Module):
    """Reshapes flat inputs (n, c*h*w) to images (n, c, h, w)."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.channels, self.side = channels, side

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], self.channels, self.side, self.side)


def _prefixed(first: tuple[str, nn.Module], body: nn.Module, features: int) -> nn.Module:
    net = nn.Sequential(OrderedDict([first, *body.named_children()]))
    net.input_shape = (features,)  # type: ignore[assignment]  # read by canon's tracer
    return net


def lenet_digits(
    channels: tuple[int, int] | list[int] = (20, 50), hidden: int = 500, classes: int = 10
) -> nn.Module:
    """LeNet-like (conv 5x5, 2x2 max-pool, twice; one hidden fully connected layer) on
    flat 8x8 digits: a reshape to 1x8x8, then ``lenet`` with padding 2."""
    body = build_model(
        "lenet",
        {
            "in_channels": 1,
            "input_size": 8,
            "classes": classes,
            "channels": list(channels),
            "kernel_size": 5,
            "padding": 2,
            "hidden": hidden,
        },
    )
    return _prefixed(("image", ToImage(1, 8)), body, 64)


def committee_pm1(in_features: int = 1000, hidden: int = 101) -> nn.Module:
    """The binary committee machine (``committee``: binary hidden layer, sign, output
    weights fixed to 1) after a sign on its inputs, which makes standardized ±1 inputs
    ±1 again."""
    body = build_model("committee", {"in_features": in_features, "hidden": hidden})
    return _prefixed(("inputs", Sign()), body, in_features)
