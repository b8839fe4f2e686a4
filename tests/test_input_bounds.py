"""Input that would cost memory or trust, each refused with one clear error and nothing changed.

Real components throughout: zoos on disk, the Hub client against the fake Hub of
tests/hub_server.py, the service app in-process, the CLI through click.
"""

from __future__ import annotations

import io
import json
import sqlite3
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hub_server import FakeHub
from servers import TOKEN, default_zoo
from torch import Tensor, nn

from canon._limits import (
    MAX_DRAWS,
    MAX_GRID,
    MAX_GROUP_UNITS,
    MAX_HEADER_BYTES,
    MAX_METADATA_ITEMS,
    MAX_METADATA_VALUE,
    MAX_SIGMAS,
    MAX_STRUCTURED_UNITS,
)
from canon.architectures import _registry as architecture_registry
from canon.architectures import build_model, register_architecture, resolve_config
from canon.checkpoint import read_header
from canon.cli import cli
from canon.core.experts import StackedExperts, TopKRouter
from canon.engine import local_energy, plane
from canon.errors import (
    CheckpointFormatError,
    ConfigError,
    CorruptZooError,
    InvalidEntryError,
    InvalidManifestError,
)
from canon.hub import MANIFEST_FILE, RESULTS_FILE, pull, push
from canon.service import create_app
from canon.zoo import CACHE_VERSION, Zoo, object_path, parse_manifest
from canon.zoo._ingest import pack
from canon.zoo._objects import sha256_bytes
from canon.zoo._records import canonical_json, check_metrics, family_key

HUB_TOKEN = "hf_test_token"
SMALL = {"in_features": 8, "hidden": [4], "classes": 3}
WIDE = {"in_features": 1, "hidden": [MAX_GROUP_UNITS + 1], "classes": 2}
XSS = "<img src=x onerror=alert(document.domain)>"


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    """The exception's message, asserted to be a single line."""
    text = str(exc.value)
    assert "\n" not in text and len(text) < 1000, text
    return text


def _state(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("mlp", config).state_dict()


def _entry(data: bytes, name: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A manifest entry of the object ``data`` (mlp with ``config``)."""
    sha = sha256_bytes(memoryview(data))
    family = family_key("mlp", canonical_json(resolve_config("mlp", config)))
    return {
        "id": sha,
        "name": name,
        "architecture": "mlp",
        "config": resolve_config("mlp", config),
        "family": family,
        "dataset": None,
        "kind": "solution",
        "tags": {},
        "parents": [],
        "metrics": {},
        "object": object_path(sha),
        **fields,
    }


def _manifest(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": "canon-zoo",
        "schema_version": 1,
        "entries": entries,
        "references": {entries[0]["family"]: entries[0]["name"]},
    }


def _object(config: dict[str, Any], seed: int = 0) -> bytes:
    """The bytes canon stores for a random mlp of ``config`` (made without ``prepare``, which
    would refuse a config over the limits)."""
    full = canonical_json(resolve_config("mlp", config))
    return bytes(pack(_state(config, seed), "mlp", full).data)


def _files(root: Path) -> set[str]:
    return (
        {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=HUB_TOKEN) as server:
        yield server


def _pull(hub: FakeHub, zoo: Zoo, repo: str, cache: Path) -> Any:
    return pull(zoo, repo, endpoint=hub.endpoint, token=HUB_TOKEN, cache_dir=cache)


def _publish(hub: FakeHub, repo: str, entries: list[tuple[dict[str, Any], bytes]]) -> None:
    """Commit a zoo repository of ``entries`` (manifest entry, object bytes) to the fake Hub."""
    files: dict[str, bytes | None] = {
        MANIFEST_FILE: json.dumps(_manifest([e for e, _ in entries])).encode()
    }
    files |= {e["object"]: data for e, data in entries}
    hub.commit(repo, files)


# -- the units of one matched group are bounded ----------------------------------------


def test_wide_group_is_refused_on_add(tmp_path: Path) -> None:
    """A unit group over MAX_GROUP_UNITS: one ConfigError naming group, size and limit."""
    with Zoo.open(tmp_path / "zoo") as zoo:
        with pytest.raises(ConfigError) as exc:
            zoo.add(_state(WIDE), name="wide", architecture="mlp", config=WIDE)
        message = one_line(exc)
        assert f"{MAX_GROUP_UNITS + 1} units in group" in message
        assert f"at most {MAX_GROUP_UNITS} units" in message
        assert len(zoo) == 0 and not list((tmp_path / "zoo" / "objects").rglob("*.safetensors"))
        # a group of exactly the limit is fine (checked without writing)
        at_limit = {**WIDE, "hidden": [MAX_GROUP_UNITS]}
        assert zoo.prepare(_state(at_limit), "mlp", at_limit).spec.groups[0].size == MAX_GROUP_UNITS


@dataclass(frozen=True)
class MixtureConfig:
    experts: int = 4
    inner: int = 4
    width: int = 2


class Mixture(nn.Module):
    """A layer in, one residual mixture of ``experts`` SwiGLU experts of ``inner`` units,
    a read-out."""

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        self.input_shape = (2,)
        self.embed = nn.Linear(2, config.width)
        self.router = TopKRouter(config.experts, config.width, 1)
        self.experts = StackedExperts(config.experts, config.width, config.inner, nn.SiLU(), True)
        self.head = nn.Linear(config.width, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        _, weights, index = self.router(h)
        out: Tensor = self.head(h + self.experts(h, index, weights))
        return out


@pytest.fixture
def mixture_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bounds-mixture`` registered for one test (the registry restored afterwards)."""
    monkeypatch.setattr(architecture_registry, "_REGISTRY", dict(architecture_registry._REGISTRY))
    register_architecture("bounds-mixture", MixtureConfig)(Mixture)


def _mixture(zoo: Zoo, experts: int, inner: int) -> Any:
    config = {"experts": experts, "inner": inner}
    state = {k: v.normal_() for k, v in Mixture(MixtureConfig(**config)).state_dict().items()}
    return zoo.prepare(state, "bounds-mixture", config)


@pytest.mark.usefixtures("mixture_registered")
def test_a_mixtures_experts_are_bounded_per_expert(tmp_path: Path) -> None:
    """The experts' units move in blocks (one per expert) and are assigned a block at a
    time: a mixture of 64 experts of 1,024 units (OLMoE's) is taken though its group is
    twice MAX_GROUP_UNITS, while an expert over that bound, or a group over
    MAX_STRUCTURED_UNITS, is refused naming both sizes."""
    with Zoo.open(tmp_path / "zoo") as zoo:
        (experts,) = [
            g for g in _mixture(zoo, 64, 1024).spec.groups if g.heads == 64 and g.size > 64
        ]
        assert experts.size == 64 * 1024 > MAX_GROUP_UNITS
        with pytest.raises(ConfigError) as exc:
            _mixture(zoo, 2, MAX_GROUP_UNITS + 1)
        message = one_line(exc)
        assert f"in 2 blocks of {MAX_GROUP_UNITS + 1}" in message
        assert f"at most {MAX_GROUP_UNITS} units per block" in message
        many = MAX_STRUCTURED_UNITS // 512 + 1
        with pytest.raises(ConfigError) as exc:
            _mixture(zoo, many, 512)
        assert f"{many * 512} units in group" in one_line(exc)
        assert f"at most {MAX_STRUCTURED_UNITS} units" in one_line(exc)
        assert len(zoo) == 0
        # a small one goes in whole and is canonicalized against another
        for seed, name in enumerate(("a", "b")):
            torch.manual_seed(seed)
            small = Mixture(MixtureConfig())
            zoo.add(small.state_dict(), name=name, architecture="bounds-mixture", config={})
        canonical = zoo.canonical("b")
        assert set(canonical) == set(zoo.state("b")) and len(zoo) == 2


def test_a_wide_entry_indexed_before_the_bound_is_refused_when_built(tmp_path: Path) -> None:
    """An entry a zoo already holds (indexed before groups were bounded: here written into
    the index by hand) is refused when its network is first built, before any matching."""
    root = tmp_path / "zoo"
    with Zoo.open(root) as zoo:
        entry = zoo.add(_state(SMALL, 0), name="n0", architecture="mlp", config=SMALL)
    con = sqlite3.connect(root / "canon.sqlite")
    with con:
        con.execute("UPDATE entries SET config = ? WHERE id = ?", (json.dumps(WIDE), entry.id))
        con.execute("UPDATE families SET config = ?", (json.dumps(WIDE),))
    con.close()
    with Zoo.open(root) as zoo, pytest.raises(ConfigError) as exc:
        zoo.spec("n0")
    assert f"{MAX_GROUP_UNITS + 1} units in group" in one_line(exc)


def test_wide_group_is_refused_on_index_rebuild(tmp_path: Path) -> None:
    """A travelling zoo (manifest and objects) with a wide entry is not indexed."""
    root = tmp_path / "travelling"
    data = _object(WIDE)
    entry = _entry(data, "wide", WIDE)
    (root / entry["object"]).parent.mkdir(parents=True)
    (root / entry["object"]).write_bytes(data)
    (root / "manifest.json").write_text(json.dumps(_manifest([entry])))
    before = _files(root)
    with pytest.raises(CorruptZooError) as exc:
        Zoo.open(root)
    assert f"{MAX_GROUP_UNITS + 1} units in group" in one_line(exc)
    assert _files(root) == before  # no index was published


def test_wide_group_is_refused_on_pull(hub: FakeHub, tmp_path: Path) -> None:
    """A Hub repository with a wide entry: the pull fails and the zoo stays empty."""
    data = _object(WIDE)
    _publish(hub, "evil/wide", [(_entry(data, "wide", WIDE), data)])
    with Zoo.open(tmp_path / "zoo") as zoo:
        with pytest.raises(ConfigError) as exc:
            _pull(hub, zoo, "evil/wide", tmp_path / "cache")
        assert f"at most {MAX_GROUP_UNITS} units" in one_line(exc)
        assert len(zoo) == 0
    assert not list((tmp_path / "zoo" / "objects").rglob("*.safetensors"))


# -- metric keys are checked and escaped; every response has a CSP ----------------------


def test_metric_keys_are_checked_like_tag_keys() -> None:
    """Markup, control characters or over-long metric keys are refused; plain keys pass."""
    assert json.loads(check_metrics({"train_error": 0.5, "acc.top-1": 1})) == {
        "acc.top-1": 1,
        "train_error": 0.5,
    }
    for key in (XSS, "a\x1b[2J", "x" * 65, "", "1abc"):
        with pytest.raises(InvalidEntryError, match="invalid metric key"):
            check_metrics({key: 0.5})
    data = _object(SMALL)
    with pytest.raises(InvalidManifestError, match="invalid metric key"):
        parse_manifest(_manifest([_entry(data, "n", SMALL, metrics={XSS: 0.5})]), source="x")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service in-process on a copy of the default zoo whose index holds a metric key with
    markup (written by an older canon, or by hand), which the view must escape."""
    root = tmp_path_factory.mktemp("xss")
    zoo = default_zoo(tmp_path_factory.getbasetemp(), root / "zoo")
    con = sqlite3.connect(zoo / "canon.sqlite")
    with con:
        name = con.execute("SELECT name FROM entries ORDER BY name LIMIT 1").fetchone()[0]
        con.execute(
            "UPDATE entries SET metrics = ? WHERE name = ?",
            (json.dumps({XSS: 0.5, "train_error": "<b>"}), name),
        )
    con.close()
    with TestClient(create_app(zoo, token=TOKEN), raise_server_exceptions=False) as client:
        client.headers["x-entry"] = name
        yield client


def test_entry_page_escapes_metric_keys_and_values(app: TestClient) -> None:
    """The entry page writes every metric key and value escaped."""
    page = app.get(f"/entries/{app.headers['x-entry']}")
    assert page.status_code == 200, page.text
    assert "<img" not in page.text and "<b>" not in page.text
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in page.text


def test_wide_group_upload_is_a_422(app: TestClient) -> None:
    """The service refuses an upload of a group over the limit with a 4xx, not a 500."""
    before = app.get("/api/info").json()["entries"]
    response = app.post(
        "/api/entries",
        params={"name": "wide", "arch": "mlp", "config": json.dumps(WIDE)},
        content=_object(WIDE),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "ConfigError" and f"at most {MAX_GROUP_UNITS} units" in error["message"]
    assert app.get("/api/info").json()["entries"] == before


@pytest.mark.parametrize(
    "path", ["/", "/api/info", "/api/entries", "/no-such-page", "/static/canon.css"]
)
def test_every_response_has_a_content_security_policy(app: TestClient, path: str) -> None:
    """Pages, JSON, error pages and static files carry one restrictive CSP."""
    response = app.get(path)
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, (path, response.headers)
    assert "default-src 'none'" in policies[0] and "script-src" not in policies[0]


def test_api_docs_keep_their_scripts(app: TestClient) -> None:
    """Swagger UI loads scripts from a CDN: /docs is left without the policy."""
    response = app.get("/docs")
    assert response.status_code == 200 and "content-security-policy" not in response.headers


# -- pulled cached results are parsed as the records they claim to be ---------------------


@pytest.fixture(scope="module")
def results_repo(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A pushed zoo of two small mlps (no cached results yet): its entry ids."""
    root = tmp_path_factory.mktemp("results") / "source"
    with Zoo.open(root) as zoo:
        for seed in (0, 1):
            zoo.add(_state(SMALL, seed), name=f"n{seed}", architecture="mlp", config=SMALL)
        push(zoo, "lab/results", endpoint=hub.endpoint, token=HUB_TOKEN)
        ids = sorted(e.id for e in zoo.entries())
    return {"repo": "lab/results", "ids": ids}


DISTANCES = {"euclidean": 1.0, "euclidean_aligned": 0.5, "geodesic": 0.25}
CURVE = {
    "kind": "linear",
    "x": [0.0, 0.5, 1.0],
    "train_error": [0.1, 0.3, 0.1],
    "barrier": 0.3,
    "excess": 0.2,
    "distances": DISTANCES,
    "options": {"points": 3},
}


def _results(ids: list[str], pairs: list[tuple[str, Any]]) -> bytes:
    """A canon-results.json of ``(kind, result)`` pairs between the two entries (the JSON
    token NaN where a result holds float('nan'))."""
    listed = [
        {"a": ids[0], "b": ids[1], "kind": kind, "options_hash": f"h{i}", "result": result}
        for i, (kind, result) in enumerate(pairs)
    ]
    data = {"format": "canon-results", "cache_version": CACHE_VERSION, "pairs": listed}
    return json.dumps(data).encode()


def test_valid_pulled_results_are_stored(
    hub: FakeHub, results_repo: dict[str, Any], tmp_path: Path
) -> None:
    """Control: well-formed distances and curves are imported, as their records write them."""
    repo, ids = results_repo["repo"], results_repo["ids"]
    hub.commit(repo, {RESULTS_FILE: _results(ids, [("distances", DISTANCES), ("linear", CURVE)])})
    with Zoo.open(tmp_path / "zoo") as zoo:
        assert _pull(hub, zoo, repo, tmp_path / "cache").results == 2
        stored = {r.kind: r.result for r in zoo.pairs.results()}
    assert stored["distances"] == DISTANCES
    assert stored["linear"]["x"] == CURVE["x"] and stored["linear"]["train_loss"] is None


BAD_RESULTS = {
    "extra-key": ("distances", {**DISTANCES, XSS: 1.0}),
    "nan": ("distances", {**DISTANCES, "geodesic": float("nan")}),
    "string": ("distances", {**DISTANCES, "geodesic": "0.1"}),
    "huge-int": ("distances", {**DISTANCES, "geodesic": 10**400}),
    "missing": ("distances", {"euclidean": 1.0}),
    "float-count": ("distances", {**DISTANCES, "hamming": 1.5}),
    "curve-short": ("linear", {**CURVE, "train_error": [0.1, 0.3]}),
    "curve-points": ("linear", {**CURVE, "options": {"points": 25}}),
    "curve-strings": ("linear", {**CURVE, "x": ["0", "0.5", "1"]}),
    "curve-kind": ("linear", {**CURVE, "kind": "geodesic"}),
    "curve-inf-option": ("linear", {**CURVE, "options": {"points": 3, "lr": float("inf")}}),
    "curve-distances": ("linear", {**CURVE, "distances": {**DISTANCES, "x": 1}}),
    "unknown-kind": ("teleport", DISTANCES),
    "not-an-object": ("distances", [1, 2, 3]),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_pulled_results_refuse_the_pull(
    hub: FakeHub, results_repo: dict[str, Any], tmp_path: Path, case: str
) -> None:
    """A malformed cached result refuses the pull (as a malformed manifest does): nothing added."""
    repo, ids = results_repo["repo"], results_repo["ids"]
    hub.commit(repo, {RESULTS_FILE: _results(ids, [("distances", DISTANCES), BAD_RESULTS[case]])})
    with Zoo.open(tmp_path / "zoo") as zoo:
        with pytest.raises(InvalidManifestError, match="a cached result is malformed") as exc:
            _pull(hub, zoo, repo, tmp_path / "cache")
        one_line(exc)
        assert len(zoo) == 0 and zoo.pairs.results() == []


# -- data names datasets by registered name, a path only when trusted ---------------------


def test_manifest_datasets_with_paths_need_trust() -> None:
    """`loader:PATH` datasets in an untrusted manifest are refused; registered names pass."""
    data = _object(SMALL)
    manifest = _manifest([_entry(data, "n", SMALL, dataset="npz:/etc/hostname")])
    with pytest.raises(InvalidManifestError, match="names the dataset `npz:/etc/hostname`") as exc:
        parse_manifest(manifest, source="remote", trusted=False)
    assert "--trust-code" in one_line(exc)
    assert parse_manifest(manifest, source="own", trusted=True).entries[0]["dataset"] == (
        "npz:/etc/hostname"
    )
    plain = _manifest([_entry(data, "n", SMALL, dataset="digits")])
    assert parse_manifest(plain, source="remote", trusted=False).entries[0]["dataset"] == "digits"
    skipped = parse_manifest(manifest, source="remote", trusted=False, skip_bad=True)
    assert skipped.entries == () and "file path" in skipped.rejected[0]


def test_pull_refuses_dataset_paths_unless_trusted(hub: FakeHub, tmp_path: Path) -> None:
    """A pulled entry naming a file as its dataset is refused; --trust-code lets it in."""
    data = _object(SMALL)
    _publish(hub, "evil/dataset", [(_entry(data, "n", SMALL, dataset="npz:/etc/hostname"), data)])
    with Zoo.open(tmp_path / "zoo") as zoo:
        with pytest.raises(InvalidManifestError, match="a file path that canon would open"):
            _pull(hub, zoo, "evil/dataset", tmp_path / "cache")
        assert len(zoo) == 0
    with Zoo.open(tmp_path / "trusting", trust_code=True) as zoo:
        assert _pull(hub, zoo, "evil/dataset", tmp_path / "cache").added == ["n"]
        assert zoo.get("n").dataset == "npz:/etc/hostname"


# -- plane grids, noise draws and levels are bounded --------------------------------------


@pytest.mark.parametrize(
    ("args", "bound"),
    [
        (["plane", "a", "b", "c", "--grid", "60000"], f"2<=x<={MAX_GRID}"),
        (["plane", "a", "b", "c", "--grid", "1"], f"2<=x<={MAX_GRID}"),
        (["energy", "a", "--draws", "1000000000"], f"1<=x<={MAX_DRAWS}"),
    ],
)
def test_cli_refuses_huge_grids_and_draws(args: list[str], bound: str) -> None:
    """`--grid` and `--draws` out of range: a usage error naming the range, nothing computed."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert bound in result.output


def test_api_refuses_huge_grids_draws_and_sigma_lists() -> None:
    """plane and local_energy check their sizes before anything is built or allocated."""
    none: dict[str, torch.Tensor] = {}
    for grid in (MAX_GRID + 1, 1, True, 2.5):
        with pytest.raises(ConfigError, match=f"`grid` must be an integer from 2 to {MAX_GRID}"):
            plane(none, none, none, "mlp", None, grid=grid)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"`draws` must be an integer from 1 to {MAX_DRAWS}"):
        local_energy(none, "mlp", None, draws=MAX_DRAWS + 1)
    with pytest.raises(ConfigError, match=f"at most {MAX_SIGMAS} are allowed"):
        local_energy(none, "mlp", None, sigmas=[0.1] * (MAX_SIGMAS + 1))


# -- safetensors headers are bounded in bytes, strings and metadata -----------------------


def _header_file(path: Path, header: dict[str, Any]) -> Path:
    raw = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


@pytest.mark.parametrize(
    ("metadata", "pattern"),
    [
        (
            {str(i): "" for i in range(MAX_METADATA_ITEMS + 1)},
            "metadata items; canon reads at most",
        ),
        ({"canon.config": "x" * (MAX_METADATA_VALUE + 1)}, "is longer than"),
        ({str(i): "" for i in range(300_000)}, "strings, more than"),
    ],
)
def test_header_metadata_is_bounded(tmp_path: Path, metadata: dict[str, str], pattern: str) -> None:
    """Too many metadata items, too long a value, or millions of tiny keys: refused."""
    path = _header_file(tmp_path / "m.safetensors", {"__metadata__": metadata})
    with pytest.raises(CheckpointFormatError, match=pattern) as exc:
        read_header(path)
    one_line(exc)


def test_header_over_the_byte_cap_is_refused_unread(tmp_path: Path) -> None:
    """A header length over MAX_HEADER_BYTES is refused before the header is read."""
    path = tmp_path / "big.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        f.truncate(MAX_HEADER_BYTES + 64)  # sparse: the file is as long as the header claims
    with pytest.raises(CheckpointFormatError, match=f"header length {MAX_HEADER_BYTES + 1}"):
        read_header(path)


def test_real_metadata_still_reads(tmp_path: Path) -> None:
    """Control: canon's own objects (three metadata items) read as before."""
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_object(SMALL))
    assert read_header(path).metadata["canon.architecture"] == "mlp"


# -- .pt archives that would expand are refused before torch.load -------------------------


def _pt(state: dict[str, torch.Tensor], compression: int) -> bytes:
    """``torch.save(state)`` with every member rewritten with ``compression``."""
    saved = io.BytesIO()
    torch.save(state, saved)
    out = io.BytesIO()
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=compression)
    return out.getvalue()


def test_compressed_pt_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deflated .pt member (torch.save never compresses) is refused; torch.load never runs."""
    packed = tmp_path / "bomb.pt"
    packed.write_bytes(_pt(_state(SMALL), zipfile.ZIP_DEFLATED))
    stored = tmp_path / "plain.pt"
    stored.write_bytes(_pt(_state(SMALL), zipfile.ZIP_STORED))
    with Zoo.open(tmp_path / "zoo") as zoo:
        assert zoo.add(stored, name="plain", architecture="mlp", config=SMALL).name == "plain"

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("torch.load ran on a compressed archive")

        monkeypatch.setattr(torch, "load", refuse)
        with pytest.raises(CheckpointFormatError, match="holds compressed members") as exc:
            zoo.add(packed, name="bomb", architecture="mlp", config=SMALL)
        one_line(exc)
        assert [e.name for e in zoo.entries()] == ["plain"]


def test_pt_declaring_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    """A stored member whose central-directory size exceeds the archive is refused unread."""
    data = bytearray(_pt(_state(SMALL), zipfile.ZIP_STORED))
    entry = data.index(b"PK\x01\x02")  # the first member's central directory record
    data[entry + 24 : entry + 28] = struct.pack("<I", 0xF000_0000)  # its uncompressed size
    path = tmp_path / "liar.pt"
    path.write_bytes(bytes(data))
    with Zoo.open(tmp_path / "zoo") as zoo:
        with pytest.raises(CheckpointFormatError, match="bytes of members in an archive of"):
            zoo.add(path, name="liar", architecture="mlp", config=SMALL)
        assert len(zoo) == 0
