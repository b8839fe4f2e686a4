"""canon: canonical forms, distances and error barriers between trained networks.

The public API. Implementation lives in subpackages: ``canon.core`` (pure
functions on state dicts), ``canon.architectures`` (the registry of
networks), ``canon.engine`` (evaluation along paths), ``canon.data`` (datasets),
``canon.checkpoint`` (safetensors I/O checked against a spec).
"""

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
from canon.core import normalize as normalize
from canon.core import random_symmetry as random_symmetry
from canon.core import spec_from_module as spec_from_module
from canon.core.geometry import Distances as Distances
from canon.core.geometry import distances as distances
from canon.engine import PATH_KINDS as PATH_KINDS
from canon.engine import LocalEnergy as LocalEnergy
from canon.engine import MidpointResult as MidpointResult
from canon.engine import PathCurve as PathCurve
from canon.engine import PlaneResult as PlaneResult
from canon.engine import TrainResult as TrainResult
from canon.engine import local_energy as local_energy
from canon.engine import optimize_midpoint as optimize_midpoint
from canon.engine import path_curve as path_curve
from canon.engine import plane as plane
from canon.engine import train as train
from canon.errors import CanonError as CanonError

__version__ = "0.1.0"

__all__ = [
    "PATH_KINDS",
    "Aligned",
    "Alignment",
    "CanonError",
    "Distances",
    "Header",
    "LocalEnergy",
    "MidpointResult",
    "PathCurve",
    "PlaneResult",
    "Spec",
    "TrainResult",
    "UnitGroup",
    "align",
    "apply_alignment",
    "build_model",
    "canonicalize",
    "distances",
    "list_architectures",
    "load_state",
    "local_energy",
    "normalize",
    "optimize_midpoint",
    "path_curve",
    "plane",
    "random_symmetry",
    "read_header",
    "register_architecture",
    "resolve_config",
    "save_state",
    "spec_from_module",
    "train",
]
