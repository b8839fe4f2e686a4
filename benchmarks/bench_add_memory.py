"""Peak memory of `canon add`: an honest add, an add whose config lies about the file's
shapes, and the floor of importing what the command needs.

The file is a 64-256-256-10 MLP (85,002 float32 weights: about 340 KB). The lying add
passes ``--config '{"in_features": 64, "hidden": [4000000]}'``, a 4,000,000 x 64 first
layer (1 GiB of float32) that the file's tensors cannot fill: it must be refused (exit
1), ideally before anything that size is built; ``hidden: [1000000]`` is the same lie
within the architecture's config limits. Each command runs as a fresh process
started by a small measuring process (``resource.getrusage(RUSAGE_CHILDREN)``), so a
big parent's memory is never counted. The issue's target: the lying add under 300 MB.
Prints peak RSS in MiB and ratios; asserts nothing.

    python benchmarks/bench_add_memory.py [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from canon.architectures import build_model
from canon.checkpoint import save_state

HONEST = {"in_features": 64, "hidden": [256, 256], "classes": 10}
LIE = {"in_features": 64, "hidden": [4_000_000]}  # the case
LIE_1M = {"in_features": 64, "hidden": [1_000_000]}  # within config limits: 280 MB of float32
TARGET_MIB = 300

MEASURE = (
    "import json, resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL).returncode; "
    "print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
)


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(exit status, peak RSS in MiB) of ``cmd`` run as a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True
    ).stdout
    code, kib = json.loads(out.splitlines()[-1])  # Linux: ru_maxrss is in KiB
    return code, kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (the max is kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        path = root / "net.safetensors"
        save_state(build_model("mlp", HONEST).state_dict(), path)
        canon = [sys.executable, "-m", "canon"]
        zoo = ["--zoo", str(root / "zoo"), "--device", "cpu"]
        subprocess.run([*canon, "init", *zoo], check=True, capture_output=True)

        def add(name: str, config: dict[str, object]) -> list[str]:
            return [*canon, "add", str(path), "--name", name, "--arch", "mlp",
                    "--config", json.dumps(config), *zoo]  # fmt: skip

        cases = {
            "floor: import torch": [sys.executable, "-c", "import torch"],
            "floor: import torch, canon.cli": [sys.executable, "-c", "import torch, canon.cli"],
            "floor: + canon.zoo": [
                sys.executable,
                "-c",
                "import torch, canon.cli; from canon.zoo import Zoo",
            ],
            "honest add": None,  # a fresh name each run (the entry stays)
            "lying-config add": add("liar", LIE),
            "lying-config add, hidden 1M": add("liar-1m", LIE_1M),
        }
        results: dict[str, dict[str, float]] = {}
        size = path.stat().st_size
        for label, cmd in cases.items():
            peaks, codes = [], []
            for run in range(args.repeats):
                code, mib = peak_rss(cmd if cmd is not None else add(f"honest-{run}", HONEST))
                peaks.append(mib)
                codes.append(code)
            results[label] = {"peak_mib": max(peaks), "exit": float(codes[-1])}

    floor = results["floor: import torch, canon.cli"]["peak_mib"]
    honest = results["honest add"]["peak_mib"]
    lie = results["lying-config add"]["peak_mib"]
    lie_1m = results["lying-config add, hidden 1M"]["peak_mib"]
    ratios = {
        "lying / honest": lie / honest,
        "lying / floor": lie / floor,
        "honest / floor": honest / floor,
        "lying / target": lie / TARGET_MIB,
        "lying 1M / honest": lie_1m / honest,
        "lying 1M / target": lie_1m / TARGET_MIB,
    }
    if args.json:
        print(json.dumps({"file_bytes": size, "results": results, "ratios": ratios}))
        return
    print(f"64-256-256-10 MLP file of {size:,} bytes; target {TARGET_MIB} MiB")
    for label, res in results.items():
        print(f"{label:34s} {res['peak_mib']:8.0f} MiB   exit {res['exit']:.0f}")
    for label, value in ratios.items():
        print(f"{label:34s} {value:8.2f}x")


if __name__ == "__main__":
    main()
