"""The hostile-input corpus: malformed and malicious inputs for the CLI, the Hub pull and the
service, written as data (``Case(id, setup, argv/request, expect)``) for tests/test_hostile.py.

Every case gets a fresh copy of a small template zoo (three MLPs, index built, with
``manifest.json``), a ``marker`` path that hostile code would create if it ever ran, and a
folder on ``sys.path`` / ``$PYTHONPATH`` for modules that create the marker when imported.
A case's ``setup(ctx)`` damages what it needs and returns what to run: a CLI argv
(``--zoo`` and ``--device cpu`` are appended unless given), or a :class:`Request` for the
service. Unless ``expect`` says otherwise a case must exit 1 with one short clean line on
stderr (or answer 4xx with one JSON error), leave the zoo byte-for-byte as it was, and
leave the marker absent.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from canon.zoo import CACHE_VERSION

__all__ = [
    "CASES",
    "CONFIG",
    "TOKEN",
    "Case",
    "Ctx",
    "Expect",
    "Request",
    "World",
    "build_world",
]

CONFIG: dict[str, Any] = {"in_features": 64, "hidden": [8], "classes": 10}
CONFIG_JSON = json.dumps(CONFIG)
TOKEN = "hostile-token-5b2d"
HUB_TOKEN = "hf_test_token"
NAMES = ("n0", "n1", "n2")
MANIFEST = "manifest.json"
INDEX = "canon.sqlite"
HUB_MANIFEST = "canon-manifest.json"
HUB_RESULTS = "canon-results.json"
MiB = 1 << 20
URL_HUGE = 50_000  # a huge name in a URL (the HTTP client refuses URLs over 64 KiB)
DEEP = 100_000  # nesting depth of the deeply nested JSON cases
DEEP_SLOT = "@@deeply-nested@@"  # a value hub_repo replaces by a list nested 3000 deep
NAN_SLOT = "@@nan@@"  # a value hub_repo replaces by the (non-standard) JSON token NaN


# -- the world every case starts from ------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What the session builds once: the template zoo and the bytes cases are made from."""

    template: Path  # an indexed zoo (n0, n1, n2) that also holds manifest.json
    ids: dict[str, str]  # name -> object id in the template
    state: dict[str, torch.Tensor]  # a fourth net of the family, not in the zoo
    good: bytes  # its safetensors bytes with canon metadata (mlp, CONFIG)
    plain: bytes  # its safetensors bytes without metadata
    remote: dict[str, Any]  # the manifest of another zoo of the family (r0, r1)
    remote_objects: dict[str, bytes]  # that zoo's objects by repository path


def _net(seed: int) -> dict[str, torch.Tensor]:
    from canon.architectures import build_model

    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build_model("mlp", CONFIG).state_dict().items()}


def build_world(base: Path) -> World:
    """Build the template zoo and the remote zoo under ``base`` (once per session)."""
    from canon.checkpoint import serialize
    from canon.zoo import Zoo
    from canon.zoo._manifest import manifest, object_path

    template = base / "template"
    with Zoo.open(template) as zoo:
        for seed, name in enumerate(NAMES):
            zoo.add(
                _net(seed), name=name, architecture="mlp", config=CONFIG, dataset="digits",
                tags={"seed": seed}, metrics={"train_error": 0.5, "test_error": 0.5},
            )  # fmt: skip
        zoo.write_manifest()
        ids = {e.name: e.id for e in zoo.entries()}
    remote_root = base / "remote"
    with Zoo.open(remote_root) as zoo:
        for seed in (20, 21):
            zoo.add(
                _net(seed), name=f"r{seed - 20}", architecture="mlp", config=CONFIG,
                dataset="digits", metrics={"train_error": 0.25},
            )  # fmt: skip
        remote = manifest(zoo)
        objects = {object_path(e.id): zoo.objects.path(e.id).read_bytes() for e in zoo.entries()}
    state = _net(10)
    meta = {"canon.architecture": "mlp", "canon.config": json.dumps(CONFIG)}
    return World(template, ids, state, serialize(state, meta), serialize(state), remote, objects)


# -- what a case gets and returns ----------------------------------------------------------


@dataclass
class Ctx:
    """One case's sandbox: a fresh zoo copy, a marker path, a module folder, the world."""

    world: World
    root: Path  # the case's own temp folder
    zoo: Path  # the zoo (a copy of the template; a case may point it elsewhere)
    marker: Path  # created by hostile code if it ever runs
    mods: Path  # on sys.path / $PYTHONPATH while the case runs
    hub: Any = None  # the FakeHub of the hub cases
    env: dict[str, str] = field(default_factory=dict)  # extra environment (subprocess runs)

    def file(self, name: str, data: bytes) -> str:
        """Write ``data`` to a file of the case's folder; its path."""
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def marker_module(self) -> str:
        """A module on the path that creates the marker when imported; `module:build`."""
        name = f"hostile_mark_{uuid.uuid4().hex[:12]}"
        (self.mods / f"{name}.py").write_text(
            f"open({str(self.marker)!r}, 'a').write('imported {name}')\n"
            "def build(**config):\n"
            f"    open({str(self.marker)!r}, 'a').write('called')\n"
            "    import torch\n"
            "    return torch.nn.Linear(1, 1)\n"
        )
        return f"{name}:build"

    def touch_code(self) -> tuple[str, dict[str, Any]]:
        """An architecture and config that would run `touch marker` if ever built."""
        return "subprocess:call", {"args": ["touch", str(self.marker)]}

    def obj(self, name: str) -> Path:
        """The object file of the template entry ``name`` in this case's zoo."""
        sha = self.world.ids[name]
        return self.zoo / "objects" / sha[:2] / f"{sha}.safetensors"

    def no_index(self) -> None:
        """Make the zoo a travelling zoo: manifest.json and objects, no index."""
        (self.zoo / INDEX).unlink()

    def edit_manifest(self, edit: Callable[[dict[str, Any]], Any]) -> None:
        """Drop the index and rewrite manifest.json through ``edit``."""
        self.no_index()
        data = json.loads((self.zoo / MANIFEST).read_text())
        edit(data)
        (self.zoo / MANIFEST).write_text(json.dumps(data))

    def sql(self, *statements: tuple[str, Sequence[Any]] | str) -> None:
        """Run SQL on the zoo's index (before the snapshot is taken)."""
        con = sqlite3.connect(self.zoo / INDEX)
        try:
            for st in statements:
                if isinstance(st, str):
                    con.execute(st)
                else:
                    con.execute(*st)
            con.commit()
        finally:
            con.close()

    def hub_repo(
        self,
        edit: Callable[[dict[str, Any], dict[str, bytes]], Any] | None = None,
        raw_manifest: bytes | None = None,
    ) -> str:
        """Craft a Hub repository from the remote zoo (edited); the `pull` argv for it."""
        data = json.loads(json.dumps(self.world.remote))
        files: dict[str, bytes] = dict(self.world.remote_objects)
        if edit is not None:
            edit(data, files)
        repo = f"hostile/{uuid.uuid4().hex[:16]}"
        text = json.dumps(data).replace(f'"{DEEP_SLOT}"', "[" * 3000 + "1" + "]" * 3000)
        text = text.replace(f'"{NAN_SLOT}"', "NaN")
        payload: dict[str, bytes | None] = {
            HUB_MANIFEST: raw_manifest if raw_manifest is not None else text.encode()
        }
        payload.update(files)
        self.hub.commit(repo, payload)
        return repo


@dataclass(frozen=True)
class Request:
    """One HTTP request to the service."""

    method: str
    url: str
    params: Any = None
    headers: dict[str, str] | None = None
    content: bytes | None = None
    json: Any = None
    token: bool = True  # send `Authorization: Bearer TOKEN` (unless headers say otherwise)


@dataclass(frozen=True)
class Expect:
    """What must happen. ``says``: each item (or one of a tuple's items) is in the error line,
    compared case-insensitively. ``code`` None: 0 or 1 (a repair). ``unchanged`` False: the
    zoo may change, and ``check(ctx, outcome, run)`` decides."""

    code: int | None = 1
    says: tuple[str | tuple[str, ...], ...] = ()
    unchanged: bool = True
    check: Callable[..., None] | None = None
    no_index_after: bool = False  # a zoo without index must still have none


@dataclass(frozen=True)
class Case:
    """One hostile input: how to set it up, how to run it, and what must happen."""

    id: str
    category: str
    setup: Callable[[Ctx], Any]  # returns an argv list, or a Request
    expect: Expect = Expect()
    via: str = "cli"  # cli (in-process), subprocess, readonly, service, hub

    def __repr__(self) -> str:
        return f"Case({self.id})"


CASES: list[Case] = []


def case(
    id: str, category: str, expect: Expect = Expect(), via: str = "cli"
) -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    """Register the decorated setup as a case."""

    def register(setup: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        CASES.append(Case(id, category, setup, expect, via))
        return setup

    return register


def add_case(id: str, category: str, setup: Callable[[Ctx], Any], **kw: Any) -> None:
    CASES.append(Case(id, category, setup, **kw))


TRUST = Expect(says=("--trust-code",))
VERIFY_HINT = ("canon verify",)


# -- safetensors builders ------------------------------------------------------------------


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A safetensors file's header (parsed) and its data bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def pack(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """Safetensors bytes from a header (dict or raw bytes) and data; ``length`` overrides."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def edited(world: World, edit: Callable[[dict[str, Any]], Any], plain: bool = False) -> bytes:
    """The good file with its header edited (same data bytes)."""
    header, data = split(world.plain if plain else world.good)
    edit(header)
    return pack(header, data)


def first_tensor(header: dict[str, Any]) -> str:
    return sorted(k for k in header if k != "__metadata__")[0]


def with_meta(world: World, meta: dict[str, str]) -> bytes:
    from canon.checkpoint import serialize

    return serialize(world.state, meta)


def state_bytes(state: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> bytes:
    from canon.checkpoint import serialize

    return serialize(state, meta)


def nan_state(world: World, value: float) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in world.state.items()}
    key = sorted(k for k in state if k.endswith("weight"))[0]
    state[key].view(-1)[3] = value
    return state


def add_argv(path: str, *extra: str, arch: bool = True, name: str = "newnet") -> list[str]:
    arch_args = ["--arch", "mlp", "--config", CONFIG_JSON] if arch else []
    return ["add", path, "--name", name, *arch_args, *extra]


# -- A. safetensors structure and values ---------------------------------------------------

SAFETENSORS_BYTES: dict[str, Callable[[World], bytes]] = {
    "empty-file": lambda w: b"",
    "seven-bytes": lambda w: b"\x01\x00\x00\x00\x00\x00\x00",
    "header-length-max": lambda w: pack(b"{}", length=2**64 - 1),
    "header-length-past-eof": lambda w: pack(b'{"a":1}', length=4096),
    "header-length-zero": lambda w: pack(b"", b"\0" * 64),
    "header-not-utf8": lambda w: pack(b'{"\xff\xfe": 1}'),
    "header-not-json": lambda w: pack(b"hello, world"),
    "header-json-list": lambda w: pack(b"[]"),
    "header-json-string": lambda w: pack(b'"tensor"'),
    "header-json-null": lambda w: pack(b"null"),
    "header-200k-brackets": lambda w: pack(b"[" * 200_000),
    "header-deep-objects": lambda w: pack(b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    "header-nul-bytes": lambda w: pack(b"\0" * 64),
    "metadata-list": lambda w: edited(w, lambda h: h.update(__metadata__=["a"])),
    "metadata-int-values": lambda w: edited(w, lambda h: h.update(__metadata__={"a": 1})),
    "metadata-nested": lambda w: edited(w, lambda h: h.update(__metadata__={"a": {"b": "c"}})),
    "tensor-info-not-object": lambda w: edited(w, lambda h: h.update({first_tensor(h): 7})),
    "dtype-unknown": lambda w: edited(w, lambda h: h[first_tensor(h)].update(dtype="F128")),
    "dtype-missing": lambda w: edited(w, lambda h: h[first_tensor(h)].pop("dtype")),
    "dtype-int64": lambda w: edited(w, lambda h: _retype(h, "I64", 8)),
    "dtype-bool": lambda w: edited(w, lambda h: _retype(h, "BOOL", 1)),
    "shape-negative": lambda w: edited(w, lambda h: h[first_tensor(h)].update(shape=[-1, 64])),
    "shape-floats": lambda w: edited(w, lambda h: h[first_tensor(h)].update(shape=[1.5, 2.0])),
    "shape-string": lambda w: edited(w, lambda h: h[first_tensor(h)].update(shape="8x64")),
    "shape-overflow": lambda w: edited(
        w, lambda h: h[first_tensor(h)].update(shape=[2**62, 2**62, 16])
    ),
    "shape-10k-dims": lambda w: edited(w, lambda h: h[first_tensor(h)].update(shape=[1] * 10_000)),
    "offsets-missing": lambda w: edited(w, lambda h: h[first_tensor(h)].pop("data_offsets")),
    "offsets-reversed": lambda w: edited(
        w,
        lambda h: h[first_tensor(h)].update(data_offsets=h[first_tensor(h)]["data_offsets"][::-1]),
    ),
    "offsets-past-eof": lambda w: edited(
        w, lambda h: h[first_tensor(h)].update(data_offsets=[10**9, 10**9 + 32])
    ),
    "offsets-negative": lambda w: edited(
        w, lambda h: h[first_tensor(h)].update(data_offsets=[-32, 0])
    ),
    "offsets-bignum": lambda w: edited(
        w, lambda h: h[first_tensor(h)].update(data_offsets=[2**70, 2**70 + 32])
    ),
    "offsets-overlap": lambda w: edited(w, _overlap),
    "data-truncated": lambda w: w.good[: len(w.good) - 100],
    "data-trailing-garbage": lambda w: w.good + b"\xde\xad\xbe\xef" * 8,
    "weights-nan": lambda w: state_bytes(nan_state(w, float("nan"))),
    "weights-inf": lambda w: state_bytes(nan_state(w, float("inf"))),
    "weights-neg-inf": lambda w: state_bytes(nan_state(w, float("-inf"))),
    "shapes-wrong": lambda w: state_bytes(
        {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) for k, v in w.state.items()}
    ),
    "tensor-missing": lambda w: state_bytes(dict(sorted(w.state.items())[1:])),
    "tensor-extra": lambda w: state_bytes({**w.state, "extra.weight": torch.zeros(3)}),
    "tensor-name-ansi": lambda w: state_bytes({**w.state, "\x1b[31mevil\n\rname": torch.zeros(3)}),
    "all-tensors-renamed": lambda w: state_bytes({f"x.{k}": v for k, v in w.state.items()}),
    "no-tensors": lambda w: pack(b"{}"),
}


def _retype(header: dict[str, Any], dtype: str, size: int) -> None:
    for k, v in header.items():
        if k != "__metadata__":
            v["dtype"] = dtype
    # offsets no longer match: keep them, the file is inconsistent either way


def _overlap(header: dict[str, Any]) -> None:
    names = sorted(k for k in header if k != "__metadata__")
    a, b = header[names[0]], header[names[1]]
    if (a["data_offsets"][1] - a["data_offsets"][0]) == (
        b["data_offsets"][1] - b["data_offsets"][0]
    ):
        b["data_offsets"] = list(a["data_offsets"])
    else:  # point the second tensor into the first one's bytes
        length = b["data_offsets"][1] - b["data_offsets"][0]
        b["data_offsets"] = [0, length]


for _name, _make in SAFETENSORS_BYTES.items():

    def _setup(ctx: Ctx, make: Callable[[World], bytes] = _make, name: str = _name) -> list[str]:
        return add_argv(ctx.file(f"{name}.safetensors", make(ctx.world)))

    add_case(f"st-{_name}", "safetensors", _setup)


def _meta_case(id: str, meta: Callable[[Ctx], dict[str, str]], expect: Expect = Expect()) -> None:
    def setup(ctx: Ctx) -> list[str]:
        path = ctx.file("meta.safetensors", with_meta(ctx.world, meta(ctx)))
        return add_argv(path, arch=False)

    add_case(f"st-meta-{id}", "safetensors", setup, expect=expect)


_meta_case("none", lambda c: {})
_meta_case(
    "subprocess-call",
    lambda c: {
        "canon.architecture": "subprocess:call",
        "canon.config": json.dumps(c.touch_code()[1]),
    },
    TRUST,
)
_meta_case(
    "os-system",
    lambda c: {"canon.architecture": "os:system",
               "canon.config": json.dumps({"command": f"touch {c.marker}"})},
    TRUST,
)  # fmt: skip
_meta_case(
    "import-marker",
    lambda c: {"canon.architecture": c.marker_module(), "canon.config": "{}"},
    TRUST,
)
_meta_case("unknown-arch", lambda c: {"canon.architecture": "nosucharch", "canon.config": "{}"})
_meta_case("config-not-json", lambda c: {"canon.architecture": "mlp", "canon.config": "{oops"})
_meta_case("config-list", lambda c: {"canon.architecture": "mlp", "canon.config": "[1, 2]"})
_meta_case("config-deep", lambda c: {"canon.architecture": "mlp", "canon.config": "[" * DEEP})
_meta_case(
    "config-hidden-nested",
    lambda c: {"canon.architecture": "mlp",
               "canon.config": json.dumps({**CONFIG, "hidden": [[8]]})},
)  # fmt: skip
_meta_case("arch-1mib", lambda c: {"canon.architecture": "a" * MiB, "canon.config": "{}"})
_meta_case(
    "arch-ansi",
    lambda c: {"canon.architecture": "\x1b[31mmlp\x1b]0;pwned\x07", "canon.config": "{}"},
)


@case("st-add-directory", "safetensors")
def _(ctx: Ctx) -> list[str]:
    (ctx.root / "dir.safetensors").mkdir()
    return add_argv(str(ctx.root / "dir.safetensors"))


@case("st-add-missing-ansi-path", "safetensors")
def _(ctx: Ctx) -> list[str]:
    return add_argv(str(ctx.root / "\x1b[2J\x1b[31mgone.safetensors"))


@case("st-add-dev-null", "safetensors")
def _(ctx: Ctx) -> list[str]:
    return add_argv("/dev/null")


# -- B. .pt pickles ------------------------------------------------------------------------


class EvilSystem:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class EvilCall:
    """Unpickling this runs ``subprocess.call(args)``."""

    def __init__(self, args: list[str]) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        import subprocess

        return (subprocess.call, (self.args,))


class EvilExec:
    """Unpickling this runs ``exec(code)``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        import builtins

        return (builtins.exec, (self.code,))


def _torch_bytes(obj: Any, legacy: bool = False) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


PICKLES: dict[str, tuple[str, Callable[[Ctx], bytes], bool]] = {
    # id: (suffix, bytes, pass --arch)
    "reduce-os-system": (".pt", lambda c: _torch_bytes(
        {**c.world.state, "x": EvilSystem(f"touch {c.marker}")}), True),
    "reduce-os-system-no-arch": (".pt", lambda c: _torch_bytes(
        EvilSystem(f"touch {c.marker}")), False),
    "reduce-legacy-format": (".pt", lambda c: _torch_bytes(
        EvilSystem(f"touch {c.marker}"), legacy=True), True),
    "reduce-raw-pickle": (".pt", lambda c: pickle.dumps(EvilSystem(f"touch {c.marker}")), True),
    "reduce-pth-suffix": (".pth", lambda c: _torch_bytes(EvilSystem(f"touch {c.marker}")), True),
    "reduce-subprocess": (".pt", lambda c: _torch_bytes(
        EvilCall(["touch", str(c.marker)])), True),
    "reduce-exec": (".pt", lambda c: _torch_bytes(
        EvilExec(f"open({str(c.marker)!r}, 'w')")), True),
    "pickled-module": (".pt", lambda c: _torch_bytes(_module(c.world)), True),
    "pickled-module-no-arch": (".pt", lambda c: _torch_bytes(_module(c.world)), False),
    "list-of-tensors": (".pt", lambda c: _torch_bytes(list(c.world.state.values())), True),
    "non-tensor-values": (".pt", lambda c: _torch_bytes({"a": 1, "b": "two"}), True),
    "nested-state": (".pt", lambda c: _torch_bytes({"nested": c.world.state}), True),
    "int-keys": (".pt", lambda c: _torch_bytes(dict(enumerate(c.world.state.values()))), True),
    "garbage": (".pt", lambda c: b"PK\x03\x04 this is not a torch file" * 10, True),
    "empty": (".pt", lambda c: b"", True),
    "truncated-zip": (".pt", lambda c: _torch_bytes(c.world.state)[:300], True),
    "nan-weights": (".pt", lambda c: _torch_bytes(nan_state(c.world, float("nan"))), True),
    "wrong-shapes": (".pt", lambda c: _torch_bytes(
        {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in c.world.state.items()}), True),
}  # fmt: skip


def _module(world: World) -> torch.nn.Module:
    from canon.architectures import build_model

    model = build_model("mlp", CONFIG)
    model.load_state_dict(world.state)
    return model


for _name, (_suffix, _make_pt, _arch) in PICKLES.items():

    def _pt_setup(
        ctx: Ctx, make: Callable[[Ctx], bytes] = _make_pt, suffix: str = _suffix, arch: bool = _arch
    ) -> list[str]:
        return add_argv(ctx.file(f"net{suffix}", make(ctx)), arch=arch)

    add_case(f"pt-{_name}", "pickle", _pt_setup)


# -- C. names, tags, configs, options ------------------------------------------------------

BAD_NAMES = {
    "empty": "",
    "dotdot-slash": "../escape",
    "slash": "a/b",
    "dot-first": ".hidden",
    "dash-first": "-rf",
    "space": "a b",
    "newline": "a\nb",
    "ansi": "\x1b[31mred\x1b[0m",
    "too-long": "x" * 129,
    "one-mib": "x" * MiB,
    "non-ascii": "名前",
    "nul": "a\x00b",
    "rtl-override": "abc\u202edcba",
    "c1-csi": "a\x9b31mb",
}
for _key, _bad in BAD_NAMES.items():
    add_case(
        f"name-{_key}", "input",
        lambda ctx, bad=_bad: add_argv(ctx.file("good.safetensors", ctx.world.good), name=bad),
    )  # fmt: skip

BAD_TAGS = {
    "no-equals": "novalue",
    "empty-key": "=v",
    "ansi-key": "\x1b[2Jk=v",
    "ansi-value": "k=\x1b]0;pwned\x07",
    "newline-key": "k\nx=v",
    "digit-key": "1k=v",
    "value-one-mib": "k=" + "v" * MiB,
    "key-one-mib": "k" * MiB + "=v",
}
for _key, _bad in BAD_TAGS.items():
    add_case(
        f"tag-{_key}", "input",
        lambda ctx, bad=_bad: add_argv(ctx.file("good.safetensors", ctx.world.good), "--tag", bad),
    )  # fmt: skip

BAD_CONFIGS = {
    "truncated": "{",
    "list": "[]",
    "null": "null",
    "string": '"mlp"',
    "infinity": "1e999",
    "unknown-key": json.dumps({**CONFIG, "bogus": 1}),
    "hidden-1e9": json.dumps({**CONFIG, "hidden": [1_000_000_000]}),
    "hidden-float": json.dumps({**CONFIG, "hidden": [1.5]}),
    "hidden-nested": json.dumps({**CONFIG, "hidden": [[256]]}),
    "hidden-string": json.dumps({**CONFIG, "hidden": "abc"}),
    "hidden-negative": json.dumps({**CONFIG, "hidden": [-1]}),
    "hidden-zero": json.dumps({**CONFIG, "hidden": [0]}),
    "in-features-bool": json.dumps({**CONFIG, "in_features": True}),
    "classes-negative": json.dumps({**CONFIG, "classes": -5}),
    "activation-code": json.dumps({**CONFIG, "activation": "os.system"}),
    "nan-literal": '{"in_features": NaN, "hidden": [8], "classes": 10}',
    "huge-int": '{"in_features": 1' + "0" * 5000 + ', "hidden": [8], "classes": 10}',
    "deep-brackets": "[" * DEEP,
    "deep-objects": '{"a":' * DEEP + "1" + "}" * DEEP,
    "deep-in-key": json.dumps(CONFIG)[:-1] + ', "hidden2": ' + "[" * DEEP + "]" * DEEP + "}",
}
for _key, _bad in BAD_CONFIGS.items():
    add_case(
        f"config-{_key}", "input",
        lambda ctx, bad=_bad: [
            "add", ctx.file("plain.safetensors", ctx.world.plain), "--name", "newnet",
            "--arch", "mlp", "--config", bad,
        ],
    )  # fmt: skip

BAD_ARCHS: dict[str, tuple[str, str | None]] = {
    "unknown": ("nosucharch", None),
    "os-system-no-config": ("os:system", None),
    "colon-only": (":", None),
    "module-only": ("os:", None),
    "function-only": (":system", None),
    "missing-module": ("no_such_module_xyz:build", None),
    "returns-non-module": ("json:loads", '{"s": "{}"}'),
    "one-mib": ("a" * MiB, None),
    "one-mib-code": ("os:" + "a" * MiB, None),
    "ansi": ("\x1b[31mmlp\x1b[0m", None),
}
for _key, (_arch_name, _cfg) in BAD_ARCHS.items():
    add_case(
        f"arch-{_key}", "input",
        lambda ctx, a=_arch_name, c=_cfg: [
            "add", ctx.file("plain.safetensors", ctx.world.plain), "--name", "newnet",
            "--arch", a, *(["--config", c] if c is not None else []),
        ],
    )  # fmt: skip

# A command line that does not parse: one line, like every error, and exit 2 (click's code
# for usage errors; 1 is for bad input values).
USAGE_ERRORS: dict[str, Callable[[Ctx], list[str]]] = {
    "add-missing-name": lambda c: ["add", c.file("good.safetensors", c.world.good)],
    "add-bad-kind": lambda c: add_argv(c.file("g.safetensors", c.world.good), "--kind", "bogus"),
    "unknown-option": lambda c: ["list", "--bogus-option"],
    "points-not-int": lambda c: ["compare", "n0", "n1", "--points", "abc"],
    "missing-argument": lambda c: ["show"],
}
for _key, _make_argv in USAGE_ERRORS.items():
    add_case(f"option-{_key}", "input", _make_argv, expect=Expect(code=2))
OPTION_ERRORS: dict[str, Callable[[Ctx], list[str]]] = {
    "add-directory-argument": lambda c: ["add", str(c.zoo / "objects"), "--name", "x"],
    "bad-device": lambda c: ["compare", "n0", "n1", "--points", "3", "--device", "bogus"],
}
for _key, _make_argv in OPTION_ERRORS.items():
    add_case(f"option-{_key}", "input", _make_argv)

ANALYSIS_ERRORS: dict[str, Callable[[Ctx], list[str]]] = {
    "compare-points-1": lambda c: ["compare", "n0", "n1", "--points", "1"],
    "compare-points-0": lambda c: ["compare", "n0", "n1", "--points", "0"],
    "compare-points-negative": lambda c: ["compare", "n0", "n1", "--points", "-5"],
    "compare-points-1-json": lambda c: ["compare", "n0", "n1", "--points", "1", "--json"],
    "compare-unknown": lambda c: ["compare", "n0", "nope"],
    "compare-plot-gif": lambda c: ["compare", "n0", "n1", "--plot", "x.gif"],
    "show-ansi-name": lambda c: ["show", "\x1b[31mnope\x1b]0;pwned\x07"],
    "show-one-mib-name": lambda c: ["show", "n" * MiB],
    "rm-unknown": lambda c: ["rm", "nope"],
    "rm-reference": lambda c: ["rm", "n0"],
    "table-one-entry": lambda c: ["table", "n0"],
    "reference-set-unknown": lambda c: ["reference", "set", "\x1b[2Jnope"],
    "list-bad-tag-filter": lambda c: ["list", "--tag", "=v"],
    "list-json-bad-tag": lambda c: ["list", "--tag", "novalue", "--json"],
}
for _key, _make_argv in ANALYSIS_ERRORS.items():
    add_case(f"cmd-{_key}", "input", _make_argv)


# -- D. damaged zoo folders ----------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _bitflip(path: Path, where: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) - 17 if where is None else where
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def _dir_for(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def _zoo_case(id: str, argv: Sequence[str], damage: Callable[[Ctx], Any], **kw: Any) -> None:
    def setup(ctx: Ctx) -> list[str]:
        damage(ctx)
        return list(argv)

    add_case(f"zoo-{id}", "zoo", setup, **kw)


def _index_code(ctx: Ctx, arch: str | None = None) -> None:
    name, config = ctx.touch_code()
    arch = arch or name
    ctx.sql(
        ("UPDATE entries SET architecture = ?, config = ?", (arch, json.dumps(config))),
        ("UPDATE families SET architecture = ?, config = ?", (arch, json.dumps(config))),
    )


# the index
for _cmd in (["list"], ["verify"], ["show", "n0"]):
    _zoo_case(f"index-truncated-{_cmd[0]}", _cmd, lambda c: _truncate(c.zoo / INDEX, 0.3))
    _zoo_case(
        f"index-garbage-{_cmd[0]}", _cmd,
        lambda c: (c.zoo / INDEX).write_bytes(os.urandom(8192)),
    )  # fmt: skip
    _zoo_case(f"index-is-directory-{_cmd[0]}", _cmd, lambda c: _dir_for(c.zoo / INDEX))
_zoo_case("index-is-directory-add", add_argv("x.safetensors"), lambda c: _dir_for(c.zoo / INDEX))
_zoo_case(
    "index-bitflip-header", ["list"], lambda c: _bitflip(c.zoo / INDEX, 3)
)  # "SQLite format 3" magic broken
_zoo_case(
    "index-future-schema", ["list"],
    lambda c: c.sql("UPDATE alembic_version SET version_num = '9999'"),
)  # fmt: skip
_zoo_case(
    "index-future-schema-verify", ["verify"],
    lambda c: c.sql("UPDATE alembic_version SET version_num = '9999'"),
)  # fmt: skip
_zoo_case("index-no-version-table", ["list"], lambda c: c.sql("DROP TABLE alembic_version"))
_zoo_case("index-no-entries-table", ["show", "n0"], lambda c: c.sql("DROP TABLE tags"))
_zoo_case(
    "index-config-not-json", ["show", "n1"],
    lambda c: c.sql(("UPDATE entries SET config = ? WHERE name = 'n1'", ("{oops",))),
)  # fmt: skip
_zoo_case(
    "index-metrics-not-json", ["list", "--json"],
    lambda c: c.sql(("UPDATE entries SET metrics = ? WHERE name = 'n1'", ("[[[",))),
)  # fmt: skip
# Reading an index that names code runs none of it (list, show, verify build no model);
# building one (compare) needs --trust-code.
for _cmd in (["list"], ["show", "n0"], ["verify"]):
    _zoo_case(f"index-code-{_cmd[0]}", _cmd, _index_code, expect=Expect(code=0))
_zoo_case("index-code-compare", ["compare", "n0", "n1", "--points", "3"], _index_code, expect=TRUST)
_zoo_case(
    "index-import-marker-compare", ["compare", "n0", "n1", "--points", "3"],
    lambda c: _index_code(c, c.marker_module()), expect=TRUST,
)  # fmt: skip

# objects under an index
_zoo_case("object-missing-verify", ["verify"], lambda c: c.obj("n1").unlink(), expect=Expect(
    says=(("n1", "missing"),)))  # fmt: skip
_zoo_case(
    "object-missing-compare", ["compare", "n0", "n1", "--points", "3"],
    lambda c: c.obj("n1").unlink(),
)  # fmt: skip
_zoo_case("object-bitflip-verify", ["verify"], lambda c: _bitflip(c.obj("n2")))
_zoo_case("object-truncated-verify", ["verify"], lambda c: _truncate(c.obj("n2")))
_zoo_case(
    "object-truncated-compare", ["compare", "n0", "n2", "--points", "3"],
    lambda c: _truncate(c.obj("n2")),
)  # fmt: skip
_zoo_case(
    "object-header-bitflip-compare", ["compare", "n0", "n2", "--points", "3"],
    lambda c: _bitflip(c.obj("n2"), 20),
)  # fmt: skip
_zoo_case("object-is-directory-verify", ["verify"], lambda c: _dir_for(c.obj("n2")))
_zoo_case(
    "object-is-directory-compare", ["compare", "n0", "n2", "--points", "3"],
    lambda c: _dir_for(c.obj("n2")),
)  # fmt: skip
_zoo_case(
    "object-symlink-passwd-verify", ["verify"],
    lambda c: (c.obj("n2").unlink(), c.obj("n2").symlink_to("/etc/passwd")),
)  # fmt: skip
_zoo_case("objects-dir-missing-verify", ["verify"], lambda c: shutil.rmtree(c.zoo / "objects"))
_zoo_case(
    "objects-dir-is-file-verify", ["verify"],
    lambda c: (shutil.rmtree(c.zoo / "objects"), (c.zoo / "objects").write_bytes(b"x")),
)  # fmt: skip
_zoo_case(
    "objects-dir-is-file-add", add_argv("x.safetensors"),
    lambda c: (shutil.rmtree(c.zoo / "objects"), (c.zoo / "objects").write_bytes(b"x")),
)  # fmt: skip
_zoo_case(
    "shard-is-file-verify", ["verify"],
    lambda c: (shutil.rmtree(c.obj("n1").parent), c.obj("n1").parent.write_bytes(b"x")),
)  # fmt: skip


# zoo paths that are not zoos
@case("zoo-init-on-regular-file", "zoo")
def _(ctx: Ctx) -> list[str]:
    ctx.zoo = ctx.root / "afile"
    ctx.zoo.write_bytes(b"precious")
    return ["init"]


@case("zoo-init-under-regular-file", "zoo")
def _(ctx: Ctx) -> list[str]:
    (ctx.root / "afile").write_bytes(b"precious")
    ctx.zoo = ctx.root / "afile"
    return ["init", "--zoo", str(ctx.root / "afile" / "sub")]


@case("zoo-list-on-regular-file", "zoo")
def _(ctx: Ctx) -> list[str]:
    ctx.zoo = ctx.root / "afile"
    ctx.zoo.write_bytes(b"precious")
    return ["list"]


@case("zoo-pull-into-regular-file", "zoo", via="hub")
def _(ctx: Ctx) -> list[str]:
    ctx.zoo = ctx.root / "afile"
    ctx.zoo.write_bytes(b"precious")
    return ["pull", "lab/none", "--cache-dir", str(ctx.root / "hf")]


_zoo_case(
    "manifest-is-directory", ["list"],
    lambda c: (c.no_index(), _dir_for(c.zoo / MANIFEST)), expect=Expect(no_index_after=True),
)  # fmt: skip

# a travelling zoo (manifest.json + objects, no index) whose rebuild fails
REBUILD = Expect(says=(("n1", "`n1`"), *VERIFY_HINT), no_index_after=True)
REBUILD_ANY = Expect(no_index_after=True)
REBUILD_TRUST = Expect(says=("--trust-code",), no_index_after=True)
_DAMAGE: dict[str, Callable[[Ctx], Any]] = {
    "missing-object": lambda c: c.obj("n1").unlink(),
    "bitflip-object": lambda c: _bitflip(c.obj("n1")),
    "truncated-object": lambda c: _truncate(c.obj("n1")),
    "object-is-directory": lambda c: _dir_for(c.obj("n1")),
}
for _key, _damage in _DAMAGE.items():
    for _cmd in (["list"], ["show", "n0"], ["verify"]):
        _zoo_case(
            f"rebuild-{_key}-{_cmd[0]}", _cmd,
            lambda c, d=_damage: (c.no_index(), d(c)), expect=REBUILD,
        )  # fmt: skip


def _manifest_text(text: bytes) -> Callable[[Ctx], Any]:
    return lambda c: (c.no_index(), (c.zoo / MANIFEST).write_bytes(text))


for _key, _text in {
    "garbage": b"not json {",
    "empty": b"",
    "deep-brackets": b"[" * DEEP,
    "deep-objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "json-list": b"[]",
    "binary": os.urandom(512),
}.items():
    _zoo_case(f"manifest-{_key}", ["list"], _manifest_text(_text), expect=REBUILD_ANY)
_zoo_case("manifest-garbage-verify", ["verify"], _manifest_text(b"not json {"), expect=REBUILD_ANY)


def _entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in data["entries"] if e["name"] == name)


def _code_entry(c: Ctx, arch: str | None = None) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        name, config = c.touch_code()
        for e in data["entries"]:
            e["architecture"] = arch or name
            e["config"] = config

    return edit


MANIFEST_EDITS: dict[str, tuple[Callable[[Ctx], Callable[[dict[str, Any]], Any]], Expect]] = {
    "schema-99": (lambda c: lambda d: d.update(schema_version=99), REBUILD_ANY),
    "entries-not-list": (lambda c: lambda d: d.update(entries={"a": 1}), REBUILD_ANY),
    "name-dotdot": (lambda c: lambda d: _entry(d, "n1").update(name="../n1"), REBUILD_ANY),
    "name-ansi": (lambda c: lambda d: _entry(d, "n1").update(name="\x1b[31mn1\x1b]0;x\x07"),
                  REBUILD_ANY),
    "object-path-escape": (lambda c: lambda d: _entry(d, "n1").update(object="../../etc/passwd"),
                           REBUILD),
    "id-not-sha": (lambda c: lambda d: _entry(d, "n1").update(id="../../../etc/passwd"),
                   REBUILD_ANY),
    "duplicate-names": (lambda c: lambda d: _entry(d, "n1").update(name="n2"), REBUILD_ANY),
    "hidden-nested": (lambda c: lambda d: _entry(d, "n1")["config"].update(hidden=[[8]]), REBUILD),
    "config-unknown-key": (lambda c: lambda d: _entry(d, "n1")["config"].update(bogus=1), REBUILD),
    "tag-ansi-key": (lambda c: lambda d: _entry(d, "n1").update(tags={"\x1b[2J": "v"}), REBUILD),
    "family-mismatch": (lambda c: lambda d: _entry(d, "n1").update(family="0" * 64), REBUILD),
    "reference-nowhere": (lambda c: lambda d: d.update(references={"0" * 64: "ghost"}),
                          REBUILD_ANY),
    "parent-outside": (lambda c: lambda d: _entry(d, "n1").update(parents=["a" * 64]), REBUILD_ANY),
    "code-arch": (lambda c: _code_entry(c), REBUILD_TRUST),
    "os-system-arch": (lambda c: _code_entry(c, "os:system"), REBUILD_TRUST),
    "import-marker-arch": (lambda c: _code_entry(c, c.marker_module()), REBUILD_TRUST),
}  # fmt: skip
for _key, (_make_edit, _expect) in MANIFEST_EDITS.items():
    _zoo_case(
        f"manifest-{_key}", ["list"],
        lambda c, m=_make_edit: c.edit_manifest(m(c)), expect=_expect,
    )  # fmt: skip
for _cmd in (["show", "n0"], ["verify"], ["compare", "n0", "n1", "--points", "3"]):
    _zoo_case(
        f"manifest-code-arch-{_cmd[0]}", _cmd,
        lambda c: c.edit_manifest(_code_entry(c)), expect=REBUILD_TRUST,
    )  # fmt: skip


# garbage that verify reports but does not fail on (exit 0, nothing written)
def _orphan(c: Ctx) -> None:
    data = c.world.good
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    (c.zoo / "objects" / sha[:2]).mkdir(exist_ok=True)
    (c.zoo / "objects" / sha[:2] / f"{sha}.safetensors").write_bytes(data)


def _temp(c: Ctx) -> None:
    shard = c.obj("n0").parent
    (shard / ".tmp-0123456789abcdef-999-cafe").write_bytes(b"partial write")


_zoo_case("garbage-orphan-verify", ["verify"], _orphan, expect=Expect(code=0))
_zoo_case("garbage-temp-verify", ["verify"], _temp, expect=Expect(code=0))
_zoo_case("garbage-both-verify-json", ["verify", "--json"], lambda c: (_orphan(c), _temp(c)),
          expect=Expect(code=0))  # fmt: skip


# ANSI escapes stored in metadata must come out escaped (these commands succeed)
def _ansi_index(c: Ctx) -> None:
    c.sql(("UPDATE entries SET dataset = ? WHERE name = 'n1'", ("\x1b[31mdigits\x1b]0;pwned\x07",)))


_zoo_case("ansi-dataset-list", ["list"], _ansi_index, expect=Expect(code=0))
_zoo_case("ansi-dataset-show", ["show", "n1"], _ansi_index, expect=Expect(code=0))


# documented repairs: the zoo may change, exactly as documented


def _check_rebuilt(good: tuple[str, ...], recovered: tuple[str, ...] = ()) -> Callable[..., None]:
    """The repair deleted no object and left the entries ``good`` and, indexed again from
    their objects alone, those of ``recovered`` (as ``recovered-<id>``)."""

    def check(ctx: Ctx, outcome: Any, run: Callable[..., Any], before: dict[str, Any]) -> None:
        after_files = run.snapshot(ctx.zoo)[0]
        lost = [p for p in before[0] if p.startswith("objects/") and p not in after_files]
        assert not lost, f"repair deleted objects: {lost}"
        assert (ctx.zoo / INDEX).is_file(), "repair left no index"
        again = run.cli(ctx, ["verify"])
        assert again.code == 0, f"verify after repair: {again.code} {again.stderr!r}"
        listed = run.cli(ctx, ["list", "--json"])
        assert listed.code == 0, listed.stderr
        names = {e["name"] for e in json.loads(listed.stdout)["entries"]}
        expected = {*good, *(f"recovered-{ctx.world.ids[n][:12]}" for n in recovered)}
        assert names == expected, names

    return check


def _check_kept(ctx: Ctx, outcome: Any, run: Callable[..., Any], before: dict[str, Any]) -> None:
    """The repair kept the orphan object (not in canon's stored form, so not indexed) and
    changed no file but the index."""
    assert outcome.code == 0, outcome.stderr
    after = run.snapshot(ctx.zoo)[0]
    changed = {p for p in set(before[0]) | set(after) if before[0].get(p) != after.get(p)}
    assert changed <= {INDEX}, changed
    assert "kept 1 objects" in outcome.stdout, outcome.stdout
    assert run.cli(ctx, ["verify"]).code == 0


def _check_reclaimed(
    gone: Callable[[Ctx], list[str]],
) -> Callable[..., None]:
    def check(ctx: Ctx, outcome: Any, run: Callable[..., Any], before: dict[str, Any]) -> None:
        assert outcome.code == 0, outcome.stderr
        after = run.snapshot(ctx.zoo)[0]
        removed = {p for p in before[0] if p not in after} - {INDEX}
        assert removed == set(gone(ctx)), removed
        changed = {p for p in after if p in before[0] and after[p] != before[0][p]} - {INDEX}
        assert not changed and not set(after) - set(before[0]) - {INDEX}, changed
        assert run.cli(ctx, ["verify"]).code == 0

    return check


def _temp_path(c: Ctx) -> list[str]:
    return [str((c.obj("n0").parent / ".tmp-0123456789abcdef-999-cafe").relative_to(c.zoo))]


for _key, _damage in _DAMAGE.items():
    _zoo_case(
        f"repair-rebuild-{_key}", ["verify", "--repair"],
        lambda c, d=_damage: (c.no_index(), d(c)),
        expect=Expect(code=None, unchanged=False, check=_check_rebuilt(("n0", "n2"))),
    )  # fmt: skip
_zoo_case(
    "repair-rebuild-code-arch", ["verify", "--repair"],
    lambda c: c.edit_manifest(lambda d: _entry(d, "n1").update(
        architecture=c.touch_code()[0], config=c.touch_code()[1])),
    expect=Expect(code=None, unchanged=False, check=_check_rebuilt(("n0", "n2"), ("n1",))),
)  # fmt: skip
_zoo_case(
    "repair-orphan", ["verify", "--repair"], _orphan,
    expect=Expect(code=0, unchanged=False, check=_check_kept),
)  # fmt: skip
_zoo_case(
    "repair-temp", ["verify", "--repair"], _temp,
    expect=Expect(code=0, unchanged=False, check=_check_reclaimed(_temp_path)),
)  # fmt: skip

# read-only zoos, through a subprocess that cannot write (see the test module)
add_case("ro-list", "zoo", lambda c: ["list"], expect=Expect(code=0), via="readonly")
add_case("ro-verify", "zoo", lambda c: ["verify"], expect=Expect(code=0), via="readonly")
add_case("ro-rm", "zoo", lambda c: ["rm", "n2"], via="readonly")
add_case(
    "ro-verify-repair", "zoo", lambda c: (_orphan(c), ["verify", "--repair"])[1],
    expect=Expect(says=("read-only",)), via="readonly",
)  # fmt: skip
add_case(
    "ro-list-no-index", "zoo", lambda c: (c.no_index(), ["list"])[1],
    expect=Expect(says=("read-only", "no index yet"), no_index_after=True), via="readonly",
)  # fmt: skip
add_case(
    "ro-verify-no-index", "zoo", lambda c: (c.no_index(), ["verify"])[1],
    expect=Expect(code=0, no_index_after=True), via="readonly",
)  # fmt: skip

# a handful through real processes (the console entry point, PYTHONPATH, exit codes)
add_case(
    "proc-import-marker-manifest", "zoo",
    lambda c: (c.edit_manifest(_code_entry(c, c.marker_module())), ["list"])[1],
    expect=REBUILD_TRUST, via="subprocess",
)  # fmt: skip
add_case(
    "proc-index-garbage", "zoo",
    lambda c: ((c.zoo / INDEX).write_bytes(os.urandom(8192)), ["list", "--json"])[1],
    via="subprocess",
)  # fmt: skip
add_case(
    "proc-config-deep", "input",
    lambda c: ["add", c.file("p.safetensors", c.world.plain), "--name", "x", "--arch", "mlp",
               "--config", "[" * DEEP],
    via="subprocess",
)  # fmt: skip


# -- E. Hub manifests and objects ----------------------------------------------------------


def _pull(ctx: Ctx, repo: str, *extra: str) -> list[str]:
    return ["pull", repo, "--cache-dir", str(ctx.root / "hf"), "--token", HUB_TOKEN, *extra]


def _hub_case(
    id: str,
    edit: Callable[[Ctx, dict[str, Any], dict[str, bytes]], Any] | None = None,
    raw: Callable[[Ctx], bytes] | None = None,
    expect: Expect = Expect(),
    extra: Sequence[str] = (),
) -> None:
    def setup(ctx: Ctx) -> list[str]:
        repo = ctx.hub_repo(
            (lambda d, f: edit(ctx, d, f)) if edit is not None else None,
            raw(ctx) if raw is not None else None,
        )
        return _pull(ctx, repo, *extra)

    add_case(f"hub-{id}", "hub", setup, expect=expect, via="hub")


def _r(data: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return data["entries"][i]


def _obj_path(data: dict[str, Any], i: int = 0) -> str:
    return str(_r(data, i)["object"])


def _replace_object(data: dict[str, Any], files: dict[str, bytes], new: bytes) -> None:
    """Give entry 0 new object bytes under their own (consistent) id."""
    import hashlib

    old = _obj_path(data)
    sha = hashlib.sha256(new).hexdigest()
    del files[old]
    _r(data).update(id=sha, object=f"objects/{sha[:2]}/{sha}.safetensors")
    files[_r(data)["object"]] = new


for _key, _raw in {
    "manifest-garbage": lambda c: b"not json {",
    "manifest-empty": lambda c: b"",
    "manifest-deep-brackets": lambda c: b"[" * DEEP,
    "manifest-deep-objects": lambda c: b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "manifest-json-list": lambda c: b"[]",
    "manifest-not-utf8": lambda c: b'{"format": "\xff\xfe"}',
}.items():
    _hub_case(_key, raw=_raw)

HUB_EDITS: dict[str, tuple[Callable[[Ctx, dict[str, Any], dict[str, bytes]], Any], Expect]] = {
    "format-wrong": (lambda c, d, f: d.update(format="evil"), Expect()),
    "schema-99": (lambda c, d, f: d.update(schema_version=99), Expect()),
    "entries-not-list": (lambda c, d, f: d.update(entries="r0"), Expect()),
    "code-arch": (lambda c, d, f: [e.update(architecture=c.touch_code()[0],
                                            config=c.touch_code()[1]) for e in d["entries"]],
                  TRUST),
    "os-system-arch": (lambda c, d, f: [e.update(architecture="os:system",
                                                 config={"command": f"touch {c.marker}"})
                                        for e in d["entries"]], TRUST),
    "import-marker-arch": (lambda c, d, f: [e.update(architecture=c.marker_module(), config={})
                                            for e in d["entries"]], TRUST),
    "hidden-1e9": (lambda c, d, f: _r(d)["config"].update(hidden=[1_000_000_000]), Expect()),
    "hidden-nested": (lambda c, d, f: _r(d)["config"].update(hidden=[[256]]), Expect()),
    "hidden-float": (lambda c, d, f: _r(d)["config"].update(hidden=[1.5]), Expect()),
    "config-deep": (lambda c, d, f: _r(d).update(config={"hidden": DEEP_SLOT}),
                    Expect()),
    "config-unknown-key": (lambda c, d, f: _r(d)["config"].update(bogus=1), Expect()),
    "object-absolute": (lambda c, d, f: _r(d).update(object="/tmp/evil.safetensors"), Expect()),
    "object-dotdot": (lambda c, d, f: _r(d).update(object="../../evil.safetensors"), Expect()),
    "id-path": (lambda c, d, f: _r(d).update(id="../../../evil"), Expect()),
    "object-missing": (lambda c, d, f: f.pop(_obj_path(d)), Expect()),
    "object-swapped": (lambda c, d, f: f.update({_obj_path(d): f[_obj_path(d, 1)]}), Expect()),
    "object-truncated": (lambda c, d, f: f.update({_obj_path(d): f[_obj_path(d)][:200]}),
                         Expect()),
    "object-garbage-own-id": (lambda c, d, f: _replace_object(d, f, b"garbage " * 64), Expect()),
    "object-nan-own-id": (lambda c, d, f: _replace_object(
        d, f, state_bytes(nan_state(c.world, float("nan")),
                          {"canon.architecture": "mlp", "canon.config": CONFIG_JSON})), Expect()),
    "object-header-deep-own-id": (lambda c, d, f: _replace_object(d, f, pack(b"[" * 200_000)),
                                  Expect()),
    "object-code-metadata-own-id": (lambda c, d, f: _replace_object(d, f, state_bytes(
        c.world.state, {"canon.architecture": c.touch_code()[0],
                        "canon.config": json.dumps(c.touch_code()[1])})), Expect()),
    "name-dotdot": (lambda c, d, f: _r(d).update(name="../r0"), Expect()),
    "name-ansi": (lambda c, d, f: _r(d).update(name="\x1b[31mr0\x1b]0;x\x07"), Expect()),
    "name-one-mib": (lambda c, d, f: _r(d).update(name="r" * MiB), Expect()),
    "name-clash": (lambda c, d, f: (_r(d).update(name="n0"), d.update(references={
        k: "n0" if v == "r0" else v for k, v in d["references"].items()})),
        Expect(says=("--rename",))),
    "tag-ansi-key": (lambda c, d, f: _r(d).update(tags={"\x1b[2Jk": "v"}), Expect()),
    "tag-value-one-mib": (lambda c, d, f: _r(d).update(tags={"k": "v" * MiB}), Expect()),
    "metrics-nan": (lambda c, d, f: _r(d).update(metrics={"train_error": NAN_SLOT}), Expect()),
    "metrics-deep": (lambda c, d, f: _r(d).update(metrics={"x": DEEP_SLOT}), Expect()),
    "created-not-a-date": (lambda c, d, f: _r(d).update(created="yesterday"), Expect()),
    "parents-outside": (lambda c, d, f: _r(d).update(parents=["a" * 64]), Expect()),
    "references-nowhere": (lambda c, d, f: d.update(references={"0" * 64: "ghost"}), Expect()),
    "duplicate-names": (lambda c, d, f: _r(d, 1).update(name=_r(d)["name"]), Expect()),
    "family-mismatch": (lambda c, d, f: _r(d).update(family="0" * 64), Expect()),
    "dataset-control-chars": (lambda c, d, f: _r(d).update(dataset="digits\x1b[2J"), Expect()),
    "kind-bogus": (lambda c, d, f: _r(d).update(kind="evil"), Expect()),
}  # fmt: skip
for _key, (_edit, _expect) in HUB_EDITS.items():
    _hub_case(_key, edit=_edit, expect=_expect)


def _deep_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _results(text: bytes) -> Callable[[Ctx, dict[str, Any], dict[str, bytes]], Any]:
    return lambda c, d, f: f.update({HUB_RESULTS: text})


_hub_case("results-garbage", edit=_results(b"not json"))
_hub_case("results-deep", edit=_results(b"[" * DEEP))
_hub_case("results-wrong-format", edit=_results(b'{"format": "evil"}'))
_hub_case(
    "results-bad-pair", edit=_results(json.dumps(
        {"format": "canon-results", "cache_version": CACHE_VERSION, "pairs": [{"a": "../x"}]}
    ).encode()),
)  # fmt: skip


@case("hub-repo-missing", "hub", via="hub")
def _(ctx: Ctx) -> list[str]:
    return _pull(ctx, "hostile/no-such-repo")


@case("hub-revision-missing", "hub", via="hub")
def _(ctx: Ctx) -> list[str]:
    return _pull(ctx, ctx.hub_repo(), "--revision", "v999")


@case("hub-revision-ansi", "hub", via="hub")
def _(ctx: Ctx) -> list[str]:
    return _pull(ctx, ctx.hub_repo(), "--revision", "\x1b[31mmain\x1b]0;x\x07")


for _key, _repo_id in {"dotdot": "../x", "three-parts": "a/b/c", "ansi": "\x1b[2Ja/b"}.items():
    add_case(
        f"hub-repo-id-{_key}", "hub", lambda c, r=_repo_id: _pull(c, r), via="hub",
    )  # fmt: skip


# -- F. serve requests ---------------------------------------------------------------------

UPLOAD = "/api/entries"


def _upload(body: Callable[[Ctx], bytes], **params: Any) -> Callable[[Ctx], Request]:
    def setup(ctx: Ctx) -> Request:
        query = {"name": "up-x", "arch": "mlp", "config": CONFIG_JSON}
        for k, v in params.items():
            value = v(ctx) if callable(v) else v
            if value is None:
                query.pop(k, None)
            else:
                query[k] = value
        return Request("POST", UPLOAD, params=query, content=body(ctx))

    return setup


def _good(c: Ctx) -> bytes:
    return c.world.good


SERVICE: dict[str, Callable[[Ctx], Request]] = {
    "upload-header-200k-brackets": _upload(lambda c: pack(b"[" * 200_000)),
    "upload-header-deep-objects": _upload(lambda c: pack(b'{"a":' * DEEP + b"1" + b"}" * DEEP)),
    "upload-config-deep": _upload(_good, config="[" * 15_000),
    "upload-config-not-object": _upload(_good, config="[1]"),
    "upload-hidden-1e9": _upload(_good, config=json.dumps({**CONFIG, "hidden": [10**9]})),
    "upload-hidden-nested": _upload(_good, config=json.dumps({**CONFIG, "hidden": [[256]]})),
    "upload-hidden-float": _upload(_good, config=json.dumps({**CONFIG, "hidden": [1.5]})),
    "upload-metadata-code": _upload(
        lambda c: with_meta(c.world, {"canon.architecture": "subprocess:call",
                                      "canon.config": json.dumps(c.touch_code()[1])}),
        arch=None, config=None),
    "upload-metadata-import-marker": _upload(
        lambda c: with_meta(c.world, {"canon.architecture": c.marker_module(),
                                      "canon.config": "{}"}), arch=None, config=None),
    "upload-arch-os-system": _upload(
        _good, arch="os:system", config=lambda c: json.dumps({"command": f"touch {c.marker}"})),
    "upload-arch-import-marker": _upload(_good, arch=lambda c: c.marker_module(), config="{}"),
    "upload-pickle-reduce": _upload(lambda c: _torch_bytes(EvilSystem(f"touch {c.marker}"))),
    "upload-empty": _upload(lambda c: b""),
    "upload-garbage": _upload(lambda c: os.urandom(1024)),
    "upload-nan": _upload(lambda c: state_bytes(nan_state(c.world, float("nan")))),
    "upload-truncated": _upload(lambda c: c.world.good[:-100]),
    "upload-name-dotdot": _upload(_good, name="../x"),
    "upload-name-dot": _upload(_good, name=".hidden"),
    "upload-name-empty": _upload(_good, name=""),
    "upload-name-huge": _upload(_good, name="x" * URL_HUGE),
    "upload-name-ansi": _upload(_good, name="\x1b[31mx"),
    "upload-name-nul": _upload(_good, name="a\x00b"),
    "upload-name-taken": _upload(_good, name="n0"),
    "upload-tag-empty-key": _upload(_good, tag="=v"),
    "upload-tag-ansi": _upload(_good, tag="\x1b[2Jk=v"),
    "upload-too-many-tags": lambda c: Request(
        "POST", UPLOAD, content=c.world.good,
        params=[("name", "up-x"), ("arch", "mlp"), ("config", CONFIG_JSON)]
        + [("tag", f"k{i}=v") for i in range(40)]),
    "upload-kind-bogus": _upload(_good, kind="evil"),
    "upload-dataset-file": _upload(_good, dataset="npz:/etc/hostname"),
    "upload-dataset-long": _upload(_good, dataset="d" * 5000),
    "upload-no-token": lambda c: Request("POST", UPLOAD, params={"name": "up-x"},
                                         content=c.world.good, token=False),
    "upload-wrong-token": lambda c: Request("POST", UPLOAD, params={"name": "up-x"},
                                            content=c.world.good,
                                            headers={"Authorization": "Bearer nope"}),
    "upload-basic-auth": lambda c: Request("POST", UPLOAD, params={"name": "up-x"},
                                           content=c.world.good,
                                           headers={"Authorization": f"Basic {TOKEN}"}),
    "upload-token-one-mib": lambda c: Request("POST", UPLOAD, params={"name": "up-x"},
                                              content=c.world.good,
                                              headers={"Authorization": "Bearer " + "t" * MiB}),
    "upload-token-prefix": lambda c: Request("POST", UPLOAD, params={"name": "up-x"},
                                             content=c.world.good,
                                             headers={"Authorization": f"Bearer {TOKEN[:-1]}"}),
    "get-entry-traversal": lambda c: Request("GET", "/api/entries/..%2F..%2Fetc%2Fpasswd"),
    "get-weights-traversal": lambda c: Request("GET", "/api/entries/..%2Fcanon.sqlite/weights"),
    "get-entry-unknown": lambda c: Request("GET", "/api/entries/nope"),
    "get-entry-ansi": lambda c: Request("GET", "/api/entries/%1B%5B31mx"),
    "get-entry-huge": lambda c: Request("GET", "/api/entries/" + "x" * URL_HUGE),
    "get-weights-unknown": lambda c: Request("GET", "/api/entries/nope/weights"),
    "list-bad-tag": lambda c: Request("GET", "/api/entries", params={"tag": "\x1b[2J"}),
    "list-long-arch": lambda c: Request("GET", "/api/entries", params={"arch": "a" * 5000}),
    "compare-deep-body": lambda c: Request("POST", "/api/compare", content=b"[" * DEEP,
                                           headers={"content-type": "application/json"}),
    "compare-deep-objects": lambda c: Request(
        "POST", "/api/compare", content=b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        headers={"content-type": "application/json"}),
    "compare-not-utf8": lambda c: Request("POST", "/api/compare", content=b'{"a": "\xff\xfe"}',
                                          headers={"content-type": "application/json"}),
    "compare-points-1": lambda c: Request("POST", "/api/compare",
                                          json={"a": "n0", "b": "n1", "points": 1}),
    "compare-unknown": lambda c: Request("POST", "/api/compare", json={"a": "n0", "b": "zzz"}),
    "compare-name-traversal": lambda c: Request("POST", "/api/compare",
                                                json={"a": "../n0", "b": "n1"}),
    "compare-name-object": lambda c: Request("POST", "/api/compare",
                                             json={"a": {"$ne": 1}, "b": "n1"}),
    "table-too-many": lambda c: Request("POST", "/api/table",
                                        json={"names": [f"n{i}" for i in range(10_000)]}),
    "table-deep-names": lambda c: Request("POST", "/api/table",
                                          json={"names": _deep_list(200)}),
    "figure-traversal": lambda c: Request("GET", "/api/compare/figure.svg",
                                          params={"a": "../x", "b": "n1"}),
    "figure-bad-format": lambda c: Request("GET", "/api/compare/figure.exe",
                                           params={"a": "n0", "b": "n1"}),
    "job-traversal": lambda c: Request("GET", "/api/jobs/..%2F..%2Fetc%2Fpasswd"),
    "job-huge": lambda c: Request("GET", "/api/jobs/" + "j" * URL_HUGE),
    "midpoint-no-token": lambda c: Request("POST", "/api/midpoints", token=False,
                                           json={"a": "n0", "b": "n1", "name": "m"}),
    "midpoint-bad-name": lambda c: Request("POST", "/api/midpoints",
                                           json={"a": "n0", "b": "n1", "name": "../m"}),
    "midpoint-epochs-huge": lambda c: Request("POST", "/api/midpoints",
                                              json={"a": "n0", "b": "n1", "name": "m",
                                                    "epochs": 10**12}),
    "midpoint-lr-huge": lambda c: Request("POST", "/api/midpoints",
                                          json={"a": "n0", "b": "n1", "name": "m", "lr": 1e300}),
    "midpoint-lr-negative": lambda c: Request("POST", "/api/midpoints",
                                              json={"a": "n0", "b": "n1", "name": "m",
                                                    "lr": -1}),
    "midpoint-halvings-huge": lambda c: Request("POST", "/api/midpoints",
                                                json={"a": "n0", "b": "n1", "name": "m",
                                                      "lr_halvings": 10**9}),
}  # fmt: skip
for _key, _make_request in SERVICE.items():
    add_case(f"serve-{_key}", "serve", _make_request, via="service")
