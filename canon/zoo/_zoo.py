"""The zoo: a folder of trained networks, seen through one small facade.

:class:`Zoo` holds four parts, each with one job: the :class:`Index` (entries,
families, cached alignments in SQLite), the :class:`ObjectStore` (content-
addressed safetensors files), the :class:`PairCache` (cached pair results)
and the :class:`JobQueue` (persistent jobs). It adds, checks and removes
entries, gives their weights and canonical forms, and answers comparisons
and tables (:mod:`canon.zoo._analysis`) from the cache or by computing them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn

from canon._limits import clip
from canon.architectures import build_model
from canon.checkpoint import load_state
from canon.core import Alignment, Spec, apply_alignment, match, normalize
from canon.data import Dataset, load_dataset, pin_dataset
from canon.engine import resolve_method
from canon.errors import (
    CheckpointFormatError,
    ConfigError,
    CorruptZooError,
    InvalidEntryError,
    NameClashError,
    ReadOnlyZooError,
    ZooError,
)
from canon.zoo._analysis import barrier_table, compare, errors_on
from canon.zoo._evaluation import bend_curve, energy, plane, train_entry
from canon.zoo._index import Index, Insertion, NewEntry
from canon.zoo._ingest import (
    Incoming,
    Prepared,
    Source,
    check_group_sizes,
    names_for,
    prepare,
    spec_for,
)
from canon.zoo._job_queue import JobQueue
from canon.zoo._keys import dataset_of
from canon.zoo._layout import (
    HEAD_REVISION,
    INDEX,
    MANIFEST,
    OBJECTS,
    check_folder,
    is_writable,
    is_zoo,
    listed_ids,
    object_count,
    recorded_revision,
    stale_rebuilds,
)
from canon.zoo._listing import list_entries
from canon.zoo._merge import Merge, SyncRecord
from canon.zoo._midpoints import add_midpoint
from canon.zoo._migrate import upgrade
from canon.zoo._objects import ObjectStore, check_sha, sha256_bytes
from canon.zoo._pair_cache import PairCache
from canon.zoo._records import (
    Entry,
    EntryFields,
    VerifyReport,
    check_dataset,
    check_metrics,
    check_name,
    check_tags,
    entry_fields,
)
from canon.zoo._trust import check_trusted

__all__ = ["Zoo"]

#: the metrics ``add`` measures on the entry's dataset
_MEASURED_ERRORS = ("train_error", "test_error")


def _with_errors(
    fields: EntryFields,
    prepared: Prepared,
    dataset: str,
    device: str | torch.device,
    given: Mapping[str, Any] | None = None,
) -> EntryFields:
    """``fields`` whose metrics are the network's train and test errors on ``dataset``
    (none where the data is not here) and the ``given`` metrics, kept over them."""
    model = build_model(prepared.architecture, prepared.config)
    errors = errors_on(model, prepared.state, dataset, device, prepared.architecture)
    return replace(fields, metrics=check_metrics({**errors, **(given or {})}))


def pinned(dataset: str | None) -> str | None:
    """A dataset the user named, as the zoo records it: a path made absolute and pinned
    to its content (:func:`~canon.data.pin_dataset`), checked again (it grew)."""
    return None if dataset is None else check_dataset(pin_dataset(dataset))


log = logging.getLogger("canon.zoo")

NORMALIZED_CACHE_SIZE = 64  # normalized forms kept in memory per open zoo


class Zoo:
    """A zoo of networks: add, look up, align, compare and remove entries.

    Open one with :meth:`open`. ``read_only`` zoos (a folder this process
    cannot write) answer every read and refuse writes. ``trust_code`` lets
    the zoo's entries name ``module:function`` architectures, which canon
    imports and runs (see :mod:`canon.zoo._trust`).
    """

    pair_computations: int = 0  # pairs computed (not found in the cache) by this object

    def __init__(
        self,
        root: Path,
        *,
        index: Path | None = None,
        read_only: bool = False,
        trust_code: bool = False,
    ) -> None:
        """Use :meth:`open` or :meth:`init`."""
        self.root = root
        self.trust_code = trust_code
        # A rebuild indexes into a temporary index: its partial view is never the manifest.
        self._keeps_manifest = index is None
        self.objects = ObjectStore(root / OBJECTS)
        self.index = Index(index or root / INDEX, label=repr(self), read_only=read_only)
        self.pairs = PairCache(self.index)
        self.jobs = JobQueue(self.index)
        self._typed: set[str] = set()  # code architectures the user typed in this session
        self._specs: dict[str, Spec] = {}
        self._normalized: OrderedDict[tuple[str, str], dict[str, Tensor]] = OrderedDict()
        self._datasets: dict[str, Dataset] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, create: bool = True, trust_code: bool = False
    ) -> Self:
        """Open the zoo at ``path``, upgrading its index to the newest schema.

        With ``create`` (the default) a missing zoo is created; without it a
        folder that holds no zoo raises :class:`~canon.errors.CorruptZooError`.
        A folder with ``manifest.json`` and ``objects/`` but no index (a zoo
        as it travels, like the embedded default zoo) gets its index rebuilt
        from the manifest, every entry checked as ``add`` checks it; if any
        entry is bad the folder is left exactly as it was and the error names
        the entry (``canon verify --repair`` rebuilds without the bad ones).
        A zoo this process cannot write opens read-only.
        """
        from canon.zoo._rebuild import rebuild_index

        root = Path(path)
        check_folder(root)
        index = root / INDEX
        if not index.is_file() and (root / MANIFEST).is_file():
            if not is_writable(root):
                raise ReadOnlyZooError(
                    f"the zoo `{root}` has no index yet ({MANIFEST} and objects only) and is "
                    "read-only here, so it cannot be indexed: open it once where it can be "
                    "written, or copy it (`canon verify` checks it as it is)"
                )
            rebuild_index(root, cls, trust_code=trust_code)
        if not index.is_file():
            if not create:
                raise CorruptZooError(f"`{root}` is not a zoo (no `{INDEX}`); create it first")
            try:
                (root / OBJECTS).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ReadOnlyZooError(
                    f"cannot create a zoo at `{root}`: {exc.strerror or exc}"
                ) from None
        if is_writable(root):
            _check_not_reset(root)
            upgrade(index)
            return cls(root, trust_code=trust_code)
        if recorded_revision(index) != HEAD_REVISION:
            raise ReadOnlyZooError(
                f"the zoo `{root}` is read-only here and its index needs an upgrade to this "
                "canon's schema; open it once where it can be written"
            )
        return cls(root, read_only=True, trust_code=trust_code)

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> Self:
        """Create (or open) the zoo at ``path``."""
        return cls.open(path, create=True)

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a zoo: an index, or a manifest to rebuild one from."""
        return is_zoo(Path(path))

    @classmethod
    def check(
        cls, path: str | os.PathLike[str], *, repair: bool = False, trust_code: bool = False
    ) -> VerifyReport:
        """Verify the zoo at ``path`` (see :meth:`verify`), also one whose index is missing.

        Without an index, the manifest's entries are checked against the
        objects with nothing written; ``repair`` then rebuilds the index from
        the good entries, skipping (and reporting) the bad ones, deleting nothing.
        """
        from canon.zoo._rebuild import rebuild_index

        root = Path(path)
        check_folder(root)
        rebuilt = None
        if not (root / INDEX).is_file() and (root / MANIFEST).is_file():
            rebuilt = rebuild_index(root, cls, trust_code=trust_code, skip_bad=True, publish=repair)
            if not repair:
                return VerifyReport(
                    ok=not rebuilt.skipped,
                    checked=len(rebuilt.indexed),
                    skipped_entries=rebuilt.skipped,
                )
        with cls.open(root, create=False, trust_code=trust_code) as zoo:
            report = zoo.verify(repair=repair)
        if rebuilt is None:
            return report
        return replace(report, skipped_entries=rebuilt.skipped, rebuilt=True)

    @property
    def read_only(self) -> bool:
        """Whether this process can only read the zoo."""
        return self.index.read_only

    def close(self) -> None:
        """Release the database connections."""
        self.index.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r})"

    # -- looking up ----------------------------------------------------------------------

    def get(self, name: Entry | str) -> Entry:
        """The entry called ``name`` (or with that id); unknown names suggest close matches."""
        return self.index.get(name)

    def __getitem__(self, name: str) -> Entry:
        return self.index.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.index.has_name(name)

    def __len__(self) -> int:
        return self.index.count()

    def entries(self) -> list[Entry]:
        """Every entry, sorted by name."""
        return self.select()

    def select(
        self,
        *,
        architecture: str | None = None,
        dataset: str | None = None,
        kind: str | None = None,
        tags: Mapping[str, object] | None = None,
        **tag_filters: object,
    ) -> list[Entry]:
        """Entries matching every given filter and tag (``key=value``), sorted by name."""
        return list_entries(
            self.index.path,
            architecture=architecture,
            dataset=dataset,
            kind=kind,
            tags={**(tags or {}), **tag_filters},
        )

    def choose(
        self,
        names: Sequence[str] = (),
        tags: Mapping[str, object] | None = None,
        *,
        kind: str | None = None,
        least: int = 1,
        what: str = "this",
    ) -> list[Entry]:
        """The entries ``names`` (in that order) that carry every tag, or without names every
        entry of ``kind`` (``None`` or ``any``: every kind) with the tags; fewer than
        ``least`` is a :class:`ConfigError` naming ``what`` needs them."""
        wanted = {k: str(v) for k, v in (tags or {}).items()}
        kind = None if kind == "any" else kind
        if names:
            chosen = [self.get(n) for n in names]
            chosen = [e for e in chosen if all(e.tags.get(k) == v for k, v in wanted.items())]
        else:
            chosen = self.select(kind=kind, tags=wanted)
        if len(chosen) < least:
            count = {1: "one entry", 2: "two entries"}.get(least, f"{least} entries")
            raise ConfigError(f"{what} needs at least {count}; the selection has {len(chosen)}")
        return chosen

    def reference(self, entry_or_family: Entry | str) -> Entry:
        """The reference entry of a family (given by key) or of an entry's family."""
        return self.index.reference(entry_or_family)

    def set_reference(self, name: Entry | str) -> Entry:
        """Make ``name`` its family's reference; drop the caches that depended on the old one."""
        entry = self.index.set_reference(name)
        self._sync_manifest()
        return entry

    # -- adding and removing -------------------------------------------------------------

    def add(
        self,
        source: Source,
        *,
        name: str,
        architecture: str | None = None,
        config: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        tags: Mapping[str, object] | None = None,
        kind: str = "solution",
        parents: Sequence[Entry | str] = (),
        metrics: Mapping[str, Any] | None = None,
        created: datetime | None = None,
        evaluate: bool = True,
        device: str | torch.device = "auto",
        input_shape: Sequence[int] | None = None,
        key: str | None = None,
    ) -> Entry:
        """Add a network (safetensors or ``.pt`` path, state dict or module) as ``name``.

        Everything is checked before anything is written: the name, tags,
        kind, metrics and parents; the architecture (``architecture`` /
        ``config`` as typed, else the file's canon metadata, which may name
        code only in a trusted zoo) builds and the tensors match it; no NaN or
        Inf. With ``evaluate`` and a ``dataset`` that loads here, the train and
        test errors are computed (unless ``metrics`` gives ``train_error``) and
        stored as metrics. Then the object is written atomically and one
        transaction records the entry (and, for a new family, makes it the
        reference). Its alignment to the family reference is cached.
        ``created`` (default: now) keeps an imported entry's creation time.
        ``input_shape`` and ``key`` are as in :func:`~canon.zoo._ingest.prepare`.
        """
        fields = entry_fields(name, kind, tags, metrics, dataset, created)
        dataset = pinned(fields.dataset)
        fields = replace(fields, dataset=dataset)
        prepared = self.prepare(
            source, architecture, config, input_shape=input_shape, key=key, dataset=dataset
        )
        if evaluate and dataset is not None and "train_error" not in (metrics or {}):
            fields = _with_errors(fields, prepared, dataset, device, metrics)
        return self.add_prepared(prepared, parents, fields)

    def add_files(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        names: Sequence[str] | None = None,
        architecture: str | None = None,
        config: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        tags: Mapping[str, object] | None = None,
        kind: str = "solution",
        evaluate: bool = True,
        device: str | torch.device = "auto",
        input_shape: Sequence[int] | None = None,
        key: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Entry]:
        """Add several checkpoint files as :meth:`add` adds one, all of them or none.

        ``names`` default to the files' names without their suffixes, or where those
        repeat (``seed0/model.pt``, ``seed1/model.pt``) to their folders' names. Every
        file is read, checked and (with ``evaluate`` and a ``dataset`` that loads here)
        evaluated first, one at a time, ``progress(done, total)`` told after each; then
        all are written in one index transaction (:meth:`add_many`, reading each file
        again, so that no two networks are held at once; a file whose weights changed in
        between is refused). Should anything fail, the zoo is left as it was.
        """
        chosen = list(names) if names is not None else names_for(files)
        if len(chosen) != len(files):
            raise ConfigError(f"{len(files)} files and {len(chosen)} names")
        # every name checked, and free, before any file is read
        fields = [entry_fields(name, kind, tags, None, dataset) for name in chosen]
        repeated = sorted({n for n in chosen if chosen.count(n) > 1})
        if repeated:
            raise ConfigError(f"the name `{repeated[0]}` is given to several files")
        taken = [n for n in chosen if n in self]
        if taken:
            raise NameClashError(f"an entry named `{taken[0]}` already exists", name=taken[0])
        data = pinned(dataset)

        def read(file: str | os.PathLike[str]) -> Prepared:
            return self.prepare(
                file, architecture, config, input_shape=input_shape, key=key, dataset=data
            )

        def again(file: str | os.PathLike[str], sha: str) -> Prepared:
            prepared = read(file)
            if sha256_bytes(prepared.data) != sha:
                raise CheckpointFormatError(
                    f"`{clip(str(file))}` changed while it was being added; nothing was added",
                    path=str(file),
                )
            return prepared

        items = []
        for done, (file, field) in enumerate(zip(files, fields, strict=True), start=1):
            field = replace(field, dataset=data)
            prepared = read(file)
            if evaluate and data is not None:
                field = _with_errors(field, prepared, data, device)
            sha = sha256_bytes(prepared.data)
            del prepared  # one network at a time
            items.append(Incoming(functools.partial(again, file, sha), (), field))
            if progress is not None:
                progress(done, len(files))
        return self.add_many(items)

    def prepare(
        self,
        source: Source,
        architecture: str | None,
        config: Mapping[str, Any] | None,
        *,
        input_shape: Sequence[int] | None = None,
        key: str | None = None,
        dataset: str | None = None,
    ) -> Prepared:
        """Read and check ``source`` as :meth:`add` does, writing nothing; an architecture
        typed here (``architecture``) is trusted for the rest of the session."""
        prepared = prepare(
            source,
            architecture,
            config,
            trust_code=self.trust_code,
            input_shape=input_shape,
            key=key,
            dataset=dataset,
        )
        if architecture is not None:
            self._typed.add(architecture)
        return prepared

    def add_prepared(
        self,
        prepared: Prepared,
        parents: Sequence[Entry | str],
        fields: EntryFields,
        *,
        store_object: bool = True,
    ) -> Entry:
        """Record checked weights as a new entry; ``store_object=False`` when the object is
        already in place (an index rebuild), so that nothing but the index is written."""
        sha = sha256_bytes(prepared.data)
        parent_ids, ref_id = self.index.before_insert(fields.name, sha, prepared.family, parents)
        planned = self._plan(prepared, sha, parent_ids, ref_id, fields)
        created_object = store_object and self.objects.put(prepared.data)[1]
        ensure = (lambda: self.objects.ensure(sha, prepared.data)) if store_object else None
        try:
            entry = self.index.insert(replace(planned, ensure_object=ensure))
        except BaseException:
            # An object this call wrote and no entry took is removed again; a crash before
            # this point leaves it unreferenced, and `verify --repair` indexes it.
            if created_object:
                self.index.remove_object(sha, self.objects.remove)
            raise
        self._sync_manifest()
        return entry

    def add_many(
        self,
        items: Sequence[Incoming],
        *,
        merged: Merge | None = None,
        synced: SyncRecord | None = None,
    ) -> list[Entry]:
        """Record several entries in one index transaction: all of them or none.

        Each item's weights are read by its ``prepare`` (one network at a time, so a
        large import never holds two), aligned to its family's reference (the zoo's, or
        the first item of a family new to it) and stored as an object before the
        transaction; parents are entries of the zoo or earlier items (by id). Should
        anything fail, or the process be killed, no entry is added, and the objects this
        call wrote are removed again (a kill leaves them unreferenced, for
        ``verify --repair``). A pull's ``merged`` edits of existing entries and its
        ``synced`` record join the transaction (:meth:`Index.insert_many`).
        """
        freed = {u.before.name for u in merged.updates} if merged is not None else set()
        references: dict[str, str] = {}  # families new to the zoo: the first item's id
        ids: set[str] = set()
        names: set[str] = set()
        planned: list[Insertion] = []
        created: list[str] = []
        try:
            for item in items:
                prepared = item.prepare()
                sha = sha256_bytes(prepared.data)
                if sha in ids or item.fields.name in names:
                    raise InvalidEntryError(
                        f"`{item.fields.name}` repeats an earlier entry's name or weights"
                    )
                zoo_parents = [p for p in item.parents if p not in ids]
                resolved, ref_id = self.index.before_insert(
                    item.fields.name, sha, prepared.family, zoo_parents, freed=freed
                )
                by_id = dict(zip(zoo_parents, resolved, strict=True))
                parent_ids = [p if p in ids else by_id[p] for p in item.parents]
                ref_id = ref_id or references.setdefault(prepared.family, sha)
                plan = self._plan(
                    prepared, sha, parent_ids, None if ref_id == sha else ref_id, item.fields
                )
                if self.objects.put(prepared.data)[1]:
                    created.append(sha)
                size = len(prepared.data)
                del prepared  # one network at a time
                ids.add(sha)
                names.add(item.fields.name)
                planned.append(replace(plan, ensure_object=self._object_kept(sha, size)))
            entries = self.index.insert_many(planned, merged=merged, synced=synced)
        except BaseException:
            for sha in created:
                self.index.remove_object(sha, self.objects.remove)
            raise
        self._sync_manifest()
        return entries

    def _object_kept(self, sha: str, size: int) -> Callable[[], None]:
        """A check, for inside the index transaction, that the object ``sha`` (``size``
        bytes, written earlier by this call) is still in place: without its bytes at
        hand it cannot be written again, so the transaction is refused instead."""

        def check() -> None:
            path = self.objects.path(sha)
            if not path.is_file() or path.stat().st_size != size:
                raise CorruptZooError(
                    f"object {sha[:12]}… was removed by another process while this ran; "
                    "nothing was added, run it again"
                )

        return check

    def _plan(
        self,
        prepared: Prepared,
        sha: str,
        parent_ids: Sequence[str],
        ref_id: str | None,
        fields: EntryFields,
    ) -> Insertion:
        """What the index records for new weights: the entry and its alignment to the
        family's reference ``ref_id`` (None: it becomes the reference)."""
        self._specs.setdefault(prepared.family, prepared.spec)
        if ref_id is None:
            alignment, aligned_to = _identity(prepared.spec), sha
        else:
            reference = normalize(self._load(ref_id, prepared.spec), prepared.spec)
            alignment = _match(prepared.state, reference, prepared.spec)
            aligned_to = ref_id
        new = NewEntry(
            id=sha,
            name=fields.name,
            architecture=prepared.architecture,
            config_json=prepared.config_json,
            family=prepared.family,
            dataset=fields.dataset,
            kind=fields.kind,
            created=fields.created,
            metrics_json=fields.metrics,
            tags=fields.tags,
            matching=resolve_method("auto", prepared.spec),
        )
        return Insertion(new, parent_ids, alignment, aligned_to)

    def edit(
        self,
        name: Entry | str,
        *,
        rename: str | None = None,
        dataset: str | None = None,
        tags: Mapping[str, object] | None = None,
        untag: Sequence[str] = (),
        device: str | torch.device = "auto",
    ) -> Entry:
        """Rename an entry, name its dataset, set tags or remove them (keys in ``untag``);
        the updated entry. Its weights, and so its id, never change. A new dataset
        drops the entry's cached comparisons (computed on the old data) and replaces its
        train and test errors by those on the new data (computed on ``device``), or drops
        them when the new data does not load here."""
        for key in untag:
            check_tags({key: ""})  # a valid key
        new_dataset = pinned(check_dataset(dataset))
        current = self.get(name)
        metrics = None
        if new_dataset is not None and new_dataset != current.dataset:
            kept = {k: v for k, v in current.metrics.items() if k not in _MEASURED_ERRORS}
            model, state = self.model(current), self.state(current)
            errors = errors_on(model, state, new_dataset, device, current.architecture)
            metrics = check_metrics({**kept, **errors})
        entry = self.index.update(
            current.id,
            name=None if rename is None else check_name(rename),
            dataset=new_dataset,
            tags=check_tags(tags),
            untag=tuple(untag),
            metrics=metrics,
        )
        self._sync_manifest()
        return entry

    def rm(self, name: Entry | str, *, keep_object: bool = False) -> None:
        """Remove an entry, its tags, caches and (unless ``keep_object``) its object file.

        Refused for an entry that is another's parent, or the reference of a
        family with other members (``set_reference`` another member first), and
        refused with nothing changed when the object's folder cannot be written.
        """
        if not keep_object:
            entry = self.get(name)
            folder = self.objects.path(entry.id).parent
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise ReadOnlyZooError(
                    f"cannot remove `{entry.name}`: its object's folder `{folder}` is not "
                    "writable here; nothing was changed"
                )
        removed = self.index.remove(name)
        self._sync_manifest()
        if not keep_object:
            # Another add of the same weights may have recorded them since: then they stay.
            self.index.remove_object(removed.id, self.objects.remove)

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check that every entry's object exists and still hashes to the entry's id.

        A damaged or missing object makes the report not ``ok``. Objects no
        entry references (an add killed before its index commit, an index
        rebuilt from an older manifest or lost) and temp files of interrupted
        writes are reported without failing; objects ``manifest.json`` lists
        are reported apart, as unindexed. ``repair=True`` indexes every such
        object as ``add`` would (:mod:`canon.zoo._recovery`), keeping and
        reporting the ones it cannot, and deletes the temp files. It never
        deletes an object. Do not repair while another process is adding.
        """
        from canon.zoo._recovery import recover_objects

        if repair and self.read_only:
            raise ReadOnlyZooError(
                f"the zoo {self!r} is read-only here: `--repair` needs write access to it "
                "(`canon verify` checks it as it is)"
            )
        ids = self.index.ids()
        present = set(self.objects.iter())
        bad = tuple(sha for sha in sorted(ids & present) if not self.objects.verify(sha))
        missing = tuple(sorted(ids - present))
        listed = listed_ids(self.root)
        unindexed = tuple(sorted((present - ids) & listed))
        orphans = tuple(sorted(present - ids - listed))
        temps = (*self.objects.temp_files(), *stale_rebuilds(self.root))
        recovered: tuple[str, ...] = ()
        kept: tuple[str, ...] = ()
        repaired: list[str] = []
        if repair:
            recovery = recover_objects(self, present - ids)
            recovered, kept = recovery.recovered, recovery.kept
            for tmp in temps:
                tmp.unlink(missing_ok=True)
                repaired.append(str(tmp))
        return VerifyReport(
            ok=not (bad or missing),
            checked=len(ids & present),
            bad_hashes=bad,
            missing_objects=missing,
            orphan_objects=orphans,
            orphan_temp_files=tuple(temps),
            unindexed_objects=unindexed,
            repaired=tuple(repaired),
            recovered=recovered,
            kept_objects=kept,
        )

    def write_manifest(self) -> Path:
        """Write ``manifest.json``, the portable list of entries, families and references.

        Once a zoo has one, every add, removal and change of reference rewrites it.
        """
        from canon.zoo._manifest import write_manifest

        return write_manifest(self)

    def _sync_manifest(self) -> None:
        """Rewrite ``manifest.json``, if the zoo has one, to list the index as it is now.

        Written holding the index's write lock, so that concurrent writers' manifests
        follow their commits in order. The change it follows is already committed: a
        manifest that cannot be written is logged and left as it was (an older manifest
        loses nothing: ``canon verify --repair`` indexes what it does not list).
        """
        if not self._keeps_manifest or self.read_only or not (self.root / MANIFEST).is_file():
            return
        from canon.zoo._manifest import write_manifest

        try:
            with self.index.write_lock():
                write_manifest(self)
        except (OSError, ZooError) as exc:
            log.warning("could not rewrite %s: %s; it is left as it was", MANIFEST, exc)

    # -- weights and canonical forms -----------------------------------------------------

    def check_buildable(self, architecture: str, source: str) -> None:
        """Refuse to build a ``module:function`` architecture read from the zoo's data
        unless the zoo is trusted or the user typed that name in this session."""
        check_trusted(
            architecture, trusted=self.trust_code or architecture in self._typed, source=source
        )

    def spec(self, entry: Entry | str) -> Spec:
        """The structure spec of an entry's architecture."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        if e.family not in self._specs:
            self.check_buildable(e.architecture, f"entry `{e.name}` of {self!r}")
            spec = spec_for(e.architecture, e.config)
            check_group_sizes(spec, f"entry `{e.name}`")  # indexed before groups were bounded
            self._specs[e.family] = spec
        return self._specs[e.family]

    def matching_method(self, entry: Entry | str, method: str = "auto") -> str:
        """The matching ``method`` that aligns the entry's family, ``auto`` resolved to its
        architecture's default (:func:`~canon.engine.resolve_method`); unknown names raise.
        ``auto`` is read from the index once recorded (:meth:`remember_matching`): tracing
        the network for its spec costs a new process seconds of imports."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        if method == "auto" and (recorded := self.index.family_matching(e.family)) is not None:
            return recorded
        return resolve_method(method, self.spec(e))

    def remember_matching(self, entry: Entry) -> None:
        """Record in the index what ``auto`` resolves to for the entry's family (once per
        family and cache version), so that cached results can be found without building
        the network. Called once a comparison or table has succeeded: a failed one leaves
        the index as it was."""
        resolved = self.matching_method(entry)
        if self.index.family_matching(entry.family) != resolved:
            self.index.store_family_matching(entry.family, resolved)

    def model(self, entry: Entry | str) -> nn.Module:
        """A fresh module of the entry's architecture and config (weights not loaded)."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        self.check_buildable(e.architecture, f"entry `{e.name}` of {self!r}")
        return build_model(e.architecture, e.config)

    def _load(
        self, sha: str, spec: Spec | None, device: str | torch.device = "cpu"
    ) -> dict[str, Tensor]:
        path = self.objects.path(check_sha(sha))
        if not path.is_file():
            # an entry removed (canon rm) while this work ran took its object with it
            self.index.get(sha)  # EntryNotFoundError when it is gone: nothing is damaged
            raise CorruptZooError(f"object {sha} is missing from {self!r}; run verify")
        return load_state(path, spec, device=device)

    def state(self, entry: Entry | str, device: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The entry's weights as a state dict on ``device``."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        return self._load(e.id, self.spec(e), device)

    def alignment(self, entry: Entry | str) -> Alignment:
        """The permutations (and signs) aligning the entry to its family reference (cached)."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        ref = self.reference(e)
        cached = self.index.cached_alignment(e.id, ref.id)
        if cached is not None:
            return cached
        spec = self.spec(e)
        if ref.id == e.id:
            alignment = _identity(spec)
        else:
            alignment = _match(self.state(e), self.normalized(ref), spec)
        self.index.store_alignment(e.id, ref.id, alignment)
        return alignment

    def normalized(
        self, entry: Entry | str, device: str | torch.device = "cpu"
    ) -> dict[str, Tensor]:
        """The entry's normalized form (Alg. 1), cached in memory for the most recent entries.

        Objects never change (they are named by their hash), so a cached form
        is always valid; it is not kept on disk because it is derived from the
        object in milliseconds.
        """
        e = entry if isinstance(entry, Entry) else self.get(entry)
        key = (e.id, str(torch.device(device)))
        cache = self._normalized
        if key in cache:
            cache.move_to_end(key)
            return dict(cache[key])
        form = normalize(self.state(e, device), self.spec(e))
        cache[key] = form
        if len(cache) > NORMALIZED_CACHE_SIZE:
            cache.popitem(last=False)
        return dict(form)

    def canonical(
        self, entry: Entry | str, device: str | torch.device = "cpu"
    ) -> dict[str, Tensor]:
        """The canonical form: normalized, then sign-fixed and aligned to the family reference."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        return apply_alignment(self.normalized(e, device), self.alignment(e), self.spec(e))

    def dataset(self, entry: Entry | str) -> Dataset:
        """The entry's dataset, loaded by name (once per zoo object)."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        name = dataset_of(e)
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    # -- analysis (functions of _analysis, _midpoints and _evaluation, as methods) --------

    compare = compare
    barrier_table = barrier_table
    midpoint = add_midpoint
    energy = energy
    plane = plane
    bend_curve = bend_curve
    train = train_entry


def _check_not_reset(root: Path) -> None:
    """Refuse an index that holds no schema (emptied, or a new file) in a folder that
    holds networks: initializing it would make every object look unreferenced."""
    index = root / INDEX
    if not index.is_file() or recorded_revision(index) is not None:
        return
    objects = object_count(root)
    if not objects and not (root / MANIFEST).is_file():
        return  # a zoo being created (by this process or a concurrent one)
    way = (
        f"move it aside and canon rebuilds it from {MANIFEST}"
        if (root / MANIFEST).is_file()
        else "move it aside, then `canon init` and `canon verify --repair` index the objects again"
    )
    raise CorruptZooError(
        f"the zoo index `{index}` holds no index (empty, or not written by canon) but the zoo "
        f"holds {objects} objects; nothing was changed: {way}"
    )


def _identity(spec: Spec) -> Alignment:
    """The alignment that changes nothing (a reference's own)."""
    perms = {g.name: torch.arange(g.size) for g in spec.groups}
    signs = {g.name: torch.ones(g.size) for g in spec.groups if g.symmetry == "sign"}
    return Alignment(perms, signs)


def _match(state: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: Spec) -> Alignment:
    """The alignment of ``state`` to the normalized ``reference``, ``state`` normalized here
    (Alg. 2). Callers normalize the reference as they load it, so that its loaded tensors
    are let go before ``state``'s normalized copy is made (a VGG's are 515 MB)."""
    return match(normalize(state, spec), reference, spec)
