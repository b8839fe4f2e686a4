"""README.md runs as written: every code block, in README order, as a reader runs it.

A reader on a fresh install follows the README from the repository root, in one Python
session (the Python blocks share one namespace, so a block uses what earlier blocks
defined) and one shell (the shell blocks share exported variables and background jobs).
The test does the same in a temporary folder that stands for the repository root after
the set-up commands: ``zoo/`` is a copy of the embedded default zoo (its manifest and
objects; the index is rebuilt on first open, as on a fresh clone), ``.venv`` links to the
environment running the tests, and ``PATH`` starts at its ``bin``, so ``canon`` is the
installed one. Python blocks run in one interpreter that stays up for the whole README;
shell blocks are sourced, with ``set -e``, by one ``bash`` that stays up too.

Where the test departs from a reader's machine:

- the Hugging Face Hub is the loopback Hub-protocol server of ``tests/hub_server.py``,
  reached through the Hub client's own settings (``HF_ENDPOINT``, ``HF_TOKEN``, and
  ``HF_HOME`` for a cache of the test's own), so ``canon push``/``pull`` run unchanged;
- port 8000 (``canon serve`` and the ``curl`` examples) becomes a free port;
- shell blocks run with ``set -eo pipefail``, and ``curl`` fails on an HTTP error
  (``--fail-with-body``), so that an error answer fails the block;
- after a shell block that starts ``canon serve`` the test waits until the server
  answers; the server is stopped when the test ends;
- a block right after ``<!-- readme-test: skip (REASON) -->`` is not run. Installs,
  the test suite itself and jobs of minutes are skipped this way; every skip says why,
  and there may be only a few.

``console`` blocks would run their ``$ `` lines (the rest is output), but plain ``bash``
blocks of commands are preferred. Output and synopses go in ``text`` blocks; a fence with
no language is an error, so that no command block is left out unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import FakeHub

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

PYTHON = {"python"}
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN = {"text"}  # output, command synopses
MAX_SKIPS = 6
BLOCK_TIMEOUT = 180.0  # seconds for one block (the whole README takes far less)
SERVER_TIMEOUT = 90.0  # seconds for `canon serve` to answer

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_MARKER = re.compile(r"^<!--\s*readme-test:(?P<directive>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>.*)\)\s*$")
_SERVE = re.compile(r"\bcanon\s+serve\b")
_PORT = re.compile(r"\b8000\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # the line of its opening fence (1-based)
    lang: str
    code: str
    skip: str | None  # the reason it is not run, or None

    @property
    def runs(self) -> bool:
        return self.skip is None and self.lang not in NOT_RUN


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, in order, with their skip markers.

    A marker is the line right before a fence; anything else that looks like a
    ``readme-test`` comment, a skip without a reason, or a fence without a language
    is an error.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    skip: str | None = None  # the reason of a marker on the line before
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        if marker:
            directive = _SKIP.match(marker.group("directive"))
            assert directive, f"README.md line {i + 1}: unknown directive {lines[i]!r}"
            skip = directive.group("reason").strip()
            assert skip, f"README.md line {i + 1}: a skip needs a reason"
            assert i + 1 < len(lines) and _FENCE.match(lines[i + 1]), (
                f"README.md line {i + 1}: a readme-test marker must come right before a fence"
            )
            i += 1
            continue
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        assert lang in PYTHON | SHELL | NOT_RUN, (
            f"README.md line {i + 1}: a fence needs a language: python or bash for code "
            f"(run by tests/test_readme.py), text for output and synopses; got {info!r}"
        )
        end = i + 1
        while end < len(lines) and not (
            lines[end].startswith(fence) and not lines[end].strip(fence[0]).strip()
        ):
            end += 1
        assert end < len(lines), f"README.md line {i + 1}: the fence is never closed"
        blocks.append(Block(i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", skip))
        skip = None
        i = end + 1
    return blocks


def console_commands(code: str) -> str:
    """The commands of a ``console`` block: its ``$ `` lines and their continuations."""
    commands: list[str] = []
    continued = False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line[2:] if line.startswith("$ ") and not continued else line)
            continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


def test_readme_blocks_are_tagged_and_skips_are_few_and_explained() -> None:
    """Every fence says its language; every skip says why; only a few blocks are skipped."""
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    skipped = [b for b in blocks if b.skip is not None]
    assert all(b.skip for b in skipped)
    assert len(skipped) <= MAX_SKIPS, "\n".join(f"line {b.line}: {b.skip}" for b in skipped)
    runs = [b for b in blocks if b.runs]
    assert {b.lang for b in runs} >= {"python", "bash"}
    assert len(runs) >= 10


def test_console_blocks_run_their_prompt_lines() -> None:
    code = "$ canon list \\\n    --tag algo=sgd\nname  kind\n$ echo done\ndone\n"
    assert console_commands(code) == "canon list \\\n    --tag algo=sgd\necho done\n"


# -- running the README ---------------------------------------------------------------------

# One Python session for every Python block: each block is compiled as README.md with its
# own line numbers (a traceback points at the README line) and executed in one namespace;
# the block's output (file descriptors 1 and 2, so C-level output too) goes to its log, and
# "ok" or "failed" and the CPU seconds it took go to the result pipe.
_DRIVER = r"""
import os, sys, time, traceback
results = os.fdopen(int(sys.argv[1]), "w", buffering=1)
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
for request in sys.stdin:
    first, source, log, readme = request.rstrip("\n").split("\t")
    with open(source, encoding="utf-8") as f:
        code = "\n" * (int(first) - 1) + f.read()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    status = "failed"
    cpu = time.process_time()
    with open(log, "wb") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            exec(compile(code, readme, "exec"), namespace)
            status = "ok"
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    results.write(f"{status} {time.process_time() - cpu:.2f}\n")
"""


# The reader sees an HTTP error in curl's output; the test needs a failing exit status.
_SHELL_SETUP = 'curl() { command curl --fail-with-body "$@"; }\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_line(fd: int, deadline: float) -> str | None:
    """One line from ``fd``, or None at end of file or at the deadline."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        data += chunk
    return data.decode().strip()


def _seconds(times: str) -> float:
    """Seconds from bash's `times` notation, ``1m2.500s``."""
    minutes, _, seconds = times.rstrip("s").partition("m")
    return 60 * float(minutes) + float(seconds)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Session:
    """A reader's Python session and shell, in ``work``, with every block's log in ``logs``."""

    def __init__(self, work: Path, logs: Path, env: dict[str, str], port: int) -> None:
        self.work, self.logs, self.env, self.port = work, logs, env, port
        self.python: subprocess.Popen[bytes] | None = None
        self.results = -1
        self.shell: subprocess.Popen[bytes] | None = None
        self.children_cpu = 0.0  # CPU seconds of the shell's finished commands so far
        self.timings: list[tuple[Block, float, float]] = []  # block, wall and CPU seconds

    def run(self, block: Block) -> None:
        start = time.monotonic()
        cpu = self._python(block) if block.lang in PYTHON else self._shell(block)
        self.timings.append((block, time.monotonic() - start, cpu))

    def report(self) -> str:
        """Each block's wall and CPU seconds (a background server's CPU is not counted)."""
        return "\n".join(
            f"  line {b.line} ({b.lang}): {wall:.1f} s, CPU {cpu:.1f} s"
            for b, wall, cpu in self.timings
        )

    def close(self) -> None:
        """Stop the Python session, the shell and what it started (`canon serve`): nothing
        in the working folder outlives the test, so no graceful shutdown is needed."""
        if self.python is not None:
            self.python.kill()
            self.python.wait()
            os.close(self.results)
        if self.shell is not None:
            # bash and its background jobs are one process group (no job control)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.shell.pid, signal.SIGKILL)
            self.shell.wait()

    def _log(self, block: Block, suffix: str) -> tuple[Path, Path]:
        source = self.logs / f"block-{block.line}.{suffix}"
        return source, self.logs / f"block-{block.line}.log"

    def _fail(self, block: Block, what: str, code: str) -> None:
        log = self.logs / f"block-{block.line}.log"
        output = log.read_text(errors="replace") if log.exists() else ""
        if len(output) > 8000:
            output = "...\n" + output[-8000:]
        pytest.fail(
            f"README.md line {block.line}: the {block.lang} block {what}.\n"
            f"--- the block ---\n{code}--- its output ---\n{output}\n"
            f"--- the blocks before it ---\n{self.report()}",
            pytrace=False,
        )

    def _python(self, block: Block) -> float:
        if self.python is None:
            read, self.results = os.pipe()
            self.python = subprocess.Popen(
                [sys.executable, "-c", _DRIVER, str(self.results)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.work,
                env=self.env,
                pass_fds=(self.results,),
            )
            os.close(self.results)
            self.results = read
        source, log = self._log(block, "py")
        source.write_text(block.code, encoding="utf-8")
        assert self.python.stdin is not None
        request = f"{block.line + 1}\t{source}\t{log}\t{README}\n"
        self.python.stdin.write(request.encode())
        self.python.stdin.flush()
        answer = _read_line(self.results, time.monotonic() + BLOCK_TIMEOUT)
        status, _, cpu = (answer or "").partition(" ")
        if status != "ok":
            if status == "failed":
                self._fail(block, "raised", block.code)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.python.wait(5)  # the pipe closed: the session is ending
            if self.python.returncode is not None:
                what = f"ended the Python session (exit status {self.python.returncode})"
                self._fail(block, what, block.code)
            self._fail(block, f"did not finish in {BLOCK_TIMEOUT:.0f} s", block.code)
        return float(cpu)

    def _shell(self, block: Block) -> float:
        if self.shell is None:
            self.shell = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=self.work,
                env=self.env,
                start_new_session=True,
            )
            assert self.shell.stdin is not None
            self.shell.stdin.write(_SHELL_SETUP.encode())
        code = console_commands(block.code) if block.lang == "console" else block.code
        code = _PORT.sub(str(self.port), code)
        source, log = self._log(block, "sh")
        source.write_text(code, encoding="utf-8")
        assert self.shell.stdin is not None and self.shell.stdout is not None
        # errexit in the sourced block ends the whole shell: its stdout closes, no "ok".
        # `times` prints the shell's CPU seconds, then its finished commands'.
        command = (
            f"set -eo pipefail; . '{source}' > '{log}' 2>&1 < /dev/null; set +eo pipefail; "
            "times; echo ok\n"
        )
        self.shell.stdin.write(command.encode())
        self.shell.stdin.flush()
        deadline = time.monotonic() + BLOCK_TIMEOUT
        lines: list[str] = []
        while (line := _read_line(self.shell.stdout.fileno(), deadline)) not in (None, "ok"):
            lines.append(line)
        if line != "ok":
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.shell.wait(5)  # errexit: the shell is ending
            if self.shell.returncode is None:
                self._fail(block, f"did not finish in {BLOCK_TIMEOUT:.0f} s", code)
            self._fail(block, f"failed (exit status {self.shell.returncode})", code)
        if _SERVE.search(code):
            self._wait_for_server(block, code)
        total = sum(_seconds(t) for t in lines[-1].split())
        cpu, self.children_cpu = total - self.children_cpu, total
        return cpu

    def _wait_for_server(self, block: Block, code: str) -> None:
        url = f"http://127.0.0.1:{self.port}/api/info"
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not _answers(url):
            if time.monotonic() > deadline:
                self._fail(block, f"started no server answering {url}", code)
            time.sleep(0.2)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """A fresh working folder standing for the repository root, the Hub on loopback."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "canon").exists(), f"no `canon` next to {sys.executable}"
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    logs.mkdir()
    (work / "zoo").mkdir()
    shutil.copy2(REPO / "zoo" / "manifest.json", work / "zoo" / "manifest.json")
    shutil.copytree(REPO / "zoo" / "objects", work / "zoo" / "objects")
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANON_", "HF_", "HUGGINGFACE_", "PYTEST_"))
    }
    with FakeHub() as hub:
        assert hub.token is not None
        env.update(
            PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
            HF_ENDPOINT=hub.endpoint,
            HF_TOKEN=hub.token,
            HF_HOME=str(tmp_path / "hf-home"),
            HF_HUB_DISABLE_XET="1",  # the loopback Hub speaks git-LFS uploads
            HF_HUB_DISABLE_TELEMETRY="1",
        )
        running = Session(work, logs, env, _free_port())
        try:
            yield running
        finally:
            running.close()


@pytest.mark.slow  # a Python session and five `canon` processes (a server): ~60 s on 2 busy cores
def test_readme_runs_as_written(session: Session) -> None:
    """Every runnable block of README.md, in order, in one session, succeeds."""
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.runs]
    for block in blocks:
        session.run(block)
    print(f"README blocks:\n{session.report()}")
