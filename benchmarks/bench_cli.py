"""Fast answers from the cache: `canon list`, `show`, a cached `compare` and a cached `table`
as new processes on the embedded zoo, against starting the interpreter.

Copies the embedded zoo (`zoo/`: manifest and objects; the index is rebuilt on the
first open) to a temporary folder, or uses ``--zoo PATH`` as it is, and fills the
caches once (`canon compare A B`, `canon table`, which compute what is not cached;
timed as "first"). Then each command runs ``--repeats`` times as a new process
(the `canon` console script, as a user types it) and the median wall time is
compared with floors measured in the same run: `python -c pass` (starting the
interpreter), `python -c "import canon.cli"` (importing the command line: click
and canon's command modules) and `canon --version` (which also reads the package
metadata). Each command is also run once in an interpreter that reports whether
torch, numpy, scipy or SQLAlchemy were imported. Target: each command under 0.5 s
as a new process on 2 cores. No timed assertions.

    python benchmarks/bench_cli.py [--zoo PATH] [--repeats 5] [--a sgd-0] [--b sgd-1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import median_time  # benchmarks/ is on sys.path when run

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "zoo"
HEAVY = ("torch", "numpy", "scipy", "sqlalchemy")
TARGET_S = 0.5

# Runs the command line on argv[1:] and reports (on stderr's last line) which heavy
# modules it imported.
IMPORTS = f"""
import sys
from canon.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="canon", standalone_mode=False)
finally:
    sys.stderr.write("\\nIMPORTED " + ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def canon_command() -> list[str]:
    """The `canon` console script next to this interpreter (else ``python -m canon``)."""
    script = Path(sys.executable).with_name("canon")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "canon"]


def run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True)


def imported(zoo: Path, args: list[str]) -> list[str]:
    """The heavy modules ``canon ARGS`` imports."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS, *args, "--zoo", str(zoo)],
        check=True,
        capture_output=True,
        text=True,
    )
    last = done.stderr.rsplit("IMPORTED ", 1)[-1]
    return [m for m in last.strip().split(",") if m]


def measure(zoo: Path, repeats: int, a: str, b: str) -> dict[str, Any]:
    canon = canon_command()
    where = ["--zoo", str(zoo)]
    commands = {
        "list": ["list"],
        "show": ["show", a],
        "compare": ["compare", a, b],
        "table": ["table"],
    }
    result: dict[str, Any] = {"zoo": str(zoo), "repeats": repeats}
    for name in ("compare", "table"):  # fill the caches (a no-op when already filled)
        start = time.perf_counter()
        run([*canon, *commands[name], *where])
        result[f"{name}_first_s"] = time.perf_counter() - start

    def floor(args: list[str]) -> float:
        return median_time(lambda: run(args), repeats, lambda: None)

    result["python_s"] = floor([sys.executable, "-c", "pass"])
    result["import_cli_s"] = floor([sys.executable, "-c", "import canon.cli"])
    result["version_s"] = floor([*canon, "--version"])
    result["commands"] = {}
    for name, args in commands.items():
        seconds = floor([*canon, *args, *where])
        result["commands"][name] = {
            "args": args,
            "seconds": seconds,
            "vs_python": seconds / result["python_s"],
            "vs_import_cli": seconds / result["import_cli_s"],
            "vs_version": seconds / result["version_s"],
            "imports": imported(zoo, args),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=None, help="use this zoo as it is")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--a", default="sgd-0")
    parser.add_argument("--b", default="sgd-1")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zoo = args.zoo
        if zoo is None:
            zoo = Path(tmp) / "zoo"
            zoo.mkdir()
            shutil.copy2(EMBEDDED / "manifest.json", zoo / "manifest.json")
            shutil.copytree(EMBEDDED / "objects", zoo / "objects")
        result = measure(zoo, args.repeats, args.a, args.b)
    result |= {
        "benchmark": "cli",
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "target": f"each command under {TARGET_S} s as a new process",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"floors: python -c pass {result['python_s']:.3f} s, import canon.cli "
        f"{result['import_cli_s']:.3f} s, canon --version {result['version_s']:.3f} s "
        f"({result['cpus']} CPUs)"
    )
    print(
        f"filling the cache: compare {result['compare_first_s']:.1f} s, "
        f"table {result['table_first_s']:.1f} s"
    )
    for row in result["commands"].values():
        print(
            f"canon {' '.join(row['args']):<20} {row['seconds']:.3f} s  "
            f"{row['vs_python']:4.1f}x python  {row['vs_import_cli']:4.2f}x import canon.cli  "
            f"{row['vs_version']:4.2f}x --version  "
            f"imports {', '.join(row['imports']) or 'none of ' + '/'.join(HEAVY)}"
        )
    print(f"target: {result['target']}")


if __name__ == "__main__":
    main()
