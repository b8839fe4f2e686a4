"""``canon serve``: the HTTP API and web view over a zoo (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import logging

import click

from canon.cli._app import App, command
from canon.cli._common import open_zoo

__all__ = ["serve"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="CANON_TOKEN",
    default=None,
    help="Bearer token for uploads and midpoints (else $CANON_TOKEN; none: read-only).",
)
@click.option(
    "--max-upload-mb",
    default=256.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest checkpoint upload accepted.",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Job threads."
)
def serve(
    app: App, host: str, port: int, token: str | None, max_upload_mb: float, workers: int
) -> None:
    """Serve the zoo over HTTP: a JSON API (OpenAPI at /docs) and a web view at /."""
    import uvicorn

    from canon.service import create_app

    with open_zoo(app) as zoo:  # checks the zoo exists; rebuilds its index from a manifest
        root, count = zoo.root, len(zoo)
    web_app = create_app(
        root,
        token=token or None,
        max_upload_bytes=int(max_upload_mb * 2**20),
        device=app.device,
        workers=workers,
        trust_code=app.trust_code,
    )
    log = logging.getLogger("canon.service")
    log.setLevel(logging.WARNING if app.quiet else logging.INFO)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
    mode = "uploads and midpoints need the token" if token else "read-only (no --token)"
    app.log(f"serving {root} ({count} entries) at http://{host}:{port}/ ({mode})")
    if not _loopback(host):
        app.log(f"note: {host} is not a loopback address; anyone who can reach it can read the zoo")
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        log_level="warning" if app.quiet else "info",
        timeout_graceful_shutdown=10,
    )
