"""Frozen records the zoo hands out, and validation of what goes into an entry."""

from __future__ import annotations

import hashlib
import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

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
    "check_dataset_source",
    "check_kind",
    "check_metrics",
    "check_name",
    "check_pair_result",
    "check_tags",
    "entry_fields",
    "family_key",
    "names_file",
]

#: Bumped whenever cached values (alignments, pair results) would be computed differently,
#: or their keys change (2: pair keys hash every path option, defaults included; 4: weight
#: matching's objective is a sum of per-layer cosines; 5: tanh units' distances are in the
#: free Euclidean term, units with zero incoming weights are normalized by their biases;
#: 6: a layer's units viewed as parts that no attention reads and normed part by part stay
#: in place, where they were permuted and rescaled under the norm; a pin follows joins;
#: 7: attention sinks, a group of their own, move with their heads, which had stayed in
#: place; linked groups are matched once all of them could be).
CACHE_VERSION = 7
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
_R = TypeVar("_R")
_LARGEST = 1.7976931348623157e308  # the largest finite float: an integer beyond it overflows


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
    missing objects). Orphan objects are objects no entry references;
    unindexed objects are those of them ``manifest.json`` lists. A repair
    indexes both (``recovered``: the new entries' names) and keeps what it
    cannot index (``kept_objects``: ``id: reason``); it deletes only temp files
    (``repaired``). Skipped entries are manifest entries a rebuild of the index
    left out, each with its reason.
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
    recovered: tuple[str, ...] = ()
    kept_objects: tuple[str, ...] = ()


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


def _check_key(key: object, what: str) -> str:
    """``key`` if it is a valid tag or metric key (up to 64 letters, digits, ``_.-``)."""
    if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
        raise InvalidEntryError(
            f"invalid {what} key {clip(repr(key), 80)}: use up to 64 letters, digits, `_`, `.` "
            "or `-`, starting with a letter or `_`"
        )
    return key


def check_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    """Tags as ``{key: value}`` strings; numbers become strings, other values are refused."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        _check_key(key, "tag")
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


#: the longest dataset spec (a path, pinned: :func:`~canon.data.pin_dataset`)
MAX_DATASET = 1024


def check_dataset(dataset: object) -> str | None:
    """``dataset`` if it is None or a name of at most :data:`MAX_DATASET` printable
    characters."""
    if dataset is None:
        return None
    if (
        not isinstance(dataset, str)
        or not dataset.isprintable()
        or not 0 < len(dataset) <= MAX_DATASET
    ):
        raise InvalidEntryError(
            f"dataset must be a name of 1-{MAX_DATASET} printable characters, "
            f"got {clip(repr(dataset), 80)}"
        )
    return dataset


def names_file(dataset: str) -> bool:
    """Whether ``dataset`` names a file (``loader:PATH``) rather than a registered dataset."""
    return ":" in dataset


def check_dataset_source(dataset: str | None, *, trusted: bool, source: str) -> str | None:
    """``dataset`` as data (a manifest, a Hub repository) may name it: a registered name, or a
    ``loader:PATH`` only when ``trusted``.

    A dataset naming a path makes canon open that file when the entry is evaluated. Like a
    ``module:function`` architecture (:mod:`canon.zoo._trust`) that is fine when the user
    typed it and not when a stranger's data did: unless the user opts in
    (``--trust-code``, ``trust_code=True``), such a dataset is refused
    (:class:`~canon.errors.InvalidEntryError`).
    """
    if dataset is None or trusted or not names_file(dataset):
        return dataset
    raise InvalidEntryError(
        f"{source} names the dataset `{clip(dataset, 80)}`, a file path that canon would open; "
        "data may name only registered datasets. If you trust its author, pass --trust-code "
        "(Python: trust_code=True)"
    )


def check_metrics(metrics: Mapping[str, Any] | None) -> str:
    """Metrics as canonical JSON; keys are checked like tag keys, numbers must be finite."""
    if metrics is None:
        return "{}"
    if not isinstance(metrics, Mapping):
        raise InvalidEntryError("metrics must be a mapping with string keys")
    for key, value in metrics.items():
        _check_key(key, "metric")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEntryError(f"metric `{clip(key, 80)}` is {value}; metrics must be finite")
    try:
        return canonical_json(dict(metrics))
    except (TypeError, ValueError) as exc:
        raise InvalidEntryError(f"metrics must be JSON-serializable: {clip(str(exc))}") from None


def check_pair_result(kind: object, raw: object) -> dict[str, Any]:
    """A cached pair result from elsewhere (a pulled ``canon-results.json``) parsed as the
    record the cache reader makes of it (``Distances``, or a ``PathCurve`` along the path
    kind ``kind``) and written back as that record writes itself. Raises ValueError or
    TypeError for an unknown kind, a missing or extra field, a value of the wrong type, a
    number that is not finite, or a curve whose lists are not as long as its points."""
    from canon.core.geometry import Distances
    from canon.core.paths import MAX_POINTS
    from canon.engine import PathCurve, list_path_kinds

    if kind == "distances":
        return _record(Distances, raw, "result").to_dict()
    if kind not in list_path_kinds():
        raise ValueError(f"unknown kind {clip(repr(kind), 80)}")
    curve = _record(PathCurve, raw, "result")
    points = curve.options.get("points", len(curve.x))
    lists = (curve.x, curve.train_error, curve.train_loss, curve.test_error, curve.train_error_std)
    if curve.kind != kind:
        raise ValueError(f"a result stored as {kind} holds a {clip(curve.kind, 80)} curve")
    if not 2 <= len(curve.x) <= MAX_POINTS or points != len(curve.x):
        raise ValueError(f"the {kind} curve is not one of {clip(repr(points), 20)} points")
    if any(values is not None and len(values) != len(curve.x) for values in lists):
        raise ValueError(f"the {kind} curve has lists of other lengths than its points")
    data = curve.to_dict()
    json.dumps(data, allow_nan=False)  # options: finite numbers only (ValueError)
    return data


def _record(cls: type[_R], raw: object, where: str) -> _R:
    """``cls(**raw)`` for a dataclass ``cls``, every value checked against its field's type
    (a float: a finite number; a list of floats; an optional one; a nested record; a dict)."""
    if not isinstance(raw, dict):
        raise TypeError(f"`{where}` must be an object")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    extra = sorted(set(raw) - set(known))
    if extra:
        raise ValueError(f"`{where}` has the unknown field {clip(repr(extra[0]), 80)}")
    missing = [n for n, f in known.items() if n not in raw and f.default is MISSING]
    missing = [n for n in missing if known[n].default_factory is MISSING]
    if missing:
        raise ValueError(f"`{where}` lacks the field `{missing[0]}`")
    hints = get_type_hints(cls)
    return cls(**{k: _typed_value(hints[k], v, f"{where}.{k}") for k, v in raw.items()})


def _typed_value(hint: Any, value: object, where: str) -> Any:
    """``value`` checked against the type ``hint`` of a record's field."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is types.UnionType:  # X | None
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed_value(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"`{where}` must be a list")
        return [_typed_value(args[0], v, where) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"`{where}` must be an object")
        return dict(value)
    if is_dataclass(hint) and isinstance(hint, type):
        return _record(hint, value, where)
    if hint is str and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{where}` must be a {getattr(hint, '__name__', hint)}")
    if hint is int and isinstance(value, int):
        return value
    if hint is float and abs(value) <= _LARGEST and math.isfinite(value):
        return float(value)
    raise ValueError(f"`{where}` must be a finite {getattr(hint, '__name__', hint)}")
