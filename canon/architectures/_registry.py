"""The architecture registry: names mapped to factories of ``nn.Module``.

A factory takes one frozen config dataclass and returns a module. Configs
are given as mappings (JSON objects) and checked against the dataclass: an
unknown key is an error naming the valid ones, and a missing key takes the
dataclass default. Values are checked against the
field's type hint (:func:`_check`): element types of lists, and bounds
given as ``Annotated[int, Range(low, high)]`` (:data:`Size` is 1 to
:data:`~canon._limits.MAX_DIM`), so an absurd size is refused before any
module is made. A name of the form ``module:function`` loads a user
architecture: ``function(**config)`` must return an ``nn.Module``; whatever
it raises becomes a :class:`~canon.errors.ConfigError` naming it. The module
is imported as ``python -m`` would: from the Python path, else from the
current folder. A user config may record the shape of one input sample under
:data:`INPUT_SHAPE` (what ``canon add --input-shape`` writes): it is passed to
a function that takes ``input_shape``, else kept out of the call, and either
way set as the module's ``input_shape``, which canon's tracer reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import importlib
import inspect
import json
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

import torch
from torch import nn

from canon._limits import MAX_DIM, MAX_ITEMS, MAX_PARAMS, clip
from canon.errors import CanonError, ConfigError, DuplicateNameError, UnknownNameError

__all__ = [
    "Architecture",
    "CheckedConfig",
    "Count",
    "Range",
    "Size",
    "build_model",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "resolve_config",
]

F = TypeVar("F", bound=Callable[..., nn.Module])

# The config key under which a user architecture's input shape (one sample) is recorded
# (`canon add --input-shape`; canon.zoo writes it), and the bounds on that shape: at most
# 4 axes, each at most 4096, 2**22 numbers in all (4 x 1024 x 1024; canon traces a batch
# of two, and builds on the CPU what it evaluates).
INPUT_SHAPE = "input_shape"
MAX_INPUT_RANK = 4
MAX_INPUT_SIDE = 4096
MAX_INPUT_NUMBERS = 2**22


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its name, config dataclass and factory, and where in its
    config the shape of one input sample goes when the config may leave it out
    (``input_shape_at``, keys from the top; empty: the config always implies it)."""

    name: str
    config_type: type[Any]
    factory: Callable[[Any], nn.Module]
    description: str = ""
    input_shape_at: tuple[str, ...] = ()


_REGISTRY: dict[str, Architecture] = {}
# Families of architectures named ``prefix/<model>`` (the Hub adapters of
# canon.architectures._adapters): made by ``make(model)`` when looked up, which raises
# UnknownNameError for a malformed model. Not stored in _REGISTRY, so that looking up
# hostile names cannot grow it.
_FAMILIES: dict[str, Callable[[str], Architecture]] = {}


def register_family(prefix: str, make: Callable[[str], Architecture]) -> None:
    """Resolve every name ``prefix/<model>`` through ``make(model)``; names under ``prefix``
    are reserved for it (``register_architecture`` refuses them)."""
    if prefix in _FAMILIES or any(n.partition("/")[0] == prefix for n in _REGISTRY):
        raise DuplicateNameError(f"architecture prefix `{prefix}/` is already in use")
    if ":" in prefix or "/" in prefix:
        raise ValueError(f"architecture family prefix `{prefix}` may not contain ':' or '/'")
    _FAMILIES[prefix] = make


def register_architecture(name: str, config_type: type[Any]) -> Callable[[F], F]:
    """Decorator registering ``factory(config) -> nn.Module`` under ``name``."""
    if not dataclasses.is_dataclass(config_type):
        raise TypeError(f"`config_type` for architecture `{name}` must be a dataclass")

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            raise DuplicateNameError(f"architecture `{name}` is already registered")
        if ":" in name:
            raise ValueError(f"architecture name `{name}` may not contain ':'")
        if "/" in name and name.partition("/")[0] in _FAMILIES:
            raise DuplicateNameError(
                f"architecture `{name}`: names under `{name.partition('/')[0]}/` are the "
                "Hub adapters'"
            )
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, config_type, factory, doc[0] if doc else "")
        return factory

    return decorate


def list_architectures(pattern: str = "*") -> list[str]:
    """Registered architecture names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``, or the Hub adapter it names (``timm/<model>``,
    ``hf-transformers/<model_type>``); an unknown name suggests close matches."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, slash, model = name.partition("/")
    if slash and prefix in _FAMILIES:
        return _FAMILIES[prefix](model)
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3) if len(name) < 100 else []
    hint = f"; did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
    known = ", ".join(sorted(_REGISTRY))
    families = "".join(f", {p}/MODEL" for p in sorted(_FAMILIES))
    raise UnknownNameError(
        f"unknown architecture `{clip(name, 100)}`{hint} (known: {known}{families}; "
        "or give module:function, such as torchvision.models:resnet18 for torchvision's)",
        name=name,
    )


def resolve_config(name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full config of ``name`` (defaults filled in) as a JSON-ready dict."""
    if ":" in name:
        return dict(config or {})
    resolved: dict[str, Any] = _jsonable(
        dataclasses.asdict(_make_config(get_architecture(name), config or {}))
    )
    return resolved


def build_model(
    name: str,
    config: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build the architecture ``name`` (registered, or ``module:function``) from ``config``.

    With ``device``, the module is made under ``with torch.device(device)``:
    ``device="meta"`` gives its structure (shapes, dtypes) with no memory
    for its weights. A registered architecture is made on the meta device
    first and refused (:class:`~canon.errors.ConfigError`) if it would hold
    more than :data:`~canon._limits.MAX_PARAMS` numbers.
    """
    if ":" in name:
        return _build_user(name, dict(config or {}), device)
    arch = get_architecture(name)
    made = _make_config(arch, config or {})
    with torch.device("meta"):
        skeleton = _call(arch, made)
    numbers = _numel(skeleton)
    if numbers > MAX_PARAMS:
        raise ConfigError(
            f"architecture `{name}` with this config holds {numbers:,} numbers; canon "
            f"builds at most {MAX_PARAMS:,}: make `hidden`, channels or the input smaller"
        )
    if device is not None and _device(device).type == "meta":
        return skeleton
    if device is None:
        return _call(arch, made)
    with _device(device):
        return _call(arch, made)


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"`device` {clip(repr(device), 100)} is not a torch device: {exc}"
        ) from None


def _call(arch: Architecture, config: Any) -> nn.Module:
    """``arch.factory(config)``; torch's own complaints about sizes become a ConfigError."""
    try:
        return arch.factory(config)
    except CanonError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"architecture `{arch.name}` cannot be built from this config: {clip(str(exc), 200)}"
        ) from exc


def _numel(module: nn.Module) -> int:
    """The numbers in ``module``'s parameters and buffers."""
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()])


def _make_config(arch: Architecture, config: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(arch.config_type)}
    unknown = sorted(str(k) for k in set(config) - set(fields))
    if unknown:
        listed = clip(", ".join(f"`{k}`" for k in unknown), 200)
        raise ConfigError(
            f"unknown config key(s) {listed} for architecture "
            f"`{arch.name}`; valid keys: {', '.join(fields)}"
        )
    hints = _hints(arch.config_type)
    values = {k: _coerce(arch.name, k, v, hints.get(k)) for k, v in config.items()}
    try:
        return arch.config_type(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config for architecture `{arch.name}`: {exc}") from exc


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(config_type: type[Any]) -> dict[str, Any]:
    """The type hints of a config dataclass's fields (``Annotated`` kept), computed once."""
    if config_type not in _HINTS:
        _HINTS[config_type] = typing.get_type_hints(config_type, include_extras=True)
    return _HINTS[config_type]


class CheckedConfig:
    """Base of config dataclasses whose fields are checked against their hints when made.

    A field given as a list becomes a tuple; a value that does not fit its
    hint raises :class:`~canon.errors.ConfigError` naming the class and field.
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _coerce(type(self).__name__, f.name, getattr(self, f.name), hints.get(f.name))
            object.__setattr__(self, f.name, value)


def _coerce(arch: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` of config ``key``; JSON lists become tuples."""
    try:
        return _check(value, hint)
    except _Mismatch as bad:
        item = f" ({bad.where}: {_show(bad.value, 60)})" if bad.where else ""
        raise ConfigError(
            f"config `{key}` of `{arch}` must be {_describe(hint)}, got {_show(value)}{item}"
        ) from None


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a config number, as in ``Annotated[int, Range(1, MAX_DIM)]``."""

    low: float
    high: float

    def describe(self, noun: str, plural: bool) -> str:
        """``noun`` ("integer", "numbers") with the bounds, with an article if single."""
        low, high = _number(self.low), _number(self.high)
        text = f"{noun} from {low} to {high}"
        return text if plural else f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


#: A size (units in a layer, channels, an input side, a kernel): an integer in 1..MAX_DIM.
Size = Annotated[int, Range(1, MAX_DIM)]
#: A count that may be zero (padding): an integer in 0..MAX_DIM.
Count = Annotated[int, Range(0, MAX_DIM)]


class _Mismatch(Exception):
    """A value that does not fit a hint; ``where`` names the list item at fault, if any."""

    def __init__(self, value: Any = None, where: str = "") -> None:
        super().__init__(where)
        self.value = value
        self.where = where


def _check(value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (lists as tuples), else :class:`_Mismatch`.

    Understood: ``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal``,
    unions, ``tuple[X, ...]`` and fixed tuples (at most :data:`MAX_ITEMS`
    items), and ``Annotated[X, Range(...)]``; any other hint lets the value
    through for the factory to check.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value = _check(value, args[0])
        for bound in args[1:]:
            if isinstance(bound, Range) and not bound.low <= value <= bound.high:
                raise _Mismatch()
        return value
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return _check(value, arm)
            except _Mismatch:
                continue
        raise _Mismatch()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch()
        if len(value) > MAX_ITEMS:
            raise _Mismatch(len(value), "its length")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise _Mismatch()
        checked = []
        for i, (item, item_hint) in enumerate(zip(value, items, strict=True)):
            try:
                checked.append(_check(item, item_hint))
            except _Mismatch:
                raise _Mismatch(item, f"item {i}") from None
        return tuple(checked)
    if origin is Literal:
        if any(type(value) is type(c) and value == c for c in args):
            return value
        raise _Mismatch()
    fits = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ),
        bool: lambda v: isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        type(None): lambda v: v is None,
    }.get(hint)
    if fits is not None and not fits(value):
        raise _Mismatch()
    return value


_NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
    type(None): ("null", "nulls"),
}


def _describe(hint: Any, plural: bool = False) -> str:
    """What ``hint`` allows, in words ("a list of positive integers up to 1048576")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        noun = _describe(args[0], plural)
        ranges = [a for a in args[1:] if isinstance(a, Range)]
        if not ranges:
            return noun
        return ranges[0].describe(noun.removeprefix("an ").removeprefix("a "), plural)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return ("one of " if len(args) > 1 else "") + ", ".join(_show(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            inner, count = args[0], f"at most {MAX_ITEMS} "
        elif len(set(args)) == 1:
            inner, count = args[0], f"{len(args)} "
        else:
            return "a list of " + ", then ".join(_describe(a) for a in args)
        if typing.get_origin(inner) in (Union, types.UnionType, Literal):
            return f"a list of {count}items, each {_describe(inner)}"
        return f"a list of {count}{_describe(inner, plural=True)}"
    if hint in _NOUNS:
        return _NOUNS[hint][plural]
    return f"a {getattr(hint, '__name__', hint)}"


def _show(value: Any, limit: int = 100) -> str:
    """``value`` as JSON (or repr), clipped for an error message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _check_input_shape(value: Any, name: str) -> tuple[int, ...]:
    """``value`` as the shape of one input sample of user architecture ``name``: 1 to
    :data:`MAX_INPUT_RANK` integers from 1 to :data:`MAX_INPUT_SIDE`, at most
    :data:`MAX_INPUT_NUMBERS` numbers; else a one-line :class:`~canon.errors.ConfigError`."""
    where = f"of `{clip(name, 80)}` (--input-shape, or `{INPUT_SHAPE}` in its config)"
    if (
        not isinstance(value, (list, tuple))
        or not 1 <= len(value) <= MAX_INPUT_RANK
        or not all(
            isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_INPUT_SIDE
            for side in value
        )
    ):
        raise ConfigError(
            f"the input shape {where} must be 1 to {MAX_INPUT_RANK} integers from 1 to "
            f"{MAX_INPUT_SIDE}, one sample without the batch axis, such as 3,32,32; "
            f"got {_show(value)}"
        )
    shape = tuple(int(side) for side in value)
    if math.prod(shape) > MAX_INPUT_NUMBERS:
        raise ConfigError(
            f"the input shape {list(shape)} {where} holds {math.prod(shape):,} numbers per "
            f"sample; canon takes at most {MAX_INPUT_NUMBERS:,}"
        )
    return shape


def _recorded_shape(name: str, value: Any, passed: bool) -> tuple[int, ...] | None:
    """The input shape recorded under :data:`INPUT_SHAPE` in the config of user architecture
    ``name``, checked. A value that is no list is left to a function that takes
    ``input_shape`` (None here: the module is traced as it says)."""
    if passed and not isinstance(value, (list, tuple)):
        return None
    return _check_input_shape(value, name)


def _takes(factory: Callable[..., Any], key: str) -> bool:
    """Whether ``factory`` names the keyword argument ``key`` among its parameters. A
    ``**kwargs`` alone does not count: factories such as torchvision's ``resnet18`` pass
    their keywords on to a class that refuses ones it does not know, and a shape not
    passed is set on the built module instead."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == key and p.kind is not inspect.Parameter.POSITIONAL_ONLY for p in params)


def _import_user(module_name: str, name: str) -> types.ModuleType:
    """Import a user architecture's module as ``python -m`` would: from the Python path, else
    from the current folder (put on ``sys.path`` for this import only)."""

    def failed(exc: BaseException) -> ConfigError:
        return ConfigError(
            f"cannot import module `{clip(module_name, 100)}` for `{clip(name, 100)}`: "
            f"{type(exc).__name__}: {clip(str(exc), 200)}"
        )

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or not (module_name + ".").startswith(missing + "."):
            raise failed(exc) from exc  # the module exists; something it imports does not
        first = exc
    except Exception as exc:  # whatever the module raises as it runs
        raise failed(exc) from exc
    top = module_name.partition(".")[0]
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    on_path = {os.path.realpath(p or os.curdir) for p in sys.path if isinstance(p, str)}
    holds = (
        bool(here)
        and top.isidentifier()
        and (
            os.path.isfile(os.path.join(here, f"{top}.py"))
            or os.path.isdir(os.path.join(here, top))
        )
    )
    if holds and os.path.realpath(here) in on_path:
        raise failed(first) from first  # it is there, and still not found: say why
    if not holds:
        folder = f" ({clip(here, 120)})" if here else ""
        raise ConfigError(
            f"cannot import module `{clip(module_name, 100)}` for `{clip(name, 100)}`: it is "
            f"not on the Python path, nor `{clip(top, 100)}.py` in the current folder{folder}; "
            f"run canon from the folder that holds {clip(top, 100)}.py, or put that folder "
            "on PYTHONPATH (PYTHONPATH=/path/to/folder canon ...)"
        ) from first
    sys.path.insert(0, here)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises as it runs
        raise failed(exc) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(here)


def _found_in_submodules(module: types.ModuleType, module_name: str, attr: str) -> str:
    """A hint naming the module's submodules (already imported) that do have a callable
    ``attr``, such as torchvision.models for ``torchvision:resnet18``; else ''."""
    found = sorted(
        f"{module_name}.{name}:{attr}"
        for name, sub in vars(module).items()
        if isinstance(sub, types.ModuleType)
        and getattr(sub, "__name__", "") == f"{module.__name__}.{name}"
        and callable(getattr(sub, attr, None))
    )
    return f"; did you mean `{clip(found[0], 200)}`?" if found else ""


def _build_user(
    name: str, config: dict[str, Any], device: str | torch.device | None = None
) -> nn.Module:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"user architecture `{clip(name, 200)}` must be written module:function")
    module = _import_user(module_name, name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(
            f"module `{clip(module_name, 100)}` has no callable `{clip(attr, 100)}`"
            + _found_in_submodules(module, module_name, attr)
        )
    shape: tuple[int, ...] | None = None
    if INPUT_SHAPE in config:
        passed = _takes(factory, INPUT_SHAPE)
        shape = _recorded_shape(name, config[INPUT_SHAPE], passed)
        if not passed:
            config = {k: v for k, v in config.items() if k != INPUT_SHAPE}
    place = _device(device) if device is not None else contextlib.nullcontext()
    try:
        with place:
            model = factory(**config)
    except Exception as exc:  # a user's code may raise anything: one line naming it
        raise ConfigError(
            f"user architecture `{clip(name, 80)}` failed: {type(exc).__name__}: "
            f"{clip(str(exc), 120)}; give the keyword arguments it takes as the config"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"`{clip(name, 200)}` returned {type(model).__name__}, not an nn.Module")
    if shape is not None:
        try:
            setattr(model, INPUT_SHAPE, shape)  # read by canon's tracer (spec_from_module)
        except (AttributeError, TypeError) as exc:
            raise ConfigError(
                f"`{clip(name, 200)}` made a module whose `input_shape` cannot be set: {exc}"
            ) from None
    return model
