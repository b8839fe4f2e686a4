"""A content-addressed store of object files: ``objects/ab/abcdef….safetensors``.

An object's name is the sha256 of its bytes. Writes are atomic: the bytes go
to a temp file in the target's folder, which is flushed, fsynced and renamed
into place, and the folder is fsynced, so a crash leaves either the whole
object or a temp file (``.tmp-…``), never a partial object.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from canon.errors import InvalidEntryError

__all__ = ["ObjectStore", "check_sha", "sha256_bytes", "sha256_file"]

SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
# The names :meth:`ObjectStore.put` gives its temp files: id prefix, pid, random suffix.
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{16}-[0-9]+-[0-9a-f]+")
_CHUNK = 1 << 20


def check_sha(sha: str) -> str:
    """``sha`` if it is 64 lowercase hex digits; anything else (paths included) raises."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise InvalidEntryError(f"{sha!r} is not an object id (64 lowercase hex digits)")
    return sha


def sha256_bytes(data: bytes | memoryview) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Object files under ``root``, named by the sha256 of their bytes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        """Where the object ``sha`` lives (validated: no path can escape ``root``)."""
        check_sha(sha)
        return self.root / sha[:2] / f"{sha}{SUFFIX}"

    def exists(self, sha: str) -> bool:
        """Whether the object ``sha`` is present."""
        return self.path(sha).is_file()

    def put(self, data: bytes | memoryview | str | os.PathLike[str]) -> tuple[str, bool]:
        """Store ``data`` (bytes, or a file to copy); return (sha256, whether it was written).

        Idempotent: an intact object already present is left as it is. A file at
        the object's path that does not hold these bytes (damaged, truncated) is
        replaced by them, atomically.
        """
        raw = data if isinstance(data, (bytes, memoryview)) else Path(data).read_bytes()
        sha = sha256_bytes(raw)
        target = self.path(sha)
        if self._holds(target, raw, check_hash=True):
            return sha, False
        self._write(target, raw)
        return sha, True

    def ensure(self, sha: str, data: bytes | memoryview) -> None:
        """Make sure the object ``sha`` (whose bytes are ``data``) is in place: write it
        again if it is gone or of the wrong size. Cheap when it is there; called inside
        the index transaction that records an entry, so that no concurrent removal can
        leave the entry without its object."""
        target = self.path(sha)
        if not self._holds(target, data, check_hash=False):
            self._write(target, data)

    @staticmethod
    def _holds(target: Path, raw: bytes | memoryview, *, check_hash: bool) -> bool:
        """Whether ``target`` is a file of ``raw``'s size (and, with ``check_hash``, of its
        sha256, which names it)."""
        try:
            if not target.is_file() or target.stat().st_size != len(raw):
                return False
        except OSError:
            return False
        return not check_hash or sha256_file(target) == target.name.removesuffix(SUFFIX)

    def _write(self, target: Path, raw: bytes | memoryview) -> None:
        """Write ``raw`` to ``target`` atomically (temp file, fsync, rename, fsync folder)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        sha = target.name.removesuffix(SUFFIX)
        tmp = target.parent / f"{TEMP_PREFIX}{sha[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with tmp.open("xb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def remove(self, sha: str) -> bool:
        """Delete the object ``sha``; whether there was one."""
        target = self.path(sha)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(target.parent)
        return True

    def verify(self, sha: str) -> bool:
        """Whether the object ``sha`` exists and its bytes still hash to ``sha``."""
        target = self.path(sha)
        return target.is_file() and sha256_file(target) == sha

    def iter(self) -> Iterator[str]:
        """The ids of every object present, sorted."""
        for sub in self._shards():
            for f in sorted(sub.iterdir()):
                sha = f.name.removesuffix(SUFFIX)
                if f.name.endswith(SUFFIX) and _SHA_RE.fullmatch(sha) and sha[:2] == sub.name:
                    yield sha

    def temp_files(self) -> list[Path]:
        """Temp files left by interrupted writes (or being written right now): files named
        as :meth:`put` names them, in the store's own shard folders (never through a
        symbolic link, so that nothing outside the store is ever taken for one)."""
        return sorted(
            f
            for sub in self._shards()
            if not sub.is_symlink()
            for f in sub.iterdir()
            if _TEMP_RE.fullmatch(f.name) and f.is_file() and not f.is_symlink()
        )

    def _shards(self) -> list[Path]:
        """The two-hex-digit folders objects live in."""
        if not self.root.is_dir():
            return []
        return sorted(
            sub for sub in self.root.iterdir() if _SHARD_RE.fullmatch(sub.name) and sub.is_dir()
        )
