"""The architecture registry: names mapped to factories of ``nn.Module``.

A factory takes one frozen config dataclass and returns a module. Configs
are given as mappings (JSON objects) and checked against the dataclass: an
unknown key is an error naming the valid ones, and a missing key takes the
dataclass default. A name of the form ``module:function`` loads a user
architecture: ``function(**config)`` must return an ``nn.Module``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from canon.errors import ConfigError, DuplicateNameError, UnknownNameError

__all__ = [
    "Architecture",
    "build_model",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "resolve_config",
]

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its name, config dataclass and factory."""

    name: str
    config_type: type[Any]
    factory: Callable[[Any], nn.Module]
    description: str = ""


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(name: str, config_type: type[Any]) -> Callable[[F], F]:
    """Decorator registering ``factory(config) -> nn.Module`` under ``name``."""
    if not dataclasses.is_dataclass(config_type):
        raise TypeError(f"`config_type` for architecture `{name}` must be a dataclass")

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            raise DuplicateNameError(f"architecture `{name}` is already registered")
        if ":" in name:
            raise ValueError(f"architecture name `{name}` may not contain ':'")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, config_type, factory, doc[0] if doc else "")
        return factory

    return decorate


def list_architectures(pattern: str = "*") -> list[str]:
    """Registered architecture names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; an unknown name suggests close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownNameError(
            f"unknown architecture `{name}`{hint} (known: {known}; or give module:function)",
            name=name,
        ) from None


def resolve_config(name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full config of ``name`` (defaults filled in) as a JSON-ready dict."""
    if ":" in name:
        return dict(config or {})
    resolved: dict[str, Any] = _jsonable(
        dataclasses.asdict(_make_config(get_architecture(name), config or {}))
    )
    return resolved


def build_model(name: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the architecture ``name`` (registered, or ``module:function``) from ``config``."""
    if ":" in name:
        return _build_user(name, dict(config or {}))
    arch = get_architecture(name)
    return arch.factory(_make_config(arch, config or {}))


def _make_config(arch: Architecture, config: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(arch.config_type)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'`{k}`' for k in unknown)} for architecture "
            f"`{arch.name}`; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(arch.config_type)
    values = {k: _coerce(arch.name, k, v, hints.get(k)) for k, v in config.items()}
    try:
        return arch.config_type(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config for architecture `{arch.name}`: {exc}") from exc


def _coerce(arch: str, key: str, value: Any, hint: Any) -> Any:
    """JSON gives lists where configs hold tuples; check simple types on the way."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config `{key}` of `{arch}` must be a list, got {value!r}")
        return tuple(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config `{key}` of `{arch}` must be an integer, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"config `{key}` of `{arch}` must be true or false, got {value!r}")
    if hint is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"config `{key}` of `{arch}` must be a number, got {value!r}")
    if origin is typing.Literal and value not in typing.get_args(hint):
        choices = ", ".join(repr(c) for c in typing.get_args(hint))
        raise ConfigError(f"config `{key}` of `{arch}` must be one of {choices}, got {value!r}")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _build_user(name: str, config: dict[str, Any]) -> nn.Module:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"user architecture `{name}` must be written module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module `{module_name}` for `{name}`: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"module `{module_name}` has no callable `{attr}`")
    model = factory(**config)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"`{name}` returned {type(model).__name__}, not an nn.Module")
    return model
