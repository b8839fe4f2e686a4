"""Pull a zoo (or a revision of one) from a Hub repository into a local zoo."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from canon._limits import MAX_HEADER_BYTES, clip, loads_json
from canon.core import Spec
from canon.errors import (
    CanonError,
    ConfigError,
    InvalidManifestError,
    MergeConflictError,
    NameClashError,
)
from canon.hub._remote import (
    MANIFEST_FILE,
    RESULTS_FILE,
    check_repo,
    downloader,
    hub_errors,
    quiet_hub_bars,
    remote_key,
    snapshot_commit,
)
from canon.zoo import (
    CACHE_VERSION,
    PREFER,
    PairResult,
    Snapshot,
    SyncRecord,
    Zoo,
    check_name,
    check_pair_result,
    check_sha,
    import_entries,
    manifest,
    merge,
    object_path,
    parse_manifest,
    sha256_file,
)

__all__ = ["MAX_MANIFEST_BYTES", "PullResult", "check_results", "pull"]

MAX_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True)
class PullResult:
    """What a pull did: the remote commit it read and the entries it added."""

    repo_id: str
    revision: str
    commit: str | None
    added: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # remote name -> local name
    updated: list[str] = field(default_factory=list)  # entries given the remote's edits
    removed_there: list[str] = field(default_factory=list)  # removed remotely, kept here
    present: int = 0  # entries the zoo already held (same weights)
    downloaded: int = 0  # objects fetched (from the Hub or its local cache)
    results: int = 0  # cached pair results imported

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def pull(
    zoo: Zoo,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    repo_type: str = "model",
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    rename: bool = False,
    results: bool = True,
    prefer: str | None = None,
    progress: bool = False,
) -> PullResult:
    """Merge the zoo at ``repo_id`` (branch, tag or commit ``revision``) into ``zoo``.

    Everything is checked before the zoo changes: the manifest field by field
    (ids are sha256s, objects live at ``objects/ab/<id>.safetensors``, no
    unknown schema version, no user architectures), names against the zoo's
    (a clash is an error, or with ``rename`` the entry becomes
    ``<name>-<id[:8]>``), and every downloaded object's sha256 against its id.
    Only objects the zoo lacks are downloaded, through the Hub's local cache
    (so with ``HF_HUB_OFFLINE=1`` a cached revision pulls offline). Entries the
    zoo already holds are skipped; cached pair results come along unless
    ``results`` is false. On failure nothing is added.

    The remote's edits since the zoo and this revision last synced (a push or a
    pull) are merged in (:func:`~canon.zoo._merge.merge`): renames, datasets with
    their metrics, tags and family references a collaborator changed, value by
    value. A value both sides changed differently is a conflict: the pull is
    refused (:class:`MergeConflictError`, each one listed) unless ``prefer`` is
    ``local`` (keep the zoo's) or ``remote`` (take the remote's). Entries the zoo
    removed since are not added back; entries the remote removed stay here
    (``removed_there``). Adds, edits and the sync record are one transaction.
    """
    if prefer not in (None, *PREFER):
        raise ConfigError(f"prefer must be one of {', '.join(PREFER)} (or None), not {prefer!r}")
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

    check_repo(repo_id, repo_type)
    wanted = revision or "main"

    download = downloader(
        repo_id, repo_type=repo_type, cache_dir=cache_dir, token=token, endpoint=endpoint
    )

    with hub_errors(repo_id, wanted, "pull"), quiet_hub_bars(False):
        manifest_file = download(MANIFEST_FILE, wanted)  # hub_errors names it if missing
        commit = snapshot_commit(manifest_file)  # the commit this revision is
        at = commit or wanted
        source = f"{repo_id}@{at[:12]}"
        # A pulled manifest names code only into a zoo opened with trust_code (--trust-code).
        checked = parse_manifest(
            _read_json(manifest_file, source), source=source, trusted=zoo.trust_code
        )

        key = remote_key(repo_id, wanted, repo_type, endpoint)
        record = zoo.index.synced(key)
        here = Snapshot.of_manifest(manifest(zoo))
        there = Snapshot.of_manifest({"entries": checked.entries, "references": checked.references})
        merged = merge(None if record is None else record.snapshot, here, there, prefer)
        if merged.conflicts:
            raise _conflicted(merged.conflicts, source)
        adding = set(merged.adds)
        new = [e for e in checked.entries if e["id"] in adding]
        renamed = {u.id: u.after.name for u in merged.updates}
        taken = {renamed.get(i, state.name) for i, state in here.entries.items()}
        names = _local_names(new, taken, rename, repo_id)
        specs = _check_configs(new, source)

        # A local object is used only when intact; a damaged one is fetched and replaced.
        fetch = [e for e in new if not zoo.objects.verify(e["id"])]
        remote_sizes = _remote_sizes(repo_id, at, repo_type, token, endpoint) if fetch else {}
        for e in fetch:  # before any byte of an object that cannot be what it says
            _check_size(e, remote_sizes.get(object_path(e["id"])), specs.get(e["id"]), source)
        paths = {e["id"]: zoo.objects.path(e["id"]) for e in new}
        bar = _bar(progress, len(fetch), repo_id)
        try:
            for e in fetch:
                try:
                    path = download(object_path(e["id"]), at)
                except RemoteEntryNotFoundError:  # on the Hub (a local cache miss is not)
                    raise InvalidManifestError(
                        f"{source}: {MANIFEST_FILE} lists `{e['name']}` but the repository has "
                        f"no object {object_path(e['id'])}; nothing was pulled (push the zoo "
                        "again to repair the repository)",
                        source=source,
                    ) from None
                if sha256_file(path) != e["id"]:
                    raise InvalidManifestError(
                        f"{source}: the object of `{e['name']}` does not hash to its id "
                        f"{e['id']}; nothing was pulled",
                        source=source,
                    )
                _check_object(path, e, specs.get(e["id"]), source)
                paths[e["id"]] = path
                bar.update(1)
        finally:
            bar.close()

        pairs: list[PairResult] = []
        if results:
            try:
                results_file = download(RESULTS_FILE, at)
            except EntryNotFoundError:
                results_file = None
            if results_file is not None:
                ids = {e["id"] for e in checked.entries} | set(here.entries)
                pairs = check_results(_read_json(results_file, source), ids, source)
                # only results that involve an entry this pull adds: the zoo's own pairs
                # are its own business, whatever a remote says about them
                pairs = [p for p in pairs if p.a in adding or p.b in adding]

    added = import_entries(
        zoo,
        new,
        paths.__getitem__,
        names=names,
        merged=merged,
        synced=SyncRecord(key, commit, there),
    )
    stored = zoo.pairs.put(pairs, replace=False) if pairs else 0
    return PullResult(
        repo_id=repo_id,
        revision=wanted,
        commit=commit,
        added=[e.name for e in added],
        renamed={e["name"]: names[e["id"]] for e in new if e["id"] in names},
        updated=[u.after.name for u in merged.updates],
        removed_there=[here.entries[i].name for i in merged.removed_there],
        present=len(checked.entries) - len(new),
        downloaded=len(fetch),
        results=stored,
    )


def _conflicted(conflicts: Sequence[str], source: str) -> MergeConflictError:
    """The refusal of a pull whose remote changed values this zoo changed too (listed)."""
    shown = "; ".join(conflicts[:5])
    more = f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
    return MergeConflictError(
        f"{source} and this zoo changed the same values differently since they last synced "
        f"({shown}{more}); nothing was pulled: pull with --prefer local to keep this zoo's "
        "values, or --prefer remote to take the remote's",
        conflicts=tuple(conflicts),
    )


def _read_json(path: Path, source: str) -> Any:
    """A manifest or results file, refused (one line) when too large, too deep or not JSON."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InvalidManifestError(
            f"{source}: {path.name} is larger than {MAX_MANIFEST_BYTES >> 20} MiB", source=source
        )
    return loads_json(
        path.read_bytes(),
        what=f"{source}: {path.name}",
        error=functools.partial(InvalidManifestError, source=source),
        max_bytes=MAX_MANIFEST_BYTES,
    )


def _check_configs(entries: Iterable[Mapping[str, Any]], source: str) -> dict[str, Spec]:
    """Each entry's declared tensors (built on the meta device: no memory), checked before
    anything is downloaded.

    A config the architecture refuses (a size out of bounds, a wrong type)
    raises :class:`InvalidManifestError` naming the entry. User
    architectures (``module:function``) are left to the zoo's own policy:
    checking them here would import their code.
    """
    from canon.zoo import declared_spec

    specs: dict[str, Spec] = {}
    made: dict[str, Spec] = {}
    for e in entries:
        if ":" in e["architecture"]:
            continue
        key = json.dumps([e["architecture"], e["config"]], sort_keys=True)
        if key not in made:
            try:
                made[key] = declared_spec(e["architecture"], e["config"])
            except CanonError as exc:
                raise InvalidManifestError(
                    f"{source}: entry `{e['name']}` cannot be built: {clip(str(exc), 200)}; "
                    "nothing was pulled",
                    source=source,
                ) from None
        specs[e["id"]] = made[key]
    return specs


def _remote_sizes(
    repo_id: str, at: str, repo_type: str, token: str | bool | None, endpoint: str | None
) -> dict[str, int]:
    """The size of every object file of the repository at ``at`` (empty when the Hub
    cannot be asked: offline, the cache alone answers, and sizes are checked after)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.hf_api import RepoFile

    try:
        listing = HfApi(endpoint=endpoint, token=token).list_repo_tree(
            repo_id, path_in_repo="objects", recursive=True, revision=at, repo_type=repo_type
        )
        return {f.path: int(f.size) for f in listing if isinstance(f, RepoFile)}
    except OfflineModeIsEnabled:
        return {}


def _check_size(entry: Mapping[str, Any], size: int | None, spec: Spec | None, source: str) -> None:
    """Refuse an object larger than its entry's spec allows (its tensors, a header of
    at most :data:`~canon._limits.MAX_HEADER_BYTES` and its 8-byte length), before it is
    downloaded."""
    if spec is None or size is None:
        return
    most = (
        8
        + MAX_HEADER_BYTES
        + sum(math.prod(t.shape) * getattr(torch, t.dtype).itemsize for t in spec.tensors)
    )
    if size > most:
        raise InvalidManifestError(
            f"{source}: the object of `{entry['name']}` is {size} bytes, more than its "
            f"architecture and config can hold ({most}); nothing was pulled",
            source=source,
        )


def _check_object(path: Path, entry: Mapping[str, Any], spec: Spec | None, source: str) -> None:
    """The downloaded object's header against its entry's spec, before any tensor is read."""
    from canon.checkpoint import read_header

    if spec is None:
        return
    try:
        read_header(path, spec)
    except CanonError as exc:
        message = clip(str(exc).replace(f"`{path}`", "it"), 200)
        raise InvalidManifestError(
            f"{source}: the object of `{entry['name']}` does not fit its architecture and "
            f"config: {message}; nothing was pulled",
            source=source,
        ) from None


def _local_names(
    new: Iterable[Mapping[str, Any]], taken: set[str], rename: bool, repo_id: str
) -> dict[str, str]:
    """Local names for new entries whose remote name the zoo already uses (by entry id)."""
    clashes = [e for e in new if e["name"] in taken]
    if clashes and not rename:
        listed = ", ".join(f"`{e['name']}`" for e in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise NameClashError(
            f"{len(clashes)} entries of {repo_id} have names this zoo uses for other weights: "
            f"{listed}{more}; pull with --rename to add them as <name>-<id prefix>",
            name=clashes[0]["name"],
        )
    taken = taken | {e["name"] for e in new}
    names: dict[str, str] = {}
    for e in clashes:
        base = f"{e['name'][:110]}-{e['id'][:8]}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        names[e["id"]] = check_name(name)
        taken.add(name)
    return names


def check_results(data: Any, ids: set[str], source: str) -> list[PairResult]:
    """Pair results of this code's cache version between known entries (others are dropped)."""
    if not isinstance(data, dict) or data.get("format") != "canon-results":
        raise InvalidManifestError(f"{source}: {RESULTS_FILE} is not canon results", source=source)
    if data.get("cache_version") != CACHE_VERSION:
        return []  # computed by another version of canon's mathematics: recompute here
    pairs = data.get("pairs")
    if not isinstance(pairs, list):
        raise InvalidManifestError(f"{source}: `pairs` must be a list", source=source)
    out = []
    for raw in pairs:
        try:
            pair = PairResult(
                a=check_sha(raw["a"]),
                b=check_sha(raw["b"]),
                kind=_short_text(raw["kind"]),
                options_hash=_short_text(raw["options_hash"]),
                result=check_pair_result(raw["kind"], raw["result"]),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidManifestError(
                f"{source}: a cached result is malformed ({clip(str(exc), 200)}); nothing was "
                "pulled",
                source=source,
            ) from None
        if pair.a in ids and pair.b in ids:
            out.append(pair)
    return out


def _short_text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isprintable():
        raise ValueError(f"{value!r} is not a short printable string")
    return value


def _bar(show: bool, total: int, repo_id: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"pull {repo_id}", unit="obj", disable=not show or total == 0)
