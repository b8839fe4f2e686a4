"""Architectures by name: the built-ins and user factories (``module:function``)."""

from canon.architectures import _adapters as _adapters  # Hub adapters: timm/, hf-transformers/
from canon.architectures import _builtin as _builtin  # registers the built-ins
from canon.architectures import _registry
from canon.architectures import _resnet as _resnet  # registers resnet
from canon.architectures import _transformer as _transformer  # registers gpt
from canon.architectures._adapters import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from canon.architectures._adapters import LibraryLayout as LibraryLayout
from canon.architectures._adapters import adapter_name as adapter_name
from canon.architectures._adapters import check_hub_config as check_hub_config
from canon.architectures._adapters import library_layout as library_layout
from canon.architectures._builtin import Network as Network
from canon.architectures._experts import ExpertPiece as ExpertPiece
from canon.architectures._registry import Architecture as Architecture
from canon.architectures._registry import CheckedConfig as CheckedConfig
from canon.architectures._registry import Count as Count
from canon.architectures._registry import Range as Range
from canon.architectures._registry import Size as Size
from canon.architectures._registry import build_model as build_model
from canon.architectures._registry import get_architecture as get_architecture
from canon.architectures._registry import list_architectures as list_architectures
from canon.architectures._registry import register_architecture as register_architecture
from canon.architectures._registry import resolve_config as resolve_config

# Every public name of the registry, and the built-ins' Network.
__all__ = sorted(
    [
        "MAX_CONFIG_BYTES",
        "ExpertPiece",
        "LibraryLayout",
        "Network",
        "adapter_name",
        "check_hub_config",
        "library_layout",
        *_registry.__all__,
    ]
)
