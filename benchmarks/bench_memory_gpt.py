"""Peak memory of canonicalizing a GPT-2-sized transformer, against its weights.

Two ``gpt`` networks of GPT-2 small's shape (12 blocks, width 768, 12 heads,
vocabulary 50,257, context 1,024: 124M parameters, 497 MB of float32 each) are
saved as safetensors. A fresh process loads both (resident), notes its memory,
then runs ``canonicalize(state, spec, reference, method="weight")`` (normalize
both, weight matching with the heads as blocks, apply) and reports the peak
resident memory above that baseline divided by one network's weights. The
issue's target: at most 3. Asserts nothing.

    python benchmarks/bench_memory_gpt.py [--depth 12] [--width 768] [--json]
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
from canon.core import spec_from_module

CHILD = r"""
import json, resource, sys, time
import torch
from safetensors.torch import load_file
from canon.core import Spec, canonicalize

torch.set_num_threads(int(sys.argv[4]))
with open(sys.argv[3]) as f:
    spec = Spec.from_dict(json.load(f))
# copies, so that both networks are resident before the baseline (a loaded file may be
# mapped and read in only as canonicalize touches it)
state = {k: v.clone() for k, v in load_file(sys.argv[1]).items()}
reference = {k: v.clone() for k, v in load_file(sys.argv[2]).items()}
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = resident()
start = time.perf_counter()
canonical = canonicalize(state, spec, reference, method="weight")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
weights = sum(t.numel() * t.element_size() for t in state.values())
print(json.dumps({"base": base, "peak": peak, "weights": weights, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = {
        "vocab": args.vocab,
        "context": args.context,
        "width": args.width,
        "heads": args.heads,
        "depth": args.depth,
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = build_model("gpt", config)
            path = Path(tmp) / f"gpt{seed}.safetensors"
            save_state(model.state_dict(), path)
            paths.append(str(path))
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec_from_module(model).to_dict()))
        del model
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *paths, str(spec_path), str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    found = json.loads(out.splitlines()[-1])
    extra = max(found["peak"] - found["base"], 0)
    result = {
        "config": config,
        "parameters": found["weights"] // 4,
        "weights_mb": found["weights"] / 1e6,
        "baseline_mb": found["base"] / 1e6,
        "peak_mb": found["peak"] / 1e6,
        "extra_mb": extra / 1e6,
        "extra_over_weights": extra / found["weights"],
        "seconds": found["seconds"],
        "target": 3.0,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"gpt {config}: {result['parameters'] / 1e6:.1f}M parameters, "
        f"{result['weights_mb']:.0f} MB of weights"
    )
    print(
        f"canonicalize: {result['seconds']:.1f} s, peak {result['peak_mb']:.0f} MB, "
        f"{result['extra_mb']:.0f} MB above the {result['baseline_mb']:.0f} MB baseline: "
        f"{result['extra_over_weights']:.2f}x the weights (target <= 3)"
    )


if __name__ == "__main__":
    main()
