"""The input layout the evaluator and the BatchNorm recomputation run convnets in."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import measure_batch_statistics, randomize, state_of
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from canon.architectures import build_model
from canon.core.paths import linear_path, positions
from canon.engine import Evaluator
from canon.engine.batchnorm import with_recomputed_statistics
from canon.engine.layout import input_layout

CPU = torch.device("cpu")
CHANNELS_LAST = torch.channels_last


def _resnet(seed: int, input_size: int = 8) -> nn.Module:
    config = {"depth": 8, "width": 1, "classes": 3, "input_size": input_size}
    return randomize(build_model("resnet", config), seed, bn_eps=None)


def _images(n: int, size: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, size, size), generator=gen, dtype=torch.float64)


class _ViewsActivations(nn.Module):
    """A convnet that reads its activations as contiguous NCHW memory, as much
    hand-written code does: it cannot take channels-last inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_convnets_take_channels_last_images_on_cpu_and_nothing_else_changes():
    """Channels-last exactly where it is chosen: a convnet's 4-D floating images on CPU;
    an MLP's inputs, integer images and other devices keep theirs, uncopied."""
    net = _resnet(0)
    x = _images(5, 8, 0)
    laid = input_layout(net, CPU, x)(x)
    assert laid.is_contiguous(memory_format=CHANNELS_LAST) and not x.is_contiguous(
        memory_format=CHANNELS_LAST
    )
    assert torch.equal(laid, x)  # the same values, only the memory order differs
    mlp = build_model("mlp", {"in_features": 6, "hidden": [4], "classes": 3})
    flat = torch.randn(5, 6)
    assert input_layout(mlp, CPU, flat)(flat) is flat
    whole = torch.randint(0, 5, (5, 3, 8, 8))
    assert input_layout(net, CPU, whole)(whole) is whole
    assert input_layout(net, torch.device("mps"), x)(x) is x  # not measured there: as given


def test_a_network_that_views_its_activations_is_evaluated_in_its_own_layout():
    """A network whose ``x.view(n, -1)`` fails on channels-last memory keeps its inputs as
    given, and the evaluator scores it as a plain forward pass does."""
    net = _ViewsActivations().double().eval()
    x = _images(40, 8, 1)
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    layout = input_layout(net, CPU, x)
    assert layout(x) is x
    with torch.no_grad():
        wrong = (net(x).argmax(1) != y).double().mean()
    assert float(Evaluator(net, x, y, CPU).error(state_of(net)).errors[0]) == float(wrong)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), t=st.floats(0.0, 1.0))
def test_channels_last_evaluation_equals_plain_forward_passes(seed, t):
    """The evaluator's errors and losses for a ResNet's points equal those of the plain
    NCHW module (errors exactly, losses to float64 rounding)."""
    net = _resnet(seed)
    a, b = state_of(net), state_of(_resnet(seed + 1))
    x = _images(30, 8, seed)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(seed))
    xs = torch.tensor([0.0, t, 1.0], dtype=torch.float64)
    path = linear_path(a, b, xs)
    scores = Evaluator(net, x, y, CPU).evaluate(path, loss=True)
    for k in range(len(xs)):
        net.load_state_dict(path.state(k))
        with torch.no_grad():
            logits = net(x)
        assert float(scores.errors[k]) == float((logits.argmax(1) != y).double().mean())
        loss = torch.nn.functional.cross_entropy(logits, y)
        torch.testing.assert_close(scores.losses[k], loss, rtol=1e-10, atol=0.0)


def test_batchnorm_statistics_recomputed_channels_last_equal_a_plain_loop():
    """The running statistics recomputed at a point (channels-last batches) equal those a
    plain NCHW loop accumulates, to float64 rounding."""
    net = _resnet(3)
    a, b = state_of(net), state_of(_resnet(4))
    x = _images(64, 8, 3)
    path = linear_path(a, b, positions(3))
    redone = with_recomputed_statistics(path, net, x, [1], batches=4, batch_size=16)
    plain = _resnet(0)
    plain.load_state_dict(path.state(1))
    expected = measure_batch_statistics(plain, x, 16).state_dict()
    names = [n for n in a if n.endswith(("running_mean", "running_var"))]
    assert names
    for name in names:
        torch.testing.assert_close(redone.tensors[name].at(1), expected[name], rtol=1e-10, atol=0)


def test_choosing_the_layout_leaves_the_network_as_it_was():
    """The one trial forward pass changes neither the network's modes (here mixed: a
    training network with one BatchNorm layer in eval mode) nor its statistics."""
    net = _resnet(5).train()
    frozen = next(m for m in net.modules() if isinstance(m, _BatchNorm))
    frozen.eval()
    modes = [m.training for m in net.modules()]
    before = state_of(net)
    input_layout(net, CPU, _images(4, 8, 5))
    assert [m.training for m in net.modules()] == modes
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
