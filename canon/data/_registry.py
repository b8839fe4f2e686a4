"""The dataset registry: named loaders, spec parsing and option validation.

A loader is a function returning a normalized :class:`Dataset`. Its keyword-only
parameters (each with a default) are its options. A loader that reads files takes a
first positional parameter named ``path``; specs then carry it after a colon
(``"mnist:/data/mnist"``), or it is passed as the option ``path=``.

On top of a loader's own options, :func:`load_dataset` accepts these on every dataset:
``limit_train``, ``limit_test`` (seeded subsets, see :func:`canon.data.subset`),
``limit_seed``, ``adv``, ``adv_zero_fraction`` and ``adv_seed`` (the ADV variant, see
:func:`canon.data.adversarial`).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from canon._pins import PIN, check_pin, content_digest, split_pin
from canon.data._checks import check_bool, check_fraction, check_int, check_optional_int
from canon.data._dataset import Dataset
from canon.data._transforms import adversarial, subset
from canon.errors import ConfigError, DatasetError, DuplicateNameError, UnknownNameError

__all__ = [
    "COMMON_OPTIONS",
    "dataset_options",
    "list_datasets",
    "load_dataset",
    "pin_dataset",
    "register_dataset",
]

LoaderT = TypeVar("LoaderT", bound=Callable[..., Dataset])

#: Options every dataset accepts, with their defaults (read-only).
COMMON_OPTIONS: Mapping[str, object] = MappingProxyType(
    {
        "limit_train": None,
        "limit_test": None,
        "limit_seed": 0,
        "adv": False,
        "adv_zero_fraction": 0.1,
        "adv_seed": 0,
    }
)


@dataclass(frozen=True)
class _Entry:
    name: str
    loader: Callable[..., Dataset]
    options: dict[str, object]
    takes_path: bool
    path_required: bool


_REGISTRY: dict[str, _Entry] = {}


def _inspect_loader(name: str, loader: Callable[..., Dataset]) -> _Entry:
    params = list(inspect.signature(loader).parameters.values())
    takes_path = (
        bool(params)
        and params[0].name == "path"
        and params[0].kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
    )
    path_required = takes_path and params[0].default is inspect.Parameter.empty
    options: dict[str, object] = {}
    for param in params[1:] if takes_path else params:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ConfigError(
                f"dataset loader {name!r}: parameter {param.name!r} must be keyword-only "
                "(only a first parameter named 'path' may be positional)"
            )
        if param.default is inspect.Parameter.empty:
            raise ConfigError(f"dataset loader {name!r}: option {param.name!r} needs a default")
        if param.name in COMMON_OPTIONS:
            raise ConfigError(
                f"dataset loader {name!r}: option {param.name!r} is reserved "
                f"(every dataset accepts {', '.join(COMMON_OPTIONS)})"
            )
        options[param.name] = param.default
    return _Entry(name, loader, options, takes_path, path_required)


def register_dataset(name: str) -> Callable[[LoaderT], LoaderT]:
    """Decorator registering a loader under ``name`` (lower-cased) for :func:`load_dataset`.

    Raises DuplicateNameError if the name is taken, ConfigError if the name or the
    loader's signature is not usable (see the module docstring for the signature rules).
    """
    key = name.strip().lower()
    if not key or ":" in key or any(c.isspace() for c in key):
        raise ConfigError(f"dataset name {name!r} must be non-empty, without ':' or spaces")

    def decorate(loader: LoaderT) -> LoaderT:
        if key in _REGISTRY:
            raise DuplicateNameError(f"dataset {key!r} is already registered")
        _REGISTRY[key] = _inspect_loader(key, loader)
        return loader

    return decorate


def list_datasets(pattern: str = "*") -> list[str]:
    """Return the sorted registered dataset names matching the fnmatch ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern.lower()))


def _lookup(name: str) -> _Entry:
    key = name.strip().lower()
    entry = _REGISTRY.get(key)
    if entry is not None:
        return entry
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownNameError(
        f"unknown dataset {name!r}; {hint}known datasets: {', '.join(sorted(_REGISTRY))}",
        name=name,
    )


def dataset_options(name: str) -> dict[str, object]:
    """Return every option ``name`` accepts with its default (its own, then the common ones)."""
    entry = _lookup(name)
    options = dict(entry.options)
    if entry.takes_path:
        options = {"path": None, **options}
    options.update(COMMON_OPTIONS)
    return options


def _split_spec(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str):
        raise ConfigError(
            f"dataset spec must be a string like 'digits' or 'npz:PATH', got {spec!r}"
        )
    name, colon, path = spec.partition(":")
    if colon and not path.strip():
        raise ConfigError(f"dataset spec {spec!r} has an empty path after ':'")
    return name, (path if colon else None)


def _reject_unknown(entry: _Entry, options: dict[str, Any]) -> None:
    valid = sorted(dataset_options(entry.name))
    unknown = sorted(set(options) - set(valid))
    if not unknown:
        return
    hints = []
    for option in unknown:
        close = difflib.get_close_matches(option, valid, n=1, cutoff=0.6)
        hints.append(f"{option!r} (did you mean {close[0]!r}?)" if close else repr(option))
    raise ConfigError(
        f"unknown option(s) {', '.join(hints)} for dataset {entry.name!r}; "
        f"valid options: {', '.join(valid)}"
    )


def pin_dataset(spec: str) -> str:
    """``spec`` as a zoo records it (:mod:`canon._pins`): a dataset read from a path
    with the path made absolute and, where the path exists here, the sha256 of its
    content appended (``npz:/abs/PATH#sha256=HEX``); other specs as they are. A spec
    pinned already is pinned again to the content there now."""
    name, path = _split_spec(spec)
    if path is None:
        return spec
    try:
        takes_path = _lookup(name).takes_path
    except UnknownNameError:
        return spec  # load_dataset says so when it is used
    if not takes_path:
        return spec
    target = Path(os.path.expanduser(split_pin(path)[0])).absolute()
    if not target.exists():
        return f"{name}:{target}"
    return f"{name}:{target}{PIN}{content_digest(target)}"


def load_dataset(spec: str, **options: Any) -> Dataset:
    """Build the dataset named by ``spec`` (``"NAME"`` or ``"NAME:PATH"``) with ``options``.

    Applies the dataset's loader, then the common options: a seeded subset
    (``limit_train``/``limit_test``/``limit_seed``) and, with ``adv=True``, the ADV
    variant (``adv_zero_fraction``, ``adv_seed``). The same spec and options always
    give bitwise-identical tensors. Nothing is ever downloaded. A pinned path
    (``npz:PATH#sha256=HEX``, :func:`pin_dataset`) is read only while its content
    hashes to the pin.
    """
    name, path = _split_spec(spec)
    pinned = None
    if path is not None:
        path, pinned = split_pin(path)
    entry = _lookup(name)
    _reject_unknown(entry, options)
    where = entry.name
    if "path" in options:
        if path is not None:
            raise ConfigError(f"{where}: give the path either in the spec or as path=, not both")
        raw = options.pop("path")
        if raw is not None and not isinstance(raw, (str, os.PathLike)):
            raise ConfigError(f"{where}: option path must be a str or path, got {raw!r}")
        path = None if raw is None else os.fspath(raw)
    if path is not None and not entry.takes_path:
        raise ConfigError(f"dataset {where!r} takes no path, but spec {spec!r} gives one")
    if path is None and entry.path_required:
        raise ConfigError(
            f"dataset {where!r} needs the folder it is in: name it {where}:PATH (--dataset "
            f"{where}:PATH; Python: load_dataset('{where}:PATH'))"
        )
    common = {key: options.pop(key, default) for key, default in COMMON_OPTIONS.items()}
    limit_train = check_optional_int(where, "limit_train", common["limit_train"], minimum=1)
    limit_test = check_optional_int(where, "limit_test", common["limit_test"], minimum=1)
    limit_seed = check_int(where, "limit_seed", common["limit_seed"], minimum=0)
    adv = check_bool(where, "adv", common["adv"])
    adv_zero_fraction = check_fraction(
        where, "adv_zero_fraction", common["adv_zero_fraction"], allow_zero=True, allow_one=True
    )
    adv_seed = check_int(where, "adv_seed", common["adv_seed"], minimum=0)

    if path is not None and pinned is not None:
        check_pin(where, path, pinned)
    dataset = entry.loader(path, **options) if entry.takes_path else entry.loader(**options)
    if not isinstance(dataset, Dataset):
        raise DatasetError(
            f"dataset loader {where!r} returned {type(dataset).__name__}, not a Dataset"
        )
    if limit_train is not None or limit_test is not None:
        dataset = subset(dataset, limit_train, limit_test, seed=limit_seed)
    if adv:
        dataset = adversarial(dataset, zero_fraction=adv_zero_fraction, seed=adv_seed)
    return dataset
