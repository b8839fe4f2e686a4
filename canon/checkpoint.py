"""Reading and writing checkpoints as safetensors, checked against a spec.

A safetensors file is an 8-byte little-endian header length, a JSON header
(tensor names, dtypes, shapes, byte offsets, and string metadata) and the
raw tensor bytes. :func:`read_header` parses and validates the header alone,
so names, shapes and dtypes are checked before any tensor is loaded;
:func:`load_state` then loads the tensors and rejects NaN or Inf. Nothing is
ever unpickled.

Checkpoints as training scripts save them hold the state dict under a key
(``{"model": ..., "epoch": ...}``, Lightning's ``{"state_dict": ...}``,
``{"model_state_dict": ...}``) and with wrapper prefixes on every name
(``module.`` from DataParallel/DDP, Lightning's ``model.``, ``_orig_mod.``
from ``torch.compile``). :func:`locate_state` finds the state dict among such
names by the tensor names an architecture expects.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from canon._limits import (
    MAX_HEADER_BYTES,
    MAX_METADATA_ITEMS,
    MAX_METADATA_VALUE,
    MAX_RANK,
    MAX_TENSORS,
    clip,
    loads_json,
)
from canon.core.spec import Spec, check_finite, check_tensors, dtype_name
from canon.errors import CheckpointFormatError

__all__ = [
    "STATE_KEYS",
    "WRAPPER_PREFIXES",
    "Header",
    "Located",
    "Packed",
    "load_state",
    "locate_state",
    "pack",
    "read_header",
    "save_state",
    "serialize",
]

#: Keys under which training scripts save the state dict in a checkpoint dict, tried in order.
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
#: Prefixes wrappers put on every tensor name: DataParallel/DDP, Lightning, torch.compile.
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")

# safetensors dtype codes <-> torch dtypes
_TORCH = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {dtype: code for code, dtype in _TORCH.items()}
#: The most JSON strings a header may hold: a tensor's entry has five (its name, ``dtype``
#: and its value, ``shape``, ``data_offsets``; three spare), a metadata item two.
_MAX_STRINGS = 8 * MAX_TENSORS + 2 * MAX_METADATA_ITEMS + 1


@dataclass(frozen=True)
class Header:
    """The header of a safetensors file: each tensor's (shape, dtype name) and the metadata."""

    tensors: Mapping[str, tuple[tuple[int, ...], str]]
    metadata: Mapping[str, str] = field(default_factory=dict)


def read_header(path: str | os.PathLike[str], spec: Spec | None = None) -> Header:
    """Parse and validate the safetensors header of ``path`` without loading any tensor.

    With a ``spec``, every tensor's name, shape and dtype kind is checked
    against it and every mismatch is reported by tensor name
    (:class:`~canon.errors.SpecMismatchError`). A file that is not a valid
    safetensors file raises :class:`~canon.errors.CheckpointFormatError`.
    """
    p = Path(path)
    where = f"`{p}`"
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointFormatError(
                    f"{where} is not a safetensors file: too short", path=str(p)
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointFormatError(
                    f"{where} is not a safetensors file: header length {length} does not fit "
                    f"a file of {size} bytes",
                    path=str(p),
                )
            raw = f.read(length)
    except FileNotFoundError:
        raise CheckpointFormatError(f"{where} does not exist", path=str(p)) from None
    except IsADirectoryError:
        raise CheckpointFormatError(f"{where} is a directory, not a file", path=str(p)) from None
    _check_string_count(raw, where, p)
    header = loads_json(
        raw,
        what=f"{where} is not a safetensors file: its header",
        error=functools.partial(CheckpointFormatError, path=str(p)),
    )
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{where}: safetensors header is not an object", path=str(p))
    count = len(header) - ("__metadata__" in header)
    if count > MAX_TENSORS:
        raise CheckpointFormatError(
            f"{where}: the header lists {count} tensors; canon reads at most {MAX_TENSORS}",
            path=str(p),
        )
    metadata = _metadata(header.pop("__metadata__", None) or {}, where, p)
    data_size = size - 8 - length
    tensors = {name: _entry(where, name, info, data_size) for name, info in header.items()}
    result = Header(tensors=tensors, metadata=metadata)
    if spec is not None:
        check_tensors(tensors, spec, where)
    return result


def _check_string_count(raw: bytes, where: str, path: Path) -> None:
    """Refuse a header with more JSON strings than :data:`~canon._limits.MAX_TENSORS` tensors
    and :data:`~canon._limits.MAX_METADATA_ITEMS` metadata items need, counted (its unescaped
    quotes) before it is parsed: millions of tiny keys would cost far more memory as Python
    objects than as bytes."""
    strings = (raw.count(b'"') - raw.count(b'\\"')) // 2
    if strings > _MAX_STRINGS:
        raise CheckpointFormatError(
            f"{where}: its header holds {strings} strings, more than {MAX_TENSORS} tensors and "
            f"{MAX_METADATA_ITEMS} metadata items can",
            path=str(path),
        )


def _metadata(metadata: object, where: str, path: Path) -> dict[str, str]:
    """The header's ``__metadata__``: at most :data:`~canon._limits.MAX_METADATA_ITEMS`
    strings, each of at most :data:`~canon._limits.MAX_METADATA_VALUE` characters."""
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointFormatError(
            f"{where}: metadata must map strings to strings", path=str(path)
        )
    if len(metadata) > MAX_METADATA_ITEMS:
        raise CheckpointFormatError(
            f"{where}: the header holds {len(metadata)} metadata items; canon reads at most "
            f"{MAX_METADATA_ITEMS}",
            path=str(path),
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_VALUE or len(value) > MAX_METADATA_VALUE:
            raise CheckpointFormatError(
                f"{where}: metadata item `{clip(key, 80)}` is longer than {MAX_METADATA_VALUE} "
                "characters",
                path=str(path),
            )
    return metadata


def _entry(where: str, name: str, info: object, data_size: int) -> tuple[tuple[int, ...], str]:
    def bad(why: str) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"{where}: tensor `{clip(name, 120)}` {why}", path=where.strip("`")
        )

    def show(value: object) -> str:
        return clip(json.dumps(value), 120)

    if not isinstance(info, dict):
        raise bad("has no dtype/shape entry")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _TORCH:
        raise bad(f"has unsupported dtype {show(dtype)}; supported: {', '.join(_TORCH)}")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise bad(f"has an invalid shape {show(shape)}: a list of integers >= 0 is needed")
    if len(shape) > MAX_RANK:
        raise bad(f"has {len(shape)} dimensions; canon reads at most {MAX_RANK}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or not offsets[0] <= offsets[1] <= data_size
        or offsets[1] - offsets[0] != math.prod(shape) * _TORCH[dtype].itemsize
    ):
        raise bad(f"has data offsets {show(offsets)} that do not match its shape and the file size")
    return tuple(shape), dtype_name(_TORCH[dtype])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_state(
    path: str | os.PathLike[str],
    spec: Spec | None = None,
    device: str | torch.device = "cpu",
    *,
    names: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict after checking its header against ``spec``.

    ``names`` (name in the state dict -> name in the file, as :meth:`Located.pick` gives)
    loads those tensors only, under their new names; the header is checked as renamed.
    Tensors with NaN or Inf are rejected (:class:`~canon.errors.NonFiniteError`).
    """
    if names is None:
        read_header(path, spec)
    else:
        header = read_header(path)
        missing = sorted(set(names.values()) - set(header.tensors))
        if missing:
            raise CheckpointFormatError(
                f"`{path}` has no tensor `{clip(missing[0], 120)}`", path=str(path)
            )
        if spec is not None:
            renamed = {new: header.tensors[old] for new, old in names.items()}
            check_tensors(renamed, spec, f"`{path}`")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            wanted = names if names is not None else {k: k for k in f.keys()}  # noqa: SIM118
            state = {new: _own_memory(f.get_tensor(old)) for new, old in wanted.items()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointFormatError(f"`{path}` cannot be read: {exc}", path=str(path)) from exc
    check_finite(state, f"`{path}`")
    return state


def _own_memory(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in memory of its own. On CPU safetensors gives views into one mapping of
    the whole file, which any one surviving view keeps mapped, and its pages resident once
    read: a normalized copy shares its untouched tensors (BatchNorm's batch counters) with
    the state it was made from, and so would hold a second copy of the whole network
    after that state is let go (a VGG's 515 MB)."""
    return tensor.clone() if tensor.device.type == "cpu" else tensor


@dataclass(frozen=True)
class Located:
    """Where :func:`locate_state` found the state dict: under ``key`` (None: the names as
    given), with the wrapper ``prefix`` stripped from every name ("" for none); ``names``
    maps each name of the state dict to its name under ``key``."""

    key: str | None
    prefix: str
    names: Mapping[str, str]

    def pick(self, groups: Mapping[str | None, Mapping[str, Any]]) -> dict[str, Any]:
        """The items of ``groups[key]`` under the state dict's names."""
        group = groups[self.key]
        return {new: group[old] for new, old in self.names.items()}

    def describe(self) -> str:
        """One line saying which key and prefix were used ("" when the names were used as
        they are)."""
        if self.key is None and not self.prefix:
            return ""
        text = "read the state dict" + (
            f" under '{clip(self.key, 80)}'" if self.key is not None else ""
        )
        return text + (f", prefix '{self.prefix}' stripped" if self.prefix else "")


def locate_state(
    groups: Mapping[str | None, Collection[str]],
    expected: Collection[str],
    *,
    key: str | None = None,
    where: str = "the checkpoint",
) -> Located:
    """Find the state dict an architecture expects (tensor names ``expected``) in a checkpoint.

    ``groups`` maps each candidate to its tensor names: ``None`` to the checkpoint's
    own names (a plain state dict), and each key of a checkpoint dict that holds tensors
    to the names under it. With ``key`` only that candidate is read. Otherwise the plain
    names are tried, then :data:`STATE_KEYS` in order; the first whose names are the
    expected ones, as they are or after stripping :data:`WRAPPER_PREFIXES` that every name
    carries, wins. If none fits, the first candidate is returned as it is (checking it
    against the spec then names every mismatch); if there is none (a checkpoint dict with
    no state dict under a usual key), :class:`~canon.errors.CheckpointFormatError` says to
    pass ``--key``.
    """
    wanted = set(expected)
    if key is not None:
        if not groups.get(key):
            held = [k for k in groups if k is not None and k != key and groups[k]]
            listed = ", ".join(f"'{clip(k, 60)}'" for k in held[:10])
            there = (
                f"keys holding tensors: {listed}"
                if held
                else "it holds a plain state dict: leave out --key"
                if groups.get(None)
                else "it holds no tensors"
            )
            raise CheckpointFormatError(
                f"{where} holds no tensors under the key '{clip(key, 80)}' ({there})"
            )
        order: list[str | None] = [key]
    else:
        order = [k for k in (None, *STATE_KEYS) if groups.get(k)]
    for candidate in order:
        names = list(groups[candidate])
        prefix = _strip_to(names, wanted)
        if prefix is not None:
            return Located(candidate, prefix, {n[len(prefix) :]: n for n in names})
    if not order and None in groups:
        order = [None]  # a plain state dict with no tensors: the spec check names what is missing
    if not order:
        held = [k for k in groups if k is not None]
        listed = ", ".join(f"'{clip(k, 60)}'" for k in held[:10])
        usual = f"{where} holds no state dict under the usual keys ({', '.join(STATE_KEYS)})"
        if held:
            raise CheckpointFormatError(
                f"{usual}; it holds tensors under {listed}: pass --key NAME (Python: key=) "
                "naming the key that holds the weights"
            )
        raise CheckpointFormatError(
            f"{usual} and no dict of tensor names to tensors; save the weights alone: "
            "torch.save(model.state_dict(), path)"
        )
    first = order[0]
    return Located(first, "", {n: n for n in groups[first]})


def _strip_to(names: list[str], wanted: set[str]) -> str | None:
    """The wrapper prefixes (:data:`WRAPPER_PREFIXES`, possibly several) that, stripped from
    every name, leave exactly ``wanted``; "" if the names are ``wanted``; None if none do."""
    stripped = ""
    current = names
    while True:
        if len(current) == len(wanted) and set(current) == wanted:
            return stripped
        prefix = next(
            (p for p in WRAPPER_PREFIXES if current and all(n.startswith(p) for n in current)),
            None,
        )
        if prefix is None:
            return None
        current = [n[len(prefix) :] for n in current]
        stripped += prefix


@dataclass(frozen=True)
class Packed:
    """Safetensors bytes and the tensors they hold: ``tensors`` are views into ``data``
    (one copy of the weights in memory), so writing into one changes the bytes."""

    data: memoryview  # read-only
    tensors: dict[str, torch.Tensor]


def pack(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Packed:
    """``state`` as safetensors bytes, the same bytes for the same tensors and metadata,
    always, and the tensors read back as views into those bytes.

    (The safetensors library writes its metadata in hash-map order, so its
    bytes vary between runs, which content addressing cannot have.) The JSON
    header's keys are sorted and the tensors laid out by item size, largest
    first (every tensor stays aligned), then by name; data are little-endian.
    ``safetensors`` reads the result as usual. The bytes are written once, into
    one buffer: no per-tensor copies joined afterwards.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    order = sorted(state.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    offset = 0
    for name, t in order:
        if t.dtype not in _CODES:
            raise CheckpointFormatError(f"tensor `{name}` has unsupported dtype {t.dtype}")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    buffer = bytearray(start + offset)
    buffer[:start] = struct.pack("<Q", len(text)) + text
    tensors: dict[str, torch.Tensor] = {}
    for name, t in order:
        if t.numel() == 0:
            tensors[name] = torch.empty(t.shape, dtype=t.dtype)
            continue
        at = start + header[name]["data_offsets"][0]
        view = torch.frombuffer(buffer, dtype=t.dtype, count=t.numel(), offset=at)
        tensors[name] = view.view(t.shape).copy_(t.detach())
    return Packed(memoryview(buffer).toreadonly(), tensors)


def serialize(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """``state`` as safetensors bytes (:func:`pack`'s, as ``bytes``)."""
    return pack(state, metadata).data.tobytes()


def save_state(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``state`` to ``path`` as safetensors (:func:`serialize`), with ``metadata``."""
    Path(path).write_bytes(pack(state, metadata).data)
