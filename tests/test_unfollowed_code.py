"""Code canon cannot follow is refused, never taken for something it is not.

A layer subclass with a forward of its own (timm's BatchNormAct2d runs an activation
inside the BatchNorm; ScaledStdConv2d standardizes its filters and multiplies them by a
per-filter gain) computes something other than the plain layer: canon follows what its
forward does (the BatchNorm call, then the activation) and refuses what it cannot; a
bias added to the attention scores that differs between heads (ALiBi) stays in place,
so canon keeps the heads in place too. Taking either for the plain case would change
the network's function silently.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from nets import assert_same_function, outputs, randomize, state_of
from torch import Tensor, nn

from canon.core import Spec, canonicalize, normalize, random_symmetry, spec_from_module
from canon.core.precision import to_working
from canon.core.trace import load_into
from canon.engine import path_curve
from canon.errors import UnsupportedModuleError


class BatchNormAct(nn.BatchNorm2d):
    """A BatchNorm with an activation inside its forward, written as timm's BatchNormAct2d
    is (no input check: torch.fx traces it in eval mode)."""

    def forward(self, x: Tensor) -> Tensor:
        """silu(batchnorm(x)), the running statistics updated as BatchNorm2d does."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average
                factor = 1.0 / float(self.num_batches_tracked)
        x = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            factor,
            self.eps,
        )
        return F.silu(x)


class PlainBatchNorm(nn.BatchNorm2d):
    """A BatchNorm subclass that only adds an attribute: it is the plain layer."""

    tag = "plain"


class StandardizedConv(nn.Conv2d):
    """Filters standardized and scaled by a per-filter gain in the forward (ScaledStdConv2d)."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """conv(x, gain * standardized(w))."""
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        w = self.gain * w / w.std((1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias)


class DoubledLinear(nn.Linear):
    """A Linear whose forward uses twice its weight."""

    def forward(self, x: Tensor) -> Tensor:
        """x (2W)^T + b."""
        return F.linear(x, 2 * self.weight, self.bias)


def convnet(
    norm: type[nn.BatchNorm2d] = nn.BatchNorm2d, conv: type[nn.Conv2d] = nn.Conv2d
) -> nn.Module:
    """conv, norm, ReLU, conv, norm, ReLU, pool, linear on 3 x 8 x 8 inputs."""
    return nn.Sequential(
        conv(3, 6, 3),
        norm(6),
        nn.ReLU(),
        conv(6, 6, 3),
        norm(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (convnet(conv=StandardizedConv), "StandardizedConv"),
        (nn.Sequential(DoubledLinear(5, 7), nn.ReLU(), nn.Linear(7, 3)), "DoubledLinear"),
    ],
)
def test_layers_with_a_forward_of_their_own_are_refused(model: nn.Module, named: str) -> None:
    """The subclass is traced into, what it does cannot be followed, and the error names
    it as a layer with a forward of its own."""
    shape = (3, 8, 8) if named != "DoubledLinear" else (5,)
    with pytest.raises(UnsupportedModuleError, match=f"{named}.*forward of its own"):
        spec_from_module(model, input_shape=shape)


class OwnLinear(nn.Linear):
    """A Linear whose forward is its own but computes the same (timm's Linear)."""

    def forward(self, x: Tensor) -> Tensor:
        """x W^T + b."""
        return F.linear(x, self.weight, self.bias)


def check_symmetries(model: nn.Module, spec: Spec, sample: tuple[int, ...] = (3, 8, 8)) -> None:
    """A random symmetry of the model and its normalized form keep its function on
    inputs of shape ``sample`` (3 x 8 x 8 images), and the copy's canonical form is the
    model's."""
    state = state_of(model)
    x = torch.randn(5, *sample, dtype=torch.float64)
    copy = random_symmetry(state, spec, seed=1)
    assert_same_function(outputs(model, copy, x), outputs(model, state, x), rtol=1e-6)
    one, other = canonicalize(state, spec, state), canonicalize(copy, spec, state)
    assert max(float((one[k] - other[k]).abs().max()) for k in one) < 1e-6
    y = outputs(model, state, x)
    assert_same_function(outputs(model, normalize(state, spec), x), y, rtol=1e-6)


def test_own_forwards_that_call_the_plain_ops_are_followed() -> None:
    """A BatchNorm whose forward adds an activation is the BatchNorm, then that activation
    (SiLU: permutations only); a Linear whose forward calls F.linear on its own weight
    and bias is the Linear. Symmetries keep the function; canonical forms agree."""
    model = randomize(convnet(norm=BatchNormAct), 0, bn_eps=None)
    model[-1] = OwnLinear(6, 4).double()
    spec = spec_from_module(model, input_shape=(3, 8, 8))
    assert [g.symmetry for g in spec.groups] == ["none", "none"]
    assert [g.producers[0].batchnorm is not None for g in spec.groups] == [True, True]
    assert spec.output is not None and spec.output.weight == "8.weight"
    check_symmetries(model, spec)


def test_a_subclass_that_keeps_the_forward_is_the_plain_layer() -> None:
    """A BatchNorm subclass with the base forward is followed as BatchNorm: its symmetries
    keep the function and its canonical form is unique."""
    model = randomize(convnet(norm=PlainBatchNorm), 0, bn_eps=None)
    spec = spec_from_module(model, input_shape=(3, 8, 8))
    assert spec == spec_from_module(randomize(convnet(), 0, bn_eps=None), input_shape=(3, 8, 8))
    check_symmetries(model, spec)


class ScoreBiasAttention(nn.Module):
    """One self-attention layer whose scores get an additive term: per head (ALiBi) or one
    for all heads (a causal mask), added to the scores or passed as SDPA's mask."""

    def __init__(
        self, per_head: bool, sdpa: bool, width: int = 16, heads: int = 4, t: int = 6
    ) -> None:
        super().__init__()
        self.heads, self.d, self.sdpa = heads, width // heads, sdpa
        self.inp, self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(5))
        self.head = nn.Linear(width, 3)
        distance = -(torch.arange(t)[None, :] - torch.arange(t)[:, None]).abs().float()
        slopes = 2.0 ** -torch.arange(1, heads + 1).float() if per_head else torch.ones(1)
        self.register_buffer("bias", slopes[:, None, None] * distance, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """The last position's output after one attention layer with a residual."""
        b, t, _ = x.shape
        x = self.inp(x)
        q, k, v = (
            f(x).view(b, t, self.heads, self.d).transpose(1, 2) for f in (self.q, self.k, self.v)
        )
        q, k = self.rotate(q), self.rotate(k)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:
            y = (q @ k.transpose(-2, -1) / math.sqrt(self.d) + self.bias).softmax(-1) @ v
        return self.head((x + self.o(y.transpose(1, 2).reshape(b, t, -1)))[:, -1])

    def rotate(self, h: Tensor) -> Tensor:
        """The queries or keys as they enter the scores (here: as projected)."""
        return h


@pytest.mark.parametrize("per_head", [True, False])
@pytest.mark.parametrize("sdpa", [False, True])
def test_a_score_bias_that_differs_between_heads_keeps_them_in_place(
    sdpa: bool, per_head: bool
) -> None:
    """ALiBi's per-head slopes stay in place, so the heads must: each attention group's
    dimensions then permute only within their own head (4 blocks, no heads moving
    together); the same term for every head leaves the heads free. Symmetries keep the
    function and canonical forms agree either way, and moving a head (allowed without the
    bias) changes it."""
    model = randomize(ScoreBiasAttention(per_head=per_head, sdpa=sdpa), 3)
    spec = spec_from_module(model, input_shape=(6, 16))
    attention = [spec.group("q"), spec.group("v")]
    if per_head:
        assert all((g.heads, g.blocks, g.link) == (1, 4, "") for g in attention)
    else:
        assert all((g.heads, g.blocks) == (4, 1) and g.link for g in attention)
    # small queries and keys: scores of the bias's size, so that it decides (not saturated)
    state = {k: v * 0.05 if k[0] in "qk" else v for k, v in state_of(model).items()}
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    y = outputs(model, state, x)
    for seed in (2, 3):
        assert_same_function(outputs(model, random_symmetry(state, spec, seed=seed), x), y)
    canonical = canonicalize(state, spec, reference=state, method="weight")
    for method in ("weight", "incoming"):  # a planted symmetry is undone, heads kept
        moved = random_symmetry(state, spec, seed=5)
        found = canonicalize(moved, spec, reference=state, method=method)
        assert max(float((found[k] - canonical[k]).abs().max()) for k in canonical) < 1e-9
    swapped = dict(state)  # heads 0 and 1 exchanged in every projection
    order = torch.cat([torch.arange(4, 8), torch.arange(0, 4), torch.arange(8, 16)])
    for name in ("q", "k", "v"):
        swapped[f"{name}.weight"], swapped[f"{name}.bias"] = (
            state[f"{name}.{t}"][order] for t in ("weight", "bias")
        )
    swapped["o.weight"] = state["o.weight"][:, order]
    gap = float((outputs(model, swapped, x) - y).abs().max())
    assert gap > 1e-3 if per_head else gap < 1e-9


class Versioned(nn.Module):
    """A module whose loader reads its version from the state's metadata (as
    torchvision's MNASNet does) and refuses a state without it."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):  # type: ignore[no-untyped-def]
        if local_metadata.get("version") != 2:
            raise ValueError("version should be set to 1 or 2")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_load_into_keeps_the_modules_metadata() -> None:
    """A state given as a plain mapping loads into a module whose loader reads metadata."""
    model = Versioned()
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    load_into(model, state)
    assert float(model.fc.weight.detach().abs().sum()) == 0.0


def test_curves_run_networks_with_own_forwards() -> None:
    """Paths between two such networks are evaluated (BatchNorm statistics recomputed at
    the interior points through the subclass's own forward) and end at the networks'
    own errors."""
    template = convnet(norm=BatchNormAct)
    template[-1] = OwnLinear(6, 4)
    states = []
    for seed in (1, 2):
        model = convnet(norm=BatchNormAct)
        model[-1] = OwnLinear(6, 4)
        states.append(
            to_working(state_of(randomize(model, seed, bn_eps=None)), "cpu", torch.float32)
        )
    spec = spec_from_module(template, input_shape=(3, 8, 8))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    for state, end in ((states[0], 0), (states[1], -1)):
        net = convnet(norm=BatchNormAct)
        net[-1] = OwnLinear(6, 4)
        net.load_state_dict(state)
        with torch.no_grad():
            own = float((net.eval()(x).argmax(1) != y).double().mean())
        for kind in ("linear", "geodesic"):
            curve = path_curve(
                *states, template, (x, y), kind=kind, points=5, device="cpu", spec=spec
            )
            assert curve.train_error[end] == own, kind


class ChannelsFirstLayerNorm(nn.Module):
    """A library's LayerNorm over the channels of an NCHW tensor (transformers' ConvNext
    writes its own this way), known to canon by its class name only."""

    def __init__(self, channels: int, rolled: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.rolled = rolled

    def forward(self, x: Tensor) -> Tensor:
        """(x - mean) / std over the channels, times weight plus bias (``rolled``: the
        weights of the neighbouring channel, which no permutation of them keeps)."""
        mean = x.mean(1, keepdim=True)
        x = (x - mean) / (x.var(1, keepdim=True, unbiased=False) + 1e-6).sqrt()
        weight = self.weight.roll(1) if self.rolled else self.weight
        return weight[:, None, None] * x + self.bias[:, None, None]


def norm_net(rolled: bool = False) -> nn.Module:
    """conv, a channels-first library LayerNorm, GELU, conv, pool, linear."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        ChannelsFirstLayerNorm(6, rolled),
        nn.GELU(),
        nn.Conv2d(6, 6, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def test_a_library_norm_is_run_before_its_units_are_permuted() -> None:
    """A norm known by its class name is checked by running it: over the channels (not
    the last axis) its weights move with the channels and the function is kept; one
    that no permutation commutes with is refused."""
    model = randomize(norm_net(), 4)
    spec = spec_from_module(model, input_shape=(3, 8, 8))
    assert any("1.weight" in {c.name for c in g.carried} for g in spec.groups)
    check_symmetries(model, spec)
    with pytest.raises(UnsupportedModuleError, match="does not commute with a permutation"):
        spec_from_module(norm_net(rolled=True), input_shape=(3, 8, 8))


class PlainRMSNorm(nn.Module):
    """nanochat's RMSNorm: no weight, written out; with ``tilted``, each unit first
    scaled by its place, which no permutation of the units keeps."""

    def __init__(self, tilted: bool = False) -> None:
        super().__init__()
        self.tilted = tilted

    def forward(self, x: Tensor) -> Tensor:
        """x / sqrt(mean(x^2) + eps) over the last axis."""
        if self.tilted:
            x = x * torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class LayerNorm1P(nn.LayerNorm):
    """Nemotron's LayerNorm: its gain is its weight plus one."""

    def forward(self, x: Tensor) -> Tensor:
        """LayerNorm with gain ``weight + 1``."""
        return F.layer_norm(x, self.normalized_shape, self.weight + 1, self.bias, self.eps)


def test_library_norms_without_weights_or_with_their_own_gain_are_followed() -> None:
    """A norm with no weight (nanochat's) and one that adds one to its weight (Nemotron's)
    are known by their class names and run once: the units they read permute, the
    second's weights carried with them; a weightless one no permutation commutes with
    is refused."""

    def net(tilted: bool = False) -> nn.Module:
        return nn.Sequential(
            nn.Linear(5, 8), PlainRMSNorm(tilted), nn.GELU(), nn.Linear(8, 6),
            LayerNorm1P(6), nn.GELU(), nn.Linear(6, 3),
        )  # fmt: skip

    model = randomize(net(), 3)
    spec = spec_from_module(model, input_shape=(5,))
    assert [g.name for g in spec.groups] == ["0", "3"]
    assert {c.name for c in spec.groups[1].carried} == {"4.weight", "4.bias"}
    check_symmetries(model, spec, (5,))
    with pytest.raises(UnsupportedModuleError, match="does not commute with a permutation"):
        spec_from_module(net(tilted=True), input_shape=(5,))


class RunningSum(nn.Module):
    """An "activation" of a library canon takes as elementwise by where it comes from,
    which is not: a running sum over the units."""

    def forward(self, x: Tensor) -> Tensor:
        """The cumulative sum over the last axis."""
        return x.cumsum(-1)


RunningSum.__module__ = "transformers.activations"  # where canon trusts activations


def test_a_library_activation_is_run_before_its_units_are_permuted() -> None:
    """An activation known by its library only is checked by running it once: one that
    does not commute with a permutation of the units is refused."""
    model = nn.Sequential(nn.Linear(5, 7), RunningSum(), nn.Linear(7, 3))
    with pytest.raises(UnsupportedModuleError, match="does not commute with a permutation"):
        spec_from_module(model, input_shape=(5,))


class LearnedSquare(nn.Module):
    """An activation of a library with two learned single numbers (Apertus's xIELU:
    a * x^2 + b * x above zero, b * x below)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.8]))
        self.b = nn.Parameter(torch.tensor([0.5]))

    def forward(self, x: Tensor) -> Tensor:
        """The activation of each unit."""
        return torch.where(x > 0, self.a * x * x + self.b * x, self.b * x)


LearnedSquare.__module__ = "transformers.activations"


def test_a_library_activation_with_learned_numbers_is_followed() -> None:
    """Its numbers are the same for every unit: the units permute (no scale: the
    activation is not homogeneous), the numbers stay where they are, in no group."""
    model = randomize(nn.Sequential(nn.Linear(5, 7), LearnedSquare(), nn.Linear(7, 3)), 2)
    spec = spec_from_module(model, input_shape=(5,))
    assert [(g.name, g.symmetry) for g in spec.groups] == [("0", "none")]
    assert not {"1.a", "1.b"} & {t.name for g in spec.groups for t in g.tensors}
    check_symmetries(model, spec, (5,))


def test_specs_derived_from_many_threads_at_once_agree() -> None:
    """torch.fx patches torch functions process-wide while it traces: the service's request
    threads derive specs one at a time, each the spec a single thread derives."""
    import threading

    expected = spec_from_module(convnet(), input_shape=(3, 8, 8))
    found: list[object] = []

    def derive() -> None:
        for _ in range(4):
            try:
                found.append(spec_from_module(convnet(), input_shape=(3, 8, 8)))
            except Exception as exc:
                found.append(exc)

    threads = [threading.Thread(target=derive) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 48 and all(spec == expected for spec in found)


class RotaryAlibi(ScoreBiasAttention):
    """Rotary queries and keys under a per-head bias: the query/key dimensions are pinned
    in their heads and the heads in place, so nothing of them may move. The rotary
    factors are the module's own buffers (read as constants, the same for every head)."""

    def __init__(self, t: int = 6) -> None:
        super().__init__(per_head=True, sdpa=True, t=t)
        position = torch.arange(t).float()[:, None] * torch.tensor([1.0, 0.5])
        angles = torch.cat([position, position], -1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, h: Tensor) -> Tensor:
        """``h * cos + rotate_half(h) * sin``."""
        half = self.d // 2
        return h * self.cos + torch.cat((-h[..., half:], h[..., :half]), -1) * self.sin


def test_rotary_under_a_per_head_bias_moves_nothing_of_the_queries() -> None:
    """Each query/key unit is a block of its own (nothing moves), the values permute
    within their heads; symmetries keep the function."""
    model = randomize(RotaryAlibi(), 4)
    spec = spec_from_module(model, input_shape=(6, 16))
    assert (spec.group("q").blocks, spec.group("v").blocks) == (16, 4)
    state = {k: v * 0.1 if k[0] in "qk" else v for k, v in state_of(model).items()}
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    y = outputs(model, state, x)
    for seed in (1, 2):
        moved = random_symmetry(state, spec, seed=seed)
        assert torch.equal(moved["q.bias"], state["q.bias"])  # each query unit in place
        assert_same_function(outputs(model, moved, x), y)
