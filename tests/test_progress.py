"""Progress of long work where no terminal redraws a bar: plain lines on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import default_zoo


@pytest.mark.slow  # two processes on the embedded zoo
def test_piped_stderr_gets_progress_lines(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A table over the embedded zoo, stderr piped: lines with counts, and a clean stdout;
    with --progress none (the same work, on another copy) no lines."""
    base = tmp_path_factory.getbasetemp()  # the default zoo's index is built once per session
    env = {k: v for k, v in os.environ.items() if k != "CANON_PROGRESS"}
    env["CANON_PROGRESS_INTERVAL"] = "0"  # a line every step (default: every 10 s)
    cmd = [sys.executable, "-m", "canon", "table", "sgd-0", "sgd-1", "adv-0", "--points", "5"]
    cmd += ["--device", "cpu"]

    def start(name: str, *args: str) -> subprocess.Popen[str]:
        zoo = default_zoo(base, tmp_path / name)
        return subprocess.Popen(
            [*cmd, "--zoo", str(zoo), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    # both at once: each process spends seconds importing, and there are two cores
    piped, quiet = start("zoo", "--json"), start("quiet-zoo", "--progress", "none")
    stdout, stderr = piped.communicate(timeout=300)
    _, quiet_stderr = quiet.communicate(timeout=300)
    assert piped.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("pairs: ")]
    assert lines, stderr
    assert lines[0].startswith("pairs: 1/3 it (33%)")
    assert lines[-1].startswith("pairs: 3/3 it (100%)")
    assert stdout.startswith("{")  # the JSON on stdout is untouched
    assert quiet.returncode == 0, quiet_stderr
    assert "pairs: " not in quiet_stderr
