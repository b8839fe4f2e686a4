"""Indexing objects that no entry references, so that a repair never loses a network.

An object no entry references is left by an add killed between writing the
object and committing its entry, by a rebuild from an older ``manifest.json``,
or by an index that was lost or emptied. Its bytes are canon's own stored
form, which names its architecture and config, so it can be checked and
indexed as ``add`` would: under its manifest entry when ``manifest.json``
lists it, else as ``recovered-<id>`` with the tag ``recovered=true``. What
cannot be indexed (damaged bytes, not canon's stored form, code that is not
trusted) is kept and reported, never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from canon._limits import clip
from canon.errors import CanonError, CorruptZooError, InvalidEntryError
from canon.zoo._layout import MANIFEST
from canon.zoo._objects import sha256_bytes, sha256_file
from canon.zoo._records import entry_fields

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo

__all__ = ["RECOVERED_TAG", "Recovery", "recover_objects"]

RECOVERED_TAG = "recovered"


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover_objects` did: the entries it made and the objects it kept
    (``id: reason``)."""

    recovered: tuple[str, ...]
    kept: tuple[str, ...]


def recover_objects(zoo: Zoo, ids: Iterable[str]) -> Recovery:
    """Index each object ``ids`` names that no entry references, as ``add`` checks it.

    Objects that ``manifest.json`` lists come first, in its order (parents before
    children), under their manifest names and fields; the others follow by id.
    """
    listed = _manifest_entries(zoo)
    wanted = set(ids)
    order = [i for i in listed if i in wanted] + sorted(wanted - listed.keys())
    recovered: list[str] = []
    kept: list[str] = []
    for sha in order:
        try:
            recovered.append(_recover(zoo, sha, listed.get(sha)))
        except CanonError as exc:
            kept.append(f"{sha}: {clip(str(exc), 400)}")
        except OSError as exc:
            kept.append(f"{sha}: cannot be read ({exc.strerror or exc}); kept")
    return Recovery(tuple(recovered), tuple(kept))


def _recover(zoo: Zoo, sha: str, listed: Mapping[str, Any] | None) -> str:
    """Index the object ``sha``; the new entry's name."""
    from canon.zoo._rebuild import index_listed_entry

    path = zoo.objects.path(sha)
    if sha256_file(path) != sha:
        raise CorruptZooError("damaged: its bytes no longer hash to its name; kept")
    if listed is not None and not zoo.index.has_name(listed["name"]):
        parents = [p for p in listed["parents"] if zoo.index.has(p)]
        try:
            index_listed_entry(zoo, {**listed, "parents": parents})
            return str(listed["name"])
        except CanonError:
            pass  # indexed below as a recovered object, if it can be
    prepared = zoo.prepare(path, None, None)  # its metadata names the architecture
    if sha256_bytes(prepared.data) != sha:
        raise InvalidEntryError(
            "not in the form canon stores networks (its weights would be stored as another "
            "object); kept"
        )
    created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    name = f"{RECOVERED_TAG}-{sha[:12]}"
    fields = entry_fields(name, tags={RECOVERED_TAG: "true"}, created=created)
    zoo.add_prepared(prepared, [], fields, store_object=False)
    return name


def _manifest_entries(zoo: Zoo) -> dict[str, dict[str, Any]]:
    """The checked entries of the zoo's manifest by id, in its order (none when it is
    absent or cannot be read: the objects are then recovered by their metadata alone)."""
    from canon.zoo._rebuild import read_manifest

    if not (zoo.root / MANIFEST).is_file():
        return {}
    try:
        manifest = read_manifest(zoo.root, skip_bad=True)
    except CanonError:
        return {}
    return {e["id"]: dict(e) for e in manifest.entries}
