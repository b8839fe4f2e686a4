"""Multi-head attention (DESIGN §3b "Attention"): heads as blocks, the query/key and
value/output dimensions as ``linear`` groups, on canon's gpt and hand-written attention.

1. The structure the tracer finds (the hand-checked gpt specs live in test_spec.py),
   serialized and back; specs without attention serialize as before.
2. Random symmetries (heads, dimensions within heads, non-zero factors of either sign)
   keep the function; normalization keeps it, balances both sides, is idempotent.
3. Canonical forms remove the symmetry: a planted head-and-dimension permutation with
   signs and factors is recovered exactly by weight and by activation matching.
4. What canon cannot follow is refused with an error naming it.
5. A zoo of gpt entries compares and tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from nets import assert_symmetries_keep_the_function
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import (
    Alignment,
    Spec,
    apply_alignment,
    canonicalize,
    match_weights,
    matching,
    normalize,
    permutations,
    random_symmetry,
    spec_from_module,
)
from canon.core.geometry import distances, free_distance
from canon.core.permutations import identity_alignment
from canon.core.units import unit_slices
from canon.engine.matching import match_activations
from canon.errors import UnsupportedModuleError

TINY = {"vocab": 7, "context": 6, "width": 12, "heads": 3, "depth": 2}


class ExplicitAttention(nn.Module):
    """softmax(q @ k^T / sqrt(d)) @ v written out, a learned scale on the queries, and a
    tanh MLP: the other way attention is written, and other symmetries beside it."""

    def __init__(self, features: int = 5, width: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(features, width)
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 6)
        self.head = nn.Linear(6, 3)
        self.input_shape = (4, features)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        b, t, w = h.shape
        d = w // self.heads
        q = self.q(h).view(b, t, self.heads, d).permute(0, 2, 1, 3) * 0.5
        k = self.k(h).view(b, t, self.heads, d).permute(0, 2, 1, 3)
        v = self.v(h).view(b, t, self.heads, d).permute(0, 2, 1, 3)
        scores = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        y = (scores @ v).transpose(1, 2).reshape(b, t, w)
        h = self.ln(h + self.o(y))
        out: Tensor = self.head(torch.tanh(self.fc(h.mean(1))))
        return out


class TorchMultihead(nn.Module):
    """torch's own nn.MultiheadAttention (packed input projection) on a LayerNorm stream."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 12)
        self.attn = nn.MultiheadAttention(12, 3, batch_first=True)
        self.ln = nn.LayerNorm(12)
        self.head = nn.Linear(12, 3)
        self.input_shape = (4, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = self.ln(h + self.attn(h, h, h, need_weights=False)[0])
        out: Tensor = self.head(h.mean(1))
        return out


def _model(kind: str) -> nn.Module:
    if kind == "grouped":  # grouped-query attention: 2 key/value heads for 4 query heads
        config = {**TINY, "heads": 4, "kv_heads": 2}
        return build_model("gpt", config).double()
    if kind == "explicit":
        return ExplicitAttention().double()
    if kind == "multihead":
        return TorchMultihead().double()
    return build_model("gpt", {**TINY, "fused": kind == "fused"}).double()


def _inputs(kind: str, n: int = 5, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind in ("explicit", "multihead"):
        return torch.randn(n, 4, 5, generator=gen, dtype=torch.float64)
    return torch.randint(0, TINY["vocab"], (n, TINY["context"]), generator=gen).double()


def _randomized(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """The model's state with every parameter redrawn (LayerNorm affines too, so that no
    unit is special)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=gen, dtype=v.dtype) * 0.5
        for k, v in model.state_dict().items()
    }


def _logits(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out: Tensor = model(x)
    return out


def _same_function(y: Tensor, y_ref: Tensor) -> float:
    """The relative gap between two logit tensors up to one positive factor (the output
    layer's global scale, which canon normalizes)."""
    return float((y / y.norm() - y_ref / y_ref.norm()).norm())


def _gap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


KINDS = ("separate", "fused", "grouped", "explicit", "multihead")


@pytest.fixture(scope="module", params=KINDS)
def case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, Spec]:
    model = _model(request.param)
    return request.param, model, spec_from_module(model)


# --------------------------------------------------------------------------- structure


def test_explicit_attention_structure() -> None:
    """softmax(q @ k^T) @ v gives the same two linear groups as the fused kernel; the
    embedding's stream (LayerNorm) is `none`, the tanh MLP `sign`."""
    spec = spec_from_module(ExplicitAttention())
    found = {g.name: (g.symmetry, g.heads, g.link) for g in spec.groups}
    assert found == {
        "embed": ("none", 1, ""),
        "q": ("linear", 2, "q#heads"),
        "v": ("linear", 2, "q#heads"),
        "fc": ("sign", 1, ""),
    }
    assert [o.name for o in spec.group("q").outgoing] == ["k.weight", "k.bias"]
    assert [o.name for o in spec.group("v").outgoing] == ["o.weight"]


def test_grouped_query_structure() -> None:
    """With 2 key/value heads for 4 query heads the units are the key dimensions (the
    key projection produces them) and each one's query rows, like each value
    dimension's output columns, repeat over the 2 query heads that share its head."""
    spec = spec_from_module(_model("grouped"))
    qk, vo = spec.group("blocks.0.attn.k"), spec.group("blocks.0.attn.v")
    assert (qk.size, qk.heads, vo.size, vo.heads) == (6, 2, 6, 2)
    assert [(o.name, o.axis, o.repeat, o.head) for o in qk.outgoing] == [
        ("blocks.0.attn.q.weight", 0, 2, 3),
        ("blocks.0.attn.q.bias", 0, 2, 3),
    ]
    assert [(o.name, o.axis, o.repeat, o.head) for o in vo.outgoing] == [
        ("blocks.0.attn.proj.weight", 1, 2, 3)
    ]


def test_torch_multihead_structure() -> None:
    """nn.MultiheadAttention's packed projection is cut into queries (rows 0..E), keys
    (E..2E, outgoing of the queries) and values (2E..3E, read by out_proj)."""
    spec = spec_from_module(TorchMultihead())
    qk, vo = spec.group("attn"), spec.group("attn@24")
    assert (qk.symmetry, qk.heads, vo.heads, qk.link) == ("linear", 3, 3, vo.link)
    assert [(o.name, o.axis, o.start) for o in qk.outgoing] == [
        ("attn.in_proj_weight", 0, 12),
        ("attn.in_proj_bias", 0, 12),
    ]
    assert (vo.producers[0].weight, vo.producers[0].start) == ("attn.in_proj_weight", 24)
    assert [o.name for o in vo.outgoing] == ["attn.out_proj.weight"]


def test_attention_specs_round_trip(case: tuple[str, nn.Module, Spec]) -> None:
    """Heads, links and fused offsets survive to_dict/from_dict."""
    _, _, spec = case
    assert Spec.from_dict(spec.to_dict()) == spec


def test_specs_without_attention_serialize_as_before() -> None:
    """The fields attention added are written only where they differ from their defaults,
    so every stored spec keeps its bytes (and its hash)."""
    spec = spec_from_module(build_model("mlp", {"in_features": 4, "hidden": [3], "classes": 2}))
    group = spec.to_dict()["groups"][0]
    assert set(group) == {
        "name",
        "size",
        "symmetry",
        "producers",
        "outgoing",
        "scale_invariant",
        "carried",
        "blocks",
        "taps",
    }
    assert set(group["producers"][0]) == {"weight", "bias", "batchnorm"}
    assert set(group["outgoing"][0]) == {"name", "axis", "block"}


# --------------------------------------------------------------------------- symmetries


@given(seed=st.integers(0, 2**16), kind=st.sampled_from(KINDS))
def test_random_symmetries_keep_the_function(seed: int, kind: str) -> None:
    """Heads permuted as blocks (one order for queries/keys and values/outputs),
    dimensions permuted within heads, q_d * c with k_d / c and v_d * c with o_d / c for
    factors of either sign: the same logits up to the output layer's scale."""
    model = _model(kind)
    spec = spec_from_module(model)
    state = _randomized(model, seed)
    x = _inputs(kind)
    moved = random_symmetry(state, spec, seed=seed + 1)
    assert _gap(moved, state) > 0.1  # the symmetry really moved the weights
    assert _same_function(_logits(model, moved, x), _logits(model, state, x)) < 1e-10


def test_normalization_balances_and_is_idempotent(case: tuple[str, nn.Module, Spec]) -> None:
    """|q_d| = |k_d| and |v_d| = |o_d| (weights only) after normalize, the function is
    kept, and a second normalize changes nothing."""
    kind, model, spec = case
    state = random_symmetry(_randomized(model, 3), spec, seed=4)
    normal = normalize(state, spec)
    x = _inputs(kind)
    assert _same_function(_logits(model, normal, x), _logits(model, state, x)) < 1e-10
    assert _gap(normalize(normal, spec), normal) < 1e-12
    for group in spec.groups:
        if group.symmetry != "linear":
            continue
        sides = []
        for role in ("incoming", "outgoing"):
            squares = sum(
                unit_slices(
                    normal[t.name],
                    t.axis,
                    group.size,
                    t.block,
                    t.start,
                    repeat=t.repeat,
                    head=t.head,
                )
                .square()
                .sum(1)
                for t in group.tensors
                if t.role == role and normal[t.name].ndim > 1
            )
            sides.append(torch.as_tensor(squares).sqrt())
        torch.testing.assert_close(sides[0], sides[1], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_planted_heads_and_dimensions_are_recovered(
    case: tuple[str, nn.Module, Spec], method: str
) -> None:
    """A random symmetry copy (heads, dimensions, signs, factors, the stream and MLP
    permuted too) has exactly the canonical form of the original."""
    kind, model, spec = case
    state = _randomized(model, 11)
    reference = normalize(state, spec)
    copy = random_symmetry(state, spec, seed=12)
    if method == "weight":
        aligned = canonicalize(copy, spec, reference=state, method="weight")
    else:
        alignment = match_activations(
            normalize(copy, spec), reference, spec, model, _inputs(kind, 64, 1), batch=64
        )
        aligned = apply_alignment(normalize(copy, spec), alignment, spec)
    assert _gap(aligned, reference) < 1e-9


def test_weight_matching_a_block_at_a_time_equals_the_whole_matrices(
    case: tuple[str, nn.Module, Spec],
) -> None:
    """Forced to read every head-structured group's similarity a head pair at a time
    (the path of groups above 8,192 units), weight matching aligns two unrelated
    networks exactly as from the whole matrices: the same heads, dimensions and signs."""
    _, model, spec = case
    reference = normalize(_randomized(model, 21), spec)
    moving = normalize(_randomized(model, 22), spec)
    whole = match_weights(moving, reference, spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "DENSE_UNITS", 0)
        patch.setattr(permutations, "STRIP", 1)
        blocked = match_weights(moving, reference, spec)
    assert any(g.heads > 1 for g in spec.groups)
    for group in spec.groups:
        assert torch.equal(blocked.permutations[group.name], whole.permutations[group.name])
        if group.name in whole.signs:
            assert torch.equal(blocked.signs[group.name], whole.signs[group.name])


@pytest.mark.parametrize("written", ["sdpa", "explicit"])
def test_one_head_is_attention_too(written: str) -> None:
    """One head (queries, keys and values laid out as (batch, 1, tokens, d), no attention
    value before SDPA or ``q @ k^T``: SegFormer's and PVT's first stage, a gpt of one
    head): queries/keys and values/output are linear groups of their own, unlinked;
    symmetries keep the logits and canonical forms agree."""
    if written == "sdpa":
        model: nn.Module = build_model("gpt", {**TINY, "heads": 1}).double()
        x, names = _inputs("separate"), ("attn.q", "attn.v")
    else:
        model, x, names = ExplicitAttention(heads=1).double(), _inputs("explicit"), ("q", "v")
    spec = spec_from_module(model)
    attention = [g for g in spec.groups if g.name.endswith(names)]
    expected = [("linear", 1, "")] * (4 if written == "sdpa" else 2)
    assert [(g.symmetry, g.heads, g.link) for g in attention] == expected
    assert_symmetries_keep_the_function(model, spec, _randomized(model, 3), x, seed=4)


def test_weight_matching_pairs_heads_before_dimensions() -> None:
    """Only the heads move: weight matching puts each head back whole (its block of
    dimensions in order), not a mix of dimensions from several heads."""
    model = _model("separate")
    spec = spec_from_module(model)
    state = normalize(_randomized(model, 5), spec)
    group = spec.group("blocks.0.attn.q")
    d = group.size // group.heads
    order = torch.tensor([2, 0, 1])
    perm = torch.cat([int(h) * d + torch.arange(d) for h in order])
    planted = identity_alignment(spec)
    perms = dict(planted.permutations)
    perms["blocks.0.attn.q"] = perm
    perms["blocks.0.attn.v"] = perm
    moved = apply_alignment(state, Alignment(perms, dict(planted.signs)), spec)
    found = match_weights(moved, state, spec)
    assert torch.equal(found.permutations["blocks.0.attn.q"][perm], torch.arange(group.size))
    assert torch.equal(found.permutations["blocks.0.attn.v"][perm], torch.arange(group.size))


def test_distances_vanish_between_symmetric_copies(case: tuple[str, nn.Module, Spec]) -> None:
    """The geodesic and the free (Euclidean, not-on-sphere) distances between a network
    and its symmetry copy are 0; their raw Euclidean distance is not."""
    _, model, spec = case
    state = _randomized(model, 21)
    found = distances(state, random_symmetry(state, spec, seed=22), spec, method="weight")
    assert found.euclidean > 1
    assert found.geodesic < 1e-6
    assert found.euclidean_free is not None and found.euclidean_free < 1e-6


def test_free_distance_counts_the_keys() -> None:
    """The key rows belong to no group's incoming weights: the query/key group counts
    them, so networks that differ only there are apart."""
    model = _model("separate")
    spec = spec_from_module(model)
    state = normalize(_randomized(model, 31), spec)
    other = dict(state)
    other["blocks.0.attn.k.weight"] = state["blocks.0.attn.k.weight"] + 0.1
    numel = state["blocks.0.attn.k.weight"].numel()
    assert free_distance(state, other, spec) == pytest.approx(0.1 * math.sqrt(numel))


# --------------------------------------------------------------------------- refusals


class _GroupedQuery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 4)
        self.v = nn.Linear(8, 4)
        self.o = nn.Linear(8, 3)
        self.input_shape = (5, 8)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 2).transpose(1, 2)
        k = self.k(x).view(b, t, 2, 2).transpose(1, 2)
        v = self.v(x).view(b, t, 2, 2).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        out: Tensor = self.o(torch.relu(y.transpose(1, 2).reshape(b, t, 8))).mean(1)
        return out


class _HeadsAddedToUnits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.o = nn.Linear(4, 3)
        self.input_shape = (8,)

    def forward(self, x: Tensor) -> Tensor:
        heads = self.a(x).view(-1, 2, 4)
        mixed = heads + self.b(x).view(-1, 2, 4).transpose(1, 2).transpose(1, 2)
        out: Tensor = self.o(torch.relu(mixed).sum(1))
        return out


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (_GroupedQuery(), "reads repeated units"),
        (_HeadsAddedToUnits(), "unsupported op `relu` on attention heads"),
    ],
    ids=["gqa", "heads-mixed"],
)
def test_what_canon_cannot_follow_is_named(model: nn.Module, words: str) -> None:
    with pytest.raises(UnsupportedModuleError, match=words):
        spec_from_module(model)


class _NormedParts(nn.Module):
    """A layer's outputs viewed as two parts of 4, each normed by one RMSNorm (its weights
    index a part's entries), merged back; no attention reads them. ``summed``: the parts
    of two layers added first (Gemma 4's per-layer inputs: a table's and a projection's)."""

    def __init__(self, summed: bool) -> None:
        super().__init__()
        self.up, self.norm, self.down = nn.Linear(5, 8), nn.RMSNorm(4), nn.Linear(8, 3)
        self.other = nn.Linear(5, 8) if summed else None
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.up(x).view(-1, 2, 4)
        if self.other is not None:
            h = h + self.other(x).view(-1, 2, 4)
        out: Tensor = self.down(F.relu(self.norm(h).reshape(-1, 8)))
        return out


class _PerLayerInputs(nn.Module):
    """Gemma 4's per-layer inputs, small: a layer of the input and a projection of the
    stream, each viewed as (2 layers, 4), summed and normed alike; block i gates part i
    into the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.table, self.project = nn.Linear(5, 8), nn.Linear(5, 8), nn.Linear(8, 8)
        self.norm = nn.RMSNorm(4)
        self.gates = nn.ModuleList(nn.Linear(8, 4) for _ in range(2))
        self.outs = nn.ModuleList(nn.Linear(4, 8) for _ in range(2))
        self.head = nn.Linear(8, 3)
        self.input_shape = (5,)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        h = self.stem(x)
        parts = self.norm(self.table(x).view(-1, 2, 4) + self.project(h).view(-1, 2, 4))
        for i, (gate, out) in enumerate(zip(self.gates, self.outs, strict=True)):
            h = h + out(F.gelu(gate(h)) * parts[:, i, :])
        result: Tensor = self.head(h)
        return result


def test_a_pinned_part_picked_pins_what_it_gates() -> None:
    """Each block's gate multiplies a part whose entries no symmetry moves: its units stay
    in place too; the stream still moves, and symmetries keep the function."""
    model = _PerLayerInputs().double()
    spec = spec_from_module(model)
    moved = {w for g in spec.groups for w in g.weights}
    assert "stem.weight" in moved
    assert not moved & {"gates.0.weight", "gates.1.weight", "project.weight", "table.weight"}
    x = torch.randn(6, 5, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert_symmetries_keep_the_function(model, spec, state, x, seed=1)


@pytest.mark.parametrize("summed", [False, True])
def test_parts_normed_alike_outside_attention_stay_in_place(summed: bool) -> None:
    """Such a norm pins each part's entries and the parts are no attention's heads: no
    group moves the layer's units (they would move freely, breaking the norm, and be
    rescaled under it), and symmetries keep the function."""
    model = _NormedParts(summed).double()
    spec = spec_from_module(model)
    assert not [g for g in spec.groups if "up.weight" in g.weights]
    x = torch.randn(6, 5, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert_symmetries_keep_the_function(model, spec, state, x, seed=1)


# --------------------------------------------------------------------------- the zoo


def test_a_zoo_of_gpts_compares_and_tables(tmp_path: pytest.TempPathFactory) -> None:
    """gpt entries on the grammar dataset: added (errors evaluated), compared along the
    linear and geodesic paths (endpoints equal the entries' own errors; a symmetry copy
    is at geodesic distance 0), and tabled."""
    from canon.zoo import Zoo

    config = {"width": 8, "heads": 2, "depth": 1}
    torch.manual_seed(0)
    model = build_model("gpt", config)
    spec = spec_from_module(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    zoo = Zoo.open(tmp_path / "zoo")  # type: ignore[operator]
    a = zoo.add(state, name="a", architecture="gpt", config=config, dataset="grammar")
    b = zoo.add(
        random_symmetry(state, spec, seed=1),
        name="b",
        architecture="gpt",
        config=config,
        dataset="grammar",
    )
    result = zoo.compare("a", "b", paths=("linear", "geodesic"), points=3)
    assert result.distances.geodesic < 1e-4
    # an untrained network's logits are nearly tied: a path's end is the entry in canonical
    # form, whose last bits may flip a tie (one window of 4,000 is 0.00025)
    ties = 0.001
    for curve in result.curves.values():
        assert curve.train_error[0] == pytest.approx(a.metrics["train_error"], abs=ties)
        assert curve.train_error[-1] == pytest.approx(b.metrics["train_error"], abs=ties)
    geodesic = result.curves["geodesic"].train_error
    assert max(geodesic) - min(geodesic) < 0.01  # the same function all along
    table = zoo.barrier_table(["a", "b"], path="geodesic", points=3)
    assert table.to_dict()["names"] == ["a", "b"]


@pytest.mark.slow  # trains two gpts and starts a server
def test_command_line_and_service_on_a_zoo_of_gpts(tmp_path: pytest.TempPathFactory) -> None:
    """`canon train`, `canon compare`, `canon table` and `canon serve` on gpts: weight
    matching by default (shared streams), heads assigned as blocks."""
    import json

    from click.testing import CliRunner
    from servers import start_server

    from canon.cli import cli

    zoo = str(tmp_path / "zoo")  # type: ignore[operator]
    arch = ["--arch", "gpt", "--config", json.dumps({"width": 16, "heads": 2, "depth": 1})]

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, [*args, "--zoo", zoo, "--device", "cpu"])
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    invoke("init")
    for seed in (0, 1):
        invoke(
            "train", *arch, "--dataset", "grammar", "--seed", str(seed), "--epochs", "1",
            "--name", f"g{seed}",
        )  # fmt: skip
    compared = json.loads(invoke("compare", "g0", "g1", "--points", "3", "--json"))
    assert compared["curves"]["geodesic"]["options"]["method"] == "weight"
    table = json.loads(invoke("table", "--points", "3", "--json"))
    assert table["names"] == ["g0", "g1"]
    server = start_server(tmp_path / "zoo", tmp_path / "serve.log")  # type: ignore[operator]
    try:
        request = {"a": "g1", "b": "g0", "paths": ["linear_aligned"], "points": 3}
        response = server.post("/api/compare", json=request)
        assert response.status_code in (200, 202), response.text
        if response.status_code == 202:
            server.wait_job(response.json()["id"])
            response = server.post("/api/compare", json=request)
        assert response.json()["curves"]["linear_aligned"]["options"]["method"] == "weight"
    finally:
        server.stop()


class _SharedKeyHead(nn.Module):
    """Four query heads of 6 dimensions: the first 4 meet each head's own key, the last 2
    meet one key head that every query head shares (joined after the keys by ``cat``, as
    DeepSeek's rotated key head is, here unrotated); with ``grouped``, each key/value head
    read by two query heads."""

    def __init__(self, grouped: bool) -> None:
        super().__init__()
        self.kv = 2 if grouped else 4
        self.embed = nn.Linear(5, 8)
        self.q = nn.Linear(8, 4 * 6)
        self.k = nn.Linear(8, self.kv * 4)
        self.v = nn.Linear(8, self.kv * 4)
        self.shared = nn.Linear(8, 2)
        self.o = nn.Linear(16, 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)
        self.input_shape = (7, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        b, t, _ = h.shape
        q = self.q(h).view(b, t, 4, 6).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv, 4).transpose(1, 2).repeat_interleave(4 // self.kv, 1)
        v = self.v(h).view(b, t, self.kv, 4).transpose(1, 2).repeat_interleave(4 // self.kv, 1)
        shared = self.shared(h).view(b, 1, t, 2).expand(b, 4, t, 2)
        y = F.scaled_dot_product_attention(q, torch.cat((k, shared), dim=-1), v)
        h = self.ln(h + self.o(y.transpose(1, 2).reshape(b, t, 16)))
        out: Tensor = self.head(torch.tanh(self.fc(h.mean(1))))
        return out


@pytest.mark.parametrize("grouped", [False, True])
def test_query_dimensions_against_a_shared_key_head_move_with_their_heads(grouped: bool) -> None:
    """The query dimensions that meet a key head every query head shares stay in their
    heads (that head has nowhere to go), whose order they share with the rest of the
    attention (one link; under grouped-query attention each key head's pair of query
    heads moves as one block); the shared head's projection stays. Symmetries keep the
    function, and canonical forms agree."""
    model = _SharedKeyHead(grouped).double()
    spec = spec_from_module(model)
    groups = {g.name: g for g in spec.groups}
    queries = groups["k" if grouped else "q"]  # with shared key heads, the keys are the units
    rider = groups["q@4"]
    assert "shared.weight" not in {w for g in spec.groups for w in g.weights}
    assert (rider.symmetry, rider.heads, rider.heads_only) == ("none", 2 if grouped else 4, True)
    assert rider.link == queries.link == groups["v"].link != ""
    x = torch.randn(6, 7, 5, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, _randomized(model, 3), x, seed=4)


class _SparseAttention(nn.Module):
    """Attention over 7 tokens whose keys are chosen per query by an indexer of its own
    layers, as DeepSeek-V3.2's and GLM-5's sparse attention chooses them: relu(q_i k_i)
    per index head, weighted by a layer of one unit per index head and summed, the top 3
    kept (the other keys masked out). With ``pairs`` the index keys are read in
    interleaved pairs (``k[..., 0::2]``, GLM-5's rotary layout); with ``argsort`` the top
    positions are the last of an ``argsort``; with ``leak`` the top scores themselves (not
    only their positions) reach the output."""

    def __init__(self, pairs: bool = False, leak: bool = False, argsort: bool = False) -> None:
        super().__init__()
        self.pairs, self.leak, self.argsort = pairs, leak, argsort
        self.embed = nn.Linear(5, 8)
        self.latent = nn.Linear(8, 6)
        self.q = nn.Linear(6, 2 * 4)
        self.k = nn.Linear(8, 2 * 4)
        self.v = nn.Linear(8, 2 * 4)
        self.o = nn.Linear(8, 8)
        self.index_q = nn.Linear(6, 2 * 4, bias=False)  # two index heads of 4 dimensions
        self.index_k = nn.Linear(8, 4, bias=False)
        self.index_weights = nn.Linear(8, 2, bias=False)
        self.head = nn.Linear(8, 3)
        self.input_shape = (7, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        b, t, _ = h.shape
        latent = torch.relu(self.latent(h))
        iq = self.index_q(latent).view(b, t, 2, 4)
        ik = self.index_k(h)
        if self.pairs:
            ik = torch.cat([ik[..., 0::2], ik[..., 1::2]], dim=-1)
        scores = torch.relu(torch.matmul(iq, ik.transpose(-1, -2).unsqueeze(1)))  # [b, t, 2, t]
        ranked = torch.matmul(self.index_weights(h).unsqueeze(-2), scores).squeeze(-2)
        top = ranked.topk(3, dim=-1)
        chosen = ranked.argsort(dim=-1)[..., -3:] if self.argsort else top.indices
        masked = torch.ones(b, t, t, dtype=torch.bool).scatter(-1, chosen, False)
        q = self.q(latent).view(b, t, 2, 4).transpose(1, 2)
        k = self.k(h).view(b, t, 2, 4).transpose(1, 2)
        v = self.v(h).view(b, t, 2, 4).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=~masked.unsqueeze(1))
        h = h + self.o(y.transpose(1, 2).reshape(b, t, 8))
        if self.leak:
            h = h + top.values.sum(-1, keepdim=True)
        out: Tensor = self.head(h.mean(1))
        return out


@pytest.mark.parametrize(("pairs", "argsort"), [(False, False), (True, False), (False, True)])
def test_keys_chosen_by_an_indexer_of_its_own_layers(pairs: bool, argsort: bool) -> None:
    """The top-k of scores from the indexer's own layers gives positions alone: those
    layers' outputs stay where they are (no group of their own) while their inputs' columns
    move with the units they read (the stream, the query latent), so the keys chosen are
    the same under every symmetry. Symmetries keep the function, and canonical forms
    agree."""
    model = _SparseAttention(pairs, argsort=argsort).double()
    spec = spec_from_module(model)
    names = {g.name for g in spec.groups}
    assert {"embed", "latent", "v"} <= names
    assert not {"index_q", "index_k", "index_weights"} & names
    moved = {o.name for g in spec.groups for o in g.outgoing}
    assert {"index_q.weight", "index_k.weight", "index_weights.weight"} <= moved
    x = torch.randn(6, 7, 5, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, _randomized(model, 5), x, seed=6)


def test_an_indexers_top_scores_pin_what_they_meet() -> None:
    """The top scores themselves (not only their positions) added to the stream: like what
    a function recorded whole computes, no symmetry moves them, so the stream they meet
    stays where it is (no group), the rest of the network still moves, and symmetries keep
    the function."""
    model = _SparseAttention(leak=True).double()
    spec = spec_from_module(model)
    names = {g.name for g in spec.groups}
    assert "embed" not in names and {"latent", "v"} <= names
    x = torch.randn(6, 7, 5, dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, _randomized(model, 5), x, seed=6)
