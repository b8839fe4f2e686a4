"""A small-scale reproduction of the paper's findings: train, fill a zoo, measure, report.

:func:`run_reproduction` trains solutions with rsgd, sgd and adv (an MLP and the
LeNet-like net on ``digits``; binary committee machines on the hidden manifold
model at several sizes N/D), fills a zoo with them, takes every measurement of
the paper's sections 4 and 5, evaluates the paper's qualitative claims and
writes ``reproduction.md``, ``reproduction.json`` and ``figures/*.png``.
``canon repro`` runs it from the shell.
"""

from canon.repro._claims import Claim as Claim
from canon.repro._measure import bend_curves as bend_curves
from canon.repro._measure import class_of as class_of
from canon.repro._measure import energies_by_class as energies_by_class
from canon.repro._measure import entry_pairs_by_class as entry_pairs_by_class
from canon.repro._measure import path_curves as path_curves
from canon.repro._measure import plane_sections as plane_sections
from canon.repro._plan import Plan as Plan
from canon.repro._plan import make_plan as make_plan
from canon.repro._run import ReproductionResult as ReproductionResult
from canon.repro._run import run_reproduction as run_reproduction

__all__ = [
    "Claim",
    "Plan",
    "ReproductionResult",
    "bend_curves",
    "class_of",
    "energies_by_class",
    "entry_pairs_by_class",
    "make_plan",
    "path_curves",
    "plane_sections",
    "run_reproduction",
]
