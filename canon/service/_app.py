"""The FastAPI application: state, limits, error handling, routes, static files, job runner."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import canon.service._api as _api
import canon.service._views as _views
from canon.errors import ConfigError
from canon.service._errors import error_body, install_error_handlers
from canon.service._html import CSP, error_page
from canon.service._jobs import JobRunner
from canon.service._state import Service, canon_version
from canon.zoo import Zoo

__all__ = ["DEFAULT_MAX_JSON_BYTES", "DEFAULT_MAX_UPLOAD_BYTES", "create_app"]

DEFAULT_MAX_UPLOAD_BYTES = 256 * 2**20
DEFAULT_MAX_JSON_BYTES = 2**20
STATIC = Path(__file__).parent / "static"


class LimitBodies:
    """Refuse request bodies over a limit (413) by their Content-Length and by counting.

    Every body except an upload's is read here, counted, and replayed to the
    app; an upload (``POST /api/entries``) is checked against its own limit
    by header here and counted by the route as it streams in.
    """

    def __init__(self, app: ASGIApp, *, max_json: int, max_upload: int) -> None:
        self.app = app
        self.max_json = max_json
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] == _api.UPLOAD_PATH
        limit = self.max_upload if upload else self.max_json
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        if upload:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        from fastapi.responses import JSONResponse

        body = error_body("RequestTooLargeError", f"the request body is over {limit} bytes")
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(
            scope, receive, send
        )


class SecurityHeaders:
    """Headers every response carries: no MIME sniffing, no framing, no referrer; and the
    web view's Content-Security-Policy (no scripts, nothing from elsewhere) on every
    response that sets none itself, but the interactive API docs (Swagger UI and ReDoc
    run scripts from a CDN)."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )
    POLICY = (b"content-security-policy", CSP.encode())
    SCRIPTED = ("/docs", "/docs/oauth2-redirect", "/redoc")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        policy = () if scope.get("path") in self.SCRIPTED else (self.POLICY,)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                has_policy = any(k.lower() == self.POLICY[0] for k, _ in headers)
                message["headers"] = [*headers, *self.HEADERS, *(() if has_policy else policy)]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    zoo_path: str | os.PathLike[str],
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    device: str = "auto",
    workers: int = 1,
    trust_code: bool = False,
) -> FastAPI:
    """The HTTP service over the zoo at ``zoo_path`` (which must exist).

    Without ``token`` every write endpoint answers 403 (read-only). Jobs run
    on ``workers`` threads on ``device``, started and stopped with the app's
    lifespan; jobs a previous server left running are re-queued on start.
    ``trust_code`` lets the zoo's entries name ``module:function`` architectures
    (uploads never may).
    """
    if max_upload_bytes < 1 or max_json_bytes < 1 or workers < 1:
        raise ConfigError("`max_upload_bytes`, `max_json_bytes` and `workers` must be positive")
    root = Path(zoo_path)
    service = Service(
        root=root,
        zoo=Zoo.open(root, create=False, trust_code=trust_code),
        runner=JobRunner(root, device=device, workers=workers, trust_code=trust_code),
        token=token or None,
        device=device,
        max_upload_bytes=max_upload_bytes,
        max_json_bytes=max_json_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.runner.start()
        try:
            yield
        finally:
            service.runner.stop()
            service.zoo.close()

    app = FastAPI(
        title="canon",
        summary="Canonical forms, distances and error barriers between trained networks.",
        description=(
            "A zoo of trained networks over HTTP. Reads are open; uploads and midpoints need "
            "`Authorization: Bearer <token>`. Comparisons and tables come from the cache (200) "
            "or are computed by a job (202; poll `GET /api/jobs/{id}`)."
        ),
        version=canon_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.html_error_page = error_page
    install_error_handlers(app)
    app.include_router(_api.router)
    app.include_router(_views.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(LimitBodies, max_json=max_json_bytes, max_upload=max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    return app
