"""Canonicalization time against its floor: the linear assignment solves alone.

For MLPs 784-H-H-10 (H = 512, 2048, 4096 by default), two independently
initialized networks play a solution and its family reference. In one run this
prints canon's ``canonicalize(state, spec, reference)`` time and the floor: the
LAP solves alone, ``scipy.optimize.linear_sum_assignment(C, maximize=True)`` on
the same similarity matrices C that canon solves (recorded by
``canon.core.match``), and their ratio. For transparency it also prints canon's
own solver (``canon.core.solve_assignment``: the same scipy call after a row and
column reduction of the cost) on those matrices. Target on CPU: ratio <= 1.3 at
H = 2048.

    python benchmarks/bench_align.py [--widths 512 2048 4096] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _timing import median_time, synchronizer  # benchmarks/ is on sys.path when run
from scipy.optimize import linear_sum_assignment

from canon.architectures import build_model
from canon.core import canonicalize, match, normalize, solve_assignment, spec_from_module
from canon.device import resolve_device


def bench_width(width: int, repeats: int, device: torch.device) -> dict[str, Any]:
    config = {"in_features": 784, "hidden": [width, width], "classes": 10}
    torch.manual_seed(0)
    reference = build_model("mlp", config).to(device).state_dict()
    torch.manual_seed(1)
    model = build_model("mlp", config).to(device)
    state = model.state_dict()
    spec = spec_from_module(model)

    sync = synchronizer(device)
    canon_s = median_time(lambda: canonicalize(state, spec, reference=reference), repeats, sync)

    matrices: dict[str, torch.Tensor] = {}
    match(normalize(state, spec), normalize(reference, spec), spec, record=matrices)

    arrays = [m.double().cpu().numpy() for m in matrices.values()]

    def scipy_solves() -> None:
        for cost in arrays:
            linear_sum_assignment(cost, maximize=True)

    def canon_solves() -> None:
        for similarity in matrices.values():
            solve_assignment(similarity)

    lap_s = median_time(scipy_solves, repeats, sync)
    canon_lap_s = median_time(canon_solves, repeats, sync)
    return {
        "width": width,
        "parameters": sum(v.numel() for v in state.values()),
        "canonicalize_s": canon_s,
        "lap_only_s": lap_s,
        "canon_lap_s": canon_lap_s,
        "ratio": canon_s / lap_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [bench_width(w, args.repeats, device) for w in args.widths]
    result = {
        "benchmark": "align",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "target": "ratio <= 1.3 at width 2048 on CPU",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"canonicalize vs LAP solves alone, MLP 784-H-H-10, device {device}")
    print(
        f"{'H':>6} {'params':>11} {'canonicalize':>13} {'LAP floor':>10} {'ratio':>7}"
        f" {'canon LAP':>10}"
    )
    for r in rows:
        print(
            f"{r['width']:>6} {r['parameters']:>11,} {r['canonicalize_s']:>12.3f}s "
            f"{r['lap_only_s']:>9.3f}s {r['ratio']:>7.2f} {r['canon_lap_s']:>9.3f}s"
        )
    print(f"target: {result['target']}")


if __name__ == "__main__":
    main()
