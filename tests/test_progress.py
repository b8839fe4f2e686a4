"""Progress of long work where no terminal redraws a bar: plain lines on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from servers import default_zoo


def test_piped_stderr_gets_progress_lines(tmp_path: Path) -> None:
    """A table over the embedded zoo, stderr piped: lines with counts, and a clean stdout."""
    zoo = default_zoo(tmp_path, tmp_path / "zoo")
    env = {k: v for k, v in os.environ.items() if k != "CANON_PROGRESS"}
    cmd = [sys.executable, "-m", "canon", "table", "sgd-0", "sgd-1", "adv-0", "--points", "5"]
    cmd += ["--zoo", str(zoo), "--device", "cpu"]
    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("pairs: ")]
    assert lines, done.stderr
    assert lines[0].startswith("pairs: 1/3 it (33%)")  # the first step is reported at once
    assert lines[-1].startswith("pairs: 3/3 it (100%)")
    assert done.stdout.startswith("{")  # the JSON on stdout is untouched
    quiet = subprocess.run(
        cmd + ["--progress", "none"], env=env, capture_output=True, text=True, timeout=300
    )
    assert quiet.returncode == 0 and "pairs: " not in quiet.stderr
