"""Turning what a user adds (a file or a state dict) into checked, serialized weights."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from canon import checkpoint
from canon._limits import clip, loads_json
from canon.architectures import build_model, resolve_config
from canon.checkpoint import load_state, read_header
from canon.core import Spec, check_state, spec_from_module
from canon.core.spec import check_tensors
from canon.core.trace import tensors_of
from canon.errors import CheckpointFormatError, ConfigError
from canon.zoo._records import FORMAT_VERSION, canonical_json, family_key
from canon.zoo._trust import check_trusted

__all__ = ["META_ARCH", "Prepared", "Source", "declared_spec", "prepare", "serialize"]

Source = str | os.PathLike[str] | Mapping[str, Tensor] | nn.Module
META_ARCH = "canon.architecture"
META_CONFIG = "canon.config"
META_FORMAT = "canon.format_version"


@dataclass(frozen=True)
class Prepared:
    """Weights checked against their architecture, serialized as the bytes to store."""

    state: dict[str, Tensor]
    architecture: str
    config: dict[str, Any]
    config_json: str
    family: str
    spec: Spec
    data: bytes


def spec_for(architecture: str, config: Mapping[str, Any]) -> Spec:
    """The structure spec of ``architecture`` built from ``config``.

    The module is built on the meta device: the spec (names, shapes, groups)
    costs no memory, so a config that lies about sizes is caught by comparing
    the spec with a file's header before anything of that size is allocated.
    """
    return spec_from_module(build_model(architecture, config, device="meta"))


def declared_spec(architecture: str, config: Mapping[str, Any]) -> Spec:
    """A spec holding only the tensors (names, shapes, dtypes) the architecture declares,
    read off a module built on the meta device: no memory, and no forward pass (a first
    forward on the meta device loads torch's meta kernels, some 70 MiB). Checking a file's
    header against it costs nothing, whatever sizes the config claims."""
    model = build_model(architecture, config, device="meta")
    return Spec(groups=(), output=None, tensors=tensors_of(model))


def serialize(state: Mapping[str, Tensor], architecture: str, config_json: str) -> bytes:
    """The bytes canon stores: deterministic safetensors carrying the architecture metadata."""
    meta = {META_ARCH: architecture, META_CONFIG: config_json, META_FORMAT: FORMAT_VERSION}
    return checkpoint.serialize(state, meta)


def _from_metadata(meta: Mapping[str, str], where: str) -> tuple[str, dict[str, Any]]:
    if META_ARCH not in meta:
        raise ConfigError(
            f"{where} does not name its architecture (no `{META_ARCH}` metadata); "
            "pass architecture= (and config=)"
        )
    config = loads_json(meta.get(META_CONFIG, "{}"), what=f"{where}: metadata `{META_CONFIG}`")
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: metadata `{META_CONFIG}` must be a JSON object")
    return meta[META_ARCH], config


def _load_pt(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise CheckpointFormatError(
            f"`{clip(str(path))}` holds pickled Python objects (a whole module, or other classes), "
            "which canon never unpickles; save the weights alone: "
            "torch.save(model.state_dict(), path), or safetensors",
            path=str(path),
        ) from None
    except Exception as exc:  # torch raises many kinds for unreadable files
        first = str(exc).strip().split(". ")[0]
        raise CheckpointFormatError(
            f"`{clip(str(path))}` cannot be read as a torch checkpoint ({clip(first, 120)})",
            path=str(path),
        ) from None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointFormatError(
            f"`{path}` must hold a flat dict of tensor names to tensors (a state dict)",
            path=str(path),
        )
    return dict(obj)


def prepare(
    source: Source,
    architecture: str | None,
    config: Mapping[str, Any] | None,
    *,
    trust_code: bool = False,
) -> Prepared:
    """Read ``source``, resolve its architecture and check it; nothing is written.

    ``architecture`` is what the user typed; without it the file's canon
    metadata names it, and a ``module:function`` name read from there is
    refused unless ``trust_code`` (:class:`~canon.errors.UntrustedCodeError`).
    The file's header is checked against the architecture's spec before any
    tensor is loaded.
    """
    header_meta: Mapping[str, str] = {}
    header: checkpoint.Header | None = None
    path: Path | None = None
    state: dict[str, Tensor] | None = None
    if isinstance(source, nn.Module):
        state = dict(source.state_dict())
    elif isinstance(source, Mapping):
        state = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist or is not a file"
            raise CheckpointFormatError(
                f"`{clip(str(path))}` {what}; give a .safetensors or .pt checkpoint file",
                path=str(path),
            )
        if path.suffix in (".pt", ".pth"):
            state = _load_pt(path)
        else:
            header = read_header(path)
            header_meta = header.metadata
    else:
        raise CheckpointFormatError(
            f"cannot add a {type(source).__name__}: give a .safetensors or .pt path, "
            "a state dict or a module"
        )
    where = f"`{path}`" if path is not None else "the state dict"
    if architecture is None:
        if path is None or state is not None:
            raise ConfigError(f"{where} needs architecture= (it carries no canon metadata)")
        architecture, meta_config = _from_metadata(header_meta, where)
        check_trusted(architecture, trusted=trust_code, source=f"the metadata of {where}")
        config = meta_config if config is None else config
    full = resolve_config(architecture, config)
    config_json = canonical_json(full)
    if header is not None:  # a config that lies about sizes costs nothing before this check
        check_tensors(header.tensors, declared_spec(architecture, full), where)
    spec = spec_for(architecture, full)
    if state is None:
        assert path is not None
        state = load_state(path, spec)  # checks the header against the spec first
    check_state(state, spec, where)
    data = serialize(state, architecture, config_json)
    return Prepared(
        state=state,
        architecture=architecture,
        config=json.loads(config_json),
        config_json=config_json,
        family=family_key(architecture, config_json),
        spec=spec,
        data=data,
    )
