"""The zoo: a SQLite index (SQLAlchemy, upgraded by Alembic) over content-addressed objects.

ORM rows never leave this module: every public method returns frozen
records (:class:`Entry`, :class:`VerifyReport`, :class:`~canon.core.Alignment`).
Each write is one transaction in its own session (``BEGIN IMMEDIATE``, so
concurrent writers queue on the busy timeout instead of failing).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session
from torch import Tensor, nn

from canon.architectures import build_model
from canon.checkpoint import load_state
from canon.core import Alignment, Spec, apply_alignment, match, normalize
from canon.errors import (
    CorruptZooError,
    DuplicateObjectError,
    EntryInUseError,
    NameClashError,
)
from canon.zoo._index import ZooIndex
from canon.zoo._ingest import Prepared, Source, prepare, spec_for
from canon.zoo._layout import listed_ids, stale_rebuilds
from canon.zoo._models import (
    CanonicalCacheModel,
    EntryModel,
    FamilyModel,
    PairCacheModel,
    ParentModel,
    TagModel,
)
from canon.zoo._objects import check_sha, sha256_bytes
from canon.zoo._records import (
    CACHE_VERSION,
    Entry,
    PairResult,
    VerifyReport,
    canonical_json,
    check_dataset,
    check_kind,
    check_metrics,
    check_name,
    check_tags,
)

__all__ = ["ZooStore"]

NORMALIZED_CACHE_SIZE = 64  # normalized forms kept in memory per open zoo


def _naive_utc(moment: datetime) -> datetime:
    """``moment`` as naive UTC, how the index stores times (naive input is taken as UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class _Fields:
    """An entry's checked fields besides its weights, as the index stores them."""

    name: str
    kind: str
    tags: dict[str, str]
    metrics: str
    dataset: str | None
    created: datetime


def _fields(
    name: str,
    kind: str,
    tags: Mapping[str, object] | None,
    metrics: Mapping[str, Any] | None,
    dataset: str | None,
    created: datetime | None,
) -> _Fields:
    """Check an entry's fields (before any weights are read)."""
    return _Fields(
        name=check_name(name),
        kind=check_kind(kind),
        tags=check_tags(tags),
        metrics=check_metrics(metrics),
        dataset=check_dataset(dataset),
        created=_naive_utc(created or datetime.now(UTC)),
    )


def _identity(spec: Spec) -> Alignment:
    perms = {g.name: torch.arange(g.size) for g in spec.groups}
    signs = {g.name: torch.ones(g.size) for g in spec.groups if g.symmetry == "sign"}
    return Alignment(perms, signs)


class ZooStore(ZooIndex):
    """A zoo of networks: add, look up, align, cache, remove and verify entries."""

    # -- adding --------------------------------------------------------------------------

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
    ) -> Entry:
        """Add a network (safetensors or ``.pt`` path, state dict or module) as ``name``.

        Everything is checked before anything is written: the name, tags,
        kind, metrics and parents; the architecture (``architecture`` /
        ``config`` as typed, else the file's canon metadata, which may name
        code only in a trusted zoo) builds and the tensors match it; no NaN or
        Inf. Then the object is written atomically and one transaction records
        the entry (and, for a new family, makes it the reference). Its
        alignment to the family reference is cached.
        ``created`` (default: now) keeps an imported entry's creation time.
        """
        fields = _fields(name, kind, tags, metrics, dataset, created)
        return self._add_prepared(self._prepare(source, architecture, config), parents, fields)

    def _prepare(
        self, source: Source, architecture: str | None, config: Mapping[str, Any] | None
    ) -> Prepared:
        """Check ``source`` as an add would; an architecture typed here is trusted from now on."""
        prepared = prepare(source, architecture, config, trust_code=self.trust_code)
        if architecture is not None:
            self._typed.add(architecture)
        return prepared

    def _add_prepared(
        self,
        prepared: Prepared,
        parents: Sequence[Entry | str],
        fields: _Fields,
        *,
        store_object: bool = True,
    ) -> Entry:
        """Record checked weights as a new entry; ``store_object=False`` when the object is
        already in place (an index rebuild), so that nothing but the index is written."""
        sha = sha256_bytes(prepared.data)
        with self._session() as s:
            self._check_new(s, fields.name, sha)
            parent_ids = [self._row(s, p).id for p in parents]
            family = s.get(FamilyModel, prepared.family)
            ref_id = family.reference_id if family is not None else None
        self._specs.setdefault(prepared.family, prepared.spec)
        if ref_id is None:
            alignment, aligned_to = _identity(prepared.spec), sha
        else:
            reference = self._load(ref_id, prepared.spec)
            alignment = self._match(prepared.state, reference, prepared.spec)
            aligned_to = ref_id
        created_object = store_object and self.objects.put(prepared.data)[1]
        try:
            with self._session(write=True) as s:
                self._check_new(s, fields.name, sha)
                family = s.get(FamilyModel, prepared.family)
                if family is None:
                    family = FamilyModel(
                        key=prepared.family,
                        architecture=prepared.architecture,
                        config=prepared.config_json,
                        reference_id=None,
                    )
                    s.add(family)
                s.add(
                    EntryModel(
                        id=sha,
                        name=fields.name,
                        architecture=prepared.architecture,
                        config=prepared.config_json,
                        family=prepared.family,
                        dataset=fields.dataset,
                        kind=fields.kind,
                        created=fields.created,
                        metrics=fields.metrics,
                    )
                )
                s.flush()
                if family.reference_id is None:
                    family.reference_id = sha
                s.add_all(TagModel(entry_id=sha, key=k, value=v) for k, v in fields.tags.items())
                s.add_all(
                    ParentModel(child_id=sha, parent_id=p, position=i)
                    for i, p in enumerate(parent_ids)
                )
                if family.reference_id == aligned_to:
                    s.add(self._cache_row(sha, aligned_to, alignment))
                s.flush()
                return self._record(s, s.get(EntryModel, sha))  # type: ignore[arg-type]
        except BaseException:
            # An object this call wrote and no entry took is removed again; a crash before
            # this point leaves it as garbage that `verify` reports and `--repair` reclaims.
            if created_object:
                with self._session() as s:
                    if s.get(EntryModel, sha) is None:
                        self.objects.remove(sha)
            raise

    def _check_new(self, s: Session, name: str, sha: str) -> None:
        if s.scalar(select(EntryModel.id).where(EntryModel.name == name)) is not None:
            raise NameClashError(f"an entry named `{name}` already exists in {self!r}", name=name)
        existing = s.scalar(select(EntryModel.name).where(EntryModel.id == sha))
        if existing is not None:
            raise DuplicateObjectError(
                f"these weights are already in the zoo as `{existing}` (id {sha[:12]}…); "
                "identical weights are stored once",
                existing=existing,
            )

    # -- weights -------------------------------------------------------------------------

    def spec(self, entry: Entry | str) -> Spec:
        """The structure spec of an entry's architecture."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        if e.family not in self._specs:
            self.check_buildable(e.architecture, f"entry `{e.name}` of {self!r}")
            self._specs[e.family] = spec_for(e.architecture, e.config)
        return self._specs[e.family]

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
            raise CorruptZooError(f"object {sha} is missing from {self!r}; run verify")
        return load_state(path, spec, device=device)

    def state(self, entry: Entry | str, device: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The entry's weights as a state dict on ``device``."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        return self._load(e.id, self.spec(e), device)

    # -- families, alignment, canonical forms --------------------------------------------

    def reference(self, entry_or_family: Entry | str) -> Entry:
        """The reference entry of a family (given by key) or of an entry's family."""
        with self._session() as s:
            family = None
            if isinstance(entry_or_family, str):
                family = s.get(FamilyModel, entry_or_family)
            if family is None:
                family = s.get(FamilyModel, self._row(s, entry_or_family).family)
            if family is None or family.reference_id is None:
                raise CorruptZooError(f"family has no reference entry in {self!r}")
            return self._record(s, self._row(s, family.reference_id))

    def set_reference(self, name: Entry | str) -> Entry:
        """Make ``name`` its family's reference; drop the caches that depended on the old one."""
        with self._session(write=True) as s:
            row = self._row(s, name)
            family = s.get(FamilyModel, row.family)
            if family is None:
                raise CorruptZooError(f"entry `{row.name}` has no family row in {self!r}")
            if family.reference_id != row.id:
                family.reference_id = row.id
                members = select(EntryModel.id).where(EntryModel.family == row.family)
                s.execute(
                    delete(CanonicalCacheModel).where(CanonicalCacheModel.entry_id.in_(members))
                )
                s.execute(
                    delete(PairCacheModel).where(
                        or_(
                            PairCacheModel.entry_a.in_(members), PairCacheModel.entry_b.in_(members)
                        )
                    )
                )
            return self._record(s, row)

    @staticmethod
    def _match(
        state: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: Spec
    ) -> Alignment:
        return match(normalize(state, spec), normalize(reference, spec), spec)

    @staticmethod
    def _cache_row(entry_id: str, ref_id: str, alignment: Alignment) -> CanonicalCacheModel:
        return CanonicalCacheModel(
            entry_id=entry_id,
            reference_id=ref_id,
            cache_version=CACHE_VERSION,
            alignment=canonical_json(alignment.to_dict()),
        )

    def alignment(self, entry: Entry | str) -> Alignment:
        """The permutations (and signs) aligning the entry to its family reference (cached)."""
        e = entry if isinstance(entry, Entry) else self.get(entry)
        ref = self.reference(e)
        with self._session() as s:
            cached = s.get(CanonicalCacheModel, (e.id, ref.id, CACHE_VERSION))
            if cached is not None:
                return Alignment.from_dict(json.loads(cached.alignment))
        spec = self.spec(e)
        if ref.id == e.id:
            alignment = _identity(spec)
        else:
            alignment = self._match(self.state(e), self.state(ref), spec)
        if not self.read_only:  # a read-only zoo computes what it has not cached, every time
            with self._session(write=True) as s:
                if s.get(CanonicalCacheModel, (e.id, ref.id, CACHE_VERSION)) is None:
                    s.add(self._cache_row(e.id, ref.id, alignment))
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
        cache: OrderedDict[tuple[str, str], dict[str, Tensor]] = self.__dict__.setdefault(
            "_normalized", OrderedDict()
        )
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

    # -- pair cache ----------------------------------------------------------------------

    def cached_pair(self, a: str, b: str, kind: str, options_hash: str) -> dict[str, Any] | None:
        """The cached result for entries ``a`` and ``b`` (ids, either order), or None."""
        a, b = sorted((check_sha(a), check_sha(b)))
        with self._session() as s:
            row = s.get(PairCacheModel, (a, b, kind, options_hash, CACHE_VERSION))
            return None if row is None else dict(json.loads(row.result))

    def cached_pairs(
        self, ids: Sequence[str], kind: str, options_hash: str
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Every cached result among the entries ``ids`` (one query), keyed by sorted id pair."""
        wanted = sorted({check_sha(i) for i in ids})
        found: dict[tuple[str, str], dict[str, Any]] = {}
        with self._session() as s:
            for start in range(0, len(wanted), 400):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 400]
                rows = s.execute(
                    select(PairCacheModel.entry_a, PairCacheModel.entry_b, PairCacheModel.result)
                    .where(PairCacheModel.path_kind == kind)
                    .where(PairCacheModel.options_hash == options_hash)
                    .where(PairCacheModel.cache_version == CACHE_VERSION)
                    .where(PairCacheModel.entry_a.in_(chunk))
                )
                members = set(wanted)
                for a, b, text in rows:
                    if b in members:
                        found[(a, b)] = json.loads(text)
        return found

    def store_pair(
        self, a: str, b: str, kind: str, options_hash: str, result: Mapping[str, Any]
    ) -> None:
        """Cache ``result`` for entries ``a`` and ``b`` (stored under the sorted pair)."""
        self.store_pairs([PairResult(a, b, kind, options_hash, dict(result))])

    def store_pairs(self, results: Iterable[PairResult]) -> int:
        """Cache many pair results in one transaction (each under its sorted pair); the count
        (none in a read-only zoo)."""
        if self.read_only:
            return 0
        rows = []
        for r in results:
            a, b = sorted((check_sha(r.a), check_sha(r.b)))
            rows.append(
                PairCacheModel(
                    entry_a=a,
                    entry_b=b,
                    path_kind=r.kind,
                    options_hash=r.options_hash,
                    cache_version=CACHE_VERSION,
                    result=canonical_json(dict(r.result)),
                )
            )
        with self._session(write=True) as s:
            for row in rows:
                s.merge(row)
        return len(rows)

    def pair_results(self, ids: Iterable[str] | None = None) -> list[PairResult]:
        """Every cached pair result of this code's cache version (among ``ids`` if given)."""
        wanted = None if ids is None else {check_sha(i) for i in ids}
        with self._session() as s:
            rows = s.execute(
                select(
                    PairCacheModel.entry_a,
                    PairCacheModel.entry_b,
                    PairCacheModel.path_kind,
                    PairCacheModel.options_hash,
                    PairCacheModel.result,
                )
                .where(PairCacheModel.cache_version == CACHE_VERSION)
                .order_by(
                    PairCacheModel.entry_a,
                    PairCacheModel.entry_b,
                    PairCacheModel.path_kind,
                    PairCacheModel.options_hash,
                )
            ).all()
        return [
            PairResult(a, b, kind, key, json.loads(text))
            for a, b, kind, key, text in rows
            if wanted is None or (a in wanted and b in wanted)
        ]

    # -- removing and checking -----------------------------------------------------------

    def rm(self, name: Entry | str, *, keep_object: bool = False) -> None:
        """Remove an entry, its tags, caches and (unless ``keep_object``) its object file.

        Refused for an entry that is another's parent, or the reference of a
        family with other members (``set_reference`` another member first).
        """
        with self._session(write=True) as s:
            row = self._row(s, name)
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
            sha = row.id
            s.delete(row)
        if not keep_object:
            self.objects.remove(sha)

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check that every entry's object exists and still hashes to the entry's id.

        A damaged or missing object makes the report not ``ok``. Garbage is
        reported but harmless: objects no entry references (an add killed
        before its index commit) and temp files of interrupted writes. Objects
        that ``manifest.json`` lists but the index lacks are reported as
        unindexed, never garbage. ``repair=True`` deletes the garbage (do not
        run it while another process is adding to the zoo).
        """
        with self._session() as s:
            ids = set(s.scalars(select(EntryModel.id)))
        present = set(self.objects.iter())
        bad = tuple(sha for sha in sorted(ids & present) if not self.objects.verify(sha))
        missing = tuple(sorted(ids - present))
        listed = listed_ids(self.root)
        unindexed = tuple(sorted((present - ids) & listed))
        orphans = tuple(sorted(present - ids - listed))
        temps = (*self.objects.temp_files(), *stale_rebuilds(self.root))
        repaired: list[str] = []
        if repair:
            for sha in orphans:
                self.objects.remove(sha)
                repaired.append(sha)
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
        )
