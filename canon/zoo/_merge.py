"""Three-way merge of a zoo with a remote copy of it, from the state both last agreed on.

A zoo and a Hub repository drift apart when either side renames entries, gives them
another dataset (with the errors measured on it), edits their tags, adds or removes
entries, or picks another family reference. The snapshot recorded at the last push or
pull (the *base*) tells whose edit each difference is: a value only one side changed
is that side's edit; a value both sides changed differently is a conflict.

Without a base (a zoo that never synced with that remote) a tag only one side has is
taken, a family reference is the remote's (it decides only derived caches), and any
other difference is a conflict. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canon.zoo._records import Entry

__all__ = [
    "PREFER",
    "EntryState",
    "EntryUpdate",
    "Merge",
    "Snapshot",
    "SyncRecord",
    "merge",
]

#: How a pull settles conflicts: keep this zoo's values, or take the remote's.
PREFER = ("local", "remote")
Prefer = str | None  # one of PREFER, or None: conflicts are listed
_UNKNOWN: Any = object()  # a base value nobody recorded


@dataclass(frozen=True)
class EntryState:
    """What can change about an entry once it is added: its name, its dataset with the
    metrics measured on it, and its tags."""

    name: str
    dataset: str | None
    metrics: Mapping[str, Any]
    tags: Mapping[str, str]

    @classmethod
    def of(cls, entry: Entry | Mapping[str, Any]) -> EntryState:
        """The state of an entry record or of a (checked) manifest entry."""
        if isinstance(entry, Entry):
            entry = entry.to_dict()
        return cls(
            entry["name"],
            entry["dataset"],
            dict(entry["metrics"]),
            dict(sorted(entry["tags"].items())),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "metrics": dict(self.metrics),
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Snapshot:
    """A manifest reduced to what a merge compares: each entry's state by id, and each
    family's reference entry by id."""

    entries: Mapping[str, EntryState] = field(default_factory=dict)
    references: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any]) -> Snapshot:
        """The snapshot of a manifest (the zoo's own, or one checked by ``parse_manifest``),
        whose references name entries."""
        entries = {e["id"]: EntryState.of(e) for e in manifest["entries"]}
        ids = {state.name: entry_id for entry_id, state in entries.items()}
        references = {f: ids[name] for f, name in manifest["references"].items() if name in ids}
        return cls(entries, references)

    def to_json(self) -> str:
        """Canonical JSON text, as the index stores it."""
        data = {
            "entries": {i: s.to_dict() for i, s in self.entries.items()},
            "references": dict(self.references),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """The snapshot :meth:`to_json` wrote."""
        data = json.loads(text)
        entries = {i: EntryState(**s) for i, s in data["entries"].items()}
        return cls(entries, data["references"])


@dataclass(frozen=True)
class SyncRecord:
    """The state a zoo and a remote (``remote``: endpoint, repository type, id and
    revision) last agreed on: at commit ``commit``, after a push or a pull."""

    remote: str
    commit: str | None
    snapshot: Snapshot
    synced: datetime | None = None


@dataclass(frozen=True)
class EntryUpdate:
    """A remote edit of a local entry: the entry's state as the merge saw it, and after."""

    id: str
    before: EntryState
    after: EntryState


@dataclass(frozen=True)
class Merge:
    """What a merge found, seen from this zoo.

    ``adds``: remote entries (ids) the zoo gets; ``updates``: remote edits of its
    entries; ``references``: families (key -> entry id) whose reference the remote
    changed; ``removed_here``: entries this zoo removed since the base and the remote
    left unchanged (a push deletes them); ``removed_there``: entries the remote removed
    since the base (a pull keeps them here); ``conflicts``: one line per value both
    sides changed differently.
    """

    adds: tuple[str, ...] = ()
    updates: tuple[EntryUpdate, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)
    removed_here: tuple[str, ...] = ()
    removed_there: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()

    @property
    def behind(self) -> bool:
        """Whether the remote holds anything this zoo lacks (a push waits for a pull)."""
        return bool(
            self.adds or self.updates or self.references or self.removed_there or self.conflicts
        )

    def missing_here(self, here: Snapshot, there: Snapshot) -> list[str]:
        """One line per remote change this zoo lacks (what a push refused for)."""
        lines = [f"new entry `{there.entries[i].name}`" for i in self.adds]
        lines += [
            f"`{u.before.name}`: {', '.join(_changes(u.before, u.after))}" for u in self.updates
        ]
        lines += [f"`{here.entries[i].name}` removed there" for i in self.removed_there]
        lines += [f"family {f[:12]}…'s reference" for f in self.references]
        return [*self.conflicts, *lines]


def merge(base: Snapshot | None, here: Snapshot, there: Snapshot, prefer: Prefer = None) -> Merge:
    """Merge the remote's snapshot ``there`` into this zoo's ``here``, from ``base``.

    Each value (a name, a dataset with its metrics, one tag, a family's reference)
    both sides hold differently is the side's that changed it since ``base``; changed
    on both sides it is a conflict, settled by ``prefer`` (``local`` or ``remote``) or
    listed in :attr:`Merge.conflicts`. An entry removed on one side is removed there
    only if the other side left it unchanged; a pull never removes a local entry.
    """
    if prefer not in (None, *PREFER):
        raise ValueError(f"prefer must be one of {PREFER} or None, not {prefer!r}")
    conflicts: list[str] = []
    adds: list[str] = []
    updates: list[EntryUpdate] = []
    removed_here: list[str] = []
    removed_there: list[str] = []
    known = base.entries if base is not None else {}
    for entry_id in sorted(set(here.entries) | set(there.entries)):
        mine, theirs, was = (s.entries.get(entry_id) for s in (here, there, base or Snapshot()))
        if mine is not None and theirs is not None:
            merged = _merge_entry(was, mine, theirs, prefer, conflicts)
            if merged != mine:
                updates.append(EntryUpdate(entry_id, mine, merged))
        elif mine is not None:
            if entry_id in known:
                removed_there.append(entry_id)
        elif theirs is not None:
            if entry_id not in known:
                adds.append(entry_id)
            elif theirs == known[entry_id]:
                removed_here.append(entry_id)
            elif prefer == "remote":
                adds.append(entry_id)
            elif prefer is None:
                conflicts.append(f"`{theirs.name}` was removed here and changed there")
    names = Counter(
        [u.after.name for u in updates]
        + [s.name for i, s in here.entries.items() if i not in {u.id for u in updates}]
    )
    conflicts += [f"two entries would be named `{n}`" for n, count in names.items() if count > 1]
    present = set(here.entries) | set(adds)
    references: dict[str, str] = {}
    for family in sorted(set(here.references) & set(there.references)):
        mine_ref, theirs_ref = here.references[family], there.references[family]
        was_ref = base.references.get(family, mine_ref) if base is not None else mine_ref
        label = f"family {family[:12]}…: reference"
        chosen = _pick(was_ref, mine_ref, theirs_ref, prefer, conflicts, label)
        if chosen != mine_ref and chosen in present:
            references[family] = chosen
    return Merge(
        tuple(adds),
        tuple(updates),
        references,
        tuple(removed_here),
        tuple(removed_there),
        tuple(conflicts),
    )


def _merge_entry(
    was: EntryState | None,
    mine: EntryState,
    theirs: EntryState,
    prefer: Prefer,
    conflicts: list[str],
) -> EntryState:
    """One entry both sides hold, merged value by value (tags key by key)."""
    label = f"`{mine.name}`"
    name = _pick(
        _UNKNOWN if was is None else was.name,
        mine.name,
        theirs.name,
        prefer,
        conflicts,
        f"{label}: name",
    )
    dataset, metrics = _pick(
        _UNKNOWN if was is None else (was.dataset, was.metrics),
        (mine.dataset, mine.metrics),
        (theirs.dataset, theirs.metrics),
        prefer,
        conflicts,
        f"{label}: dataset and metrics",
    )
    base_tags = {} if was is None else was.tags  # no base: a tag one side lacks is the other's
    tags = {}
    for key in sorted(set(mine.tags) | set(theirs.tags) | set(base_tags)):
        value = _pick(
            base_tags.get(key),
            mine.tags.get(key),
            theirs.tags.get(key),
            prefer,
            conflicts,
            f"{label}: tag `{key}`",
        )
        if value is not None:
            tags[key] = value
    return EntryState(name, dataset, metrics, tags)


def _pick(
    was: Any, mine: Any, theirs: Any, prefer: Prefer, conflicts: list[str], label: str
) -> Any:
    """The merged value: the side's that changed it since ``was``; both changed
    differently is a conflict (``mine`` kept unless ``prefer`` says otherwise)."""
    if mine == theirs:
        return mine
    if was is not _UNKNOWN:
        if mine == was:
            return theirs
        if theirs == was:
            return mine
    if prefer is None:
        conflicts.append(f"{label} is {_shown(mine)} here and {_shown(theirs)} there")
    return theirs if prefer == "remote" else mine


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):  # a dataset with its metrics
        return repr(value[0])
    return repr(value)


def _changes(before: EntryState, after: EntryState) -> Iterable[str]:
    if before.name != after.name:
        yield f"renamed `{after.name}`"
    if (before.dataset, before.metrics) != (after.dataset, after.metrics):
        yield f"dataset {after.dataset!r}"
    for key in sorted(set(before.tags) | set(after.tags)):
        if before.tags.get(key) != after.tags.get(key):
            yield f"tag `{key}`" + ("" if key in after.tags else " removed")
