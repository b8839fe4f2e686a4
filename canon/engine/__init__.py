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
from canon.engine.midpoint import MidpointResult as MidpointResult
from canon.engine.midpoint import optimize_midpoint as optimize_midpoint
from canon.engine.train import ALGORITHMS as ALGORITHMS
from canon.engine.train import TrainProgress as TrainProgress
from canon.engine.train import TrainResult as TrainResult
from canon.engine.train import train as train

__all__ = [
    "ALGORITHMS",
    "PATH_KINDS",
    "Evaluator",
    "LocalEnergy",
    "MidpointResult",
    "PathCurve",
    "PlaneResult",
    "Scores",
    "TrainProgress",
    "TrainResult",
    "local_energy",
    "optimize_midpoint",
    "path_curve",
    "plane",
    "train",
]
