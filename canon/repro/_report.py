"""The reproduction's markdown report: how it was run, the claims table, the solutions,
the figures, and where this small-scale run differs from the paper."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from canon.engine import DEFAULT_PATHS, MIDPOINT_LR, MIDPOINT_LR_HALVINGS, bend_kind
from canon.plots import class_pairs, order_classes
from canon.repro._claims import mean, pct
from canon.repro._plan import ALGOS
from canon.repro._stats import count_verdicts

if TYPE_CHECKING:
    from canon.engine import PathCurve
    from canon.repro._claims import Claim
    from canon.repro._figures import FigureFile
    from canon.repro._pipeline import Measurements, NetResults
    from canon.zoo import Entry

__all__ = ["render_report"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _claims_table(claims: Sequence[Claim]) -> list[str]:
    lines = [
        "| # | claim | setting | the paper | measured here | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        verdict = f"**{c.verdict}**"
        lines.append(
            f"| {c.id} | {_cell(c.claim)} | {_cell(c.scope)} | {_cell(c.paper)} | "
            f"{_cell(c.measured)} | {verdict} |"
        )
    return lines


def _solutions_table(groups: Sequence[tuple[str, Sequence[Entry]]]) -> list[str]:
    lines = [
        "| network | algorithm | solutions | train error (mean) | test error (mean ± std) "
        "| epochs (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for title, entries in groups:
        for algo in ALGOS:
            chosen = [e for e in entries if e.tags.get("algo") == algo]
            if not chosen:
                continue
            train = [float(e.metrics["train_error"]) for e in chosen]
            test = [float(e.metrics["test_error"]) for e in chosen]
            epochs = [float(e.metrics["epochs"]) for e in chosen]
            spread = statistics.pstdev(test) if len(test) > 1 else 0.0
            lines.append(
                f"| {title} | {algo} | {len(chosen)} | {pct(statistics.fmean(train))} | "
                f"{pct(statistics.fmean(test))} ± {pct(spread)} | "
                f"{statistics.fmean(epochs):.0f} |"
            )
    return lines


def _class_means(curves: Mapping[str, Sequence[PathCurve]], kind: str) -> dict[str, float]:
    return {
        cls: statistics.fmean(found)
        for cls, group in curves.items()
        if (found := [c.barrier for c in group if c.kind == kind])
    }


def _net_table(net: NetResults) -> list[str]:
    """Mean barrier per pair class and path kind, and mean distances, for one network."""
    kinds = DEFAULT_PATHS
    bends = tuple(bend_kind(p) for p in DEFAULT_PATHS)
    barriers = {k: _class_means(net.curves, k) for k in kinds}
    barriers |= {k: _class_means(net.bends, k) for k in bends}
    distances = {t.metric: class_pairs(t, net.classes) for t in net.distances}
    head = (
        "| pairs | linear | linear, aligned | geodesic | bend, linear legs | "
        "bend, aligned legs | bend, geodesic legs | Euclidean distance | geodesic distance |"
    )
    lines = [head, "|---" * 9 + "|"]
    for cls in order_classes(barriers["geodesic"]):
        cells = [pct(barriers[k].get(cls, math.nan)) for k in (*kinds, *bends)]
        cells += [
            f"{statistics.fmean(distances[m][cls]):.3g}" if distances.get(m, {}).get(cls) else "-"
            for m in ("euclidean", "geodesic")
        ]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return lines


def _known(value: float | None) -> float:
    return math.nan if value is None else value


def _binary_table(results: Measurements) -> list[str]:
    """Per size and class: barriers, Hamming distances, local energy and test error."""
    lines = [
        "| N/D | solutions | barrier, raw | barrier, aligned | Hamming, raw | Hamming, aligned "
        "| local energy | test error |",
        "|---" * 8 + "|",
    ]
    for size in results.binary:
        for algo in ALGOS:
            group = size.curves.get(f"{algo}-{algo}", [])
            raw = [c for c in group if c.kind == "random_flip"]
            aligned = [c for c in group if c.kind == "random_flip_aligned"]
            energy = [e.mean[-1] for e in size.energies.get(algo, [])]
            cells = [
                pct(mean([c.barrier for c in raw])),
                pct(mean([c.barrier for c in aligned])),
                pct(mean([_known(c.distances.hamming_fraction) for c in raw])),
                pct(mean([_known(c.distances.hamming_aligned_fraction) for c in aligned])),
                pct(mean(energy)),
                pct(mean(size.test_errors.get(algo, []))),
            ]
            lines.append(f"| {size.ratio} | {algo} | " + " | ".join(cells) + " |")
    return lines


def _measurements(results: Measurements) -> list[str]:
    lines: list[str] = []
    for net in results.nets:
        lines += [
            f"**{net.plan.title}**: mean barrier (max train error along the path) per class "
            "of pairs, and mean distance between the two solutions.",
            "",
            *_net_table(net),
            "",
        ]
    if results.binary:
        flips = results.plan.binary.flips[-1]
        lines += [
            "**Binary committee machine**: pairs within one class; barriers along random flip "
            "paths, Hamming distances as fractions of the weights, local energy at a fraction "
            f"{flips:g} of the weights flipped.",
            "",
            *_binary_table(results),
            "",
        ]
    return lines


def _notes(results: Measurements) -> list[str]:
    """Facts of this run that bear on reading the verdicts (computed, not written by hand)."""
    titles = " and ".join(net.plan.title for net in results.nets)
    sizes = sorted({net.split[0] for net in results.nets})
    notes = [
        f"On `digits` one train sample is {', '.join(f'{100 / n:.3f}%' for n in sizes)} of the "
        f"train error ({', '.join(str(n) for n in sizes)} samples; {titles}): differences "
        "of a sample or two between barriers are at the resolution of the measurement."
    ]
    plan = results.plan
    if plan.quick:
        notes.insert(
            0,
            "Quick mode is a smoke test of the pipeline, not a reproduction: "
            + _scaled(plan.epoch_scale, "the paper's epoch budgets")
            + f", {plan.seeds_per_algo} solutions per algorithm, smaller networks. Its networks "
            "are trained far less than the paper's (see their errors under Solutions), so its "
            "verdicts say nothing about the paper; the full `canon repro` is the reproduction.",
        )
    groups = [(net.plan.title, net.solutions) for net in results.nets]
    groups += [(f"committee N = {s.N}", s.solutions) for s in results.binary]
    spreads = []
    for title, entries in groups:
        rsgd = [e for e in entries if e.tags.get("algo") == "rsgd" and "spread_end" in e.metrics]
        if rsgd:
            ratio = max(
                float(e.metrics["spread_end"]) / float(e.metrics["spread_start"]) for e in rsgd
            )
            coupling = max(float(e.metrics["coupling"]) for e in rsgd)
            spreads.append(f"{title}: at most {ratio:.2g} of the start, last gamma {coupling:.3g}")
    if spreads:
        notes.append(
            "RSGD's replicas (independent initializations) collapse onto their center: their "
            f"spread around it at the end of training is {'; '.join(spreads)}."
        )
    notes.append(
        "Verdicts: *holds* when every check's 95% bootstrap interval (2000 seeded resamples) "
        "lies on the claim's side of zero, *does not hold* when one lies on the other side, "
        "*inconclusive at this scale* otherwise (too few samples, or a difference within a "
        "stated tie tolerance)."
    )
    return notes


def _scaled(scale: float, budgets: str) -> str:
    """``budgets`` themselves at scale 1, else that fraction of them."""
    return budgets if scale == 1 else f"{scale:.3g} times {budgets}"


def _settings(results: Measurements) -> list[str]:
    plan, b = results.plan, results.plan.binary
    nets = "; ".join(f"{n.title} (`{n.architecture}`)" for n in plan.nets)
    net = plan.nets[0] if plan.nets else None
    budget = (
        f"{net.epochs} epochs each (adv: at most {net.adv_epochs} on random labels first, "
        f"stopping once they are fitted, then {net.epochs} at learning rate {net.adv_lr})"
        if net
        else ""
    )
    scaled = "" if plan.epoch_scale == 1 else f" scaled by {plan.epoch_scale:.3g}"
    ratios = ", ".join(str(r) for r in b.ratios)
    split = results.nets[0].split if results.nets else (0, 0)
    return [
        f"- Mode: **{'quick' if plan.quick else 'full (default)'}**, seed {results.seed}.",
        f"- Continuous networks on scikit-learn's `digits` (8x8 images, {split[0]} train and "
        f"{split[1]} test samples): {nets}. {plan.seeds_per_algo} solutions per algorithm "
        f"(rsgd, sgd, adv), trained with the paper's protocols (appendix A.1: every epoch of "
        "the budget, cosine annealing, no stop at zero train error) at "
        + _scaled(plan.epoch_scale, "the paper's budgets")
        + f": {budget}. RSGD: 5 independently initialized replicas, "
        "gamma_0 set so that the coupling equals the data loss at initialization, "
        "gamma_1 = 1e4^(1/epochs) - 1.",
        f"- Paths: {plan.points} points each; up to {plan.pairs_per_class} pairs per class of "
        f"pairs (6 classes). Optimized single-bend paths: {plan.bend_pairs_per_class} pair(s) "
        f"per class, a midpoint optimized from each of the three starting paths "
        f"({plan.midpoint_epochs} epochs of SGD with cosine annealing at learning rate "
        f"{MIDPOINT_LR:g}, every epoch run; a training whose epoch loss went more than "
        "halfway back to chance level restarts from the same midpoint at half the learning "
        f"rate, at most {MIDPOINT_LR_HALVINGS} times; bend curves on 25 points).",
        "- Local energy: multiplicative Gaussian noise at sigma = "
        f"{', '.join(f'{s:g}' for s in plan.sigmas)}, {plan.draws} draws each; planes: "
        f"{plan.plane_grid} x {plan.plane_grid} grids, margin {plan.plane_margin:g}.",
        f"- Binary committee machine (`committee`, output weights fixed to 1) with H = "
        f"{b.hidden} hidden units on the hidden manifold model with D = {b.D}, P = {b.P} train "
        f"and {b.P_test} test patterns, N/D = {ratios}; {b.seeds_per_algo} solutions per "
        f"algorithm, BinaryNet training for {b.epochs} epochs as in appendix B"
        f"{scaled} (rsgd: gamma = 0.002 * 1.002^t; adv: up to {b.adv_epochs} "
        "epochs on random labels at learning rate 10, then learning rate 5). "
        "Random flip paths: 5 flip orders; "
        f"local energy: fractions {', '.join(f'{f:g}' for f in b.flips)} of the weights "
        f"flipped, {plan.draws} draws.",
    ]


_DEVIATIONS = [
    "Data: the paper uses MNIST, Fashion-MNIST and CIFAR-10; this run uses the 8x8 "
    "`digits` bundled with scikit-learn (no download), so the networks are smaller "
    "(MLP input 64; the LeNet-like net keeps its 20 and 50 5x5 filters with padding 2).",
    "RSGD's coupling step lr_t * 2 gamma_t is capped at 1 (canon.train: a replica never "
    "steps past the center); adv's random-label phase stops once the random labels are "
    "fitted (Liu et al.), and its zeroed pixels are set to black (raw 0).",
    "Fewer samples: the paper uses 100 noise draws per local-energy point, this run "
    "fewer (see Settings).",
    "The zoo records a dataset by name, without options, so the repro stores each HMM as an "
    "`.npz` file and trains the committee machine behind a sign of its inputs "
    "(`canon.repro.nets:committee_pm1`: the npz loader standardizes features, the sign restores "
    "the exact ±1 inputs); the LeNet-like net reshapes flat digits to 8x8 images "
    "(`canon.repro.nets:lenet_digits`).",
    "Barrier = the maximum train error along the path (the paper's definition), endpoints "
    "included; claim (3) calls a barrier near zero below 1% train error, the paper's "
    "threshold for a solution. The thresholds and orders were fixed before the run.",
]


def render_report(
    results: Measurements,
    claims: Sequence[Claim],
    figures: Mapping[str, FigureFile],
    *,
    wall_seconds: float,
    machine: str,
    command: str,
) -> str:
    """The report as markdown (figures referenced relative to the report's folder)."""
    counts = count_verdicts([c.verdict for c in claims])
    minutes, seconds = divmod(round(wall_seconds), 60)
    lines: list[Any] = [
        "# Reproducing *Deep Networks on Toroids* at small scale",
        "",
        "Pittorino et al., *Deep Networks on Toroids: Removing Symmetries Reveals the Structure "
        "of Flat Regions in the Landscape Geometry* (ICML 2022), sections 4 and 5, reproduced "
        "on CPU from nothing: train solutions with three algorithms, put them in a zoo, and "
        "measure flatness, distances and error barriers with canon.",
        "",
        f"Produced by `{command}` in **{minutes} min {seconds:02d} s** on {machine}. "
        "Every number below comes from that run; nothing (data, seeds, thresholds) was tuned "
        "to make a claim hold.",
        "",
        "## The paper's claims, measured here",
        "",
        f"**{len(claims)} checks: {counts}.** Percentages are train errors; a "
        "*barrier* is the maximum train error along a path.",
        "",
        *_claims_table(claims),
        "",
        "Reading the verdicts:",
        "",
        *[f"- {note}" for note in _notes(results)],
        "",
        "## Settings",
        "",
        *_settings(results),
        "",
        "## Measurements",
        "",
        *_measurements(results),
        "## Solutions",
        "",
        *_solutions_table(
            [(n.plan.title, n.solutions) for n in results.nets]
            + [(f"committee N = {s.N}", s.solutions) for s in results.binary]
        ),
        "",
        "## Figures",
        "",
    ]
    for key, figure in figures.items():
        lines += [f"### {figure.caption}", "", f"![{key}]({figure.file})", ""]
    lines += ["## Differences from the paper", ""]
    scale = results.plan.epoch_scale
    budgets = (
        []
        if scale == 1
        else [
            f"Epoch budgets: {scale:.3g} times the paper's (300 epochs; binary networks 200, adv's "
            "random-label phase 500); the protocols are otherwise the paper's (every epoch run, "
            "cosine annealing)."
        ]
    )
    lines += [f"- {d}" for d in budgets + _DEVIATIONS]
    lines.append("")
    return "\n".join(lines)
