"""The zoo's index: opening, sessions and read-only lookups (ORM rows stay here).

:class:`ZooIndex` turns rows into frozen :class:`Entry` records at the
boundary; :class:`~canon.zoo.Zoo` adds the writes and caches on top.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Self

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from canon.errors import (
    ConfigError,
    CorruptZooError,
    EntryNotFoundError,
    ReadOnlyZooError,
)
from canon.zoo._layout import (
    HEAD_REVISION,
    INDEX,
    OBJECTS,
    check_folder,
    index_error,
    is_writable,
    is_zoo,
    recorded_revision,
)
from canon.zoo._listing import list_entries
from canon.zoo._migrate import make_engine, read_only_engine, upgrade
from canon.zoo._models import EntryModel, ParentModel, TagModel
from canon.zoo._objects import ObjectStore
from canon.zoo._records import Entry
from canon.zoo._trust import check_trusted

if TYPE_CHECKING:
    from canon.core import Spec

__all__ = ["ZooIndex"]


class ZooIndex:
    """A folder of networks: ``canon.sqlite`` (the index) and ``objects/`` (safetensors).

    ``read_only`` zoos (a folder this process cannot write) answer every read
    and refuse writes with :class:`~canon.errors.ReadOnlyZooError`.
    ``trust_code`` lets entries name ``module:function`` architectures (see
    :mod:`canon.zoo._trust`); without it only registered ones build.
    """

    def __init__(
        self,
        root: Path,
        *,
        index: Path | None = None,
        read_only: bool = False,
        trust_code: bool = False,
    ) -> None:
        """Use :meth:`Zoo.open` or :meth:`Zoo.init`."""
        self.root = root
        self.objects = ObjectStore(root / OBJECTS)
        self.index_path = index or root / INDEX
        self.read_only = read_only
        self.trust_code = trust_code
        self._typed: set[str] = set()  # code architectures the user typed in this session
        if read_only:
            self._write = None
            self._read = sessionmaker(read_only_engine(self.index_path), expire_on_commit=False)
        else:
            self._write = sessionmaker(
                make_engine(self.index_path, immediate=True), expire_on_commit=False
            )
            self._read = sessionmaker(
                make_engine(self.index_path, immediate=False), expire_on_commit=False
            )
        self._specs: dict[str, Spec] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, create: bool = True, trust_code: bool = False
    ) -> Self:
        """Open the zoo at ``path``, upgrading its index to the newest schema.

        With ``create`` (the default) a missing zoo is created; without it a
        folder that holds no index raises :class:`~canon.errors.CorruptZooError`.
        A zoo this process cannot write opens read-only.
        """
        root = Path(path)
        check_folder(root)
        index = root / INDEX
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
            upgrade(index)
            return cls(root, trust_code=trust_code)
        if recorded_revision(index) != HEAD_REVISION:
            raise ReadOnlyZooError(
                f"the zoo `{root}` is read-only here and its index needs an upgrade to this "
                "canon's schema; open it once where it can be written"
            )
        return cls(root, read_only=True, trust_code=trust_code)

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a zoo: an index, or a manifest to rebuild one from."""
        return is_zoo(Path(path))

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> Self:
        """Create (or open) the zoo at ``path``."""
        return cls.open(path, create=True)

    def close(self) -> None:
        """Release the database connections."""
        for maker in (self._write, self._read):
            if maker is not None:
                maker.kw["bind"].dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r})"

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        SQLite errors become zoo errors (read-only, busy, damaged index).
        """
        maker = self._write if write else self._read
        if maker is None:
            raise ReadOnlyZooError(
                f"the zoo `{self.root}` is read-only here; writing needs write access to it"
            )
        session = maker()
        try:
            yield session
            if write:
                session.commit()
        except DBAPIError as exc:
            session.rollback()
            raise index_error(self.index_path, exc) from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check_buildable(self, architecture: str, source: str) -> None:
        """Refuse to build a ``module:function`` architecture read from the zoo's data
        unless the zoo is trusted or the user typed that name in this session."""
        check_trusted(
            architecture,
            trusted=self.trust_code or architecture in self._typed,
            source=source,
        )

    # -- records -------------------------------------------------------------------------

    @staticmethod
    def _record(s: Session, row: EntryModel) -> Entry:
        tags = s.execute(select(TagModel.key, TagModel.value).where(TagModel.entry_id == row.id))
        parents = s.scalars(
            select(ParentModel.parent_id)
            .where(ParentModel.child_id == row.id)
            .order_by(ParentModel.position)
        )
        return _entry(row, {key: value for key, value in tags}, tuple(parents))

    def _row(self, s: Session, ref: Entry | str) -> EntryModel:
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
            raise EntryNotFoundError(f"no entry `{name}` in {self!r}{hint}", name=str(name))
        return row

    def get(self, name: Entry | str) -> Entry:
        """The entry called ``name`` (or with that id); unknown names suggest close matches."""
        with self._session() as s:
            return self._record(s, self._row(s, name))

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._session() as s:
            return s.scalar(select(EntryModel.id).where(EntryModel.name == name)) is not None

    def __len__(self) -> int:
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(EntryModel)) or 0)

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
            self.index_path,
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
        entry of ``kind`` with the tags; fewer than ``least`` is a :class:`ConfigError`
        naming ``what`` needs them."""
        wanted = {k: str(v) for k, v in (tags or {}).items()}
        if names:
            chosen = [self.get(n) for n in names]
            chosen = [e for e in chosen if all(e.tags.get(k) == v for k, v in wanted.items())]
        else:
            chosen = self.select(kind=kind, tags=wanted)
        if len(chosen) < least:
            count = {1: "one entry", 2: "two entries"}.get(least, f"{least} entries")
            raise ConfigError(f"{what} needs at least {count}; the selection has {len(chosen)}")
        return chosen


def _entry(row: EntryModel, tags: Mapping[str, str], parents: tuple[str, ...]) -> Entry:
    """The frozen record of an entry row (rows never leave the store)."""
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
