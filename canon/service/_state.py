"""The service's shared state (one per app) and the dependencies routes use to reach it."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from canon.errors import AuthenticationError, ReadOnlyError
from canon.service._jobs import JobRunner
from canon.zoo import Job, Zoo

__all__ = [
    "Service",
    "ServiceDep",
    "WriteAccess",
    "canon_version",
    "get_service",
    "require_write",
]

_bearer = HTTPBearer(auto_error=False, description="The server's token (--token/$CANON_TOKEN).")


@dataclass
class Service:
    """What every request needs: the zoo (cache-only for requests), the runner, the limits."""

    root: Path
    zoo: Zoo
    runner: JobRunner
    token: str | None
    device: str
    max_upload_bytes: int
    max_json_bytes: int

    @property
    def read_only(self) -> bool:
        """Whether write endpoints are refused (no token configured)."""
        return self.token is None

    def submit(self, kind: str, params: dict[str, Any]) -> Job:
        """The job for this request (shared with an identical active one), workers woken."""
        job, created = self.zoo.jobs.submit(kind, params)
        if created:
            self.runner.wake()
        return job


def canon_version() -> str:
    """The installed canon's version (``0+unknown`` in a checkout that is not installed)."""
    try:
        return version("canon-zoo")
    except PackageNotFoundError:
        return "0+unknown"


def get_service(request: Request) -> Service:
    """The app's :class:`Service`."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_write(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Allow the request only with ``Authorization: Bearer <the server's token>``."""
    if service.token is None:
        raise ReadOnlyError(
            "this server is read-only: it was started without a token (--token or $CANON_TOKEN)"
        )
    if credentials is None:
        raise AuthenticationError("this request needs the header `Authorization: Bearer <token>`")
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, service.token.encode("utf-8")):
        raise AuthenticationError("the bearer token is not valid for this server")


WriteAccess = Depends(require_write)
