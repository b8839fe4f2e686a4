"""Figures of canon's results, as in the paper (Pittorino et al. 2022).

One function per figure kind; each takes canon's result records, returns a
matplotlib ``Figure`` and, given a path, writes it there in the format its
suffix names (``.png`` by default at 100 dpi, ``.svg`` or ``.pdf``). Drawing uses
matplotlib's Agg canvas: no display is needed.

- :func:`plot_curves`: error along each path kind for one pair (``canon compare --plot``);
- :func:`plot_path_classes`: error along paths per class of pairs, mean and std (Figs. 2, 3);
- :func:`plot_local_energy`: local energy against noise, and against test error (Fig. 1);
- :func:`plot_plane`: the plane through three networks, raw beside normalized (Fig. 4);
- :func:`plot_distances`: distances per class of pairs (Fig. 5); :func:`plot_table`: a
  pairwise table as a matrix;
- :func:`plot_hamming_paths` and :func:`plot_binary_scaling`: binary networks (Fig. 6).
"""

from canon.plots._binary import ScalingPoint as ScalingPoint
from canon.plots._binary import plot_binary_scaling as plot_binary_scaling
from canon.plots._distances import class_pairs as class_pairs
from canon.plots._distances import plot_distances as plot_distances
from canon.plots._distances import plot_midpoint_distances as plot_midpoint_distances
from canon.plots._distances import plot_table as plot_table
from canon.plots._landscape import plot_local_energy as plot_local_energy
from canon.plots._landscape import plot_plane as plot_plane
from canon.plots._paths import class_curve as class_curve
from canon.plots._paths import plot_curves as plot_curves
from canon.plots._paths import plot_hamming_paths as plot_hamming_paths
from canon.plots._paths import plot_path_classes as plot_path_classes
from canon.plots._style import FORMATS as FORMATS
from canon.plots._style import order_classes as order_classes
from canon.plots._style import output_path as output_path
from canon.plots._style import pair_class as pair_class

__all__ = [
    "FORMATS",
    "ScalingPoint",
    "class_curve",
    "class_pairs",
    "order_classes",
    "output_path",
    "pair_class",
    "plot_binary_scaling",
    "plot_curves",
    "plot_distances",
    "plot_hamming_paths",
    "plot_local_energy",
    "plot_midpoint_distances",
    "plot_path_classes",
    "plot_plane",
    "plot_table",
]
