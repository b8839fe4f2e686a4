"""canon's engine: evaluation of networks along paths, on CPU or GPU."""

from canon.engine.evaluate import Evaluator as Evaluator
from canon.engine.evaluate import Scores as Scores
from canon.engine.landscape import PATH_KINDS as PATH_KINDS
from canon.engine.landscape import LocalEnergy as LocalEnergy
from canon.engine.landscape import PathCurve as PathCurve
from canon.engine.landscape import PlaneResult as PlaneResult
from canon.engine.landscape import local_energy as local_energy
from canon.engine.landscape import path_curve as path_curve
from canon.engine.landscape import plane as plane

__all__ = [
    "PATH_KINDS",
    "Evaluator",
    "LocalEnergy",
    "PathCurve",
    "PlaneResult",
    "Scores",
    "local_energy",
    "path_curve",
    "plane",
]
