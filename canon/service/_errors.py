"""HTTP errors: canon's exceptions mapped to status codes in one table, JSON bodies.

Every error response has the body ``{"error": {"type": ..., "message": ...}}``
(request validation errors add ``details``). Web pages get the same status
with a small HTML page instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from canon.errors import (
    AuthenticationError,
    CanonError,
    CheckpointFormatError,
    ConfigError,
    CorruptZooError,
    DatasetError,
    DuplicateObjectError,
    EntryInUseError,
    EntryNotFoundError,
    InvalidEntryError,
    JobNotFoundError,
    NameClashError,
    NonFiniteError,
    NotCachedError,
    QueueFullError,
    ReadOnlyError,
    RequestTooLargeError,
    SpecMismatchError,
    UnknownNameError,
    UnsupportedModuleError,
)

__all__ = [
    "STATUS",
    "error_body",
    "error_response",
    "install_error_handlers",
    "public_message",
    "status_for",
]

log = logging.getLogger("canon.service")

#: The status code of each canon error; the most specific class in an exception's MRO wins.
#: Errors about what a client sent (its body, query, config, names) are 4xx; a zoo damaged
#: on the server is a 500, and so is any exception that is not a CanonError (a bug, logged).
STATUS: dict[type[BaseException], int] = {
    EntryNotFoundError: 404,
    JobNotFoundError: 404,
    NotCachedError: 404,
    NameClashError: 409,
    DuplicateObjectError: 409,
    EntryInUseError: 409,
    AuthenticationError: 401,
    ReadOnlyError: 403,
    RequestTooLargeError: 413,
    QueueFullError: 503,  # busy, not broken: Retry-After
    SpecMismatchError: 422,
    NonFiniteError: 422,
    CheckpointFormatError: 422,
    InvalidEntryError: 422,
    ConfigError: 422,
    DatasetError: 422,
    UnknownNameError: 422,
    UnsupportedModuleError: 422,
    CorruptZooError: 500,  # the zoo on the server is damaged: not the client's fault
    CanonError: 400,
}

#: seconds a client is asked to wait when the job queue is full
RETRY_AFTER_S = 30

# Renders an HTML error page (title, message); set by the views so this module needs none.
HtmlPage = Callable[[int, str, str], str]


def status_for(exc: BaseException) -> int:
    """The HTTP status for ``exc`` from :data:`STATUS` (500 for anything unexpected)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(kind: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON error envelope."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/openapi", "/static/", "/docs", "/redoc"))


def error_response(
    request: Request,
    status: int,
    kind: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON error (or an HTML page for the web view) with ``status``."""
    html: HtmlPage | None = getattr(request.app.state, "html_error_page", None)
    if html is not None and _wants_html(request):
        return HTMLResponse(html(status, kind, message), status_code=status, headers=headers)
    return JSONResponse(error_body(kind, message, details), status_code=status, headers=headers)


def public_message(exc: BaseException, root: Path | None = None) -> str:
    """The exception's message on one line, the zoo's folder on the server named ``the zoo``."""
    text = str(exc).strip() or type(exc).__name__
    if root is not None:
        text = text.replace(f"Zoo({str(root)!r})", "the zoo").replace(str(root), "the zoo")
    return " ".join(text.split())


async def _canon_error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    if status >= 500:
        log.error("server-side error on %s: %s", request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    root = getattr(getattr(request.app.state, "service", None), "root", None)
    message = public_message(exc, root)
    return error_response(request, status, type(exc).__name__, message, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:  # a status code http.HTTPStatus does not name
        phrase = "Error"
    kind = phrase.replace(" ", "").replace("-", "")
    message = exc.detail if isinstance(exc.detail, str) else phrase
    return error_response(
        request, exc.status_code, kind, message, headers=dict(exc.headers or {}) or None
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:] or first["loc"])
    message = f"invalid request: {where}: {first['msg']}" if where else "invalid request"
    return error_response(request, 422, "RequestValidationError", message, details=details)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(
        request, 500, "InternalError", "the server failed to handle this request; see its log"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into error responses."""
    app.add_exception_handler(CanonError, _canon_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
