"""The zoo's index: entries, tags, parents, families and cached alignments in SQLite.

:class:`Index` owns the sessions; ORM rows never leave it (rows become
frozen :class:`Entry` records and :class:`~canon.core.Alignment` at the
boundary). Each write is one transaction (``BEGIN IMMEDIATE``, so concurrent
writers queue on the busy timeout instead of failing); SQLite errors become
zoo errors (read-only, busy, damaged index).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from canon.core import Alignment
from canon.errors import (
    CorruptZooError,
    DuplicateObjectError,
    EntryInUseError,
    EntryNotFoundError,
    MergeConflictError,
    NameClashError,
    ReadOnlyZooError,
)
from canon.zoo._layout import index_error
from canon.zoo._merge import EntryState, Merge, Snapshot, SyncRecord
from canon.zoo._migrate import make_engine, read_only_engine
from canon.zoo._models import (
    CanonicalCacheModel,
    EntryModel,
    FamilyMatchingModel,
    FamilyModel,
    PairCacheModel,
    ParentModel,
    RemoteModel,
    TagModel,
)
from canon.zoo._records import CACHE_VERSION, Entry, canonical_json

__all__ = ["Index", "Insertion", "NewEntry"]


@dataclass(frozen=True)
class Insertion:
    """One entry for :meth:`Index.insert_many`: what :meth:`Index.insert` takes."""

    new: NewEntry
    parent_ids: Sequence[str]
    alignment: Alignment
    aligned_to: str
    ensure_object: Callable[[], object] | None = None


@dataclass(frozen=True)
class NewEntry:
    """What the index records for a new entry (its weights already checked and stored)."""

    id: str
    name: str
    architecture: str
    config_json: str
    family: str
    dataset: str | None
    kind: str
    created: datetime  # naive UTC, as the index stores times
    metrics_json: str
    tags: Mapping[str, str]
    matching: str | None = None  # the family's resolved ``auto`` matching method


class Index:
    """The index at ``path`` of the zoo named ``label`` (in messages).

    A ``read_only`` index answers every read and refuses writes with
    :class:`~canon.errors.ReadOnlyZooError`.
    """

    def __init__(self, path: Path, *, label: str, read_only: bool = False) -> None:
        self.path = path
        self.label = label
        self.read_only = read_only
        if read_only:
            self._write: sessionmaker[Session] | None = None
            self._read = sessionmaker(read_only_engine(path), expire_on_commit=False)
        else:
            self._write = sessionmaker(make_engine(path, immediate=True), expire_on_commit=False)
            self._read = sessionmaker(make_engine(path, immediate=False), expire_on_commit=False)

    def close(self) -> None:
        """Release the database connections."""
        for maker in (self._write, self._read):
            if maker is not None:
                maker.kw["bind"].dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        maker = self._write if write else self._read
        if maker is None:
            raise ReadOnlyZooError(
                f"the zoo {self.label} is read-only here; writing needs write access to it"
            )
        session = maker()
        try:
            yield session
            if write:
                session.commit()
        except DBAPIError as exc:
            session.rollback()
            raise index_error(self.path, exc) from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the index's write lock for the block: no other process commits meanwhile."""
        with self.session(write=True) as s:
            s.connection()  # begins the transaction: BEGIN IMMEDIATE takes the lock
            yield

    # -- reading entries -----------------------------------------------------------------

    @staticmethod
    def record(s: Session, row: EntryModel) -> Entry:
        """The frozen record of an entry row."""
        tags = s.execute(select(TagModel.key, TagModel.value).where(TagModel.entry_id == row.id))
        parents = s.scalars(
            select(ParentModel.parent_id)
            .where(ParentModel.child_id == row.id)
            .order_by(ParentModel.position)
        )
        return _entry(row, {key: value for key, value in tags}, tuple(parents))

    def row(self, s: Session, ref: Entry | str) -> EntryModel:
        """The row of an entry (by record, name or id); unknown names suggest close matches."""
        if isinstance(ref, Entry):
            row = s.get(EntryModel, ref.id)
            name = ref.name
        else:
            name = ref
            row = s.scalar(select(EntryModel).where(EntryModel.name == ref))
            if row is None and len(ref) == 64:
                row = s.get(EntryModel, ref)
        if row is None:
            names = list(s.scalars(select(EntryModel.name)))
            close = difflib.get_close_matches(str(name), names, n=3)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise EntryNotFoundError(f"no entry `{name}` in {self.label}{hint}", name=str(name))
        return row

    def get(self, ref: Entry | str) -> Entry:
        """The entry called ``ref`` (or with that id)."""
        with self.session() as s:
            return self.record(s, self.row(s, ref))

    def has_name(self, name: str) -> bool:
        """Whether an entry is called ``name``."""
        with self.session() as s:
            return s.scalar(select(EntryModel.id).where(EntryModel.name == name)) is not None

    def count(self) -> int:
        """The number of entries."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(EntryModel)) or 0)

    def ids(self) -> set[str]:
        """Every entry's id."""
        with self.session() as s:
            return set(s.scalars(select(EntryModel.id)))

    # -- families ------------------------------------------------------------------------

    def reference(self, entry_or_family: Entry | str) -> Entry:
        """The reference entry of a family (given by key) or of an entry's family."""
        with self.session() as s:
            family = None
            if isinstance(entry_or_family, str):
                family = s.get(FamilyModel, entry_or_family)
            if family is None:
                family = s.get(FamilyModel, self.row(s, entry_or_family).family)
            if family is None or family.reference_id is None:
                raise CorruptZooError(f"family has no reference entry in {self.label}")
            return self.record(s, self.row(s, family.reference_id))

    def set_reference(self, ref: Entry | str) -> Entry:
        """Make ``ref`` its family's reference; drop the caches that depended on the old one."""
        with self.session(write=True) as s:
            row = self.row(s, ref)
            self._make_reference(s, row)
            return self.record(s, row)

    def _make_reference(self, s: Session, row: EntryModel) -> None:
        family = s.get(FamilyModel, row.family)
        if family is None:
            raise CorruptZooError(f"entry `{row.name}` has no family row in {self.label}")
        if family.reference_id != row.id:
            family.reference_id = row.id
            members = select(EntryModel.id).where(EntryModel.family == row.family)
            s.execute(delete(CanonicalCacheModel).where(CanonicalCacheModel.entry_id.in_(members)))
            s.execute(
                delete(PairCacheModel).where(
                    or_(PairCacheModel.entry_a.in_(members), PairCacheModel.entry_b.in_(members))
                )
            )

    # -- writing entries -----------------------------------------------------------------

    def before_insert(
        self,
        name: str,
        sha: str,
        family: str,
        parents: Sequence[Entry | str],
        *,
        freed: Collection[str] = (),
    ) -> tuple[list[str], str | None]:
        """What an add needs before it writes, read in one transaction: the name must be
        free (or among the names a merge renames away: ``freed``; the insert checks it
        again) and the weights new; the parents' ids and the family's reference id (None
        for a new family)."""
        with self.session() as s:
            self._check_new(s, None if name in freed else name, sha)
            parent_ids = [self.row(s, p).id for p in parents]
            row = s.get(FamilyModel, family)
            return parent_ids, None if row is None else row.reference_id

    def _check_new(self, s: Session, name: str | None, sha: str) -> None:
        if name is not None:
            self._check_name_free(s, name)
        existing = s.scalar(select(EntryModel.name).where(EntryModel.id == sha))
        if existing is not None:
            raise DuplicateObjectError(
                f"these weights are already in the zoo as `{existing}` (id {sha[:12]}…); "
                "identical weights are stored once",
                existing=existing,
            )

    def _check_name_free(self, s: Session, name: str) -> None:
        if s.scalar(select(EntryModel.id).where(EntryModel.name == name)) is not None:
            raise NameClashError(
                f"an entry named `{name}` already exists in {self.label}", name=name
            )

    def insert(self, item: Insertion) -> Entry:
        """Record a new entry in one transaction: its row, tags and parents, its family (a new
        family gets it as reference) and its alignment, if it was made to the reference.

        ``item.ensure_object`` runs inside the transaction, holding the index's write
        lock, before the commit: it puts the entry's object back (or refuses) should a
        concurrent removal (:meth:`remove_object`) have taken it since it was written.
        """
        return self.insert_many([item])[0]

    def insert_many(
        self,
        items: Sequence[Insertion],
        *,
        merged: Merge | None = None,
        synced: SyncRecord | None = None,
    ) -> list[Entry]:
        """Record several new entries (:meth:`insert`'s, in order: a parent or a new family's
        reference before the entries that name it) in one transaction: all or none.

        A pull's ``merged`` remote edits of existing entries (each checked to be still as
        the merge saw it) and references, and its ``synced`` record, join the same
        transaction."""
        with self.session(write=True) as s:
            if merged is not None:  # first: a renamed entry may free a name a new one takes
                self._update(s, merged)
            entries = [self._insert(s, item) for item in items]
            if merged is not None:  # last: a new entry may be a family's new reference
                for entry_id in merged.references.values():
                    self._make_reference(s, self.row(s, entry_id))
            if synced is not None:
                self._record_sync(s, synced)
            return entries

    def _update(self, s: Session, merged: Merge) -> None:
        """A merge's edits of existing entries, in the open write transaction ``s``."""
        rows = {u.id: s.get(EntryModel, u.id) for u in merged.updates}
        for update in merged.updates:
            row = rows[update.id]
            if row is None or EntryState.of(self.record(s, row)) != update.before:
                raise MergeConflictError(
                    f"`{update.before.name}` changed in {self.label} while this ran; nothing "
                    "was changed, run it again"
                )
        for update in merged.updates:  # names may swap: free them all first
            row = rows[update.id]
            assert row is not None
            if update.after.name != update.before.name:
                row.name = f"~{row.id}"
        s.flush()
        for update in merged.updates:
            after, row = update.after, rows[update.id]
            assert row is not None
            gone = [k for k in update.before.tags if k not in after.tags]
            self._edit_row(s, row, after.name, after.dataset, after.tags, gone)
            if (after.dataset, after.metrics) != (update.before.dataset, update.before.metrics):
                row.metrics = canonical_json(dict(after.metrics))
        s.flush()

    def synced(self, remote: str) -> SyncRecord | None:
        """What the zoo and ``remote`` last agreed on (None: they never synced)."""
        with self.session() as s:
            row = s.get(RemoteModel, remote)
            if row is None:
                return None
            return SyncRecord(row.remote, row.commit, Snapshot.from_json(row.snapshot), row.synced)

    def record_sync(self, record: SyncRecord) -> None:
        """Record what the zoo and a remote now agree on (after a push)."""
        with self.session(write=True) as s:
            self._record_sync(s, record)

    @staticmethod
    def _record_sync(s: Session, record: SyncRecord) -> None:
        row = s.get(RemoteModel, record.remote)
        if row is None:
            row = RemoteModel(remote=record.remote)
            s.add(row)
        row.commit = record.commit
        row.snapshot = record.snapshot.to_json()
        row.synced = datetime.now(UTC).replace(tzinfo=None)

    def _insert(self, s: Session, item: Insertion) -> Entry:
        """Add one entry's rows in the open write transaction ``s``."""
        new = item.new
        self._check_new(s, new.name, new.id)
        if item.ensure_object is not None:
            item.ensure_object()
        family = s.get(FamilyModel, new.family)
        if family is None:
            family = FamilyModel(
                key=new.family,
                architecture=new.architecture,
                config=new.config_json,
                reference_id=None,
            )
            s.add(family)
        s.add(
            EntryModel(
                id=new.id,
                name=new.name,
                architecture=new.architecture,
                config=new.config_json,
                family=new.family,
                dataset=new.dataset,
                kind=new.kind,
                created=new.created,
                metrics=new.metrics_json,
            )
        )
        s.flush()
        if family.reference_id is None:
            family.reference_id = new.id
        s.add_all(TagModel(entry_id=new.id, key=k, value=v) for k, v in new.tags.items())
        s.add_all(
            ParentModel(child_id=new.id, parent_id=p, position=i)
            for i, p in enumerate(item.parent_ids)
        )
        if family.reference_id == item.aligned_to:
            s.add(_alignment_row(new.id, item.aligned_to, item.alignment))
        if new.matching is not None:
            self._record_matching(s, new.family, new.matching)
        s.flush()
        return self.record(s, s.get(EntryModel, new.id))  # type: ignore[arg-type]

    def update(
        self,
        ref: Entry | str,
        *,
        name: str | None = None,
        dataset: str | None = None,
        tags: Mapping[str, str] | None = None,
        untag: Sequence[str] = (),
        metrics: str | None = None,
    ) -> Entry:
        """Rename an entry, give it a dataset, set or remove tags, replace its metrics
        (checked values; ``metrics`` as canonical JSON), in one transaction; the updated
        record. A new dataset drops the entry's cached pair results, which were computed
        on the old one."""
        with self.session(write=True) as s:
            row = self.row(s, ref)
            self._edit_row(s, row, name, ... if dataset is None else dataset, tags or {}, untag)
            if metrics is not None:
                row.metrics = metrics
            s.flush()
            return self.record(s, row)

    def _edit_row(
        self,
        s: Session,
        row: EntryModel,
        name: str | None,
        dataset: str | EllipsisType | None,
        tags: Mapping[str, str],
        untag: Sequence[str],
    ) -> None:
        """Rename ``row`` (unless ``name`` is None), give it a dataset (unless ``...``;
        dropping its cached pairs, computed on the old one), set and remove tags."""
        if name is not None and name != row.name:
            self._check_name_free(s, name)
            row.name = name
        if dataset is not ... and dataset != row.dataset:
            row.dataset = dataset
            s.execute(
                delete(PairCacheModel).where(
                    or_(PairCacheModel.entry_a == row.id, PairCacheModel.entry_b == row.id)
                )
            )
        for key in untag:
            s.execute(delete(TagModel).where(TagModel.entry_id == row.id, TagModel.key == key))
        for key, value in tags.items():
            tag = s.scalar(select(TagModel).where(TagModel.entry_id == row.id, TagModel.key == key))
            if tag is None:
                s.add(TagModel(entry_id=row.id, key=key, value=value))
            else:
                tag.value = value
        s.flush()

    def remove_object(self, entry_id: str, remove: Callable[[str], object]) -> bool:
        """Call ``remove(entry_id)`` (which deletes the object file) holding the index's
        write lock, unless an entry has that id; whether it was called.

        Objects are deleted only this way, and entries are recorded only after
        :meth:`insert`'s ``ensure_object`` has run under the same lock, so no
        interleaving of adds and removals can leave an entry without its object.
        """
        with self.session(write=True) as s:
            if s.get(EntryModel, entry_id) is not None:
                return False
            remove(entry_id)
            return True

    def has(self, entry_id: str) -> bool:
        """Whether an entry has the id ``entry_id``."""
        with self.session() as s:
            return s.get(EntryModel, entry_id) is not None

    def remove(self, ref: Entry | str) -> Entry:
        """Remove an entry's rows (tags, parents and caches cascade); the removed record.

        Refused for an entry that is another's parent, or the reference of a
        family with other members (``set_reference`` another member first).
        """
        with self.session(write=True) as s:
            row = self.row(s, ref)
            children = list(
                s.scalars(
                    select(EntryModel.name)
                    .join(ParentModel, ParentModel.child_id == EntryModel.id)
                    .where(ParentModel.parent_id == row.id)
                )
            )
            if children:
                raise EntryInUseError(
                    f"`{row.name}` is a parent of {', '.join(f'`{c}`' for c in children)}; "
                    "remove those first",
                    name=row.name,
                )
            family = s.get(FamilyModel, row.family)
            others = list(
                s.scalars(
                    select(EntryModel.name).where(
                        EntryModel.family == row.family, EntryModel.id != row.id
                    )
                )
            )
            if family is not None and family.reference_id == row.id:
                if others:
                    raise EntryInUseError(
                        f"`{row.name}` is the reference of its family; make another member "
                        f"(e.g. `{others[0]}`) the reference with set_reference first",
                        name=row.name,
                    )
                s.delete(family)
            removed = self.record(s, row)
            s.delete(row)
            return removed

    # -- the families' default matching methods -----------------------------------------

    def family_matching(self, family: str) -> str | None:
        """The matching method ``auto`` resolves to for ``family``, as recorded under this
        code's cache version (None when not recorded)."""
        with self.session() as s:
            row = s.get(FamilyMatchingModel, (family, CACHE_VERSION))
            return None if row is None else row.method

    def store_family_matching(self, family: str, method: str) -> None:
        """Record what ``auto`` resolves to for ``family`` (nothing in a read-only index, or
        for a family that has no row)."""
        if self.read_only:
            return
        with self.session(write=True) as s:
            self._record_matching(s, family, method)

    @staticmethod
    def _record_matching(s: Session, family: str, method: str) -> None:
        if s.get(FamilyModel, family) is None:
            return
        row = s.get(FamilyMatchingModel, (family, CACHE_VERSION))
        if row is None:
            s.add(FamilyMatchingModel(family=family, cache_version=CACHE_VERSION, method=method))
        elif row.method != method:
            row.method = method

    # -- cached alignments ---------------------------------------------------------------

    def cached_alignment(self, entry_id: str, reference_id: str) -> Alignment | None:
        """The cached alignment of an entry to a reference (this code's cache version)."""
        with self.session() as s:
            row = s.get(CanonicalCacheModel, (entry_id, reference_id, CACHE_VERSION))
            return None if row is None else Alignment.from_dict(json.loads(row.alignment))

    def store_alignment(self, entry_id: str, reference_id: str, alignment: Alignment) -> None:
        """Cache an alignment (nothing in a read-only index: it is computed again when asked)."""
        if self.read_only:
            return
        with self.session(write=True) as s:
            if s.get(CanonicalCacheModel, (entry_id, reference_id, CACHE_VERSION)) is None:
                s.add(_alignment_row(entry_id, reference_id, alignment))


def _alignment_row(entry_id: str, reference_id: str, alignment: Alignment) -> CanonicalCacheModel:
    return CanonicalCacheModel(
        entry_id=entry_id,
        reference_id=reference_id,
        cache_version=CACHE_VERSION,
        alignment=canonical_json(alignment.to_dict()),
    )


def _entry(row: EntryModel, tags: Mapping[str, str], parents: tuple[str, ...]) -> Entry:
    """The frozen record of an entry row (rows never leave the index)."""
    return Entry(
        id=row.id,
        name=row.name,
        architecture=row.architecture,
        config=json.loads(row.config),
        family=row.family,
        dataset=row.dataset,
        kind=row.kind,
        tags=dict(sorted(tags.items())),
        parents=parents,
        metrics=json.loads(row.metrics),
        created=row.created.replace(tzinfo=UTC),
    )
