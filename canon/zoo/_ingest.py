"""Turning what a user adds (a file or a state dict) into checked, serialized weights."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from canon import checkpoint
from canon._limits import (
    MAX_GROUP_UNITS,
    MAX_STRUCTURED_UNITS,
    MAX_TENSORS,
    clip,
    loads_json,
)
from canon.architectures import (
    LibraryLayout,
    build_model,
    get_architecture,
    library_layout,
    resolve_config,
)
from canon.checkpoint import STATE_KEYS, Located, load_state, locate_state, read_header
from canon.core import Spec, check_state, spec_from_module, tied_names
from canon.core.lazy_similarity import structured
from canon.core.spec import check_tensors
from canon.core.trace import tensors_of
from canon.core.unit_spaces import BATCHNORMS, LAYERS
from canon.errors import (
    CanonError,
    CheckpointFormatError,
    ConfigError,
    SpecMismatchError,
    UnsupportedModuleError,
)
from canon.zoo._records import FORMAT_VERSION, EntryFields, canonical_json, family_key
from canon.zoo._trust import check_trusted, names_code

__all__ = [
    "META_ARCH",
    "Incoming",
    "Prepared",
    "Shards",
    "Source",
    "check_group_sizes",
    "declared_spec",
    "names_for",
    "pack",
    "prepare",
]


@dataclass(frozen=True)
class Shards:
    """One checkpoint split over several safetensors files (a sharded Hub checkpoint, as
    ``model.safetensors.index.json`` lists it): their headers are checked as one, then the
    tensors are read shard by shard."""

    paths: tuple[Path, ...]


Source = str | os.PathLike[str] | Mapping[str, Tensor] | nn.Module | Shards
META_ARCH = "canon.architecture"
META_CONFIG = "canon.config"
META_FORMAT = "canon.format_version"
#: File suffixes read with ``torch.load(weights_only=True)``; any other file is safetensors.
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
#: The config key of a ``module:function`` architecture that records the shape of one input
#: sample: ``build_model`` sets it as the module's ``input_shape`` (checking its bounds) and
#: passes it on only to a function that takes ``input_shape``.
INPUT_SHAPE = "input_shape"

log = logging.getLogger("canon.zoo")


@dataclass(frozen=True)
class Prepared:
    """Weights checked against their architecture, serialized as the bytes to store.

    ``state``'s tensors are views into ``data`` (:func:`~canon.checkpoint.pack`): the
    weights are held once, and must not be written into."""

    state: dict[str, Tensor]
    architecture: str
    config: dict[str, Any]
    config_json: str
    family: str
    spec: Spec
    data: memoryview  # read-only


def spec_for(architecture: str, config: Mapping[str, Any]) -> Spec:
    """The structure spec of ``architecture`` built from ``config``.

    The module is built on the meta device: the spec (names, shapes, groups)
    costs no memory, so a config that lies about sizes is caught by comparing
    the spec with a file's header before anything of that size is allocated.
    A ``module:function`` network is traced with the input shape its config
    records under ``input_shape``, if any (``build_model`` sets it on the module).
    """
    return spec_from_module(build_model(architecture, config, device="meta"))


@dataclass(frozen=True)
class Incoming:
    """One entry for :meth:`~canon.zoo.Zoo.add_many`: how to read its checked weights, its
    parents (ids of the zoo's entries or of earlier items) and its fields."""

    prepare: Callable[[], Prepared]
    parents: Sequence[str]
    fields: EntryFields


def names_for(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Entry names for checkpoint ``files``: each file's name without its checkpoint
    suffix (``seed3.safetensors``: ``seed3``), or, where those repeat, its folder's name
    (``runs/seed3/model.pt``: ``seed3``). A :class:`ConfigError` where neither tells the
    files apart; the names themselves are checked where they are used."""
    paths = [Path(f) for f in files]
    for names in (
        [_without_suffix(p.name) for p in paths],
        [p.resolve().parent.name for p in paths],
    ):
        if len(set(names)) == len(names):
            return names
    raise ConfigError(
        "neither the files' names nor their folders' tell these files apart; give them names "
        "(one file at a time with --name, or Python: names=[...])"
    )


def _without_suffix(name: str) -> str:
    """A checkpoint file's name without its suffix (.safetensors, .pt, .pth, .ckpt)."""
    for suffix in (".safetensors", *TORCH_SUFFIXES):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def check_group_sizes(spec: Spec, where: str) -> None:
    """Refuse a spec whose matching would pair more than
    :data:`~canon._limits.MAX_GROUP_UNITS` units in one assignment, or hold a group of
    more than :data:`~canon._limits.MAX_STRUCTURED_UNITS` units that permutes as heads or
    in blocks (:class:`~canon.errors.ConfigError`, naming the group, its sizes and the
    limit).

    Aligning a group of H units builds an H x H cost matrix and solves an O(H^3)
    assignment; a group in heads or blocks of d units is assigned d units at a time
    (and its heads as wholes), its matrix read a block at a time. The spec tells these
    sizes before any weight is loaded or matched.
    """
    for group in spec.groups:
        name = clip(group.name, 80)
        if not structured(group.heads, group.blocks):
            if group.size > MAX_GROUP_UNITS:
                raise ConfigError(
                    f"{where} has {group.size} units in group `{name}`; canon aligns groups of "
                    f"at most {MAX_GROUP_UNITS} units (matching costs the square of the units "
                    "in memory and their cube in time)"
                )
            continue
        parts = max(group.heads, group.blocks)
        largest = max(group.size // parts, group.heads)
        if group.size > MAX_STRUCTURED_UNITS or largest > MAX_GROUP_UNITS:
            raise ConfigError(
                f"{where} has {group.size} units in group `{name}`, in {parts} blocks of "
                f"{group.size // parts}; canon aligns at most {MAX_GROUP_UNITS} units per "
                f"block and {MAX_GROUP_UNITS} heads moving as wholes, and groups in blocks of "
                f"at most {MAX_STRUCTURED_UNITS} units"
            )


def declared_spec(architecture: str, config: Mapping[str, Any]) -> Spec:
    """A spec holding only the tensors (names, shapes, dtypes) the architecture declares,
    read off a module built on the meta device: no memory, and no forward pass (a first
    forward on the meta device loads torch's meta kernels, some 70 MiB). Checking a file's
    header against it costs nothing, whatever sizes the config claims."""
    return _declared(architecture, config)[0]


def _declared(
    architecture: str, config: Mapping[str, Any]
) -> tuple[Spec, dict[str, str], LibraryLayout]:
    """:func:`declared_spec`, the architecture's tied names and how its library's files
    differ from canon's layout (one meta-device build)."""
    model = build_model(architecture, config, device="meta")
    spec = Spec(groups=(), output=None, tensors=tensors_of(model))
    return spec, tied_names(model), library_layout(model)


def pack(state: Mapping[str, Tensor], architecture: str, config_json: str) -> checkpoint.Packed:
    """The bytes canon stores, deterministic safetensors carrying the architecture metadata,
    and the tensors as views into them."""
    meta = {META_ARCH: architecture, META_CONFIG: config_json, META_FORMAT: FORMAT_VERSION}
    return checkpoint.pack(state, meta)


def _from_metadata(meta: Mapping[str, str], where: str) -> tuple[str, dict[str, Any]]:
    if META_ARCH not in meta:
        raise ConfigError(
            f"{where} does not name its architecture (no `{META_ARCH}` metadata); "
            "name it: --arch NAME --config JSON (a registered architecture, such as mlp, or "
            "module:function for your own code; Python: architecture=, config=)"
        )
    config = loads_json(meta.get(META_CONFIG, "{}"), what=f"{where}: metadata `{META_CONFIG}`")
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: metadata `{META_CONFIG}` must be a JSON object")
    return meta[META_ARCH], config


def _load_pt(path: Path) -> object:
    """What a torch checkpoint holds, read with ``weights_only=True``: tensors in (nested)
    dicts, lists and plain values; a file that needs any other class is refused unread.
    A zip archive's members are checked first (:func:`_check_archive`)."""
    _check_archive(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch names the first class it refused ("GLOBAL torch.nn...Sequential"); naming it
        # here costs nothing (it is text, nothing is imported) and tells a module apart
        found = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", str(exc))
        what = f" (`{clip(found.group(1), 100)}`)" if found else ""
        raise CheckpointFormatError(
            f"`{clip(str(path))}` holds pickled Python objects{what}, such as a whole module "
            "saved with torch.save(model), which canon never unpickles; save the state dict "
            "instead, torch.save(model.state_dict(), path), or safetensors, and add that file",
            path=str(path),
        ) from None
    except Exception as exc:  # torch raises many kinds for unreadable files
        first = str(exc).strip().split(". ")[0]
        raise CheckpointFormatError(
            f"`{clip(str(path))}` cannot be read as a torch checkpoint ({clip(first, 120)})",
            path=str(path),
        ) from None


def _check_archive(path: Path) -> None:
    """Refuse a zip ``.pt`` archive whose members would expand when read: a compressed member
    (``torch.save`` stores every member uncompressed), or members whose sizes add up to more
    than the archive holds. Read from the zip's central directory, before ``torch.load``
    allocates anything; a legacy (non-zip) torch file cannot expand and is left alone."""
    where = f"`{clip(str(path))}`"
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointFormatError(
            f"{where} cannot be read as a torch checkpoint ({clip(str(exc), 120)})", path=str(path)
        ) from None
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointFormatError(
            f"{where} holds compressed members (`{clip(packed[0], 80)}`), which torch.save never "
            "writes; canon reads only uncompressed torch archives",
            path=str(path),
        )
    total = sum(m.file_size for m in members)
    if total > path.stat().st_size:
        raise CheckpointFormatError(
            f"{where} declares {total} bytes of members in an archive of "
            f"{path.stat().st_size} bytes; it is damaged or crafted",
            path=str(path),
        )


def _tensor_dict(value: object, *, empty: bool = False) -> dict[str, Tensor] | None:
    """``value`` if it is a dict of tensor names to tensors (non-empty unless ``empty``)."""
    if not isinstance(value, Mapping) or (not value and not empty):
        return None
    if all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
        return dict(value)
    return None


def _tensor_groups(obj: object, key: str | None, where: str) -> dict[str | None, dict[str, Tensor]]:
    """The candidate state dicts in what a checkpoint holds, for :func:`locate_state`:
    ``None`` for a plain state dict, and each key whose value is one. ``key`` may walk
    nested dicts (``"model.ema"``) or, in a plain state dict, name a prefix of its names."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{where} holds a {type(obj).__name__}, not a state dict (a dict of tensor names "
            "to tensors) or a checkpoint dict holding one; save the weights with "
            "torch.save(model.state_dict(), path)"
        )
    flat = _tensor_dict(obj, empty=True)
    groups: dict[str | None, dict[str, Tensor]] = {}
    if flat is not None:
        groups[None] = flat
    else:
        for k, v in obj.items():
            sub = _tensor_dict(v)
            if isinstance(k, str) and sub is not None:
                groups[k] = sub
    if key is not None and key not in groups:
        node: object = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        found = _tensor_dict(node)
        if found is None and flat is not None:
            found = {n[len(key) + 1 :]: t for n, t in flat.items() if n.startswith(f"{key}.")}
        if found:
            groups[key] = found
    return groups


def _name_groups(names: Sequence[str], key: str | None) -> dict[str | None, dict[str, str]]:
    """The candidate state dicts among a safetensors file's tensor names: all of them, and the
    names under each of :data:`STATE_KEYS` (or under ``key``) with ``KEY.`` taken off."""
    groups: dict[str | None, dict[str, str]] = {None: {n: n for n in names}}
    for k in (key,) if key is not None else STATE_KEYS:
        start = f"{k}."
        under = {n[len(start) :]: n for n in names if n.startswith(start)}
        if under:
            groups[k] = under
    return groups


def prepare(
    source: Source,
    architecture: str | None,
    config: Mapping[str, Any] | None,
    *,
    trust_code: bool = False,
    input_shape: Sequence[int] | None = None,
    key: str | None = None,
    dataset: str | None = None,
) -> Prepared:
    """Read ``source``, resolve its architecture and check it; nothing is written.

    ``architecture`` is what the user typed; without it the file's canon
    metadata names it, and a ``module:function`` name read from there is
    refused unless ``trust_code`` (:class:`~canon.errors.UntrustedCodeError`).
    The file's header is checked against the architecture's spec before any
    tensor is loaded.

    The state dict may sit under a key of a checkpoint dict and carry wrapper
    prefixes (see :func:`~canon.checkpoint.locate_state`); ``key`` names the key.
    Which key and prefix were used is logged (logger ``canon.zoo``, level INFO).
    ``input_shape`` (one sample) is what a ``module:function`` network is traced
    with; it is recorded in the config (key ``input_shape``) when the network
    cannot tell it itself. Without it such a network takes the input shape of
    ``dataset``, if that loads here.
    """
    header_meta: Mapping[str, str] = {}
    header: checkpoint.Header | None = None
    path: Path | None = None
    shard_of: dict[str, Path] = {}  # tensor name in the files -> the shard holding it
    groups: dict[str | None, dict[str, Tensor]] | None = None
    if isinstance(source, Shards):
        header, shard_of = _merged_header(source)
    elif isinstance(source, nn.Module):
        groups = {None: dict(source.state_dict())}
    elif isinstance(source, Mapping):
        groups = _tensor_groups(source, key, "the state dict")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            what = "does not exist or is not a file"
            if path.is_dir():
                what = (
                    "is a folder (one a library saved a model in, with config.json, adds with "
                    "`canon add FOLDER`, Python: canon.hub.add_from_folder(zoo, FOLDER))"
                )
            raise CheckpointFormatError(
                f"`{clip(str(path))}` {what}; give a .safetensors or .pt checkpoint file",
                path=str(path),
            )
        if path.suffix in TORCH_SUFFIXES:
            groups = _tensor_groups(_load_pt(path), key, f"`{clip(str(path))}`")
        else:
            header = read_header(path)
            header_meta = header.metadata
    else:
        raise CheckpointFormatError(
            f"cannot add a {type(source).__name__}: give a .safetensors or .pt path, "
            "a state dict or a module"
        )
    if path is not None:
        where = f"`{path}`"
    elif isinstance(source, Shards):
        where = f"the {len(source.paths)} shards in `{source.paths[0].parent}`"
    else:
        where = "the state dict"
    if architecture is None:
        if path is None or groups is not None:
            raise ConfigError(f"{where} needs architecture= (it carries no canon metadata)")
        architecture, meta_config = _from_metadata(header_meta, where)
        check_trusted(architecture, trusted=trust_code, source=f"the metadata of {where}")
        config = meta_config if config is None else config
    full = resolve_config(architecture, config)
    # a config that lies about sizes costs nothing before the header is checked against this
    declared, tied, layout = _declared(architecture, full)
    expected = declared.tensor_info
    state: dict[str, Tensor] | None = None
    names: dict[str, str] | None = None
    # experts' weights as the library holds them (3-D), which canon holds in 2-D
    stacked: set[str] = set()
    if header is not None:
        stored = _name_groups(list(header.tensors), key)
        located = locate_state(stored, expected, key=key, where=where)
        names = located.pick(stored)
        found = {new: header.tensors[old] for new, old in names.items()}
        stacked = {
            n for n, (shape, _) in found.items()
            if n in expected and layout.stacked_in_file(n, shape, expected[n].shape)
        }  # fmt: skip
        for n in stacked:
            found[n] = (layout.shape_in_canon(n, found[n][0]), found[n][1])
        check_tensors(found, declared, where)
        if all(new == old for new, old in names.items()):
            names = None
    else:
        assert groups is not None
        located = locate_state(groups, expected, key=key, where=where)
        state = _without_ties(located.pick(groups), tied, where)
        state = {
            n: layout.in_canon(n, t)
            if n in expected and layout.stacked_in_file(n, tuple(t.shape), expected[n].shape)
            else t
            for n, t in state.items()
        }
    _note(located, where)
    full, inferred = _with_input_shape(architecture, full, input_shape, dataset, where)
    config_json = canonical_json(full)
    try:
        spec = spec_for(architecture, full)
    except UnsupportedModuleError as exc:
        if exc.op != "shape" or not isinstance(full.get(INPUT_SHAPE), list):
            raise
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        cause = (str(root).strip().splitlines() or [""])[0]
        whence = (
            f"taken from dataset `{clip(inferred, 80)}`"
            if inferred
            else "as given"
            if input_shape is not None
            else "as its config records"
        )
        raise ConfigError(
            f"`{clip(architecture, 80)}` does not run on inputs of shape {full[INPUT_SHAPE]} "
            f"({whence}): {type(root).__name__}: {clip(cause, 160)}; pass --input-shape with "
            "the shape of one sample, without the batch axis"
        ) from None
    check_group_sizes(spec, f"`{clip(architecture, 80)}` as configured")
    if state is None and shard_of:
        state = _load_shards(shard_of, names)
    if state is None:
        assert path is not None
        # the header was checked against the architecture; against the spec too, unless
        # it holds experts' weights in the library's layout (checked as canon's above)
        state = load_state(path, None if stacked else spec, names=names)
    for n in stacked:
        state[n] = layout.in_canon(n, state[n])
    check_state(state, spec, where)
    # the loaded tensors are let go for their views into the bytes: the weights held once
    packed = pack(state, architecture, config_json)
    del state
    return Prepared(
        state=packed.tensors,
        architecture=architecture,
        config=json.loads(config_json),
        config_json=config_json,
        family=family_key(architecture, config_json),
        spec=spec,
        data=packed.data,
    )


def _without_ties(
    state: dict[str, Tensor], tied: Mapping[str, str], where: str
) -> dict[str, Tensor]:
    """``state`` without the names the architecture ties to another (a language model's
    output layer that is its token embedding: the spec lists the tensor once, under the
    first name), each checked to hold its first name's values."""
    for alias, primary in tied.items():
        if alias in state and primary in state:
            a, b = state[alias], state[primary]
            if a.shape != b.shape or not torch.equal(a, b.to(a.dtype)):
                raise SpecMismatchError(
                    f"{where}: `{alias}` is tied to `{primary}` in this architecture but "
                    "holds other values",
                    problems=(f"tensor `{alias}` differs from `{primary}`",),
                )
    return {n: t for n, t in state.items() if n not in tied}


def _merged_header(shards: Shards) -> tuple[checkpoint.Header, dict[str, Path]]:
    """The headers of ``shards`` as one (each read and bounded alone; at most
    :data:`~canon._limits.MAX_TENSORS` in all) and which shard holds each tensor.
    A tensor in two shards is refused."""
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    shard_of: dict[str, Path] = {}
    for path in shards.paths:
        for name, info in read_header(path).tensors.items():
            if name in shard_of:
                raise CheckpointFormatError(
                    f"tensor `{clip(name, 120)}` is in two shards, `{shard_of[name].name}` and "
                    f"`{path.name}`",
                    path=str(path),
                )
            tensors[name], shard_of[name] = info, path
        if len(tensors) > MAX_TENSORS:
            raise CheckpointFormatError(
                f"the shards list more than {MAX_TENSORS} tensors; canon reads at most that",
                path=str(path),
            )
    return checkpoint.Header(tensors=tensors), shard_of


def _load_shards(
    shard_of: Mapping[str, Path], names: Mapping[str, str] | None
) -> dict[str, Tensor]:
    """The tensors of a sharded checkpoint, read one shard at a time (each shard's header
    was checked against the architecture as part of the whole; the caller checks the
    tensors for NaN/Inf)."""
    wanted = dict(names) if names is not None else {n: n for n in shard_of}
    state: dict[str, Tensor] = {}
    for path in dict.fromkeys(shard_of.values()):
        part = {new: old for new, old in wanted.items() if shard_of[old] == path}
        if part:
            state.update(load_state(path, None, names=part))
    return state


def _note(located: Located, where: str) -> None:
    """Say which key and prefix the state dict was read with, if any (logger ``canon.zoo``)."""
    said = located.describe()
    if said:
        log.info("%s: %s", clip(where, 200), said)


def _with_input_shape(
    architecture: str,
    full: dict[str, Any],
    given: Sequence[int] | None,
    dataset: str | None,
    where: str,
) -> tuple[dict[str, Any], str | None]:
    """``full`` with the input shape the network is traced with recorded, where it must be,
    and the dataset the shape was taken from (None if it was not).

    A registered architecture knows its input shape from its config: a ``given`` one must
    agree. A ``module:function`` network that cannot tell its own (no ``input_shape``
    attribute, no first ``nn.Linear``) gets ``given``, or the shape already recorded in the
    config, or else the samples' shape of ``dataset``; the shape is recorded under
    ``input_shape`` so that every later process traces it alike.
    """
    shape = None if given is None else _as_shape(given)
    if not names_code(architecture):
        at = get_architecture(architecture).input_shape_at
        if shape is None and not at:
            return full, None
        own = _own_shape(build_model(architecture, full, device="meta"))
        if at and own is None:  # a config that may hold the shape and does not: it goes there
            used = None
            if shape is None:
                shape, why = _dataset_shape(dataset)
                if shape is None:
                    raise ConfigError(
                        f"cannot tell the input shape of `{architecture}` for {where}; pass "
                        "--input-shape, such as --input-shape 3,32,32 (Python: "
                        f"input_shape=(3, 32, 32)), or set `{'.'.join(at)}` in the config{why}"
                    )
                used = dataset
            return _set_at(full, at, list(shape), architecture), used
        if shape is not None and own != shape:
            raise ConfigError(
                f"architecture `{architecture}` takes inputs of shape "
                f"{list(own) if own else '?'} as its config sets them, not {list(shape)}; "
                "the input shape of a registered architecture is set by its config"
            )
        return full, None
    recorded = full.get(INPUT_SHAPE)
    if shape is not None:
        if recorded is not None:
            if recorded != list(shape):
                raise ConfigError(
                    f"the config's `{INPUT_SHAPE}` {clip(json.dumps(recorded), 60)} and the "
                    f"input shape {list(shape)} differ; give one of them"
                )
            return full, None
        try:
            own = _own_shape(build_model(architecture, full, device="meta"))
        except ConfigError:  # the function may need input_shape to build: record it
            own = None
        return (full if own == shape else {**full, INPUT_SHAPE: list(shape)}), None
    if recorded is not None or _own_shape(build_model(architecture, full, device="meta")):
        return full, None
    inferred, why = _dataset_shape(dataset)
    if inferred is None:
        raise ConfigError(
            f"cannot tell the input shape of `{clip(architecture, 80)}` for {where}; pass "
            "--input-shape, one sample without the batch axis, such as --input-shape 3,32,32 "
            "(Python: input_shape=(3, 32, 32)): the module has no `input_shape` attribute and "
            f"does not start with nn.Linear{why}"
        )
    log.info("input shape %s taken from dataset `%s`", list(inferred), clip(str(dataset), 100))
    return {**full, INPUT_SHAPE: list(inferred)}, dataset


def _set_at(
    config: dict[str, Any], at: tuple[str, ...], value: object, architecture: str
) -> dict[str, Any]:
    """``config`` with ``value`` set at the keys ``at`` (objects made on the way; the
    config itself is left as it was)."""
    top = dict(config)
    here = top
    for key in at[:-1]:
        inner = here.get(key, {})
        if not isinstance(inner, dict):
            raise ConfigError(
                f"the config of `{architecture}`: `{key}` must be a JSON object, to hold "
                f"`{'.'.join(at)}`"
            )
        here[key] = dict(inner)
        here = here[key]
    here[at[-1]] = value
    return top


def _as_shape(given: object) -> tuple[int, ...]:
    """``given`` as a tuple of integers (their bounds are checked where the module is built)."""
    if isinstance(given, Sequence) and not isinstance(given, str):
        items = list(given)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in items):
            return tuple(items)
    raise ConfigError(
        f"the input shape must be integers, one sample without the batch axis, such as "
        f"--input-shape 3,32,32 (Python: input_shape=(3, 32, 32)); got {clip(repr(given), 80)}"
    )


def _own_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape ``model`` tells itself, as canon's tracer reads it: its
    ``input_shape``, or ``(in_features,)`` of a first layer that is an nn.Linear."""
    own = getattr(model, "input_shape", None)
    if own is not None:
        try:
            return tuple(int(s) for s in own)
        except (TypeError, ValueError):
            return None
    first = next((m for m in model.modules() if isinstance(m, (*LAYERS, *BATCHNORMS))), None)
    return (first.in_features,) if isinstance(first, nn.Linear) else None


def _dataset_shape(dataset: str | None) -> tuple[tuple[int, ...] | None, str]:
    """The shape of one sample of ``dataset`` (None if there is none or it does not load
    here) and, if not, why (to end an error message)."""
    if dataset is None:
        return None, ", and no dataset was given to take it from"
    from canon.data import load_dataset

    try:
        data = load_dataset(dataset)
    except CanonError as exc:
        why = clip(str(exc), 120)
        return None, f", and dataset `{clip(dataset, 80)}` does not load here ({why})"
    return tuple(int(s) for s in data.x_train.shape[1:]), ""
