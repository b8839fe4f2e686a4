"""Real ``canon serve`` processes on 127.0.0.1 for the service tests.

Each server runs as a subprocess (``python -m canon serve``) on a copy of the
embedded default zoo; the copy's index is rebuilt once per test process and
copied from there, so a server starts in a few seconds. The servers of the
service test modules (``SERVERS``) are started at the beginning of the session
(``launch_early``, from tests/conftest.py), so those seconds overlap other tests.
"""

from __future__ import annotations

import atexit
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
import pytest

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
        """SIGKILL the server, or stop it gracefully: SIGINT, then SIGKILL once uvicorn has
        logged the end of its shutdown (or after 20 s in any case).

        After uvicorn's "Finished server process" (the app's shutdown, job runner included,
        has completed) all that is left is the interpreter's own teardown, seconds of garbage
        collection with torch loaded; the tests need none of it.
        """
        if self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
            self.process.wait(10)
            return
        start = self.log.stat().st_size if self.log.exists() else 0
        finished = f"Finished server process [{self.process.pid}]".encode()
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while self.process.poll() is None and time.monotonic() < deadline:
            with self.log.open("rb") as log:
                log.seek(start)
                if finished in log.read():
                    break
            time.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def restart(self, *, kill: bool = False) -> None:
        """Stop this server (SIGKILL with ``kill``); start a new one on the same zoo, in place."""
        self.stop(kill=kill)
        fresh = start_server(self.zoo, self.log, token=self.token, args=self.args)
        self.process, self.url = fresh.process, fresh.url

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once ``GET /api/info`` answers 200; raise if the process exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"canon serve exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/api/info", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(
                    f"canon serve did not answer in {timeout:.0f} s:\n{self.log.read_text()}"
                )
            time.sleep(0.1)

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
    server = spawn_server(zoo, log, token=token, args=args)
    server.wait_ready()
    return server


def spawn_server(
    zoo: Path, log: Path, *, token: str | None = TOKEN, args: tuple[str, ...] = ()
) -> Server:
    """Start ``python -m canon serve`` on ``zoo`` on a free port; return at once (the process
    takes seconds to import and bind: call ``wait_ready`` before using it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CANON_TOKEN", "CANON_ZOO")}
    if token is not None:
        env["CANON_TOKEN"] = token
    cmd = [sys.executable, "-m", "canon", "serve", "--zoo", str(zoo), "--port", str(port)]
    cmd += ["--device", "cpu", *args]
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return Server(process, f"http://127.0.0.1:{port}", zoo, log, token, args)


# -- the service test modules' servers, started early -----------------------------------------

MAX_UPLOAD_MB = 1  # the API server's upload limit
# server name -> (the test module that uses it, its extra `canon serve` arguments)
SERVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api": ("test_service_api", ("--max-upload-mb", str(MAX_UPLOAD_MB))),
    "browser": ("test_service_browser", ()),
}
_early: dict[str, Server] = {}


def launch(name: str, factory: pytest.TempPathFactory) -> Server:
    """The server ``name`` of ``SERVERS`` (with the token, on its own copy of the default zoo):
    the one ``launch_early`` started, else a new process. Call ``wait_ready`` before use."""
    early = _early.pop(name, None)
    if early is not None:
        return early
    root = factory.mktemp(name)
    zoo = default_zoo(factory.getbasetemp(), root / "zoo")
    return spawn_server(zoo, root / "server.log", args=SERVERS[name][1])


def launch_early(modules: set[str], factory: pytest.TempPathFactory) -> None:
    """Start now the servers of those of ``modules`` (test module names) that use one."""
    for name, (module, _) in SERVERS.items():
        if module in modules and name not in _early:
            _early[name] = launch(name, factory)


@atexit.register  # also when the session ends without its fixtures' teardown
def stop_early() -> None:
    """Kill the early servers that no module took (all its tests were skipped, say)."""
    while _early:
        _early.popitem()[1].stop(kill=True)
