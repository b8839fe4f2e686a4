"""Barriers after alignment: canon's matching methods side by side, and against rebasin.

Two parts, each on trained networks (canon's ``sgd``, train error 0 by early stop):

- ``mlp``: MLP 64-512-512-10 on ``digits`` from seeds 0-3, all 6 pairs. Per pair, the
  linear error barrier (fraction of train samples misclassified, max over the path) with
  no alignment, after canon's ``incoming`` matching (the paper's Alg. 2), after canon's
  ``weight`` matching, and after rebasin 0.0.47's weight matching
  (``PermutationCoordinateDescent``; its permutation applied to b by rebasin itself,
  then the same ``path_curve(kind="linear")`` evaluation). Also canon's weight-matching
  objective (:func:`canon.core.matching_objective`) of each solution, on the normalized
  networks (what canon maximizes) and on the raw ones (what rebasin maximizes).
  The script asserts that ``weight`` never ends below its ``incoming`` start.
- ``resnet``: two built-in ResNet-20s (``width`` multiplier, BatchNorm) on ``digits`` as
  1x8x8 images, seeds 0 and 1: the barrier of the raw linear path, and of the
  ``linear_aligned`` and ``geodesic`` paths after ``incoming``, ``weight`` and
  ``activation`` matching.

Trained networks are cached as safetensors under ``--cache`` (keyed by architecture,
seed and epochs), so reruns only evaluate. No timed assertions.

    python benchmarks/bench_matching.py [--part mlp|resnet|all] [--mlp-epochs 100]
        [--resnet-epochs 30] [--resnet-width 1] [--points 25] [--resnet-points 13]
        [--cache /tmp/canon-bench-matching] [--json] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import (
    Alignment,
    Spec,
    apply_alignment,
    matching_objective,
    normalize,
    spec_from_module,
)
from canon.data import load_dataset
from canon.device import resolve_device
from canon.engine.landscape import path_curve
from canon.engine.matching import find_alignment
from canon.engine.train import train

MLP = ("mlp", {"in_features": 64, "hidden": [512, 512], "classes": 10})


def resnet_arch(width: int) -> tuple[str, dict[str, Any]]:
    return (
        "resnet",
        {"depth": 20, "width": width, "in_channels": 1, "input_size": 8, "classes": 10},
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- training and caching


def trained(
    arch: tuple[str, dict[str, Any]],
    data: Any,
    seed: int,
    epochs: int,
    cache: Path,
    device: torch.device,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state trained by canon's ``sgd`` from ``seed`` (loaded from ``cache`` if there)."""
    from safetensors.torch import load_file, save_file

    name, config = arch
    tag = "-".join(
        f"{v}" if not isinstance(v, list) else "x".join(map(str, v)) for v in config.values()
    )
    file = cache / f"{name}-{tag}-sgd-seed{seed}-epochs{epochs}.safetensors"
    if file.exists():
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            meta = dict(f.metadata() or {})
        info = {k: json.loads(v) for k, v in meta.items()}
        info["cached"] = True
        return load_file(str(file)), info
    log(f"training {name} seed {seed} (at most {epochs} epochs) ...")
    start = time.perf_counter()
    result = train(build_model(name, config), data, "sgd", seed=seed, epochs=epochs, device=device)
    info = {
        "epochs_run": result.epochs,
        "train_error": result.train_error,
        "test_error": result.test_error,
        "train_s": time.perf_counter() - start,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in result.state.items()}
    cache.mkdir(parents=True, exist_ok=True)
    save_file(state, str(file), metadata={k: json.dumps(v) for k, v in info.items()})
    info["cached"] = False
    return state, info


# ---------------------------------------------------------------- rebasin


def rebasin_solution(
    model: nn.Module,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    spec: Spec,
    sample: Tensor,
    seed: int = 0,
) -> tuple[dict[str, Tensor], Alignment, dict[str, Any]]:
    """rebasin 0.0.47's weight matching of b to a: (b permuted by rebasin, the same
    permutation as a canon :class:`Alignment`, timing).

    Each canon group's permutation is read off rebasin's permutation of the group's
    producer weights (output axis); a group rebasin leaves unpermuted gets the identity.
    """
    from rebasin import PermutationCoordinateDescent

    model_a = copy.deepcopy(model).eval()
    model_a.load_state_dict(dict(a))
    model_b = copy.deepcopy(model).eval()
    model_b.load_state_dict(dict(b))
    start = time.perf_counter()
    pcd = PermutationCoordinateDescent(model_a, model_b, sample)  # traces both models
    traced_at = time.perf_counter()
    torch.manual_seed(seed)  # rebasin draws its order of permutations from the global RNG
    pcd.calculate_permutations()
    timing = {"rebasin_s": time.perf_counter() - start, "rebasin_trace_s": traced_at - start}
    names = {id(p): n for n, p in model_b.named_parameters()}
    by_param: dict[str, Tensor] = {}
    for perm, infos in pcd.pinit.model_graph.permutation_to_info:
        for info in infos:
            name = names.get(id(info.parameter_b))
            if name is not None and info.axis == 0:
                by_param[name] = perm.perm_indices.clone()
    perms: dict[str, Tensor] = {}
    for group in spec.groups:
        found = [
            by_param[t.name]
            for t in group.tensors
            if t.role == "incoming" and t.axis == 0 and t.name in by_param
        ]
        perm = found[0] if found else torch.arange(group.size)
        if any(not torch.equal(p, perm) for p in found):
            raise AssertionError(f"rebasin permutes the producers of `{group.name}` differently")
        perms[group.name] = perm.to(torch.int64)
    alignment = Alignment(perms, {})
    pcd.apply_permutations()
    permuted = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    mine = apply_alignment(dict(b), alignment, spec)
    for name, tensor in model_b.named_parameters():
        if not torch.equal(tensor.detach(), mine[name]):
            raise AssertionError(f"rebasin's permuted `{name}` differs from its alignment")
    return permuted, alignment, timing


# ---------------------------------------------------------------- MLP part


def objectives(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec, alignment: Alignment
) -> dict[str, float]:
    """canon's weight-matching objective of ``alignment`` on normalized and on raw networks."""
    na, nb = normalize(a, spec, check=False), normalize(b, spec, check=False)
    return {
        "normalized": matching_objective(nb, na, spec, alignment),
        "raw": matching_objective(b, a, spec, alignment),
    }


def run_mlp(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    start = time.perf_counter()
    data = load_dataset("digits")
    name, config = MLP
    model = build_model(name, config)
    spec = spec_from_module(model)
    states, infos = {}, {}
    for seed in args.seeds:
        states[seed], infos[seed] = trained(MLP, data, seed, args.mlp_epochs, args.cache, device)
    have_rebasin = _has_rebasin()
    if not have_rebasin:
        log("rebasin is not installed: skipping its column (pip install rebasin==0.0.47)")
    sample = data.x_train[:1]
    pairs = []
    for i, j in itertools.combinations(args.seeds, 2):
        log(f"mlp pair {i}-{j} ...")
        a, b = states[i], states[j]
        na, nb = normalize(a, spec, check=False), normalize(b, spec, check=False)
        row: dict[str, Any] = {"pair": [i, j], "barrier": {}, "objective": {}, "match_s": {}}
        curve = path_curve(a, b, model, data, "linear", args.points, device, method="incoming")
        row["barrier"]["none"] = curve.barrier
        row["objective"]["none"] = objectives(a, b, spec, _identity(spec))
        for method in ("incoming", "weight"):
            t0 = time.perf_counter()
            alignment = find_alignment(nb, na, spec, method)
            row["match_s"][method] = time.perf_counter() - t0
            row["objective"][method] = objectives(a, b, spec, alignment)
            curve = path_curve(
                a, b, model, data, "linear_aligned", args.points, device, method=method
            )
            row["barrier"][method] = curve.barrier
        assert (
            row["objective"]["weight"]["normalized"] >= row["objective"]["incoming"]["normalized"]
        ), f"pair {i}-{j}: weight matching ended below its incoming start"
        if have_rebasin:
            permuted, alignment, timing = rebasin_solution(model, a, b, spec, sample)
            row["match_s"]["rebasin"] = timing["rebasin_s"]
            row["match_s"]["rebasin (tracing)"] = timing["rebasin_trace_s"]
            row["objective"]["rebasin"] = objectives(a, b, spec, alignment)
            curve = path_curve(a, permuted, model, data, "linear", args.points, device)
            row["barrier"]["rebasin"] = curve.barrier
            row["rebasin_agrees_with_weight"] = _same_alignment(
                alignment, find_alignment(nb, na, spec, "weight")
            )
        pairs.append(row)
    methods = list(pairs[0]["barrier"])
    mean = {m: statistics.fmean(p["barrier"][m] for p in pairs) for m in methods}
    return {
        "model": f"{name} {config}",
        "dataset": "digits",
        "points": args.points,
        "max_epochs": args.mlp_epochs,
        "networks": {str(s): infos[s] for s in args.seeds},
        "pairs": pairs,
        "mean_barrier": mean,
        "wall_s": time.perf_counter() - start,
    }


def _identity(spec: Spec) -> Alignment:
    return Alignment({g.name: torch.arange(g.size) for g in spec.groups}, {})


def _same_alignment(x: Alignment, y: Alignment) -> dict[str, float]:
    """Per group: the fraction of units both alignments send to the same place."""
    return {
        g: float((x.permutations[g].cpu() == y.permutations[g].cpu()).double().mean())
        for g in x.permutations
    }


def _has_rebasin() -> bool:
    try:
        import rebasin  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- ResNet part


def run_resnet(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    start = time.perf_counter()
    data = load_dataset("digits", image=True)
    arch = resnet_arch(args.resnet_width)
    model = build_model(*arch)
    spec = spec_from_module(model)
    (a, info_a), (b, info_b) = (
        trained(arch, data, seed, args.resnet_epochs, args.cache, device) for seed in (0, 1)
    )
    na, nb = normalize(a, spec, check=False), normalize(b, spec, check=False)
    rows: dict[str, dict[str, Any]] = {}
    log("resnet: no alignment ...")
    t0 = time.perf_counter()
    curve = path_curve(a, b, model, data, "linear", args.resnet_points, device, method="incoming")
    rows["none"] = {"linear": curve.barrier, "eval_s": time.perf_counter() - t0}
    for method in ("incoming", "weight", "activation"):
        log(f"resnet: {method} ...")
        t0 = time.perf_counter()
        alignment = find_alignment(nb, na, spec, method, model=model, inputs=data.x_train)
        row: dict[str, Any] = {
            "match_s": time.perf_counter() - t0,
            "objective_normalized": matching_objective(nb, na, spec, alignment),
        }
        t0 = time.perf_counter()
        for kind in ("linear_aligned", "geodesic"):
            curve = path_curve(a, b, model, data, kind, args.resnet_points, device, method=method)
            row[kind] = curve.barrier
        row["eval_s"] = time.perf_counter() - t0
        rows[method] = row
    rows["none"]["objective_normalized"] = matching_objective(nb, na, spec, _identity(spec))
    assert rows["weight"]["objective_normalized"] >= rows["incoming"]["objective_normalized"]
    return {
        "model": f"{arch[0]} {arch[1]}",
        "dataset": "digits (1x8x8 images)",
        "parameters": sum(v.numel() for k, v in a.items() if k in spec.parameters),
        "points": args.resnet_points,
        "max_epochs": args.resnet_epochs,
        "networks": {"0": info_a, "1": info_b},
        "methods": rows,
        "wall_s": time.perf_counter() - start,
    }


# ---------------------------------------------------------------- output


def pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def print_mlp(r: dict[str, Any]) -> None:
    print(f"MLP part: {r['model']} on {r['dataset']}, {r['points']} points")
    for seed, info in r["networks"].items():
        print(
            f"  seed {seed}: {info['epochs_run']} epochs, train error {info['train_error']:.4f},"
            f" test error {info['test_error']:.4f}"
        )
    methods = list(r["mean_barrier"])
    print("error barrier (max train error along the path; endpoints have 0)")
    print(f"{'pair':>6} " + " ".join(f"{m:>9}" for m in methods))
    for p in r["pairs"]:
        label = f"{p['pair'][0]}-{p['pair'][1]}"
        print(f"{label:>6} " + " ".join(f"{pct(p['barrier'][m]):>9}" for m in methods))
    print(f"{'mean':>6} " + " ".join(f"{pct(r['mean_barrier'][m]):>9}" for m in methods))
    for scale in ("normalized", "raw"):
        print(f"weight-matching objective (canon's matching_objective, {scale} networks)")
        print(f"{'pair':>6} " + " ".join(f"{m:>11}" for m in methods))
        for p in r["pairs"]:
            label = f"{p['pair'][0]}-{p['pair'][1]}"
            print(f"{label:>6} " + " ".join(f"{p['objective'][m][scale]:>11.3f}" for m in methods))
    print(
        "matching time (s), mean over pairs: "
        + ", ".join(
            f"{m} {statistics.fmean(p['match_s'][m] for p in r['pairs']):.3f}"
            for m in r["pairs"][0]["match_s"]
        )
    )
    if "rebasin_agrees_with_weight" in r["pairs"][0]:
        print("units rebasin and canon's weight matching place alike (per group, per pair):")
        for p in r["pairs"]:
            agree = ", ".join(f"{g} {v:.0%}" for g, v in p["rebasin_agrees_with_weight"].items())
            print(f"  {p['pair'][0]}-{p['pair'][1]}: {agree}")
    print(f"MLP part wall time: {r['wall_s']:.1f}s")


def print_resnet(r: dict[str, Any]) -> None:
    print(
        f"ResNet part: {r['model']} ({r['parameters']:,} parameters) on {r['dataset']},"
        f" {r['points']} points"
    )
    for seed, info in r["networks"].items():
        print(
            f"  seed {seed}: {info['epochs_run']} epochs, train error {info['train_error']:.4f},"
            f" test error {info['test_error']:.4f}"
        )
    print(
        f"{'method':>10} {'linear':>9} {'lin_align':>9} {'geodesic':>9}"
        f" {'objective':>10} {'match':>8}"
    )
    for method, row in r["methods"].items():
        linear = pct(row["linear"]) if "linear" in row else "-"
        aligned = pct(row["linear_aligned"]) if "linear_aligned" in row else "-"
        geodesic = pct(row["geodesic"]) if "geodesic" in row else "-"
        match_s = f"{row['match_s']:.2f}s" if "match_s" in row else "-"
        print(
            f"{method:>10} {linear:>9} {aligned:>9} {geodesic:>9}"
            f" {row['objective_normalized']:>10.3f} {match_s:>8}"
        )
    print("(objective: canon's matching_objective on the normalized networks)")
    print(f"ResNet part wall time: {r['wall_s']:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["mlp", "resnet", "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--mlp-epochs", type=int, default=100, help="at most; stops at 0 error")
    parser.add_argument("--resnet-epochs", type=int, default=30, help="at most; stops at 0 error")
    parser.add_argument("--resnet-width", type=int, default=1, help="width multiplier (1-4)")
    parser.add_argument("--points", type=int, default=25, help="path points, MLP part")
    parser.add_argument("--resnet-points", type=int, default=13, help="path points, ResNet part")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/canon-bench-matching"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--json-out", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "benchmark": "matching",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if args.part in ("mlp", "all"):
        result["mlp"] = run_mlp(args, device)
    if args.part in ("resnet", "all"):
        result["resnet"] = run_resnet(args, device)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "mlp" in result:
        print_mlp(result["mlp"])
    if "resnet" in result:
        if "mlp" in result:
            print()
        print_resnet(result["resnet"])


if __name__ == "__main__":
    main()
