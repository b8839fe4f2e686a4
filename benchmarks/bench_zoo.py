"""Zoo queries: a cached 50x50 barrier table against its first computation, and `canon list`
at 1,000 entries.

Builds temporary zoos of small MLPs (64-16-10, random weights, dataset digits):
50 entries for the table (geodesic barrier, 5 points), 1,000 for the listing.
`canon list` is timed in-process through click (opening the zoo included) and,
for reference, as a fresh process (dominated by importing torch). Targets: a
cached 50x50 query under 0.3 s, `list` at 1,000 entries under 0.5 s.

    python benchmarks/bench_zoo.py [--entries 50] [--listing 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

from canon.architectures import build_model
from canon.cli import cli
from canon.zoo import Zoo

NET = ("mlp", {"in_features": 64, "hidden": [16], "classes": 10})


def fill(zoo: Zoo, count: int) -> None:
    for i in range(count):
        torch.manual_seed(i)
        zoo.add(
            build_model(*NET),
            name=f"net-{i:04d}",
            architecture=NET[0],
            config=NET[1],
            dataset="digits",
            tags={"batch": str(i % 7)},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--listing", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "zoo", "targets": "cached table < 0.3 s, list < 0.5 s"}
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Zoo.open(Path(tmp) / "table")
        fill(zoo, args.entries)
        start = time.perf_counter()
        first = zoo.barrier_table(points=5, device="cpu")
        result["table_first_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cached = zoo.barrier_table(points=5, device="cpu")
        result["table_cached_s"] = time.perf_counter() - start
        result["table_pairs"] = first.computed
        result["table_cached_computed"] = cached.computed
        result["table_speedup"] = result["table_first_s"] / result["table_cached_s"]

        listing = Path(tmp) / "listing"
        fill(Zoo.open(listing), args.listing)
        runner = CliRunner()
        runner.invoke(cli, ["list", "--zoo", str(listing)])  # warm imports
        start = time.perf_counter()
        out = runner.invoke(cli, ["list", "--zoo", str(listing)])
        result["list_in_process_s"] = time.perf_counter() - start
        assert out.exit_code == 0, out.output
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "canon", "list", "--zoo", str(listing)],
            check=True,
            capture_output=True,
        )
        result["list_process_s"] = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import canon.cli"], check=True)
        result["import_canon_cli_s"] = time.perf_counter() - start
    result["entries"], result["listing"] = args.entries, args.listing
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"barrier table {args.entries}x{args.entries} ({result['table_pairs']} pairs): "
        f"first {result['table_first_s']:.2f} s, cached {result['table_cached_s']:.3f} s "
        f"({result['table_speedup']:.0f}x)"
    )
    print(
        f"canon list, {args.listing} entries: {result['list_in_process_s']:.3f} s in process; "
        f"{result['list_process_s']:.2f} s as a new process "
        f"(of which importing canon.cli {result['import_canon_cli_s']:.2f} s)"
    )
    print(f"targets: {result['targets']}")


if __name__ == "__main__":
    main()
