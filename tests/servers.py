"""Real ``canon serve`` processes on 127.0.0.1 for the service tests.

Each server runs as a subprocess (``python -m canon serve``) on a copy of the
embedded default zoo; the copy's index is rebuilt once per test process and
copied from there, so a server starts in a few seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from canon.zoo import Zoo

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-7f3a9c1e"
_BUILT: dict[Path, Path] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_zoo(base: Path, dest: Path) -> Path:
    """A copy of the embedded default zoo at ``dest``, its index built once per ``base``."""
    template = _BUILT.get(base)
    if template is None:
        template = base / "default-zoo-template"
        if not template.exists():
            template.mkdir(parents=True)
            shutil.copy2(REPO / "zoo" / "manifest.json", template / "manifest.json")
            shutil.copytree(REPO / "zoo" / "objects", template / "objects")
            Zoo.open(template, create=False).close()  # rebuilds the index from the manifest
        _BUILT[base] = template
    shutil.copytree(template, dest)
    return dest


@dataclass
class Server:
    """A running ``canon serve`` process and an HTTP client for it."""

    process: subprocess.Popen[bytes]
    url: str
    zoo: Path
    log: Path
    token: str | None = TOKEN
    args: tuple[str, ...] = ()

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client on the server (with ``Authorization: Bearer token`` if given)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """One GET request."""
        with self.client() as c:
            return c.get(path, **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """One POST request (with the token if given)."""
        with self.client(token) as c:
            return c.post(path, **kwargs)

    def stop(self, *, kill: bool = False) -> None:
        """SIGKILL the server, or stop it gracefully (SIGINT, then SIGKILL after 20 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def restart(self, *, kill: bool = False) -> None:
        """Stop this server (SIGKILL with ``kill``); start a new one on the same zoo, in place."""
        self.stop(kill=kill)
        fresh = start_server(self.zoo, self.log, token=self.token, args=self.args)
        self.process, self.url = fresh.process, fresh.url

    def wait_job(
        self, job_id: str, *, until: str = "done", timeout: float = 120.0
    ) -> dict[str, Any]:
        """Poll ``GET /api/jobs/{id}`` until its state is ``until`` (or it failed); the job."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                job: dict[str, Any] = c.get(f"/api/jobs/{job_id}").json()
                if job["state"] in (until, "failed") or time.monotonic() > deadline:
                    assert job["state"] == until, job
                    return job
                time.sleep(0.1)


def start_server(
    zoo: Path, log: Path, *, token: str | None = TOKEN, args: tuple[str, ...] = ()
) -> Server:
    """Start ``python -m canon serve`` on ``zoo`` on a free port; return once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CANON_TOKEN", "CANON_ZOO")}
    if token is not None:
        env["CANON_TOKEN"] = token
    cmd = [sys.executable, "-m", "canon", "serve", "--zoo", str(zoo), "--port", str(port)]
    cmd += ["--device", "cpu", *args]
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    server = Server(process, f"http://127.0.0.1:{port}", zoo, log, token, args)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"canon serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/api/info", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop(kill=True)
            raise RuntimeError(f"canon serve did not answer in 90 s:\n{log.read_text()}")
        time.sleep(0.1)
