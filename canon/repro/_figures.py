"""The report's figures, drawn from the measurements with :mod:`canon.plots`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from canon.engine import DEFAULT_PATHS, bend_kind
from canon.plots import (
    ScalingPoint,
    plot_binary_scaling,
    plot_distances,
    plot_hamming_paths,
    plot_local_energy,
    plot_midpoint_distances,
    plot_path_classes,
    plot_plane,
)

if TYPE_CHECKING:
    from canon.repro._pipeline import Measurements

__all__ = ["FigureFile", "draw_figures"]


@dataclass(frozen=True)
class FigureFile:
    """A written figure: its file (relative to the report) and its caption."""

    file: str
    caption: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return asdict(self)


def draw_figures(results: Measurements, out_dir: Path) -> dict[str, FigureFile]:
    """Draw every figure into ``out_dir / "figures"`` as PNG; keyed by figure name."""
    folder = out_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, FigureFile] = {}

    def write(key: str, caption: str) -> Path:
        figures[key] = FigureFile(f"figures/{key}.png", caption)
        return folder / f"{key}.png"

    for net in results.nets:
        label, title = net.plan.label, net.plan.title
        plot_local_energy(
            net.energies,
            write(f"{label}-energy", f"{title}: local energy (Fig. 1)."),
            test_errors=net.test_errors,
            title=f"{title}: flatness and generalization",
        )
        plot_path_classes(
            net.curves,
            write(f"{label}-paths", f"{title}: train error along paths (Fig. 2)."),
            kinds=DEFAULT_PATHS,
            title=f"{title}: error along paths between solutions",
        )
        plot_path_classes(
            net.bends,
            write(f"{label}-bend", f"{title}: optimized single-bend paths (Fig. 3)."),
            kinds=tuple(bend_kind(p) for p in DEFAULT_PATHS),
            title=f"{title}: paths through an optimized midpoint",
        )
        raw, normalized = net.plane
        plot_plane(
            raw,
            normalized,
            write(f"{label}-plane", f"{title}: the plane through rsgd, adv, adv aligned (Fig. 4)."),
            labels=net.plane_labels,
            title=f"{title}: train error on a plane",
        )
        plot_distances(
            net.distances,
            net.classes,
            write(f"{label}-distances", f"{title}: distances between solutions (Fig. 5)."),
            title=f"{title}: distances between solutions",
        )
        if any(net.midpoint_distances.values()):
            plot_midpoint_distances(
                net.midpoint_distances,
                write(
                    f"{label}-midpoints",
                    f"{title}: normalized aligned distances from optimized midpoints to the "
                    "endpoints (Fig. 5, middle and right).",
                ),
                title=f"{title}: where optimized midpoints end up",
            )
    if results.binary:
        largest = results.binary[-1]
        points = [
            ScalingPoint(s.ratio, s.energies, s.test_errors, s.curves) for s in results.binary
        ]
        plot_binary_scaling(
            points,
            write("committee-scaling", "Binary committee machine against N/D (Fig. 6)."),
            title="Binary committee machine on the hidden manifold model",
        )
        plot_local_energy(
            largest.energies,
            write("committee-energy", f"Committee machine, N = {largest.N}: local energy."),
            test_errors=largest.test_errors,
            title=f"Committee machine, N/D = {largest.ratio}: flatness",
        )
        plot_hamming_paths(
            largest.curves,
            write("committee-hamming", f"Committee machine, N = {largest.N}: random flip paths."),
            title=f"Committee machine, N/D = {largest.ratio}: random shortest paths",
        )
    return figures
