"""Frozen records the zoo hands out, and validation of what goes into an entry."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from canon._limits import clip
from canon.errors import InvalidEntryError

__all__ = [
    "ALIGN_MODES",
    "CACHE_VERSION",
    "EXECUTORS",
    "FORMAT_VERSION",
    "KINDS",
    "NAME_PATTERN",
    "SELECTION_KINDS",
    "Entry",
    "EntryFields",
    "PairResult",
    "VerifyReport",
    "canonical_json",
    "check_dataset",
    "check_kind",
    "check_metrics",
    "check_name",
    "check_tags",
    "entry_fields",
    "family_key",
]

#: Bumped whenever cached values (alignments, pair results) would be computed differently,
#: or their keys change (2: pair keys hash every path option, defaults included; 4: weight
#: matching's objective is a sum of per-layer cosines).
CACHE_VERSION = 4
#: Written into every stored object's metadata as ``canon.format_version``.
FORMAT_VERSION = "1"
KINDS = ("solution", "midpoint")
#: What a selection without names takes: one kind, or ``any``. Tables and plots default to
#: ``solution`` (a midpoint is derived from two solutions, so it enters only when asked for).
SELECTION_KINDS = (*KINDS, "any")
#: Where a table's uncached pairs can be computed (:func:`~canon.zoo._executors.run_pairs`).
EXECUTORS = ("local", "ray")
#: How a comparison aligns b to a: ``pair`` matches the two directly; ``reference`` composes
#: each one's cached alignment to the family reference (one matching per entry, not per pair).
ALIGN_MODES = ("pair", "reference")

#: What an entry name may be (letters, digits, ``._-``; starting with a letter or digit).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)
_TAG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_MAX_TAG_VALUE = 256


@dataclass(frozen=True)
class Entry:
    """One network in a zoo: its object id (sha256), name and everything recorded about it."""

    id: str
    name: str
    architecture: str
    config: Mapping[str, Any]
    family: str
    dataset: str | None
    kind: str
    tags: Mapping[str, str] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "name": self.name,
            "architecture": self.architecture,
            "config": dict(self.config),
            "family": self.family,
            "dataset": self.dataset,
            "kind": self.kind,
            "tags": dict(self.tags),
            "parents": list(self.parents),
            "metrics": dict(self.metrics),
            "created": self.created.isoformat() if self.created else None,
        }


@dataclass(frozen=True)
class PairResult:
    """A cached result for two entries (ids): a path curve or distances, keyed by its options."""

    a: str
    b: str
    kind: str
    options_hash: str
    result: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "a": self.a,
            "b": self.b,
            "kind": self.kind,
            "options_hash": self.options_hash,
            "result": dict(self.result),
        }


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Zoo.verify` found.

    ``ok`` when every entry's object is present and intact (no bad hashes, no
    missing objects). Orphan objects and temp files are garbage (reported,
    reclaimed by a repair); unindexed objects are listed in ``manifest.json``
    but not in the index; skipped entries are manifest entries a rebuild of
    the index left out, each with its reason.
    """

    ok: bool
    checked: int = 0
    bad_hashes: tuple[str, ...] = ()
    missing_objects: tuple[str, ...] = ()
    orphan_objects: tuple[str, ...] = ()
    orphan_temp_files: tuple[Path, ...] = ()
    unindexed_objects: tuple[str, ...] = ()
    skipped_entries: tuple[str, ...] = ()
    rebuilt: bool = False
    repaired: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntryFields:
    """An entry's checked fields besides its weights, as the index stores them."""

    name: str
    kind: str
    tags: dict[str, str]
    metrics: str  # canonical JSON
    dataset: str | None
    created: datetime  # naive UTC


def entry_fields(
    name: str,
    kind: str = "solution",
    tags: Mapping[str, object] | None = None,
    metrics: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    created: datetime | None = None,
) -> EntryFields:
    """Check an entry's fields (before any weights are read); ``created`` defaults to now."""
    moment = created or datetime.now(UTC)
    return EntryFields(
        name=check_name(name),
        kind=check_kind(kind),
        tags=check_tags(tags),
        metrics=check_metrics(metrics),
        dataset=check_dataset(dataset),
        created=moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment,
    )


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, finite numbers only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def family_key(architecture: str, config_json: str) -> str:
    """The family of an architecture and its canonical config JSON (a sha256 hex digest)."""
    return hashlib.sha256(f"{architecture}\n{config_json}".encode()).hexdigest()


def check_name(name: object) -> str:
    """A valid entry name (letters, digits, ``._-``; starting with a letter or digit)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidEntryError(
            f"invalid entry name {clip(repr(name), 80)}: use 1-128 letters, digits, `.`, `_` "
            "or `-`, starting with a letter or digit"
        )
    return name


def check_kind(kind: object) -> str:
    """``kind`` if it is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise InvalidEntryError(
            f"invalid kind {clip(repr(kind), 80)}: expected one of {', '.join(KINDS)}"
        )
    return str(kind)


def check_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    """Tags as ``{key: value}`` strings; numbers become strings, other values are refused."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
            raise InvalidEntryError(
                f"invalid tag key {clip(repr(key), 80)}: use up to 64 letters, digits, `_`, `.` "
                "or `-`, starting with a letter or `_`"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidEntryError(
                f"tag `{key}` must be a string or a number, got {clip(repr(value), 80)}"
            )
        text = str(value)
        if len(text) > _MAX_TAG_VALUE or any(ord(c) < 32 for c in text):
            raise InvalidEntryError(
                f"tag `{key}` value must be at most {_MAX_TAG_VALUE} printable characters"
            )
        out[key] = text
    return out


def check_dataset(dataset: object) -> str | None:
    """``dataset`` if it is None or a name of at most 256 printable characters."""
    if dataset is None:
        return None
    if not isinstance(dataset, str) or not dataset.isprintable() or not 0 < len(dataset) <= 256:
        raise InvalidEntryError(
            f"dataset must be a name of 1-256 printable characters, got {clip(repr(dataset), 80)}"
        )
    return dataset


def check_metrics(metrics: Mapping[str, Any] | None) -> str:
    """Metrics as canonical JSON; keys must be strings and numbers finite."""
    if metrics is None:
        return "{}"
    if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
        raise InvalidEntryError("metrics must be a mapping with string keys")
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEntryError(f"metric `{clip(key, 80)}` is {value}; metrics must be finite")
    try:
        return canonical_json(dict(metrics))
    except (TypeError, ValueError) as exc:
        raise InvalidEntryError(f"metrics must be JSON-serializable: {clip(str(exc))}") from None
