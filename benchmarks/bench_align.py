"""Canonicalization time against its floor: the linear assignment solves alone.

For MLPs 784-H-H-10 (H = 512, 2048, 4096 by default), two independently
initialized networks play a solution and its family reference. In one run this
prints canon's ``canonicalize(state, spec, reference)`` time and the floor: the
LAP solves alone, ``scipy.optimize.linear_sum_assignment(C, maximize=True)`` on
the same similarity matrices C that canon solves (recorded by
``canon.core.match``), and their ratio. For transparency it also prints canon's
own solver (``canon.core.solve_assignment``: the same scipy call after a row and
column reduction of the cost; on a GPU, from ``AUCTION_FROM['cuda']`` on, the
batched auction on the device) on those matrices, and canonicalize's ratio to it.
Targets: ratio <= 1.3 at H = 2048 on CPU; on a GPU (``--device cuda``), the
second ratio (against the solves canon makes there) <= 1.3 at H = 2048.

The ``resnet18`` case (torchvision's resnet18, ``num_classes=10``, two independent
initializations; skipped when torchvision is not installed) does the same for a
residual network, whose default matching is ``weight`` (coordinate descent over the
unit groups; every similarity matrix it hands to the solver is recorded for the
floor), and times weight matching side by side with rebasin 0.0.47's
``PermutationCoordinateDescent`` on the same pair (skipped when rebasin is not
installed). rebasin's time is one run (tracing the models with torchview, then the
coordinate descent); both solutions are scored by canon's ``matching_objective``.
Target on CPU: ratio <= 1.5. For reading the ratio it also prints the matrix
products canonicalize takes (``aten::mm`` calls, shapes recorded by the torch
profiler: incoming cosines and weight matching's similarity products) timed alone
on random matrices of the same shapes: work the algorithm needs whatever the
implementation, and which, unlike the single-threaded LAP solves, scales with cores.

``--alike NOISE`` makes the solution a fine-tuned-like copy of the reference instead: its
units in another order and NOISE x each tensor's standard deviation added. Its
matrices' rows each take a strict best of their own, which canon reads off them
(``canon.core.permutations.best_in_rows``) without a solve: canonicalize then takes less than the
LAP floor.

``--threads N`` sets torch's thread count (default: torch's own); on a machine whose
cores are busy with other work, fewer threads than cores avoid threads waiting for
one another on every parallel operation.

    python benchmarks/bench_align.py [--widths 512 2048 4096] [--repeats 3]
        [--no-resnet18] [--no-rebasin] [--alike NOISE] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from _libraries import torchvision_or_none  # benchmarks/ is on sys.path when run
from _solves import lap_blocks, recorded_solves
from _timing import median_time, synchronizer
from scipy.optimize import linear_sum_assignment
from torch.profiler import ProfilerActivity, profile

import canon.core.matching as core_matching
from canon.architectures import build_model
from canon.core import (
    AUCTION_FROM,
    Alignment,
    Spec,
    canonicalize,
    match,
    matching_objective,
    normalize,
    random_symmetry,
    solve_assignment,
    spec_from_module,
)
from canon.device import resolve_device


def bench_width(
    width: int, repeats: int, device: torch.device, alike: float | None = None
) -> dict[str, Any]:
    config = {"in_features": 784, "hidden": [width, width], "classes": 10}
    torch.manual_seed(0)
    reference = build_model("mlp", config).to(device).state_dict()
    torch.manual_seed(1)
    model = build_model("mlp", config).to(device)
    spec = spec_from_module(model)
    state = model.state_dict() if alike is None else _alike(reference, spec, alike)

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
        # on a GPU canon solves large matrices on the device (the auction): its own solves
        # are the floor there
        "ratio_canon_lap": canon_s / canon_lap_s,
    }


def _alike(reference: Mapping[str, torch.Tensor], spec: Spec, noise: float) -> dict[str, Any]:
    """The reference's units in another order, each weight moved by ``noise`` times its
    tensor's standard deviation: a network fine-tuned from it, as it may come."""
    g = torch.Generator().manual_seed(2)
    moved = {
        k: v + noise * v.std() * torch.randn(v.shape, generator=g).to(v) if v.numel() > 1 else v
        for k, v in reference.items()
    }
    return random_symmetry(moved, spec, seed=3)


def _set_auction_from(value: str, device: torch.device) -> None:
    """Set ``AUCTION_FROM`` for ``device``'s type from ``--auction-from`` for this run."""
    if value == "never":
        AUCTION_FROM.pop(device.type, None)
    else:
        AUCTION_FROM[device.type] = int(value)


# ---------------------------------------------------------------- resnet18


def _recorded_products(fn: Callable[[], object]) -> list[tuple[int, int, int]]:
    """The (m, k, n) of every matrix product (``aten::mm``) taken while ``fn`` runs."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    found = []
    for event in prof.events():
        if event.name == "aten::mm":
            (m, k), (_, n) = event.input_shapes[:2]
            found.append((m, k, n))
    return found


def _rebasin_run(
    model: torch.nn.Module,
    reference: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    sample: torch.Tensor,
) -> tuple[Any, torch.nn.Module, dict[str, float]]:
    """One run of rebasin 0.0.47's weight matching of ``state`` to ``reference``, timed."""
    import rebasin.permutation_coordinate_descent as pcd_module
    from rebasin import PermutationCoordinateDescent

    model_a = copy.deepcopy(model).eval()
    model_a.load_state_dict(dict(reference))
    model_b = copy.deepcopy(model).eval()
    model_b.load_state_dict(dict(state))
    solves = 0
    original = pcd_module.linear_sum_assignment

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal solves
        solves += 1
        return original(*args, **kwargs)

    pcd_module.linear_sum_assignment = counting
    try:
        start = time.perf_counter()
        pcd = PermutationCoordinateDescent(model_a, model_b, sample)
        traced = time.perf_counter()
        torch.manual_seed(0)  # rebasin draws its order of permutations from the global RNG
        pcd.calculate_permutations()
        done = time.perf_counter()
    finally:
        pcd_module.linear_sum_assignment = original
    timing = {"trace_s": traced - start, "descent_s": done - traced, "total_s": done - start}
    return pcd, model_b, timing | {"lap_solves": solves}


def _rebasin_alignment(
    pcd: Any, model_b: torch.nn.Module, spec: Spec
) -> tuple[Alignment, list[str]] | str:
    """rebasin's solution as a canon alignment: each group's permutation read off rebasin's
    permutation of the group's producer weights (output axis), the identity where rebasin
    permutes none of them (those groups' names come second); a message instead when it
    permutes producers of one group differently (then the permuted network would not
    compute the same function)."""
    names = {id(p): n for n, p in model_b.named_parameters()}
    by_param: dict[str, torch.Tensor] = {}
    for perm, infos in pcd.pinit.model_graph.permutation_to_info:
        for info in infos:
            name = names.get(id(info.parameter_b))
            if name is not None and info.axis == 0:
                by_param[name] = perm.perm_indices.clone().to(torch.int64)
    perms: dict[str, torch.Tensor] = {}
    identity_groups = []
    for group in spec.groups:
        found = [
            (t.name, by_param[t.name])
            for t in group.tensors
            if t.role == "incoming" and t.axis == 0 and t.name in by_param
        ]
        perm = found[0][1] if found else torch.arange(group.size)
        if not found:
            identity_groups.append(group.name)
        if any(not torch.equal(p, perm) for _, p in found):
            return f"rebasin permutes the producers of group `{group.name}` differently"
        perms[group.name] = perm
    return Alignment(perms, {}), identity_groups


def bench_resnet18(repeats: int, device: torch.device, with_rebasin: bool) -> dict[str, Any] | None:
    torchvision = torchvision_or_none()
    if torchvision is None:
        print("resnet18: skipped (torchvision is not installed)")
        return None
    torch.manual_seed(0)
    reference_model = torchvision.models.resnet18(num_classes=10)
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10)
    reference = {k: v.to(device) for k, v in reference_model.state_dict().items()}
    state = {k: v.to(device) for k, v in model.state_dict().items()}
    spec = spec_from_module(model, input_shape=(3, 224, 224))

    sync = synchronizer(device)
    canon_s = median_time(lambda: canonicalize(state, spec, reference=reference), repeats, sync)
    norm_state, norm_reference = normalize(state, spec), normalize(reference, spec)
    weight_s = median_time(lambda: match(norm_state, norm_reference, spec, "weight"), repeats, sync)
    incoming_s = median_time(
        lambda: match(norm_state, norm_reference, spec, "incoming"), repeats, sync
    )

    solves = recorded_solves(lambda: canonicalize(state, spec, reference=reference))
    arrays = [a for similarity, blocks in solves for a in lap_blocks(similarity, blocks)]

    def scipy_solves() -> None:
        for cost in arrays:
            linear_sum_assignment(cost, maximize=True)

    def canon_solves() -> None:
        for similarity, blocks in solves:
            solve_assignment(similarity, blocks)

    lap_s = median_time(scipy_solves, repeats, sync)
    canon_lap_s = median_time(canon_solves, repeats, sync)
    shapes = _recorded_products(lambda: canonicalize(state, spec, reference=reference))
    gen = torch.Generator(device).manual_seed(0)
    factors = [
        (
            torch.randn(m, k, generator=gen, device=device),
            torch.randn(n, k, generator=gen, device=device),
        )
        for m, k, n in shapes
    ]

    def products() -> None:
        for a, b in factors:
            a @ b.T

    products_s = median_time(products, repeats, sync)
    weight = match(norm_state, norm_reference, spec, "weight")
    row: dict[str, Any] = {
        "case": "resnet18",
        "parameters": sum(state[n].numel() for n in spec.parameters),
        "groups": len(spec.groups),
        "method": core_matching.default_method(spec),
        "canonicalize_s": canon_s,
        "lap_only_s": lap_s,
        "canon_lap_s": canon_lap_s,
        "ratio": canon_s / lap_s,
        "lap_solves": len(solves),
        "products": len(shapes),
        "products_gflop": sum(2 * m * k * n for m, k, n in shapes) / 1e9,
        "products_only_s": products_s,
        "canon_weight_s": weight_s,
        "canon_incoming_s": incoming_s,
        "canon_objective": {
            "normalized": matching_objective(norm_state, norm_reference, spec, weight),
            "raw": matching_objective(state, reference, spec, weight),
        },
    }
    if not with_rebasin:
        return row
    if importlib.util.find_spec("rebasin") is None:
        print("resnet18: rebasin skipped (not installed; pip install rebasin==0.0.47)")
        return row
    cpu_state = {k: v.cpu() for k, v in state.items()}
    cpu_reference = {k: v.cpu() for k, v in reference.items()}
    sample = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pcd, model_b, timing = _rebasin_run(model, cpu_reference, cpu_state, sample)
    row["rebasin"] = timing
    row["rebasin_over_canon_weight"] = timing["total_s"] / weight_s
    found = _rebasin_alignment(pcd, model_b, spec)
    if isinstance(found, str):
        row["rebasin"]["note"] = found
        return row
    alignment, row["rebasin"]["unpermuted_groups"] = found
    row["rebasin"]["objective"] = {
        "normalized": matching_objective(
            {k: v.cpu() for k, v in norm_state.items()},
            {k: v.cpu() for k, v in norm_reference.items()},
            spec,
            alignment,
        ),
        "raw": matching_objective(cpu_state, cpu_reference, spec, alignment),
    }
    return row


def print_resnet18(r: dict[str, Any]) -> None:
    print(
        f"resnet18 (torchvision, {r['parameters']:,} parameters, {r['groups']} unit groups),"
        f" default method `{r['method']}`"
    )
    print(
        f"  canonicalize {r['canonicalize_s']:.3f}s, LAP floor {r['lap_only_s']:.3f}s"
        f" ({r['lap_solves']} solves), ratio {r['ratio']:.2f}, canon LAP {r['canon_lap_s']:.3f}s"
    )
    print(
        f"  its matrix products alone {r['products_only_s']:.3f}s ({r['products']} products,"
        f" {r['products_gflop']:.1f} GFLOP), {r['products_only_s'] / r['lap_only_s']:.2f}"
        " x the LAP floor; target: ratio <= 1.5 on CPU"
    )
    print(
        f"  canon weight matching {r['canon_weight_s']:.3f}s"
        f" (incoming alone {r['canon_incoming_s']:.3f}s)"
    )
    if "rebasin" not in r:
        return
    rb = r["rebasin"]
    print(
        f"  rebasin 0.0.47 weight matching {rb['total_s']:.3f}s (torchview tracing"
        f" {rb['trace_s']:.3f}s, descent {rb['descent_s']:.3f}s, {rb['lap_solves']} solves),"
        f" {r['rebasin_over_canon_weight']:.1f}x canon's"
    )
    if "objective" in rb:
        c, o = r["canon_objective"], rb["objective"]
        print(
            f"  objective (canon's matching_objective) normalized: canon {c['normalized']:.3f},"
            f" rebasin {o['normalized']:.3f}; raw: canon {c['raw']:.3f}, rebasin {o['raw']:.3f}"
        )
        if rb["unpermuted_groups"]:
            print(f"  groups rebasin leaves unpermuted: {', '.join(rb['unpermuted_groups'])}")
    elif "note" in rb:
        print(f"  {rb['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-resnet18", action="store_true", help="skip the resnet18 case")
    parser.add_argument("--no-rebasin", action="store_true", help="skip rebasin in resnet18")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--alike",
        type=float,
        metavar="NOISE",
        help="the solution is the reference with its units in another order and NOISE x"
        " each tensor's std added (a fine-tuned copy) instead of another initialization",
    )
    parser.add_argument(
        "--auction-from",
        help="the size from which the device's matrices go to the auction, or 'never'"
        " (default: canon's AUCTION_FROM)",
    )
    args = parser.parse_args()
    if args.auction_from is not None:
        _set_auction_from(args.auction_from, resolve_device(args.device))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [bench_width(w, args.repeats, device, args.alike) for w in args.widths]
    resnet18 = None
    if not args.no_resnet18:
        resnet18 = bench_resnet18(args.repeats, device, not args.no_rebasin)
    result: dict[str, Any] = {
        "benchmark": "align",
        "device": str(device),
        "auction_from": AUCTION_FROM.get(device.type),
        "torch_threads": torch.get_num_threads(),
        "target": "ratio <= 1.3 at width 2048 on CPU",
        "alike": args.alike,
        "rows": rows,
    }
    if resnet18 is not None:
        result["resnet18"] = resnet18
    if args.json:
        print(json.dumps(result, indent=2))
        return
    pair = "independent" if args.alike is None else f"alike (noise {args.alike})"
    print(
        f"canonicalize vs LAP solves alone, MLP 784-H-H-10, {pair} networks, device"
        f" {device}, {result['torch_threads']} torch threads"
    )
    print(
        f"{'H':>6} {'params':>11} {'canonicalize':>13} {'LAP floor':>10} {'ratio':>7}"
        f" {'canon LAP':>10} {'ratio':>7}"
    )
    for r in rows:
        print(
            f"{r['width']:>6} {r['parameters']:>11,} {r['canonicalize_s']:>12.3f}s "
            f"{r['lap_only_s']:>9.3f}s {r['ratio']:>7.2f} {r['canon_lap_s']:>9.3f}s"
            f" {r['ratio_canon_lap']:>7.2f}"
        )
    print(f"target: {result['target']}")
    if resnet18 is not None:
        print_resnet18(resnet18)


if __name__ == "__main__":
    main()
