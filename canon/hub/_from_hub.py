"""Add a model straight from a Hub model repository (``hf://ORG/REPO[@REVISION][/FILE]``).

The repository's ``config.json`` names the architecture (a transformers
``model_type`` or a timm ``architecture``: the adapters of
:mod:`canon.architectures`), its safetensors weights are downloaded through
the Hub client's cache (so a cached revision adds again offline, with
``HF_HUB_OFFLINE=1``), each file's sha256 is checked against the one the Hub
gave for it (its LFS etag, the name of the cached blob) and against
``sha256`` when given, and the weights then go through the zoo's own add:
the headers are checked against the architecture before any tensor is read.
Where the library's files differ from canon's layout of the network (GPT-2's
``Conv1D`` weights stored transposed, a tied output layer left out, a base
model's weights saved without its prefix, buffers the library ignores:
:class:`~canon.architectures.LibraryLayout`) the tensors are brought into it
first, after the same header check. A sharded checkpoint
(``model.safetensors.index.json``) is read shard by shard. Pickled weights
(``pytorch_model.bin``, ``.pt``) are refused unread.
The entry records where it came from in its tags (:class:`Provenance`).
A folder holding a model in that form (``save_pretrained``'s, a download, a snapshot of
the Hub cache) adds the same way without the Hub (:func:`add_from_folder`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import torch

from canon._limits import clip, loads_json
from canon.architectures import (
    MAX_CONFIG_BYTES,
    ExpertPiece,
    LibraryLayout,
    adapter_name,
    build_model,
    check_hub_config,
    library_layout,
)
from canon.checkpoint import load_state, read_header
from canon.core import Spec
from canon.core.spec import check_tensors
from canon.errors import CheckpointFormatError, ConfigError, HubError, UntrustedCodeError
from canon.hub._remote import (
    check_repo_id,
    downloader,
    hub_errors,
    quiet_hub_bars,
    snapshot_commit,
)
from canon.zoo import Shards, check_name, declared_spec, sha256_file

if TYPE_CHECKING:
    from canon.zoo import Entry, Zoo

__all__ = [
    "HUB_SCHEME",
    "HubSource",
    "Provenance",
    "add_from_folder",
    "add_from_hub",
    "is_hub_url",
    "parse_hub_url",
]

HUB_SCHEME = "hf://"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
INDEX_FILE = "model" + INDEX_SUFFIX
#: Weights files that are pickles: never downloaded, never read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Bounds on a shard index: its size and the shards it may list.
MAX_INDEX_BYTES = 16 << 20
MAX_SHARDS = 1024
#: The tag keys of the provenance record (``hf.shard.N`` for the N-th shard, from 1).
TAG_PREFIX = "hf."

_REVISION_RE = re.compile(r"[A-Za-z0-9][\w.\-/]{0,199}")
_FILE_RE = re.compile(r"[\w.\-]+(?:/[\w.\-]+){0,7}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubSource:
    """What an ``hf://`` address names: a repository, a revision (None: main) and a file
    (None: ``model.safetensors``, else ``model.safetensors.index.json``)."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"{HUB_SCHEME}{self.repo_id}{at}" + (f"/{self.filename}" if self.filename else "")


@dataclass(frozen=True)
class Provenance:
    """Where an entry added from the Hub came from: the repository, the commit its revision
    resolved to, and each weights file with its sha256 (a sharded checkpoint lists its
    index file, then every shard)."""

    repo_id: str
    revision: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256)

    def tags(self) -> dict[str, str]:
        """The record as entry tags: ``hf.repo``, ``hf.revision``, ``hf.file`` and
        ``hf.sha256`` of the file named, and ``hf.shard.N`` = ``<sha256> <file>`` (as
        ``sha256sum`` prints it) for the shards of a sharded checkpoint."""
        (first, digest), *shards = self.files
        tags = {"hf.repo": self.repo_id, "hf.revision": self.revision, "hf.file": first}
        tags["hf.sha256"] = digest
        for i, (name, sha) in enumerate(shards, start=1):
            tags[f"hf.shard.{i}"] = f"{sha} {name}"
        return tags


def is_hub_url(text: object) -> bool:
    """Whether ``text`` is an ``hf://`` address rather than a file path."""
    return isinstance(text, str) and text.startswith(HUB_SCHEME)


def parse_hub_url(url: str) -> HubSource:
    """``hf://ORG/REPO[@REVISION][/FILE]`` checked, as a :class:`HubSource`.

    A revision holding ``/`` (``refs/pr/1``) is written with ``%2F``. FILE is a
    path inside the repository: safetensors (``.safetensors``) or a shard index
    (``.safetensors.index.json``); pickled weights are refused.
    """
    if not is_hub_url(url):
        raise ConfigError(f"`{clip(url, 120)}` is not an address of the form hf://ORG/REPO")
    rest = url[len(HUB_SCHEME) :]
    owner, _, tail = rest.partition("/")
    name_at, _, filename = tail.partition("/")
    name, at, revision = name_at.partition("@")
    if not owner or not name:
        raise ConfigError(
            f"`{clip(url, 120)}` does not name a repository: write hf://ORG/REPO[@REVISION][/FILE]"
        )
    repo_id = check_repo_id(f"{owner}/{name}")
    rev = unquote(revision) if at else None
    if rev is not None and (not _REVISION_RE.fullmatch(rev) or ".." in rev):
        raise ConfigError(
            f"`{clip(url, 120)}`: the revision must be a branch, tag or commit (letters, digits, "
            "`_.-`, and `/` written as %2F)"
        )
    return HubSource(repo_id, rev, check_weights_file(filename) if filename else None)


def check_weights_file(filename: str) -> str:
    """``filename`` if it is a relative path to safetensors weights or a shard index;
    pickles and anything else are refused before any download."""
    if not _FILE_RE.fullmatch(filename) or any(p in (".", "..") for p in filename.split("/")):
        raise ConfigError(
            f"`{clip(filename, 120)}` is not a file path inside a repository (letters, digits, "
            "`_.-`, folders separated by /)"
        )
    if filename.lower().endswith(PICKLE_SUFFIXES):
        raise CheckpointFormatError(
            f"`{clip(filename, 120)}` holds pickled Python objects, which canon never "
            "downloads nor unpickles; add the repository's .safetensors weights instead",
            path=filename,
        )
    if not filename.endswith((".safetensors", INDEX_SUFFIX)):
        raise ConfigError(
            f"`{clip(filename, 120)}`: canon reads weights from .safetensors files (or a "
            f"sharded checkpoint's {INDEX_FILE})"
        )
    return filename


def add_from_hub(
    zoo: Zoo,
    url: str | HubSource,
    *,
    name: str | None = None,
    dataset: str | None = None,
    tags: Mapping[str, object] | None = None,
    kind: str = "solution",
    sha256: str | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    created: datetime | None = None,
    evaluate: bool = True,
    device: str | torch.device = "auto",
) -> Entry:
    """Add the model of a Hub repository (``hf://ORG/REPO[@REVISION][/FILE]``) to ``zoo``.

    ``config.json`` names the architecture (``hf-transformers/<model_type>`` or
    ``timm/<model>``; its config is the file's content). A config naming the
    repository's own code (``auto_map``) is refused unless ``trust_remote_code``;
    even then canon never runs that code: it builds the library's own
    implementation of the model type, and the header check refuses weights
    that do not fit it. The weights file's sha256 must be the one the Hub gave
    for it and, when given, ``sha256``. ``name`` defaults to the repository's
    name. Downloads go through the Hub cache (``cache_dir``, ``endpoint``, ``token``
    and ``local_files_only`` as :func:`huggingface_hub.hf_hub_download` takes them;
    ``HF_HUB_OFFLINE=1`` makes every call ``local_files_only``). The rest
    is :meth:`canon.zoo.Zoo.add`'s: on any failure the zoo is unchanged.
    """
    from huggingface_hub.errors import EntryNotFoundError

    source = url if isinstance(url, HubSource) else parse_hub_url(url)
    repo_id = source.repo_id
    entry_name = check_name(name if name is not None else repo_id.split("/")[-1])
    expected = _expected_sha(sha256)
    own_tags = _own_tags(tags)
    wanted = source.revision or "main"

    download = downloader(
        repo_id, cache_dir=cache_dir, token=token, endpoint=endpoint,
        local_files_only=local_files_only,
    )  # fmt: skip

    with hub_errors(repo_id, wanted, "add"), quiet_hub_bars(False):
        config_file = download(CONFIG_FILE, wanted)
        at = snapshot_commit(config_file) or wanted  # the commit the revision is
        where = f"{repo_id}@{at[:12]}"
        config = _read_config(config_file, where)
        architecture = adapter_name(config)
        _check_code(config, architecture, where, trust_remote_code)
        filename = source.filename
        if filename is None:
            try:
                weights = download(WEIGHTS_FILE, at)
                filename = WEIGHTS_FILE
            except EntryNotFoundError:
                weights = download(INDEX_FILE, at)  # hub_errors names the file if it is missing
                filename = INDEX_FILE
        else:
            weights = download(filename, at)
        if expected is not None and filename.endswith(INDEX_SUFFIX):
            raise ConfigError(
                f"`sha256` pins one weights file, and {where}'s {filename} is a sharded "
                "checkpoint; add it without `sha256` (the Hub's sha256 of every shard is "
                "checked and recorded)"
            )
        found = _checkpoint_files(lambda shard: download(shard, at), weights, filename, where)
        files = _hashed(found, where)
        if expected is not None and files[0][1] != expected:
            raise HubError(
                f"cannot add `{where}`: {filename} has sha256 {files[0][1]}, not the expected "
                f"{expected}; nothing was added",
                repo_id=repo_id,
                revision=at,
            )
    provenance = Provenance(repo_id, at, files)
    return _add_library_model(
        zoo, architecture, config, _checkpoint(found), name=entry_name, dataset=dataset,
        tags={**own_tags, **provenance.tags()}, kind=kind, created=created, evaluate=evaluate,
        device=device,
    )  # fmt: skip


def add_from_folder(
    zoo: Zoo,
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    dataset: str | None = None,
    tags: Mapping[str, object] | None = None,
    kind: str = "solution",
    trust_remote_code: bool = False,
    created: datetime | None = None,
    evaluate: bool = True,
    device: str | torch.device = "auto",
) -> Entry:
    """Add the model saved in ``folder`` as the Hub's libraries save one: ``config.json``
    and safetensors weights (``model.safetensors``, or a sharded checkpoint's
    ``model.safetensors.index.json`` and its shards), as transformers' ``save_pretrained``
    or ``huggingface-cli download --local-dir`` write them, or a snapshot in the Hub cache.

    Read as :func:`add_from_hub` reads a repository (the same checks, the same
    architectures and layouts), without the Hub. A snapshot of the Hub cache
    (``.../models--ORG--NAME/snapshots/COMMIT``) is recorded as if added from
    ``hf://ORG/NAME@COMMIT`` (``hf.*`` tags), each file checked against the sha256 the
    cache names its blob by; ``name`` defaults to the repository's name there, else to
    the folder's. Pickled weights alone (``pytorch_model.bin``) are refused unread.
    """
    root = Path(folder).resolve()
    where = f"folder `{clip(str(folder), 160)}`"
    snapshot = _cache_snapshot(root)
    default = snapshot[0].split("/")[-1] if snapshot is not None else root.name
    entry_name = check_name(name if name is not None else default)
    own_tags = _own_tags(tags)
    config_file = root / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(
            f"{where} holds no {CONFIG_FILE}; canon adds a folder that a library saved a "
            "model in (config.json and .safetensors weights); give a checkpoint file instead"
        )
    config = _read_config(config_file, where)
    architecture = adapter_name(config)
    _check_code(config, architecture, where, trust_remote_code)
    filename = next((f for f in (WEIGHTS_FILE, INDEX_FILE) if (root / f).is_file()), None)
    if filename is None:
        pickled = sorted(p.name for p in root.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        held = f"; it holds pickled weights ({clip(', '.join(pickled), 80)})" if pickled else ""
        raise CheckpointFormatError(
            f"{where} has no {WEIGHTS_FILE} nor {INDEX_FILE}{held}. canon reads safetensors "
            "only and never unpickles: save the model with save_pretrained (safetensors is its "
            "default), or convert the weights to safetensors where you trust them",
            path=str(root),
        )
    found = _checkpoint_files(partial(_beside, root, where=where), root / filename, filename, where)
    if snapshot is not None:  # recorded as the Hub's, each file checked against its blob's name
        own_tags |= Provenance(snapshot[0], snapshot[1], _hashed(found, where)).tags()
    return _add_library_model(
        zoo, architecture, config, _checkpoint(found), name=entry_name, dataset=dataset,
        tags=own_tags, kind=kind, created=created, evaluate=evaluate, device=device,
    )  # fmt: skip


def _beside(root: Path, shard: str, *, where: str) -> Path:
    """The shard file ``shard`` of the folder ``root`` (its index lists it), which must be there."""
    path = root / shard
    if not path.is_file():
        raise CheckpointFormatError(
            f"{where}: the shard index lists `{clip(shard, 80)}`, which is not in the folder",
            path=str(path),
        )
    return path


def _own_tags(tags: Mapping[str, object] | None) -> dict[str, object]:
    """The user's ``tags``, none of them under :data:`TAG_PREFIX` (canon writes those)."""
    own = dict(tags or {})
    clashes = sorted(k for k in own if str(k).startswith(TAG_PREFIX))
    if clashes:
        raise ConfigError(
            f"tag `{clip(str(clashes[0]), 60)}`: tags under `{TAG_PREFIX}` record where an entry "
            "came from; canon writes them"
        )
    return own


def _cache_snapshot(root: Path) -> tuple[str, str] | None:
    """(repository id, commit) where ``root`` is a snapshot folder of the Hub cache
    (``models--ORG--NAME/snapshots/<40 hex digits>``), else None."""
    repo_folder = root.parent.parent.name
    if root.parent.name != "snapshots" or not re.fullmatch(r"[0-9a-f]{40}", root.name):
        return None
    if not repo_folder.startswith("models--"):
        return None
    try:
        return check_repo_id(repo_folder[len("models--") :].replace("--", "/")), root.name
    except HubError:
        return None


def _checkpoint_files(
    fetch: Callable[[str], Path], weights: Path, filename: str, where: str
) -> list[tuple[str, Path]]:
    """The files of the checkpoint ``weights`` (named ``filename``), each (name, path): the
    safetensors file itself, or a shard index and the shards it lists, which ``fetch``
    gets by name."""
    files = [(filename, weights)]
    if filename.endswith(INDEX_SUFFIX):
        files += [(shard, fetch(shard)) for shard in _shard_names(weights, filename, where)]
    return files


def _checkpoint(files: list[tuple[str, Path]]) -> Path | Shards:
    """What :meth:`~canon.zoo.Zoo.add` reads of :func:`_checkpoint_files`' ``files``."""
    if files[0][0].endswith(INDEX_SUFFIX):
        return Shards(tuple(path for _, path in files[1:]))
    return files[0][1]


def _hashed(files: list[tuple[str, Path]], where: str) -> tuple[tuple[str, str], ...]:
    """Each file's (name, sha256), checked against the sha256 a Hub cache names its blob
    by (:func:`_verified`)."""
    return tuple((name, _verified(path, name, where)) for name, path in files)


def _add_library_model(
    zoo: Zoo,
    architecture: str,
    config: dict[str, Any],
    checkpoint: Path | Shards,
    **options: Any,
) -> Entry:
    """:meth:`~canon.zoo.Zoo.add` of a library's ``checkpoint`` of ``architecture`` built
    from ``config`` (a config.json), brought into canon's layout first where the library's
    differs (:class:`~canon.architectures.LibraryLayout`)."""
    added: Path | Shards | dict[str, torch.Tensor] = checkpoint
    layout = library_layout(build_model(architecture, {"config": config}, device="meta"))
    if layout != LibraryLayout():
        files_in = checkpoint.paths if isinstance(checkpoint, Shards) else (checkpoint,)
        spec = declared_spec(architecture, {"config": config})
        added = _in_canon_layout(files_in, layout, spec)
    return zoo.add(added, architecture=architecture, config={"config": config}, **options)


def _in_canon_layout(
    paths: tuple[Path, ...], layout: LibraryLayout, spec: Spec
) -> dict[str, torch.Tensor]:
    """The tensors of a library's checkpoint files in canon's layout of the network
    (:class:`~canon.architectures.LibraryLayout`): names the library ignores and tied
    names left out, a base model's names given its prefix, the weights the library stores
    transposed (GPT-2's ``Conv1D``) transposed back, experts' weights stacked in 3-D or held
    one per expert (the Hub's Mixtral) in canon's 2-D stacking. Every file's header is
    checked against ``spec`` as it will read before any tensor is; files are read one by
    one."""
    expected = spec.tensor_info
    headers = {path: read_header(path) for path in paths}
    names: dict[Path, dict[str, str]] = {}  # per file: canon's name -> the file's
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    pieces: dict[str, dict[tuple[int, int], tuple[Path, str, ExpertPiece, str]]] = {}
    for path, header in headers.items():
        names[path] = {}
        for name, (shape, dtype) in header.tensors.items():
            piece = layout.piece_of(name)
            if piece is not None:  # one expert's own weight: a part of a stacked one
                key = (piece.expert, piece.part)
                slots = pieces.setdefault(piece.target, {})
                if key in slots or layout.piece_shape(piece, expected[piece.target].shape) != (
                    tuple(shape)
                ):
                    raise CheckpointFormatError(
                        f"tensor `{clip(name, 120)}` is in the files twice, or is not of the "
                        f"shape of one expert's part of `{clip(piece.target, 120)}`"
                    )
                slots[key] = (path, name, piece, dtype)
                continue
            new = layout.name_in(name, expected)
            if new is None or new in layout.tied:
                continue
            if new in found:
                raise CheckpointFormatError(f"tensor `{clip(new, 120)}` is in the files twice")
            found[new] = (layout.shape_in_canon(new, tuple(shape)), dtype)
            names[path][new] = name
    for target, slots in pieces.items():
        parts = next(iter(slots.values()))[2].parts
        every = {(e, p) for e in range(layout.experts(target)) for p in range(parts)}
        dtypes = {dtype for _, _, _, dtype in slots.values()}
        if target in found or len(dtypes) != 1 or set(slots) != every:
            raise CheckpointFormatError(
                f"the files hold {len(slots)} of the {len(every)} expert weights of "
                f"`{clip(target, 120)}` (one per expert and part, of one dtype, and no "
                "stacked one besides)"
            )
        found[target] = (expected[target].shape, dtypes.pop())
        for (e, p), (path, name, _, _) in slots.items():
            names[path][f"{target}#{e}.{p}"] = name
    check_tensors(found, spec, f"the {len(paths)} weights file(s)")
    state: dict[str, torch.Tensor] = {}
    for path, wanted in names.items():
        state.update(load_state(path, names=wanted))
    for target, slots in pieces.items():
        held = {(e, p): state.pop(f"{target}#{e}.{p}") for e, p in slots}
        state[target] = layout.joined(target, held)
    return {name: layout.in_canon(name, t) for name, t in state.items()}


def _expected_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise ConfigError(
            f"`sha256` must be 64 hexadecimal digits (as sha256sum prints), got "
            f"{clip(repr(sha256), 80)}"
        )
    return digest


def _read_config(path: Path, where: str) -> dict[str, Any]:
    """The repository's ``config.json``: bounded JSON, checked by the adapters' rules."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {CONFIG_FILE} is {size} bytes long; canon reads at most 1 MiB")
    what = f"{where}: {CONFIG_FILE}"
    value = loads_json(path.read_bytes(), what=what, max_bytes=MAX_CONFIG_BYTES)
    return check_hub_config(value, what)


def _check_code(config: Mapping[str, Any], architecture: str, where: str, trusted: bool) -> None:
    """Refuse a config naming the repository's own code (``auto_map``) unless ``trusted``."""
    if "auto_map" not in config or trusted:
        return
    auto_map = config["auto_map"]
    named = (
        ", ".join(sorted(str(v) for v in auto_map.values())) if isinstance(auto_map, dict) else ""
    )
    raise UntrustedCodeError(
        f"{where}: config.json names the repository's own Python code (auto_map: "
        f"{clip(named or str(auto_map), 120)}), which transformers would import and run; "
        "nothing was added. If you trust its author, pass --trust-remote-code (Python: "
        f"trust_remote_code=True): canon then builds `{architecture}` with the library's own "
        "code, never the repository's, and refuses weights that do not fit it",
        architecture=architecture,
    )


def _verified(path: Path, filename: str, where: str) -> str:
    """The sha256 of a downloaded file, checked against the Hub's: the cache names an LFS
    file's blob by the sha256 the Hub sent for it (its ``X-Linked-Etag``)."""
    digest = sha256_file(path)
    blob = Path(os.path.realpath(path)).name
    if _SHA256_RE.fullmatch(blob) and blob != digest:
        raise HubError(
            f"cannot add `{where}`: {filename} does not hash to the sha256 the Hub gave for it "
            f"({blob[:12]}…, the file hashes to {digest[:12]}…): the download or the Hub cache "
            f"is damaged; delete {clip(str(path), 160)} and add again",
            repo_id=where.partition("@")[0],
        )
    return digest


def _shard_names(index_file: Path, filename: str, where: str) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` lists (its ``weight_map``
    values), checked: at most :data:`MAX_SHARDS` safetensors files next to the index."""
    what = f"{where}: {filename}"
    if index_file.stat().st_size > MAX_INDEX_BYTES:
        raise CheckpointFormatError(f"{what} is larger than 16 MiB", path=filename)
    index = loads_json(
        index_file.read_bytes(), what=what, error=CheckpointFormatError, max_bytes=MAX_INDEX_BYTES
    )
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointFormatError(f"{what} has no `weight_map` of tensor names to shard files")
    names = sorted({str(v) for v in weight_map.values()})
    if len(names) > MAX_SHARDS:
        raise CheckpointFormatError(f"{what} lists {len(names)} shards; canon reads at most 1024")
    folder = PurePosixPath(filename).parent
    shards = []
    for shard in names:
        checked = check_weights_file(shard)
        if not checked.endswith(".safetensors") or "/" in checked:
            raise CheckpointFormatError(
                f"{what} lists `{clip(shard, 80)}`; shards are .safetensors files beside the index"
            )
        shards.append(str(folder / checked) if str(folder) != "." else checked)
    return shards
