"""Every exception canon raises, under one root.

Each leaf mixes in the builtin it behaves like, so callers that catch
``ValueError`` or ``KeyError`` keep working. Messages name the argument or
tensor at fault, state the cause and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CanonError",
    "CheckpointFormatError",
    "ConfigError",
    "CorruptZooError",
    "DatasetError",
    "DuplicateNameError",
    "DuplicateObjectError",
    "EntryInUseError",
    "EntryNotFoundError",
    "HubError",
    "InvalidEntryError",
    "InvalidManifestError",
    "JobNotFoundError",
    "MergeConflictError",
    "NameClashError",
    "NonFiniteError",
    "NotCachedError",
    "PushConflictError",
    "QueueFullError",
    "ReadOnlyError",
    "ReadOnlyZooError",
    "RequestTooLargeError",
    "SpecMismatchError",
    "UnknownNameError",
    "UnsupportedModuleError",
    "UntrustedCodeError",
    "ZooError",
]


class CanonError(Exception):
    """Root of every error canon raises on purpose."""


class UnsupportedModuleError(CanonError, TypeError):
    """A module or operation that canon cannot derive a structure spec for."""

    def __init__(self, message: str, *, op: str = "", path: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.path = path


class SpecMismatchError(CanonError, ValueError):
    """Tensors (names, shapes or dtypes) that do not match a structure spec."""

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class NonFiniteError(CanonError, ValueError):
    """Weights that contain NaN or Inf."""

    def __init__(self, message: str, *, tensors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tensors = tensors


class CheckpointFormatError(CanonError, ValueError):
    """A file that is not a readable checkpoint in a supported format."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ConfigError(CanonError, ValueError):
    """An architecture, dataset or option configuration that is not valid."""


class DatasetError(CanonError, ValueError):
    """A dataset that cannot be made or read (missing files, bad format)."""


class UnknownNameError(CanonError, KeyError):
    """A name looked up in a registry that holds no such name."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(CanonError, ValueError):
    """A name registered twice."""


class ZooError(CanonError):
    """A zoo operation that cannot be done as asked."""


class EntryNotFoundError(ZooError, KeyError):
    """A zoo entry name (or id) that the zoo does not hold."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NameClashError(ZooError, ValueError):
    """A zoo entry name that is already taken."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class DuplicateObjectError(ZooError, ValueError):
    """Weights identical (byte for byte) to an existing zoo entry's."""

    def __init__(self, message: str, *, existing: str = "") -> None:
        super().__init__(message)
        self.existing = existing


class InvalidEntryError(ZooError, ValueError):
    """An entry field (name, tag, kind, parents, metrics) that is not valid."""


class EntryInUseError(ZooError, ValueError):
    """An entry that cannot be removed because others depend on it."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class MergeConflictError(ZooError, ValueError):
    """A pull refused because this zoo and the remote changed the same values differently
    since they last synced (``conflicts``: one line each), or the zoo changed meanwhile."""

    def __init__(self, message: str, *, conflicts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class CorruptZooError(ZooError, RuntimeError):
    """A zoo whose files or index are damaged or from an unknown schema."""


class ReadOnlyZooError(ZooError, PermissionError):
    """A write to a zoo whose folder or index this process cannot write."""


class UntrustedCodeError(CanonError, PermissionError):
    """A ``module:function`` architecture named by data (a file, a zoo, the Hub, a request).

    Only an architecture the user typed may name code; data may name registered
    architectures only, unless the user opts in (``--trust-code``,
    ``trust_code=True``).
    """

    def __init__(self, message: str, *, architecture: str = "") -> None:
        super().__init__(message)
        self.architecture = architecture


class InvalidManifestError(CorruptZooError, ValueError):
    """A zoo manifest (local or from the Hub): malformed, hostile or of an unknown schema."""

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class HubError(CanonError, OSError):
    """A push or pull that the Hub (or the local Hub cache, offline) could not serve."""

    def __init__(self, message: str, *, repo_id: str = "", revision: str | None = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.revision = revision

    def __str__(self) -> str:  # OSError would format its args as (errno, strerror)
        return str(self.args[0])


class PushConflictError(HubError):
    """A push refused because the remote changed (a concurrent push) or holds entries not pulled."""


class QueueFullError(ZooError):
    """The zoo's job queue holds as many active jobs as it may: try again later."""


class JobNotFoundError(ZooError, KeyError):
    """A job id that the zoo's job queue does not hold."""

    def __init__(self, message: str, *, job_id: str = "") -> None:
        super().__init__(message)
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class AuthenticationError(CanonError, PermissionError):
    """A write request to the service without a valid bearer token."""


class ReadOnlyError(CanonError, PermissionError):
    """A write request to a service started without a token (it serves reads only)."""


class RequestTooLargeError(CanonError, ValueError):
    """A request body larger than the service accepts."""

    def __init__(self, message: str, *, limit: int = 0) -> None:
        super().__init__(message)
        self.limit = limit


class NotCachedError(ZooError, LookupError):
    """A result asked for from the cache alone (``compute=False``) that is not cached."""
