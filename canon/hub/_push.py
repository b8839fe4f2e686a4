"""Push a zoo to a Hub repository as one atomic commit."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from canon._limits import loads_json
from canon.errors import CorruptZooError, InvalidManifestError, PushConflictError, ZooError
from canon.hub._card import model_card
from canon.hub._pull import MAX_MANIFEST_BYTES, check_results
from canon.hub._remote import (
    CARD_FILE,
    MANIFEST_FILE,
    RESULTS_FILE,
    check_repo,
    hub_errors,
    quiet_hub_bars,
    remote_key,
)
from canon.zoo import (
    CACHE_VERSION,
    Snapshot,
    SyncRecord,
    Zoo,
    manifest,
    merge,
    object_path,
    parse_manifest,
)

__all__ = ["PushResult", "push", "results_document"]

_OBJECT_PREFIX = "objects/"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """What a push did: the commit it made (None when the remote was already up to date)."""

    repo_id: str
    revision: str
    commit: str | None
    url: str | None
    entries: int
    uploaded: int  # objects the remote lacked
    kept: int  # objects the remote already had
    deleted: int  # remote objects of entries this zoo lacks (only with force)
    results: int  # cached pair results pushed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def results_document(zoo: Zoo) -> dict[str, Any]:
    """The zoo's cached pair results as pushed to ``canon-results.json``."""
    return {
        "format": "canon-results",
        "cache_version": CACHE_VERSION,
        "pairs": [r.to_dict() for r in zoo.pairs.results()],
    }


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def push(
    zoo: Zoo,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    repo_type: str = "model",
    endpoint: str | None = None,
    force: bool = False,
    progress: bool = False,
) -> PushResult:
    """Push ``zoo`` to ``repo_id`` (created if needed) as one commit on ``revision``.

    The commit holds ``canon-manifest.json``, ``canon-results.json``, the model
    card ``README.md`` and the objects the remote lacks (those it has are not
    uploaded again). It is made against the remote head read at the start
    (``parent_commit``), so a concurrent push makes this one fail with
    :class:`PushConflictError` instead of overwriting it.

    The remote's manifest is merged with the zoo's from the state both last agreed
    on (:func:`~canon.zoo._merge.merge`): entries removed here since then are
    removed from the remote, and a remote holding anything the zoo lacks (entries,
    renames, datasets, tags, references a collaborator pushed) is refused: pull it
    first. ``force`` pushes the zoo as it is, deleting what the zoo lacks.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    check_repo(repo_id, repo_type)
    branch = revision or "main"
    api = HfApi(endpoint=endpoint, token=token)
    _check_objects(zoo)
    key = remote_key(repo_id, branch, repo_type, endpoint)
    with hub_errors(repo_id, branch, "push to"), quiet_hub_bars(progress):
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        new_branch = branch != "main" and not _has_revision(api, repo_id, branch, repo_type)
        if new_branch:
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        head = api.repo_info(repo_id, repo_type=repo_type, revision=branch).sha
        remote = {
            f.path: f
            for f in api.list_repo_tree(repo_id, recursive=True, revision=head, repo_type=repo_type)
            if isinstance(f, RepoFile)
        }
        fetch = _remote_files(api, repo_id, head or branch, repo_type, remote)
        ours = manifest(zoo)
        here = Snapshot.of_manifest(ours)
        removed: set[str] = set()
        if not force:
            there = _remote_snapshot(fetch, MANIFEST_FILE in remote, repo_id, branch)
            record = zoo.index.synced(key)
            if record is None and new_branch:  # it starts as main: so does what both agree on
                record = zoo.index.synced(remote_key(repo_id, "main", repo_type, endpoint))
            merged = merge(None if record is None else record.snapshot, here, there)
            if merged.behind:
                raise _behind(merged.missing_here(here, there), repo_id, branch)
            removed = {object_path(i) for i in merged.removed_here}
        entries = zoo.entries()
        local = {object_path(e.id) for e in entries}
        stale = sorted(p for p in remote if p.startswith(_OBJECT_PREFIX) and p not in local)
        unlisted = [p for p in stale if p not in removed]
        if unlisted and not force:
            raise PushConflictError(
                f"`{repo_id}@{branch}` holds {len(unlisted)} objects its manifest does not "
                "list and this zoo lacks; push with --force to delete them from the remote",
                repo_id=repo_id,
                revision=branch,
            )
        missing = [e for e in entries if object_path(e.id) not in remote]
        results = results_document(zoo)
        if not force:
            results["pairs"] += _their_results(fetch, results, {e.id for e in entries}, repo_id)
        documents = {
            MANIFEST_FILE: _json_bytes(ours),
            RESULTS_FILE: _json_bytes(results),
            CARD_FILE: model_card(zoo, repo_id).encode(),
        }
        if not force and CARD_FILE in remote and not _canon_card(fetch(CARD_FILE)):
            del documents[CARD_FILE]  # a README someone wrote: theirs to change
        changed = {p: data for p, data in documents.items() if not _holds(remote.get(p), data)}
        summary = {"entries": len(entries), "results": len(results["pairs"])}
        if not (missing or stale or changed):  # up to date: no commit to make
            _remember(zoo, SyncRecord(key, head, here))
            return PushResult(
                repo_id, branch, None, None, uploaded=0, kept=len(entries), deleted=0, **summary
            )
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(object_path(e.id), str(zoo.objects.path(e.id))) for e in missing
        ]
        operations += [CommitOperationDelete(p) for p in stale]
        operations += [CommitOperationAdd(p, data) for p, data in changed.items()]
        message = commit_message or (
            f"canon push: {len(entries)} entries ({len(missing)} new objects)"
        )
        try:
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=message,
                parent_commit=head,
                revision=branch,
                repo_type=repo_type,
            )
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code in (409, 412):
                raise PushConflictError(
                    f"`{repo_id}@{branch}` changed while this push ran (another push?); "
                    "nothing was committed: pull, then push again",
                    repo_id=repo_id,
                    revision=branch,
                ) from None
            raise
    made = info.oid != head
    _remember(zoo, SyncRecord(key, info.oid, here))
    return PushResult(
        repo_id=repo_id,
        revision=branch,
        commit=info.oid if made else None,
        url=info.commit_url if made else None,
        uploaded=len(missing),
        kept=len(entries) - len(missing),
        deleted=len(stale),
        **summary,
    )


def _remote_snapshot(
    fetch: Callable[[str], bytes | None], listed: bool, repo_id: str, branch: str
) -> Snapshot:
    """The remote's manifest as a merge compares it (empty when it has none); one this
    canon cannot read refuses the push (``--force`` replaces it)."""
    if not listed:
        return Snapshot()
    source = f"`{repo_id}@{branch}`"
    try:
        parsed = _remote_json(fetch, MANIFEST_FILE, source)
        if parsed is None:
            raise InvalidManifestError(f"{source}: {MANIFEST_FILE} is too large", source=source)
        checked = parse_manifest(parsed, source=source, trusted=True)
    except InvalidManifestError as exc:
        raise PushConflictError(
            f"{exc}; nothing was pushed (push with --force to replace it)",
            repo_id=repo_id,
            revision=branch,
        ) from None
    return Snapshot.of_manifest({"entries": checked.entries, "references": checked.references})


def _has_revision(api: Any, repo_id: str, revision: str, repo_type: str) -> bool:
    """Whether the repository has a branch (or tag) ``revision``."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        api.repo_info(repo_id, repo_type=repo_type, revision=revision)
    except RevisionNotFoundError:
        return False
    return True


def _remember(zoo: Zoo, record: SyncRecord) -> None:
    """Record what the zoo and the remote now agree on, the base of the next merge. A zoo
    this process cannot write pushes all the same: its next push merges from an older
    base (or none), which can only refuse more, never overwrite more."""
    if zoo.read_only:
        return
    try:
        zoo.index.record_sync(record)
    except ZooError as exc:
        log.warning("pushed, but could not record the push in the zoo's index: %s", exc)


def _behind(lines: list[str], repo_id: str, branch: str) -> PushConflictError:
    """The refusal of a push to a remote holding changes this zoo lacks (listed)."""
    shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
    revision = "" if branch == "main" else f" --revision {branch}"
    return PushConflictError(
        f"`{repo_id}@{branch}` has changes this zoo lacks ({shown}); nothing was pushed: "
        f"pull them first (canon pull {repo_id}{revision}), or push with --force to "
        "overwrite them",
        repo_id=repo_id,
        revision=branch,
    )


def _remote_files(
    api: Any, repo_id: str, head: str, repo_type: str, remote: Mapping[str, Any]
) -> Callable[[str], bytes | None]:
    """``fetch(path)``: the bytes of a small file of the remote at ``head`` (a commit or
    branch; None when it has none, or one larger than a manifest may be), read through
    a temporary cache."""

    def fetch(path: str) -> bytes | None:
        listed = remote.get(path)
        if listed is None or (listed.size or 0) > MAX_MANIFEST_BYTES:
            return None
        with tempfile.TemporaryDirectory() as cache:
            local = api.hf_hub_download(
                repo_id, path, revision=head, repo_type=repo_type, cache_dir=cache
            )
            return Path(local).read_bytes()

    return fetch


def _remote_json(fetch: Callable[[str], bytes | None], path: str, source: str) -> Any:
    """A small JSON file of the remote, parsed within the limits a pull reads it with
    (:class:`InvalidManifestError` naming ``source`` if it is not JSON); None when the
    remote has none or one too large to fetch."""
    data = fetch(path)
    if data is None:
        return None
    return loads_json(
        data,
        what=f"{source}: {path}",
        error=functools.partial(InvalidManifestError, source=source),
        max_bytes=MAX_MANIFEST_BYTES,
    )


def _their_results(
    fetch: Callable[[str], bytes | None], ours: Mapping[str, Any], ids: set[str], repo_id: str
) -> list[dict[str, Any]]:
    """The remote's cached results between pushed entries that ``ours`` lacks (checked as
    a pull checks them; results of another cache version are dropped)."""
    source = f"`{repo_id}`"
    parsed = _remote_json(fetch, RESULTS_FILE, source)
    if parsed is None:
        return []
    have = {(p["a"], p["b"], p["kind"], p["options_hash"]) for p in ours["pairs"]}
    return [
        r.to_dict()
        for r in check_results(parsed, ids, source)
        if (r.a, r.b, r.kind, r.options_hash) not in have
    ]


def _canon_card(card: bytes | None) -> bool:
    """Whether a remote README is one canon wrote (its Hub metadata names canon); one too
    large to read (None) is not."""
    return card is not None and b"library_name: canon" in card


def _check_objects(zoo: Zoo) -> None:
    """Refuse to push a zoo whose objects are not all present and intact."""
    for entry in zoo.entries():
        if not zoo.objects.verify(entry.id):
            state = "missing" if not zoo.objects.path(entry.id).is_file() else "damaged"
            raise CorruptZooError(
                f"the object of `{entry.name}` is {state} (run canon verify); nothing was pushed"
            )


def _holds(remote: Any, data: bytes) -> bool:
    """Whether the remote file (a ``RepoFile`` or None) has exactly these bytes: by its
    LFS sha256, or by its git blob id."""
    if remote is None:
        return False
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == hashlib.sha256(data).hexdigest())
    return bool(remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
