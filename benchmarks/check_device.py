"""Check that canon computes the same results on an accelerator as on the CPU.

Canonical forms, distances and path curves of small networks are computed on
``--device`` and on the CPU, and a barrier table of small MLPs (with and without
BatchNorm) on ``--device`` with its next pairs prepared beside each evaluation
(a side stream) and without; the script prints the largest differences as one
JSON object and exits non-zero if any result disagrees (the two tables must be
equal number for number).

    python benchmarks/check_device.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from canon.architectures import build_model
from canon.core import canonicalize, random_symmetry, spec_from_module
from canon.core.geometry import distances
from canon.device import resolve_device
from canon.engine import local_energy, path_curve

CASES = [
    ("mlp", {"in_features": 300, "hidden": [64, 32], "classes": 5}),
    ("mlp", {"in_features": 30, "hidden": [16], "activation": "tanh", "batchnorm": True}),
    ("vgg", {"layers": [8, "M", 16, "M"], "input_size": 8, "hidden": [12]}),
    ("binary_mlp", {"in_features": 30, "hidden": [21], "classes": 1}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report: dict[str, object] = {"device": str(device), "cases": []}
    ok = True
    for name, config in CASES:
        torch.manual_seed(0)
        model = build_model(name, config).eval()
        spec = spec_from_module(model)
        a = model.state_dict()
        torch.manual_seed(1)
        b = build_model(name, config).state_dict()
        copy = random_symmetry(a, spec, seed=2)
        on = {k: v.to(device) for k, v in copy.items()}
        ref = {k: v.to(device) for k, v in a.items()}
        canon_dev = canonicalize(on, spec, reference=ref)
        canon_cpu = canonicalize(copy, spec, reference=a)
        diff = max(
            float((canon_dev[k].cpu() - canon_cpu[k]).abs().max())
            for k in canon_cpu
            if canon_cpu[k].is_floating_point()
        )
        gen = torch.Generator().manual_seed(3)
        x = torch.randn((2000, *model.input_shape), generator=gen)
        classes = config.get("classes", 10)
        if classes == 1:
            y = torch.randint(0, 2, (2000,), generator=gen).float() * 2 - 1
        else:
            y = torch.randint(0, int(classes), (2000,), generator=gen)
        kind = "random_flip" if spec.binary_weights else "geodesic"
        curve_dev = path_curve(a, b, model, (x, y), kind, 9, device)
        curve_cpu = path_curve(a, b, model, (x, y), kind, 9, "cpu")
        curve_diff = max(
            abs(p - q) for p, q in zip(curve_dev.train_error, curve_cpu.train_error, strict=True)
        )
        d_dev, d_cpu = distances(on, ref, spec), distances(copy, a, spec)
        energy = local_energy(a, model, (x, y), [0.1], 2, device=device)
        case = {
            "architecture": name,
            "canonical_max_abs_diff": diff,
            "curve_max_abs_diff": curve_diff,
            "geodesic_copy": d_dev.geodesic,
            "geodesic_cpu": d_cpu.geodesic,
            "local_energy": energy.mean[0],
        }
        # errors may differ by a sample or two where float rounding flips a near-tie
        ok &= diff < 1e-4 and curve_diff <= 2 / 2000 and d_dev.geodesic < 1e-3
        report["cases"].append(case)  # type: ignore[attr-defined]
    tables = _overlapped_tables(device)
    report["tables"] = tables
    ok &= all(t["identical"] for t in tables)
    report["ok"] = ok
    print(json.dumps(report, indent=2))
    sys.exit(0 if ok else 1)


def _overlapped_tables(device: torch.device) -> list[dict[str, object]]:
    """For MLPs with and without BatchNorm: whether a zoo's geodesic table on ``device``
    is the same with groups of pairs prepared one ahead (:data:`OVERLAP`) as without."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from canon.zoo import Zoo, _pair_work

    found, before = [], dict(_pair_work.OVERLAP)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 40, generator=gen)
    y = torch.randint(0, 5, (3000,), generator=gen)
    for batchnorm in (False, True):
        config = {"in_features": 40, "hidden": [32, 32], "classes": 5, "batchnorm": batchnorm}
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(f"{tmp}/d.npz", x=x.numpy(), y=y.numpy())
            for overlap in (False, True):
                _pair_work.OVERLAP[device.type] = overlap
                with Zoo.open(Path(tmp) / f"zoo{overlap}") as zoo:
                    for i in range(7):
                        torch.manual_seed(i)
                        zoo.add(
                            build_model("mlp", config).state_dict(), name=f"m{i}",
                            architecture="mlp", config=config, dataset=f"npz:{tmp}/d.npz",
                            evaluate=False,
                        )  # fmt: skip
                    table = zoo.barrier_table(path="geodesic", points=9, device=device)
                    results.append([table.matrix.tolist(), zoo.pair_computations])
        _pair_work.OVERLAP.clear()
        _pair_work.OVERLAP.update(before)
        found.append({"batchnorm": batchnorm, "identical": results[0] == results[1]})
    return found


if __name__ == "__main__":
    main()
