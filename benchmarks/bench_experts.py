"""Mixtures of experts: canon's ``StackedExperts`` forward and canonicalization, each
against its floor measured in the same run.

Forward: ``--tokens`` tokens of width ``--hidden`` routed to ``--k`` of ``--experts``
gated experts of ``--inner`` units (routing drawn at random, every expert used). The
floor is the same arithmetic with no routing: the k copies of every token through one
expert's two matrix products (the FLOPs of the routed computation, in two big products).
When transformers is installed, its own Mixtral experts on the same weights (its
``eager``, ``batched_mm`` and ``grouped_mm`` kernels) are timed too.

Canonicalization: a one-block mixture language model (canon's ``TopKRouter`` and
``StackedExperts``, width ``--hidden``) of ``--sizes`` experts x units, two random
networks; canon's ``canonicalize(state, spec, reference)`` by weight matching against
the floor of the linear assignment solves it makes (the block pairs of experts its
bounds leave open, I x I each, of the E^2; the pairings of experts), run through scipy
alone; for two random networks (the bounds' worst case) and for a network and a noisy
copy of it under a random symmetry (as two fine-tunes of one). The experts' similarity is
(E * I)^2 numbers. ``--large`` sizes (above 8,192 units) are read a block at a time,
never whole: one canonicalization each, its peak resident memory against the whole
matrix's size and its time against scipy's solves (timed as they come).

    python benchmarks/bench_experts.py [--tokens 4096] [--hidden 512] [--experts 8]
        [--inner 1024] [--k 2] [--sizes 8x128 8x512 32x128] [--large 64x256]
        [--repeats 3] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from _libraries import torchvision_or_none  # benchmarks/ is on sys.path when run
from _memory import PeakMemory, resident_mb
from _solves import lap_blocks, recorded_solves, solve_floor
from _timing import median_time, synchronizer
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from canon.core import canonicalize, random_symmetry, spec_from_module
from canon.core.experts import StackedExperts, TopKRouter


def _experts(experts: int, hidden: int, inner: int, gen: torch.Generator) -> StackedExperts:
    made = StackedExperts(experts, hidden, inner, nn.SiLU())
    with torch.no_grad():
        for p in made.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / hidden**0.5)
    return made.eval()


def _library_times(
    made: StackedExperts, x: Tensor, index: Tensor, weights: Tensor, repeats: int
) -> dict[str, float]:
    """transformers' own Mixtral experts on the same weights, by kernel (none without it)."""
    torchvision_or_none()  # transformers imports torchvision when it is installed
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralExperts
    except ImportError:
        return {}
    config = MixtralConfig(
        hidden_size=made.hidden, intermediate_size=made.intermediate,
        num_local_experts=made.experts,
    )  # fmt: skip
    library = MixtralExperts(config).eval()
    with torch.no_grad():
        library.gate_up_proj.copy_(made.gate_up_proj.view(made.experts, -1, made.hidden))
        down = made.down_proj.view(made.hidden, made.experts, made.intermediate)
        library.down_proj.copy_(down.transpose(0, 1))
    times = {}
    for kernel in ("eager", "batched_mm", "grouped_mm"):
        config._experts_implementation = kernel
        try:
            with torch.no_grad():
                out = library(x, index, weights)
                assert torch.allclose(out, made(x, index, weights), rtol=1e-4, atol=1e-4)
                times[kernel] = median_time(lambda: library(x, index, weights), repeats, sync)
        except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
            print(f"  transformers {kernel}: skipped ({type(exc).__name__}: {str(exc)[:80]})")
    return times


def sync() -> None:
    synchronizer(torch.device("cpu"))()


def bench_forward(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    made = _experts(args.experts, args.hidden, args.inner, gen)
    x = torch.randn(args.tokens, args.hidden, generator=gen)
    index = torch.stack(
        [torch.randperm(args.experts, generator=gen)[: args.k] for _ in range(args.tokens)]
    )
    weights = torch.softmax(torch.randn(args.tokens, args.k, generator=gen), -1)
    rows = x.repeat_interleave(args.k, 0)
    w_in = made.gate_up_proj[: 2 * args.inner]
    w_out = made.down_proj[:, : args.inner]

    def floor() -> Tensor:
        gate, up = F.linear(rows, w_in).chunk(2, -1)
        return F.linear(F.silu(gate) * up, w_out)

    with torch.no_grad():
        canon_s = median_time(lambda: made(x, index, weights), args.repeats, sync)
        floor_s = median_time(floor, args.repeats, sync)
        library = _library_times(made, x, index, weights, args.repeats)
    return {"canon_s": canon_s, "floor_s": floor_s, "ratio": canon_s / floor_s, "library": library}


class _Mixture(nn.Module):
    """Tokens, one residual mixture block under a LayerNorm, a read-out."""

    def __init__(self, experts: int, inner: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.gate = TopKRouter(experts, hidden, 2)
        self.experts = StackedExperts(experts, hidden, inner, nn.SiLU())
        self.head = nn.Linear(hidden, 64)
        self.input_shape = (8,)
        self.main_input_name = "input_ids"

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        flat = self.norm(h).reshape(-1, h.shape[-1])
        _, weights, index = self.gate(flat)
        h = h + self.experts(flat, index, weights).reshape(h.shape)
        out: Tensor = self.head(h)
        return out


def _pair(
    spec: Any, related: bool, device: torch.device
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(state, reference) on ``device``: two random networks, or with ``related`` a network
    and a copy of it under a random symmetry (experts and units shuffled) with noise of 0.3
    of each tensor's spread added (as two fine-tunes of one network)."""
    gen = torch.Generator().manual_seed(1)
    reference = {t.name: torch.randn(t.shape, generator=gen) for t in spec.tensors}
    if related:
        moved = random_symmetry(reference, spec, seed=3)
        noise = {k: 0.3 * v.std() * torch.randn(v.shape, generator=gen) for k, v in moved.items()}
        state = {k: v + noise[k] for k, v in moved.items()}
    else:
        state = {t.name: torch.randn(t.shape, generator=gen) for t in spec.tensors}
    on = {k: v.to(device) for k, v in state.items()}
    return on, {k: v.to(device) for k, v in reference.items()}


def bench_canonicalize(
    size: str, hidden: int, repeats: int, related: bool, device: torch.device
) -> dict[str, Any]:
    experts, inner = (int(n) for n in size.split("x"))
    model = _Mixture(experts, inner, hidden)
    spec = spec_from_module(model)
    state, reference = _pair(spec, related, device)
    wait = synchronizer(device)
    canon_s = median_time(lambda: canonicalize(state, spec, reference=reference), repeats, wait)
    solves = recorded_solves(lambda: canonicalize(state, spec, reference=reference))
    arrays = [a for similarity, blocks in solves for a in lap_blocks(similarity, blocks)]

    def scipy_solves() -> None:
        for cost in arrays:
            linear_sum_assignment(cost, maximize=True)

    floor_s = median_time(scipy_solves, repeats, sync)
    return {
        "size": size, "related": related, "solves": len(arrays), "canon_s": canon_s,
        "floor_s": floor_s, "ratio": canon_s / floor_s,
    }  # fmt: skip


def bench_large(size: str, hidden: int, device: torch.device) -> dict[str, Any]:
    """One canonicalization of a mixture too large for its whole similarity: its peak
    resident memory (and on a GPU, its peak allocated device memory) against that
    matrix's size, its time against scipy's solves."""
    experts, inner = (int(n) for n in size.split("x"))
    model = _Mixture(experts, inner, hidden)
    spec = spec_from_module(model)
    state, reference = _pair(spec, False, device)
    start_mb = resident_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with PeakMemory() as peak:
        canonicalize(state, spec, reference=reference)
        synchronizer(device)()
    canon_s = time.perf_counter() - start
    device_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    floor_s = solve_floor(lambda: canonicalize(state, spec, reference=reference))
    whole_mb = (experts * inner) ** 2 * 8 / 2**20
    return {
        "size": size, "canon_s": canon_s, "floor_s": floor_s, "ratio": canon_s / floor_s,
        "peak_mb": peak.mb, "start_mb": start_mb, "whole_matrix_mb": whole_mb,
        "device_peak_mb": device_mb,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--inner", type=int, default=1024)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["8x128", "8x512", "32x128"])
    parser.add_argument(
        "--large", nargs="*", default=["64x256"], help="experts x units read a block at a time"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device", default="cpu", help="where the canonicalizations run (the forward: CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    device = torch.device(args.device)
    forward = bench_forward(args)
    sizes = [
        bench_canonicalize(size, 64, args.repeats, related, device)
        for size in args.sizes
        for related in (False, True)
    ]
    large = [bench_large(size, 64, device) for size in args.large]
    if args.json:
        print(
            json.dumps(
                {
                    "forward": forward,
                    "canonicalize": sizes,
                    "large": large,
                    "threads": torch.get_num_threads(),
                }
            )
        )
        return
    print(
        f"forward ({args.tokens} tokens, {args.experts} experts of {args.inner}, k={args.k}, "
        f"width {args.hidden}, {torch.get_num_threads()} threads): canon "
        f"{forward['canon_s'] * 1e3:.1f} ms, floor {forward['floor_s'] * 1e3:.1f} ms, "
        f"ratio {forward['ratio']:.2f}"
    )
    for kernel, seconds in forward["library"].items():
        ratio = seconds / forward["floor_s"]
        print(f"  transformers {kernel}: {seconds * 1e3:.1f} ms ({ratio:.2f} x floor)")
    for row in sizes:
        pair = "a noisy symmetric copy" if row["related"] else "two random networks"
        print(
            f"canonicalize {row['size']} (experts x units, width 64; {pair}): "
            f"{row['canon_s']:.2f} s, "
            f"floor ({row['solves']} solves) {row['floor_s']:.2f} s, ratio {row['ratio']:.2f}"
        )
    for row in large:
        on_device = row["device_peak_mb"]
        print(
            f"canonicalize {row['size']} a block at a time ({args.device}): "
            f"{row['canon_s']:.1f} s, scipy's solves {row['floor_s']:.1f} s, ratio "
            f"{row['ratio']:.2f}; peak memory {row['peak_mb']:.0f} MiB (from "
            f"{row['start_mb']:.0f})"
            + (f", on the device {on_device:.0f} MiB" if on_device is not None else "")
            + f"; the whole similarity would be {row['whole_matrix_mb']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
