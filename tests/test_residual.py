"""Residual streams (DESIGN §3b): shared unit groups on real and built-in networks.

1. Function preservation and canonical forms on torchvision / timm models
   (BatchNorm ResNets, MobileNetV2's ReLU6 bottlenecks, ConvNeXt's LayerNorm
   streams), BatchNorm statistics calibrated on random data first.
2. The structure the tracer finds in them (shared stream groups, symmetries,
   carried norm tensors).
3. Weight matching recovers a planted symmetry exactly.
4. Weight matching never lowers the matching objective, and its result is a
   fixed point.
5. Random residual MLPs (hypothesis): canonical forms remove every symmetry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, cached_property

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import randomize, state_of
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from vision_models import vision

from canon.architectures import build_model
from canon.core import (
    Alignment,
    Spec,
    apply_alignment,
    canonicalize,
    match,
    match_weights,
    matching,
    matching_objective,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.matching import match_incoming

INPUT = (3, 32, 32)

# --------------------------------------------------------------------------- helpers


def logits(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """The model's eval-mode outputs on ``x`` with ``state`` loaded."""
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out: Tensor = model(x)
    return out


def logit_gap(y: Tensor, y_ref: Tensor) -> float:
    """|| y / ||y|| - y_ref / ||y_ref|| ||: 0 when the logits agree up to a positive factor
    (a negative factor gives about 2)."""
    return float((y / y.norm() - y_ref / y_ref.norm()).norm())


def max_gap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> tuple[float, str]:
    """The largest absolute difference over the floating tensors, and where it is."""
    assert a.keys() == b.keys()
    worst, where = 0.0, ""
    for name, t in a.items():
        if not t.is_floating_point():
            continue
        assert t.shape == b[name].shape, name
        gap = float((t - b[name]).abs().max()) if t.numel() else 0.0
        if gap > worst or not where:
            worst, where = gap, name
    return worst, where


def calibrate(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """BatchNorm running statistics set to the batch statistics of random N(0, 1) inputs.

    Two train-mode passes with ``momentum=None`` (a cumulative average: the
    statistics the network actually sees, as after training; the default
    momentum would leave them mostly at their initial 0 / 1). Calibrated in
    float32 (depthwise float64 convolutions are slow on CPU); returns the
    model in float64, eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return model.double().eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed)
    model.float().train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn((16, *shape), generator=gen))
    for m in norms:
        m.momentum = 0.1
    return model.double().eval()


# --------------------------------------------------------------------------- 1. vision models


def _build(name: str) -> nn.Module:
    torchvision, timm = vision()
    torch.manual_seed(0)
    library, arch = name.split(":")
    if library == "torchvision":
        model: nn.Module = getattr(torchvision.models, arch)(num_classes=10)
    else:
        model = timm.create_model(arch, num_classes=10, pretrained=False)
    return model


@dataclass
class VisionCase:
    """One calibrated vision model and everything the checks compute on it, each once."""

    name: str

    @cached_property
    def model(self) -> nn.Module:
        return calibrate(_build(self.name), INPUT)

    @cached_property
    def spec(self) -> Spec:
        return spec_from_module(self.model, INPUT)

    @cached_property
    def state(self) -> dict[str, Tensor]:
        return state_of(self.model)

    @cached_property
    def x(self) -> Tensor:
        gen = torch.Generator().manual_seed(1)
        return torch.randn((3, *INPUT), generator=gen, dtype=torch.float64)

    @cached_property
    def y(self) -> Tensor:
        return logits(self.model, self.state, self.x)

    @cached_property
    def moved(self) -> dict[str, Tensor]:
        return random_symmetry(self.state, self.spec, seed=3)

    @cached_property
    def canonical(self) -> dict[str, Tensor]:
        return canonicalize(self.state, self.spec, reference=self.state)

    @cached_property
    def canonical_moved(self) -> dict[str, Tensor]:
        return canonicalize(self.moved, self.spec, reference=self.state)

    @property
    def batchnorm(self) -> bool:
        return any(isinstance(m, _BatchNorm) for m in self.model.modules())


_CASES: dict[str, VisionCase] = {}
# the models the structure checks read: kept (model and spec only) for the whole module
_KEPT = ("torchvision:resnet18", "torchvision:mobilenet_v2", "timm:convnext_atto")


def vision_case(name: str) -> VisionCase:
    if name not in _CASES:
        _CASES[name] = VisionCase(name)
    return _CASES[name]


VISION_MODELS = [
    pytest.param("timm:convnext_atto", id="timm-convnext_atto", marks=pytest.mark.slow),
    pytest.param("torchvision:mobilenet_v2", id="tv-mobilenet_v2"),
    # a global response norm (GRN) in every block
    pytest.param("timm:convnextv2_atto", id="timm-convnextv2_atto", marks=pytest.mark.slow),
    # a few seconds to a few minutes each (vgg11_bn: 4096-wide assignments, 130M weights)
    pytest.param("torchvision:resnet18", id="tv-resnet18", marks=pytest.mark.slow),
    pytest.param("timm:resnet18", id="timm-resnet18", marks=pytest.mark.slow),
    pytest.param("torchvision:resnet50", id="tv-resnet50", marks=pytest.mark.slow),
    # BatchNorms with an activation inside their forward (timm's BatchNormAct2d)
    pytest.param(
        "timm:mobilenetv3_small_050", id="timm-mobilenetv3_small_050", marks=pytest.mark.slow
    ),
    # squeeze-excitation gates, SiLU, stochastic depth (the identity in eval mode)
    pytest.param("torchvision:efficientnet_b0", id="tv-efficientnet_b0", marks=pytest.mark.slow),
    pytest.param(
        "torchvision:vgg11_bn", id="tv-vgg11_bn", marks=[pytest.mark.slow, pytest.mark.exhaustive]
    ),
    # every layer's features concatenated with all before them, BatchNorms over them
    pytest.param("torchvision:densenet121", id="tv-densenet121", marks=pytest.mark.slow),
    # grouped convolutions in every block, squeeze-excitation
    pytest.param("torchvision:regnet_y_400mf", id="tv-regnet_y_400mf", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=VISION_MODELS)
def case(request: pytest.FixtureRequest) -> Iterator[VisionCase]:
    """One vision model per parameter; pytest runs all its tests together, then frees it."""
    found = vision_case(request.param)
    yield found
    if request.param in _KEPT:
        for heavy in ("state", "y", "moved", "canonical", "canonical_moved"):
            found.__dict__.pop(heavy, None)
    else:
        del _CASES[request.param]


def test_random_symmetry_without_bn_input_scale_is_exact(case: VisionCase) -> None:
    """Permutations, per-unit scales, signs of gamma and the output factor are exact."""
    moved = random_symmetry(case.state, case.spec, seed=5, bn_input_scale=False)
    assert max_gap(moved, case.state)[0] > 1e-3  # it did move
    gap = logit_gap(logits(case.model, moved, case.x), case.y)
    assert gap < 1e-9, f"{case.name}: logits moved by {gap:.3e}"


def test_random_symmetry_preserves_logits(case: VisionCase) -> None:
    """(a) the full random symmetry (with BN's input scale) keeps the logits up to the
    output layer's positive factor."""
    gap = logit_gap(logits(case.model, case.moved, case.x), case.y)
    assert gap < 1e-4, f"{case.name}: logits of random_symmetry(s) moved by {gap:.3e}"


def test_canonical_forms_agree(case: VisionCase) -> None:
    """(b) a network and a random symmetric copy of it have one canonical form
    (normalize's BatchNorm convention is exact in it)."""
    gap, where = max_gap(case.canonical_moved, case.canonical)
    assert gap < 1e-5, f"{case.name}: canonical forms differ by {gap:.3e} in `{where}`"


def test_canonical_form_preserves_logits(case: VisionCase) -> None:
    """(c) the canonical form computes the original function (up to a positive factor)."""
    gap = logit_gap(logits(case.model, case.canonical, case.x), case.y)
    assert gap < 1e-4, f"{case.name}: canonical form's logits moved by {gap:.3e}"


# --------------------------------------------------------------------------- 2. structure


def test_torchvision_resnet18_streams() -> None:
    spec = vision_case("torchvision:resnet18").spec
    shared = [g for g in spec.groups if g.shared]
    assert len(shared) == 4
    assert [g.size for g in shared] == [64, 128, 256, 512]
    assert "conv1.weight" in shared[0].weights  # the stem starts the first stream
    for stage, group in enumerate(shared[1:], start=2):
        assert f"layer{stage}.0.downsample.0.weight" in group.weights  # projection shortcuts
    for stage, group in enumerate(shared, start=1):
        # every block's last conv adds into its stage's stream, with its BatchNorm
        for block in (0, 1):
            assert f"layer{stage}.{block}.conv2.weight" in group.weights
        assert all(p.batchnorm is not None for p in group.producers)
        # read by the stage's blocks after the first (all of them in stage 1, which the
        # stem starts), and by the next stage's first block and its shortcut
        readers = {o.name for o in group.outgoing}
        within = {f"layer{stage}.{b}.conv1.weight" for b in ((0, 1) if stage == 1 else (1,))}
        after = (
            {f"layer{stage + 1}.0.conv1.weight", f"layer{stage + 1}.0.downsample.0.weight"}
            if stage < 4
            else {"fc.weight"}
        )
        assert readers == within | after
    assert all(g.symmetry == "scale" for g in spec.groups)
    # the non-shared groups are the blocks' inner units: one producer each
    assert len(spec.groups) == 4 + 8
    assert spec.output is not None and spec.output.weight == "fc.weight"


def test_mobilenet_v2_relu6_groups_have_no_scale_symmetry() -> None:
    torchvision, _ = vision()
    case = vision_case("torchvision:mobilenet_v2")
    spec, model = case.spec, case.model
    relu6: set[str] = set()  # producers of units that pass through ReLU6
    for path, module in model.named_modules():
        if isinstance(module, torchvision.ops.Conv2dNormActivation) and isinstance(
            module[-1], nn.ReLU6
        ):
            conv = module[0]
            if conv.groups == 1:
                relu6.add(f"{path}.0.weight")
    assert len(relu6) == 18  # the stem, 16 expand layers, the last 1x1 conv
    touched = [g for g in spec.groups if set(g.weights) & relu6]
    assert len(touched) == len(relu6)
    for group in touched:
        assert group.symmetry == "none", group.name
        assert not group.shared
    # the linear bottlenecks (no activation, added into streams) keep their scale symmetry
    others = [g for g in spec.groups if not set(g.weights) & relu6]
    assert others and all(g.symmetry == "scale" for g in others)
    assert sum(g.shared for g in others) == 5
    # a depthwise conv after ReLU6 moves with the units it filters, and so does its BN
    first = spec.group("features.0.0")
    carried = {c.name for c in first.carried}
    assert {"features.1.conv.0.0.weight", "features.1.conv.0.1.weight"} <= carried


def test_convnext_atto_streams_are_permutation_only_and_carry_layernorms() -> None:
    case = vision_case("timm:convnext_atto")
    spec, model = case.spec, case.model
    assert spec.groups and all(g.symmetry == "none" for g in spec.groups)
    shared = [g for g in spec.groups if g.shared]
    assert [g.size for g in shared] == [40, 80, 160, 320]
    carried = {c.name for g in shared for c in g.carried}
    assert "stem.1.weight" in {c.name for c in shared[0].carried}  # the stem's LayerNorm
    assert "head.norm.weight" in {c.name for c in shared[-1].carried}  # the head's
    norms = [p for p, m in model.named_modules() if "LayerNorm" in type(m).__name__]
    assert norms and all(f"{p}.weight" in carried and f"{p}.bias" in carried for p in norms)
    # the layer scale (a per-channel parameter times the block's output) moves too
    assert "stages.2.blocks.5.gamma" in carried


# --------------------------------------------------------------------------- built-in nets


class Block(nn.Module):
    """A CIFAR ResNet basic block: conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: stem, two stages of ``blocks`` basic blocks of ``width``
    channels (the second with stride 2 and a projection shortcut), pool, linear head.
    The blocks' convolutions are ``kernel`` x ``kernel``."""

    input_shape = (3, 8, 8)

    def __init__(self, width: int, blocks: int = 1, kernel: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stage1 = nn.Sequential(*[Block(width, width, 1, kernel) for _ in range(blocks)])
        self.stage2 = nn.Sequential(
            Block(width, width, 2, kernel),
            *[Block(width, width, 1, kernel) for _ in range(blocks - 1)],
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResidualMLP(nn.Module):
    """A linear stream of ``width`` units: stem, ``blocks`` x (Linear-ReLU-Linear added to
    the stream), optionally a ReLU, then the head."""

    def __init__(
        self,
        inputs: int,
        width: int,
        hidden: int,
        blocks: int,
        classes: int = 3,
        final_relu: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = (inputs,)
        self.stem = nn.Linear(inputs, width)
        self.fc1 = nn.ModuleList(nn.Linear(width, hidden) for _ in range(blocks))
        self.fc2 = nn.ModuleList(nn.Linear(hidden, width) for _ in range(blocks))
        self.final_relu = final_relu
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for fc1, fc2 in zip(self.fc1, self.fc2, strict=True):
            h = h + fc2(torch.relu(fc1(h)))
        if self.final_relu:
            h = torch.relu(h)
        return self.head(h)


@cache
def _small(kind: str, width: int) -> tuple[nn.Module, Spec]:
    """A built-in net and its spec, traced once per (kind, width)."""
    model: nn.Module
    if kind == "resnet":
        # two blocks a stage (streams of 3 producers) up to width 64; 1x1 convolutions
        # above 128 keep the 512-wide sweep to minutes (the assignments stay 512-wide)
        model = SmallResNet(width, blocks=2 if width <= 64 else 1, kernel=3 if width <= 128 else 1)
    elif kind == "vgg":  # BatchNorm convolutions, then a flattened map into linear layers
        config = {"layers": [width, "M", width], "input_size": 8, "hidden": [width]}
        model = build_model("vgg", config)
    else:
        model = ResidualMLP(inputs=5, width=width, hidden=width, blocks=2)
    model = model.double().eval()
    return model, spec_from_module(model)


def random_state(kind: str, width: int, seed: int) -> dict[str, Tensor]:
    """Seeded random parameters and BN statistics (both signs of gamma, eps kept)."""
    model, _ = _small(kind, width)
    return state_of(randomize(model, seed, bn_eps=None))


def test_small_nets_have_shared_streams() -> None:
    _, spec = _small("resnet", 8)
    shared = [g for g in spec.groups if g.shared]
    assert [len(g.producers) for g in shared] == [3, 3]  # stem + 2 blocks; 2 blocks + shortcut
    assert "stage2.0.shortcut.0.weight" in shared[1].weights
    assert all(g.symmetry == "scale" for g in spec.groups)
    _, spec = _small("mlp", 4)
    assert [len(g.producers) for g in spec.groups if g.shared] == [3]


# --------------------------------------------------------------------------- 3. planted symmetry


def _check_recovery(kind: str, width: int, seed: int) -> None:
    _, spec = _small(kind, width)
    a = random_state(kind, width, seed)
    b = random_symmetry(a, spec, seed=seed + 1000)
    assert max_gap(a, b)[0] > 1e-3
    na, nb = normalize(a, spec), normalize(b, spec)
    # the alignment found maps b's units back onto a's
    found = match(nb, na, spec, "weight")
    gap, where = max_gap(apply_alignment(nb, found, spec), na)
    assert gap < 1e-6, (
        f"{kind} width {width} seed {seed}: aligned b misses a by {gap:.2e} ({where})"
    )
    canonical = canonicalize(a, spec, reference=a)
    assert max_gap(canonical, na)[0] < 1e-12  # aligned to itself: the identity
    gap, where = max_gap(canonicalize(b, spec, reference=a, method="weight"), canonical)
    assert gap < 1e-6, (
        f"{kind} width {width} seed {seed}: canonical forms differ by {gap:.2e} ({where})"
    )
    # a pure planted permutation comes back as its inverse, exactly
    gen = torch.Generator().manual_seed(seed)
    planted = Alignment({g.name: torch.randperm(g.size, generator=gen) for g in spec.groups})
    found = match(apply_alignment(na, planted, spec), na, spec, "weight")
    for group in spec.groups:
        inverse = torch.argsort(planted.permutations[group.name])
        assert torch.equal(found.permutations[group.name].cpu(), inverse), group.name


@pytest.mark.parametrize("kind", ["resnet", "mlp"])
@pytest.mark.parametrize("width", [8, 16, 64])
def test_weight_matching_recovers_planted_symmetry(kind: str, width: int) -> None:
    for seed in range(10 if width <= 16 else 5):
        _check_recovery(kind, width, seed)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "mlp"])
@pytest.mark.parametrize(
    "width",
    [
        8,
        32,
        pytest.param(128, marks=pytest.mark.exhaustive),
        pytest.param(512, marks=pytest.mark.exhaustive),
    ],
)
def test_weight_matching_recovers_planted_symmetry_100_seeds(kind: str, width: int) -> None:
    for seed in range(100):
        _check_recovery(kind, width, seed)


@pytest.mark.slow
def test_weight_matching_recovers_planted_symmetry_torchvision_resnet18() -> None:
    case = vision_case("torchvision:resnet18")
    spec = case.spec
    na, nb = normalize(case.state, spec), normalize(case.moved, spec)
    found = match(nb, na, spec, "weight")
    gap, where = max_gap(apply_alignment(nb, found, spec), na)
    assert gap < 1e-6, f"aligned copy misses the original by {gap:.2e} in `{where}`"


def test_canonical_form_of_small_resnet_keeps_logits_without_eps() -> None:
    """With eps = 0 BatchNorm's input scale is exact: the whole pipeline keeps the logits."""
    model = randomize(SmallResNet(16, blocks=2), 7, bn_eps=0.0)
    spec = spec_from_module(model)
    assert {p.batchnorm.eps for g in spec.groups for p in g.producers if p.batchnorm} == {0.0}
    a = state_of(model)
    b = random_symmetry(a, spec, seed=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((8, *SmallResNet.input_shape), generator=gen, dtype=torch.float64)
    y = logits(model, a, x)
    assert logit_gap(logits(model, b, x), y) < 1e-9
    canonical = canonicalize(b, spec, reference=a)
    assert logit_gap(logits(model, canonical, x), y) < 1e-9
    assert max_gap(canonical, canonicalize(a, spec, reference=a))[0] < 1e-9


# --------------------------------------------------------------------------- 4. objective


@pytest.mark.parametrize(("kind", "width"), [("resnet", 8), ("resnet", 32), ("mlp", 16)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_never_lowers_the_objective(kind: str, width: int, seed: int) -> None:
    _, spec = _small(kind, width)
    a = normalize(random_state(kind, width, 2 * seed), spec)
    b = normalize(random_state(kind, width, 2 * seed + 1), spec)
    incoming = match_incoming(b, a, spec)
    weights = match_weights(b, a, spec, seed=seed)
    start = matching_objective(b, a, spec, incoming)
    end = matching_objective(b, a, spec, weights)
    assert end >= start - 1e-9 * abs(start), (start, end)
    # from its own result, weight matching changes nothing (any visiting order)
    again = match_weights(b, a, spec, init=weights, seed=seed + 17)
    for group in spec.groups:
        assert torch.equal(again.permutations[group.name], weights.permutations[group.name])
    assert matching_objective(b, a, spec, again) == end


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["resnet", "mlp", "vgg"]),
    slab=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_incoming_matching_by_blocks_of_units_equals_whole_layers(
    kind: str, slab: int, seed: int
) -> None:
    """Incoming matching compares a wide layer's units a block of about ``COSINE_SLAB``
    elements at a time (their moved rows are never copied whole): any block size, down to
    one unit, gives the alignment and the similarities of whole layers."""
    _, spec = _small(kind, 8)
    a = normalize(random_state(kind, 8, seed), spec)
    b = normalize(random_state(kind, 8, seed + 1), spec)
    whole_record: dict[str, Tensor] = {}
    blocks_record: dict[str, Tensor] = {}
    whole = match_incoming(b, a, spec, record=whole_record)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "COSINE_SLAB", slab)
        blocks = match_incoming(b, a, spec, record=blocks_record)
    for group in spec.groups:
        assert torch.equal(blocks.permutations[group.name], whole.permutations[group.name])
        if group.name in whole.signs:
            assert torch.equal(blocks.signs[group.name], whole.signs[group.name])
        torch.testing.assert_close(
            blocks_record[group.name], whole_record[group.name], rtol=0, atol=1e-12
        )


# --------------------------------------------------------------------------- 5. hypothesis


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(2, 8),
    hidden=st.integers(2, 8),
    blocks=st.integers(1, 3),
    final_relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_residual_mlp_canonical_form_removes_symmetries(
    width: int, hidden: int, blocks: int, final_relu: bool, seed: int
) -> None:
    model = randomize(ResidualMLP(4, width, hidden, blocks, final_relu=final_relu), seed)
    spec = spec_from_module(model)
    assert sum(g.shared for g in spec.groups) == 1
    s = state_of(model)
    r = random_symmetry(s, spec, seed=seed + 1)
    x = torch.randn((16, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = logits(model, s, x)
    assert logit_gap(logits(model, r, x), y) < 1e-9
    canonical = canonicalize(s, spec, reference=s)
    gap, where = max_gap(canonicalize(r, spec, reference=s), canonical)
    assert gap < 1e-9, f"canonical forms differ by {gap:.2e} in `{where}`"
    assert logit_gap(logits(model, canonical, x), y) < 1e-9
