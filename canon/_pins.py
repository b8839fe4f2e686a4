"""Content pins: a dataset read from files names the bytes it was read from (no torch here:
the listing of a zoo reads pins too).

A zoo records the dataset each entry was trained on by its spec (``npz:PATH``), and
caches every result under it. A spec that names a path names whatever is there at the
time, so after the file changed (or, for a relative path, from another folder) the
cached results and measured errors would silently belong to other data. A zoo therefore
records such a spec *pinned*: the absolute path and the sha256 of the content,
``npz:/abs/PATH#sha256=HEX``. :func:`~canon.data.load_dataset` reads a pinned spec only
while the content still hashes to the pin. A folder's content (``mnist:DIR``) is the
list of its files' relative paths and digests.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from canon.errors import DatasetError

__all__ = ["PIN", "check_pin", "content_digest", "split_pin"]

PIN = "#sha256="
_HEX = re.compile("[0-9a-f]{64}")
#: the most files a pinned folder may hold (a dataset folder holds a few)
MAX_FOLDER_FILES = 10_000
_CHUNK = 1 << 20

# digests of files already read, by (path, size, mtime, inode): a table's many loads of
# one dataset hash it once
_SEEN: dict[tuple[str, int, int, int], str] = {}


def split_pin(spec: str) -> tuple[str, str | None]:
    """``spec`` without its content pin, and the pinned sha256 (``None``: not pinned)."""
    head, sep, digest = spec.rpartition(PIN)
    if sep and _HEX.fullmatch(digest):
        return head, digest
    return spec, None


def content_digest(path: Path) -> str:
    """The sha256 of a file's bytes, or of a folder's sorted (relative path, digest) lines."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        if len(files) > MAX_FOLDER_FILES:
            raise DatasetError(
                f"{path} holds {len(files)} files; a dataset folder canon pins may hold at "
                f"most {MAX_FOLDER_FILES}"
            )
        lines = "".join(f"{p.relative_to(path).as_posix()}\t{_file_digest(p)}\n" for p in files)
        return hashlib.sha256(lines.encode()).hexdigest()
    return _file_digest(path)


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _SEEN:
        sha = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
        _SEEN[key] = sha.hexdigest()
    return _SEEN[key]


def check_pin(where: str, path: str, digest: str) -> None:
    """Raise :class:`DatasetError` unless the content at ``path`` hashes to ``digest``."""
    target = Path(os.path.expanduser(path))
    if not target.exists():
        return  # the loader says what is missing
    found = content_digest(target)
    if found != digest:
        raise DatasetError(
            f"{where}: {target} changed since it was recorded (sha256 {digest[:12]}, now "
            f"{found[:12]}): results and errors recorded for it belong to the old content. "
            f"To use the new content, name it again (`canon edit NAME --dataset SPEC`)"
        )
