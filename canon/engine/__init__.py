"""canon's engine: evaluation of networks along paths, on CPU or GPU.

Names load on first use (PEP 562): the registries of kinds
(:mod:`canon.engine.kinds`) load without torch, so the command line can build
its choices from them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Evaluator": "canon.engine.evaluate",
    "Scores": "canon.engine.evaluate",
    "ALGORITHMS": "canon.engine.kinds",
    "DEFAULT_PATHS": "canon.engine.kinds",
    "MATCHING_METHODS": "canon.engine.kinds",
    "MatchingInfo": "canon.engine.kinds",
    "get_matching": "canon.engine.kinds",
    "list_matchings": "canon.engine.kinds",
    "register_matching": "canon.engine.kinds",
    "MatchInputs": "canon.engine.matching",
    "find_alignment": "canon.engine.matching",
    "match_activations": "canon.engine.matching",
    "resolve_method": "canon.engine.matching",
    "MIDPOINT_LR": "canon.engine.kinds",
    "MIDPOINT_LR_HALVINGS": "canon.engine.kinds",
    "MIDPOINT_PATHS": "canon.engine.kinds",
    "PATH_KINDS": "canon.engine.kinds",
    "AlgorithmInfo": "canon.engine.kinds",
    "PathKindInfo": "canon.engine.kinds",
    "bend_kind": "canon.engine.kinds",
    "get_algorithm": "canon.engine.kinds",
    "get_path_kind": "canon.engine.kinds",
    "list_algorithms": "canon.engine.kinds",
    "list_path_kinds": "canon.engine.kinds",
    "register_algorithm": "canon.engine.kinds",
    "register_path_kind": "canon.engine.kinds",
    "LocalEnergy": "canon.engine.landscape",
    "PathCurve": "canon.engine.landscape",
    "PathEnds": "canon.engine.landscape",
    "PathOptions": "canon.engine.options",
    "PlaneResult": "canon.engine.landscape",
    "local_energy": "canon.engine.landscape",
    "path_curve": "canon.engine.landscape",
    "path_curves": "canon.engine.landscape",
    "pairs_per_call": "canon.engine.landscape",
    "plane": "canon.engine.landscape",
    "prepare_curves": "canon.engine.landscape",
    "PreparedCurves": "canon.engine.landscape",
    "MidpointResult": "canon.engine.midpoint",
    "optimize_midpoint": "canon.engine.midpoint",
    "Fitted": "canon.engine.train",
    "TrainProgress": "canon.engine.train",
    "TrainResult": "canon.engine.train",
    "TrainSetup": "canon.engine.train",
    "train": "canon.engine.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """This package's module: importing a submodule does not hide the export of its name.

    The import system sets ``canon.engine.train`` to the submodule once it is
    imported; the export of that name (the function :func:`train`) wins, as
    it did when the package imported its names eagerly.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from canon.engine.evaluate import Evaluator as Evaluator
    from canon.engine.evaluate import Scores as Scores
    from canon.engine.kinds import ALGORITHMS as ALGORITHMS
    from canon.engine.kinds import DEFAULT_PATHS as DEFAULT_PATHS
    from canon.engine.kinds import MATCHING_METHODS as MATCHING_METHODS
    from canon.engine.kinds import MIDPOINT_LR as MIDPOINT_LR
    from canon.engine.kinds import MIDPOINT_LR_HALVINGS as MIDPOINT_LR_HALVINGS
    from canon.engine.kinds import MIDPOINT_PATHS as MIDPOINT_PATHS
    from canon.engine.kinds import PATH_KINDS as PATH_KINDS
    from canon.engine.kinds import AlgorithmInfo as AlgorithmInfo
    from canon.engine.kinds import MatchingInfo as MatchingInfo
    from canon.engine.kinds import PathKindInfo as PathKindInfo
    from canon.engine.kinds import bend_kind as bend_kind
    from canon.engine.kinds import get_algorithm as get_algorithm
    from canon.engine.kinds import get_matching as get_matching
    from canon.engine.kinds import get_path_kind as get_path_kind
    from canon.engine.kinds import list_algorithms as list_algorithms
    from canon.engine.kinds import list_matchings as list_matchings
    from canon.engine.kinds import list_path_kinds as list_path_kinds
    from canon.engine.kinds import register_algorithm as register_algorithm
    from canon.engine.kinds import register_matching as register_matching
    from canon.engine.kinds import register_path_kind as register_path_kind
    from canon.engine.landscape import LocalEnergy as LocalEnergy
    from canon.engine.landscape import PathCurve as PathCurve
    from canon.engine.landscape import PathEnds as PathEnds
    from canon.engine.landscape import PlaneResult as PlaneResult
    from canon.engine.landscape import PreparedCurves as PreparedCurves
    from canon.engine.landscape import local_energy as local_energy
    from canon.engine.landscape import pairs_per_call as pairs_per_call
    from canon.engine.landscape import path_curve as path_curve
    from canon.engine.landscape import path_curves as path_curves
    from canon.engine.landscape import plane as plane
    from canon.engine.landscape import prepare_curves as prepare_curves
    from canon.engine.matching import MatchInputs as MatchInputs
    from canon.engine.matching import find_alignment as find_alignment
    from canon.engine.matching import match_activations as match_activations
    from canon.engine.matching import resolve_method as resolve_method
    from canon.engine.midpoint import MidpointResult as MidpointResult
    from canon.engine.midpoint import optimize_midpoint as optimize_midpoint
    from canon.engine.options import PathOptions as PathOptions
    from canon.engine.train import Fitted as Fitted
    from canon.engine.train import TrainProgress as TrainProgress
    from canon.engine.train import TrainResult as TrainResult
    from canon.engine.train import TrainSetup as TrainSetup
    from canon.engine.train import train as train
