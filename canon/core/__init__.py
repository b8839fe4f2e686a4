"""canon's core: pure functions on state dicts and structure specs.

Nothing here touches files, databases or the command line; every function
computes on the device its tensors live on.
"""

from canon.core.alignment import Aligned as Aligned
from canon.core.alignment import align as align
from canon.core.alignment import canonicalize as canonicalize
from canon.core.auction import auction_assignment as auction_assignment
from canon.core.matching import WEIGHT_METHODS as WEIGHT_METHODS
from canon.core.matching import default_method as default_method
from canon.core.matching import layer_weights as layer_weights
from canon.core.matching import match as match
from canon.core.matching import match_incoming as match_incoming
from canon.core.matching import match_weights as match_weights
from canon.core.matching import matching_objective as matching_objective
from canon.core.normalization import UnitScales as UnitScales
from canon.core.normalization import normalize as normalize
from canon.core.normalization import normalize_with_scales as normalize_with_scales
from canon.core.normalization import rescale as rescale
from canon.core.normalization import unit_scales as unit_scales
from canon.core.permutations import AUCTION_FROM as AUCTION_FROM
from canon.core.permutations import Alignment as Alignment
from canon.core.permutations import apply_alignment as apply_alignment
from canon.core.permutations import solve_assignment as solve_assignment
from canon.core.permutations import through_reference as through_reference
from canon.core.spec import BatchNormTensors as BatchNormTensors
from canon.core.spec import OutgoingAxis as OutgoingAxis
from canon.core.spec import OutputLayer as OutputLayer
from canon.core.spec import Producer as Producer
from canon.core.spec import Spec as Spec
from canon.core.spec import TensorAxis as TensorAxis
from canon.core.spec import TensorInfo as TensorInfo
from canon.core.spec import UnitGroup as UnitGroup
from canon.core.spec import check_finite as check_finite
from canon.core.spec import check_state as check_state
from canon.core.symmetries import random_symmetry as random_symmetry
from canon.core.trace import spec_from_module as spec_from_module
from canon.core.trace import traced as traced
from canon.core.unit_spaces import tied_names as tied_names

__all__ = [
    "AUCTION_FROM",
    "WEIGHT_METHODS",
    "Aligned",
    "Alignment",
    "BatchNormTensors",
    "OutgoingAxis",
    "OutputLayer",
    "Producer",
    "Spec",
    "TensorAxis",
    "TensorInfo",
    "UnitGroup",
    "UnitScales",
    "align",
    "apply_alignment",
    "auction_assignment",
    "canonicalize",
    "check_finite",
    "check_state",
    "default_method",
    "layer_weights",
    "match",
    "match_incoming",
    "match_weights",
    "matching_objective",
    "normalize",
    "normalize_with_scales",
    "random_symmetry",
    "rescale",
    "solve_assignment",
    "spec_from_module",
    "through_reference",
    "tied_names",
    "traced",
    "unit_scales",
]
