"""What a zoo looks like on the Hub, and the one place Hub client errors become canon's."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from canon._limits import clip
from canon.errors import HubError

__all__ = [
    "CARD_FILE",
    "MANIFEST_FILE",
    "REPO_TYPES",
    "RESULTS_FILE",
    "check_repo",
    "check_repo_id",
    "hub_errors",
    "quiet_hub_bars",
    "remote_key",
]

MANIFEST_FILE = "canon-manifest.json"  # entries, tags, metrics, families, references
RESULTS_FILE = "canon-results.json"  # cached pair results (curves, distances)
CARD_FILE = "README.md"  # the model card
REPO_TYPES = ("model", "dataset")

_REPO_ID_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def downloader(
    repo_id: str,
    *,
    repo_type: str = "model",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    local_files_only: bool = False,
) -> Callable[[str, str], Path]:
    """``download(filename, revision)``: the file's path in the Hub client's cache."""
    from huggingface_hub import hf_hub_download

    def download(filename: str, at: str) -> Path:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=at,
                repo_type=repo_type,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                token=token,
                endpoint=endpoint,
                local_files_only=local_files_only,
            )
        )

    return download


def remote_key(repo_id: str, revision: str, repo_type: str, endpoint: str | None) -> str:
    """The name under which a zoo records its syncs with a repository's revision: the
    endpoint (the Hub client's default when None), repository type, id and revision."""
    from huggingface_hub import constants

    return f"{(endpoint or constants.ENDPOINT).rstrip('/')} {repo_type}/{repo_id}@{revision}"


def snapshot_commit(cached: Path) -> str | None:
    """The commit a cached file was downloaded at: the cache keeps each file under
    ``snapshots/<commit>/`` (None if the folder is not named by one)."""
    snapshot = cached.parent.name
    return snapshot if _COMMIT_RE.fullmatch(snapshot) else None


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` if it looks like a Hub repository id (``name`` or ``owner/name``)."""
    if (
        not isinstance(repo_id, str)
        or not _REPO_ID_RE.fullmatch(repo_id)
        or ".." in repo_id
        or repo_id.endswith((".git", "."))
    ):
        raise HubError(
            f"invalid repository id {repo_id!r}: use `owner/name` (letters, digits, `-`, `_`, `.`)",
            repo_id=str(repo_id),
        )
    return repo_id


def check_repo(repo_id: object, repo_type: str) -> str:
    """``repo_id`` checked by :func:`check_repo_id`, and ``repo_type`` one of
    :data:`REPO_TYPES`."""
    checked = check_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise HubError(f"--repo-type must be one of {', '.join(REPO_TYPES)}", repo_id=checked)
    return checked


@contextmanager
def hub_errors(repo_id: str, revision: str | None, action: str) -> Iterator[None]:
    """Turn the Hub client's exceptions into :class:`HubError` naming the repo and revision."""
    import httpx2
    from huggingface_hub import errors as hf

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except hf.RevisionNotFoundError:
        raise HubError(
            f"cannot {action}: `{repo_id}` has no revision `{revision}`",
            repo_id=repo_id,
            revision=revision,
        ) from None
    except hf.RepositoryNotFoundError:
        raise HubError(
            f"cannot {action}: no repository `{repo_id}` (or it is private: pass --token)",
            repo_id=repo_id,
            revision=revision,
        ) from None
    except hf.RemoteEntryNotFoundError as exc:
        missing = _missing_file(exc)
        what = (
            f"holds no canon zoo (no {MANIFEST_FILE})"
            if missing in (None, MANIFEST_FILE)
            else f"has no file `{missing}`"
        )
        raise HubError(
            f"cannot {action}: `{at}` {what}", repo_id=repo_id, revision=revision
        ) from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as exc:
        raise HubError(
            f"cannot {action} `{at}`: the Hub is unreachable or offline (HF_HUB_OFFLINE=1) "
            f"and the local Hub cache does not hold it ({_first_line(exc)})",
            repo_id=repo_id,
            revision=revision,
        ) from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        server = getattr(exc, "server_message", None) or _first_line(exc)
        raise HubError(
            f"cannot {action} `{at}`: the Hub answered {status}: {server}",
            repo_id=repo_id,
            revision=revision,
        ) from None
    except (httpx2.TransportError, ConnectionError) as exc:  # refused, DNS, timeouts
        raise HubError(
            f"cannot {action} `{at}`: {_first_line(exc)}", repo_id=repo_id, revision=revision
        ) from None


def _missing_file(exc: Any) -> str | None:
    """The repository file a Hub 404 was about, from its URL (``.../resolve/<rev>/<file>``)."""
    response = getattr(exc, "response", None)
    url = getattr(response, "url", None)
    raw_path = str(getattr(url, "path", "") or "")
    _, found, rest = raw_path.partition("/resolve/")
    _, slash, filename = rest.partition("/")
    return clip(unquote(filename), 200) if found and slash and filename else None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def quiet_hub_bars(show: bool) -> Iterator[None]:
    """Hide the Hub client's own progress bars unless ``show``, and its warnings (retries
    of a dropped download: a failure is canon's one line), restored afterwards."""
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    client_log = logging.getLogger("huggingface_hub")
    level = client_log.level
    if not show:
        disable_progress_bars()
    client_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        client_log.setLevel(level)
        if was_disabled != are_progress_bars_disabled():
            (disable_progress_bars if was_disabled else enable_progress_bars)()
