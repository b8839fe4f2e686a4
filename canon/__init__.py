"""canon: canonical forms, distances and error barriers between trained networks.

The public API. Implementation lives in subpackages: ``canon.core`` (pure
functions on state dicts), ``canon.architectures`` (the registry of
networks), ``canon.engine`` (evaluation along paths), ``canon.data`` (datasets),
``canon.checkpoint`` (safetensors I/O checked against a spec), ``canon.zoo``
(the store).
"""

# Exports load on first use (PEP 562), so that ``import canon.errors`` or a quick
# command line call does not pay for importing torch.
from __future__ import annotations

from typing import TYPE_CHECKING

from canon._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "canon.architectures",
    "list_architectures": "canon.architectures",
    "register_architecture": "canon.architectures",
    "resolve_config": "canon.architectures",
    "Header": "canon.checkpoint",
    "load_state": "canon.checkpoint",
    "read_header": "canon.checkpoint",
    "save_state": "canon.checkpoint",
    "Aligned": "canon.core",
    "Alignment": "canon.core",
    "Spec": "canon.core",
    "UnitGroup": "canon.core",
    "align": "canon.core",
    "apply_alignment": "canon.core",
    "canonicalize": "canon.core",
    "match": "canon.core",
    "matching_objective": "canon.core",
    "normalize": "canon.core",
    "random_symmetry": "canon.core",
    "spec_from_module": "canon.core",
    "Distances": "canon.core.geometry",
    "distances": "canon.core.geometry",
    "ALGORITHMS": "canon.engine",
    "DEFAULT_PATHS": "canon.engine",
    "PATH_KINDS": "canon.engine",
    "LocalEnergy": "canon.engine",
    "MidpointResult": "canon.engine",
    "PathCurve": "canon.engine",
    "PlaneResult": "canon.engine",
    "TrainResult": "canon.engine",
    "MATCHING_METHODS": "canon.engine",
    "list_algorithms": "canon.engine",
    "list_path_kinds": "canon.engine",
    "local_energy": "canon.engine",
    "optimize_midpoint": "canon.engine",
    "path_curve": "canon.engine",
    "path_curves": "canon.engine",
    "plane": "canon.engine",
    "register_algorithm": "canon.engine",
    "register_path_kind": "canon.engine",
    "train": "canon.engine",
    "CanonError": "canon.errors",
    "Zoo": "canon.zoo",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from canon.architectures import build_model as build_model
    from canon.architectures import list_architectures as list_architectures
    from canon.architectures import register_architecture as register_architecture
    from canon.architectures import resolve_config as resolve_config
    from canon.checkpoint import Header as Header
    from canon.checkpoint import load_state as load_state
    from canon.checkpoint import read_header as read_header
    from canon.checkpoint import save_state as save_state
    from canon.core import Aligned as Aligned
    from canon.core import Alignment as Alignment
    from canon.core import Spec as Spec
    from canon.core import UnitGroup as UnitGroup
    from canon.core import align as align
    from canon.core import apply_alignment as apply_alignment
    from canon.core import canonicalize as canonicalize
    from canon.core import match as match
    from canon.core import matching_objective as matching_objective
    from canon.core import normalize as normalize
    from canon.core import random_symmetry as random_symmetry
    from canon.core import spec_from_module as spec_from_module
    from canon.core.geometry import Distances as Distances
    from canon.core.geometry import distances as distances
    from canon.engine import ALGORITHMS as ALGORITHMS
    from canon.engine import DEFAULT_PATHS as DEFAULT_PATHS
    from canon.engine import MATCHING_METHODS as MATCHING_METHODS
    from canon.engine import PATH_KINDS as PATH_KINDS
    from canon.engine import LocalEnergy as LocalEnergy
    from canon.engine import MidpointResult as MidpointResult
    from canon.engine import PathCurve as PathCurve
    from canon.engine import PlaneResult as PlaneResult
    from canon.engine import TrainResult as TrainResult
    from canon.engine import list_algorithms as list_algorithms
    from canon.engine import list_path_kinds as list_path_kinds
    from canon.engine import local_energy as local_energy
    from canon.engine import optimize_midpoint as optimize_midpoint
    from canon.engine import path_curve as path_curve
    from canon.engine import path_curves as path_curves
    from canon.engine import plane as plane
    from canon.engine import register_algorithm as register_algorithm
    from canon.engine import register_path_kind as register_path_kind
    from canon.engine import train as train
    from canon.errors import CanonError as CanonError
    from canon.zoo import Zoo as Zoo
