"""Hostile input: one clear CanonError each, never a traceback, a 500 or a huge allocation."""

from __future__ import annotations

import functools
import json
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hub_server import FakeHub
from hypothesis import given
from hypothesis import strategies as st
from servers import TOKEN, default_zoo

from canon._limits import (
    MAX_DEPTH,
    MAX_DIM,
    MAX_PARAMS,
    MAX_RANK,
    MAX_TENSORS,
    clip,
    json_depth,
    loads_json,
)
from canon._options import parse_json
from canon.architectures import build_model, list_architectures, resolve_config
from canon.architectures._builtin import LeNetConfig, MLPConfig
from canon.checkpoint import read_header, serialize
from canon.cli import cli
from canon.core import spec_from_module
from canon.errors import (
    CheckpointFormatError,
    ConfigError,
    HubError,
    InvalidManifestError,
)
from canon.hub import MANIFEST_FILE, RESULTS_FILE, pull, push
from canon.service import create_app
from canon.zoo import Zoo
from canon.zoo._manifest import object_path

DEEP = "[" * 100_000
SIZE_RULE = f"integers from 1 to {MAX_DIM}"


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    """The exception's message, asserted to be a single line."""
    text = str(exc.value)
    assert "\n" not in text and len(text) < 1000, text
    return text


# -- loads_json and clip --------------------------------------------------------------------


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\ax\n\u202e', max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=20,
)


@given(json_values, st.booleans(), st.sampled_from([None, 1]))
def test_json_depth_counts_brackets_outside_strings(value: Any, ascii_only: bool, indent: Any):
    """json_depth equals the nesting of the parsed value, whatever brackets strings hold."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert json_depth(text) == json_depth(text.encode()) == _depth(value)


@pytest.mark.parametrize("text", [DEEP, '{"a":' * 100_000, "[" * 65 + "]" * 65])
def test_deep_json_is_a_one_line_error(text: str):
    """JSON nested past the limit raises the caller's error, never RecursionError."""
    with pytest.raises(ConfigError) as exc:
        loads_json(text, what="`--config`")
    assert one_line(exc).startswith("`--config` is nested")
    assert f"at most {MAX_DEPTH} levels" in str(exc.value)


def test_json_at_the_depth_limit_parses():
    """Nesting of exactly max_depth levels parses."""
    nested: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, what="x") == nested
    assert loads_json('{"a": "[[[[[[", "b": [1]}', what="x", max_depth=2) == {
        "a": "[[[[[[",
        "b": [1],
    }


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (b"\xff\xfe{}", "x is not UTF-8"),
        ("1" * 5000, "x is not valid JSON: Exceeds the limit"),
        ("{nope", "x is not valid JSON"),
        ('{"a": "' + "b" * 200 + '"}', "x is 209 bytes long; at most 100"),
        ('"' + "é" * 60 + '"', "x is 122 bytes long; at most 100"),
    ],
)
def test_bad_json_raises_the_given_error(text: str | bytes, pattern: str):
    """Non-UTF-8, unparsable or over-long JSON raises the given error type, one line."""
    error = functools.partial(CheckpointFormatError, path="p")
    with pytest.raises(CheckpointFormatError, match=pattern) as exc:
        loads_json(text, what="x", error=error, max_bytes=100 if "long" in pattern else None)
    one_line(exc)
    assert exc.value.path == "p"


def test_clip_makes_text_one_visible_line():
    """clip escapes control characters and ANSI escapes and cuts long text, with its length."""
    assert clip("plain text") == "plain text"
    assert clip("a\x1b[31mred\nb\tc\u202e") == "a\\x1b[31mred\\nb\\tc\\u202e"
    cut = clip("x" * 1000 + "\n", 20)
    assert cut == "x" * 20 + "… (1001 characters)"
    assert clip("\x00" * 10, 8) == "\\x00\\x00… (10 characters)"


def test_parse_json_refuses_deep_or_long_options():
    """--config refuses deep nesting, over-long text and non-objects with one-line ConfigErrors."""
    for text, pattern in [
        ("[" * 60_000, "`--config` is nested 60000 levels deep"),
        ('{"a": "' + "x" * 70_000 + '"}', "`--config` is 70009 bytes long"),
        ("[1]", "`--config` must be a JSON object"),
    ]:
        with pytest.raises(ConfigError, match=pattern) as exc:
            parse_json(text)
        one_line(exc)


@pytest.mark.parametrize(
    "args",
    [
        ["spec", "mlp", "--config", DEEP],
        ["spec", "mlp", "--config", '{"hidden": [1000000000]}'],
        ["spec", "mlp", "--config", '{"hidden": [[256]]}'],
        ["spec", "os:system"],
    ],
)
def test_cli_bad_config_is_one_line_exit_1(args: list[str]):
    """Deep, oversized or failing configs on the command line: exit 1, one line, no traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output


# -- checkpoint headers -------------------------------------------------------------------


def _write(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _tensor(shape: list[Any], end: int = 4) -> dict[str, Any]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [0, end]}


@pytest.mark.parametrize(
    ("header", "data", "pattern"),
    [
        (b"[" * 200_000, b"", "its header is nested 200000 levels deep"),
        (b'{"a":' * 200_000, b"", "its header is nested 200000 levels deep"),
        (
            json.dumps({f"t{i}": _tensor([0], 0) for i in range(MAX_TENSORS + 1)}).encode(),
            b"",
            f"lists {MAX_TENSORS + 1} tensors; canon reads at most {MAX_TENSORS}",
        ),
        (
            json.dumps({"t": _tensor([1] * (MAX_RANK + 1))}).encode(),
            b"\0" * 4,
            f"has {MAX_RANK + 1} dimensions; canon reads at most {MAX_RANK}",
        ),
        (json.dumps({"t": _tensor([True])}).encode(), b"\0" * 4, "invalid shape \\[true\\]"),
        (
            json.dumps({"\x1b[2J": {"dtype": "F32", "shape": "x" * 500}}).encode(),
            b"",
            r"tensor `\\x1b\[2J` has an invalid shape \"x{100}",
        ),
    ],
)
def test_hostile_headers_are_format_errors(tmp_path: Path, header: bytes, data: bytes, pattern):
    """Deep, huge or malformed safetensors headers raise one-line CheckpointFormatErrors."""
    path = _write(tmp_path / "h.safetensors", header, data)
    with pytest.raises(CheckpointFormatError, match=pattern) as exc:
        read_header(path)
    one_line(exc)


# -- architecture configs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden", [[1_000_000_000], [1e9], [1.5], [[256]], [-3], [0], [True], ["64"], "64", 64, None]
)
def test_bad_hidden_sizes_name_the_key_and_the_rule(hidden: Any):
    """Every bad `hidden` is a ConfigError naming the key and the sizes allowed."""
    with pytest.raises(ConfigError) as exc:
        build_model("mlp", {"in_features": 4, "hidden": hidden})
    message = one_line(exc)
    assert message.startswith("config `hidden` of `mlp` must be a list of at most 1024 ")
    assert SIZE_RULE in message


@pytest.mark.parametrize(
    ("name", "config", "pattern"),
    [
        (
            "mlp",
            {"in_features": 2**21},
            f"`in_features` of `mlp` must be an integer from 1 to {MAX_DIM}",
        ),
        ("mlp", {"hidden": [4] * 1025}, "its length: 1025"),
        ("mlp", {"bias": 1}, "`bias` of `mlp` must be true or false"),
        (
            "lenet",
            {"channels": [20, 50, 70]},
            f"`channels` of `lenet` must be a list of 2 {SIZE_RULE}",
        ),
        ("lenet", {"padding": -1}, f"`padding` of `lenet` must be an integer from 0 to {MAX_DIM}"),
        ("vgg", {"layers": [64, "X"]}, 'item 1: "X"'),
        ("vgg", {"layers": [64, "M"], "width": 1e9}, "`width` of `vgg` must be a number from"),
        ("vgg", {"dropout": float("nan")}, "`dropout` of `vgg` must be a number from 0 to 1"),
        ("vgg", {"layers": [MAX_DIM, "M"], "width": 2}, f"channels; at most {MAX_DIM}"),
        ("committee", {"hidden": 2**30}, "`hidden` of `committee` must be an integer from 1"),
        ("mlp", {"hidden": [MAX_DIM, MAX_DIM, MAX_DIM]}, f"builds at most {MAX_PARAMS:,}"),
    ],
)
def test_bad_sizes_are_config_errors(name: str, config: dict[str, Any], pattern: str):
    """Out-of-bound, mistyped or too-many sizes are one-line ConfigErrors (no model is made)."""
    with pytest.raises(ConfigError, match=pattern) as exc:
        build_model(name, config)
    one_line(exc)


def test_config_dataclasses_check_themselves():
    """Config dataclasses made directly check their fields and turn lists into tuples."""
    assert MLPConfig(hidden=[3, 4]).hidden == (3, 4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`hidden` of `MLPConfig` must be"):
        MLPConfig(hidden=(0,))
    with pytest.raises(ConfigError, match="`channels` of `LeNetConfig` must be a list of 2"):
        LeNetConfig(channels=(1,))  # type: ignore[arg-type]
    assert resolve_config("mlp", {"hidden": [7]})["hidden"] == [7]


@pytest.mark.parametrize("name", list_architectures())
def test_meta_build_has_the_cpu_spec(name: str):
    """Every built-in built on the meta device holds no data and has its CPU spec."""
    meta = build_model(name, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    assert spec_from_module(meta) == spec_from_module(build_model(name))


def test_meta_build_keeps_the_random_stream():
    """Checking a config (a meta build) does not draw from torch's random generator."""
    torch.manual_seed(0)
    first = build_model("mlp", {"in_features": 4, "hidden": [3]}).state_dict()
    torch.manual_seed(0)
    with torch.device("meta"):
        build_model("vgg")
    second = build_model("mlp", {"in_features": 4, "hidden": [3]}).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_user_factory_failures_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Whatever a user factory or its module raises becomes one ConfigError naming it."""
    (tmp_path / "hostile_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def explode(width=3):
                raise RuntimeError("boom\\x1b[2J")

            def make(width=3):
                return nn.Linear(2, width)
            """
        )
    )
    (tmp_path / "broken_module.py").write_text("raise SystemError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, config, pattern in [
        ("os:system", {}, r"user architecture `os:system` failed: TypeError: system\(\)"),
        ("hostile_nets:explode", {}, r"RuntimeError: boom\\x1b\[2J"),
        ("hostile_nets:make", {"depth": 2}, "unexpected keyword argument 'depth'"),
        ("broken_module:make", {}, "cannot import module `broken_module`.*SystemError"),
    ]:
        with pytest.raises(ConfigError, match=pattern) as exc:
            build_model(name, config)
        one_line(exc)
    assert build_model("hostile_nets:make", {"width": 5}, device="meta").weight.is_meta


# -- the service --------------------------------------------------------------------------

CONFIG = {"in_features": 64, "hidden": [256, 256], "classes": 10}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """An in-process app with the token on a copy of the default zoo."""
    root = tmp_path_factory.mktemp("limits")
    zoo = default_zoo(tmp_path_factory.getbasetemp(), root / "zoo")
    with TestClient(create_app(zoo, token=TOKEN), raise_server_exceptions=False) as c:
        yield c, zoo


def _checkpoint(config: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    torch.manual_seed(0)
    state = build_model("mlp", config).state_dict()
    return serialize(state, metadata)


def _header_only(metadata: dict[str, str]) -> bytes:
    header = json.dumps({"__metadata__": metadata}).encode()
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    ("body", "params", "status", "kind", "pattern"),
    [
        ("deep-header", {"arch": "mlp"}, 422, "CheckpointFormatError", "nested 200000 levels"),
        ("good", {"arch": "mlp", "config": "[" * 15_000}, 422, "ConfigError", "nested 15000"),
        ("good", {"arch": "mlp", "config": '{"hidden": [1e9]}'}, 422, "ConfigError", SIZE_RULE),
        ("good", {"arch": "mlp", "config": '{"hidden": [[256]]}'}, 422, "ConfigError", SIZE_RULE),
        ("deep-meta", {}, 422, "ConfigError", "metadata `canon.config` is nested"),
        ("huge-meta", {}, 422, "SpecMismatchError", "missing tensor `fc1.weight`"),
        (
            "good",
            {"arch": "mlp", "config": json.dumps({**CONFIG, "in_features": 2**20})},
            422,
            "SpecMismatchError",
            "shape",
        ),
    ],
)
def test_hostile_uploads_are_4xx(
    client: tuple[TestClient, Path],
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    params: dict[str, str],
    status: int,
    kind: str,
    pattern: str,
):
    """Deep headers and configs, absurd sizes: one 4xx JSON error, the model never built."""
    import canon.zoo._ingest

    def refuse(*args: object) -> None:
        raise AssertionError("the zoo built the model on the CPU")

    monkeypatch.setattr(canon.zoo._ingest, "spec_for", refuse)  # a 500 if reached
    app, _ = client
    content = {
        "good": lambda: _checkpoint(CONFIG),
        "deep-header": lambda: struct.pack("<Q", 200_000) + b"[" * 200_000,
        "deep-meta": lambda: _header_only({"canon.architecture": "mlp", "canon.config": DEEP}),
        "huge-meta": lambda: _header_only(
            {
                "canon.architecture": "mlp",
                "canon.config": json.dumps({"in_features": 2**20, "hidden": [2**10]}),
            }
        ),
    }[body]()
    response = app.post(
        "/api/entries",
        params={"name": "hostile", **params},
        content=content,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and pattern in error["message"], error
    assert "\n" not in error["message"]


def test_deep_json_bodies_are_4xx(client: tuple[TestClient, Path]):
    """A deeply nested JSON request body is a 4xx JSON error, not a 500."""
    app, _ = client
    for path in ("/api/compare", "/api/table"):
        response = app.post(
            path, content=b"[" * 500_000, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.text
        assert "error" in response.json()


# -- hub pull -----------------------------------------------------------------------------

HUB_TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=HUB_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a pushed zoo of two small MLPs (the template of each hostile repo)."""
    with Zoo.open(tmp_path_factory.mktemp("hub") / "source") as zoo:
        for seed in range(2):
            torch.manual_seed(seed)
            state = build_model("mlp", {"in_features": 64, "hidden": [4]}).state_dict()
            zoo.add(
                state,
                name=f"net{seed}",
                architecture="mlp",
                config={"in_features": 64, "hidden": [4]},
                dataset="digits",
            )
        push(zoo, "lab/template", endpoint=hub.endpoint, token=HUB_TOKEN)
    return hub.files("lab/template")


def _pull(hub: FakeHub, repo: str, files: dict[str, bytes | None], tmp_path: Path) -> None:
    hub.commit(repo, files)
    with Zoo.open(tmp_path / "victim") as zoo:
        pull(zoo, repo, endpoint=hub.endpoint, token=HUB_TOKEN, cache_dir=tmp_path / "hf-cache")


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("deep-manifest", f"{MANIFEST_FILE} is nested 100000 levels deep"),
        ("deep-results", f"{RESULTS_FILE} is nested 100000 levels deep"),
        ("hidden-1e9", "entry `net0` cannot be built: config `hidden` of `mlp` must be"),
        ("hidden-nested", "entry `net0` cannot be built: config `hidden` of `mlp` must be"),
        ("missing-object", "lists `net0` but the repository has no object objects/"),
    ],
)
def test_hostile_pulls_are_one_line_manifest_errors(
    hub: FakeHub, pushed: dict[str, bytes], tmp_path: Path, case: str, pattern: str
):
    """Deep manifests, absurd configs, missing objects: one InvalidManifestError, nothing added."""
    manifest = json.loads(pushed[MANIFEST_FILE])
    first = manifest["entries"][0]
    files: dict[str, bytes | None] = dict(pushed)
    if case == "deep-manifest":
        files[MANIFEST_FILE] = DEEP.encode()
    elif case == "deep-results":
        files[RESULTS_FILE] = DEEP.encode()
    elif case == "hidden-1e9":
        first["config"]["hidden"] = [1e9]
    elif case == "hidden-nested":
        first["config"]["hidden"] = [[256]]
    elif case == "missing-object":
        files[object_path(first["id"])] = None
    if case.startswith("hidden"):
        files[MANIFEST_FILE] = json.dumps(manifest).encode()
    with pytest.raises(InvalidManifestError, match=pattern) as exc:
        _pull(hub, f"evil/{case}", files, tmp_path)
    one_line(exc)
    if case == "missing-object":
        assert object_path(first["id"]) in str(exc.value)
    with Zoo.open(tmp_path / "victim") as zoo:
        assert len(zoo) == 0


def test_pull_without_manifest_says_so(hub: FakeHub, pushed: dict[str, bytes], tmp_path: Path):
    """A repository without a manifest is a HubError naming the missing manifest."""
    files: dict[str, bytes | None] = {**pushed, MANIFEST_FILE: None}
    with pytest.raises(HubError, match=f"holds no canon zoo \\(no {MANIFEST_FILE}\\)") as exc:
        _pull(hub, "evil/no-manifest", files, tmp_path)
    one_line(exc)
