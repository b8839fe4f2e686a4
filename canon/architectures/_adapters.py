"""Adapters: architectures named by a Hub repository's ``config.json``.

A model repository on the Hub describes its network in ``config.json``: a
transformers config names its ``model_type`` (and the class, under
``architectures``), a timm config its ``architecture`` (``resnet18.a1_in1k``).
Each library and model type is an architecture of its own, named
``hf-transformers/<model_type>`` or ``timm/<model>``. Such names hold a ``/``
and never a ``:``, so they cannot be mistaken for a ``module:function`` name
(code): a manifest pulled from the Hub may name them, and building one runs
only the library's own code, never a repository's (``auto_map`` is dropped).

Their config is one key, ``config``: the repository's ``config.json`` object,
checked before anything is built (at most :data:`MAX_CONFIG_BYTES` of JSON,
:data:`~canon._limits.MAX_DEPTH` levels, every size at most
:data:`~canon._limits.MAX_DIM`); the registry then builds the network on the
meta device and refuses more than :data:`~canon._limits.MAX_PARAMS` numbers
before any memory is allocated. transformers and timm are imported only when
such a network is built (``pip install 'canon[transformers]'``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from canon._limits import MAX_DEPTH, MAX_DIM, clip, json_depth
from canon.architectures._experts import (
    ExpertPiece,
    Stacked,
    assembled,
    canon_shape,
    in_canon_layout,
    piece_shape,
    stack_library_experts,
)
from canon.architectures._registry import (
    INPUT_SHAPE,
    Architecture,
    _check_input_shape,
    register_family,
)
from canon.core import tied_names
from canon.errors import CanonError, CheckpointFormatError, ConfigError, UnknownNameError

__all__ = [
    "MAX_CONFIG_BYTES",
    "TIMM",
    "TRANSFORMERS",
    "HubConfig",
    "LibraryLayout",
    "adapter_name",
    "check_hub_config",
    "library_layout",
]

#: The family prefixes of the adapters' names.
TRANSFORMERS = "hf-transformers"
TIMM = "timm"
#: The largest config.json an adapter takes (real ones are a few KiB).
MAX_CONFIG_BYTES = 1 << 20
#: The pip extra that installs both libraries.
EXTRA = "pip install 'canon[transformers]'"

# A transformers model_type ("gpt2", "xlm-roberta", "qwen2_moe"); a timm model without its
# pretrained tag ("vit_tiny_patch16_224"). Neither may hold ':' (code) nor '/' (paths).
_MODEL_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TIMM_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,127}")
# Keys whose integers are sizes (units, layers, heads, positions, channels, classes).
_SIZE_KEY_RE = re.compile(
    r"(?:^|_)(?:size|sizes|dim|dims|features|channels|chans|layer|layers|head|heads|embd|embed|"
    r"embeddings|positions|depth|width|inner|experts|classes|labels|ctx)$|^(?:n|num)_"
)
# Arguments of timm.create_model that read files or download weights: never from a config.
_TIMM_REFUSED = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}
)


@dataclass(frozen=True)
class HubConfig:
    """The config of an adapter: a Hub repository's ``config.json`` object, checked
    (:func:`check_hub_config`) when made."""

    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_hub_config(self.config)


def check_hub_config(config: object, where: str = "config.json") -> dict[str, Any]:
    """``config`` if it is a JSON object within canon's bounds, else a one-line
    :class:`~canon.errors.ConfigError` naming the key at fault.

    At most :data:`MAX_CONFIG_BYTES` of JSON and :data:`~canon._limits.MAX_DEPTH`
    levels; every integer under a size key (``hidden_size``, ``n_layer``,
    ``num_heads``, ``img_size``, ...) from 0 to :data:`~canon._limits.MAX_DIM`.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(config).__name__}")
    try:
        text = json.dumps(config, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{where} is not plain JSON: {clip(str(exc), 120)}") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(text)} bytes long; canon reads at most 1 MiB")
    if json_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    _check_sizes(config, where)
    return config


def _check_sizes(node: object, where: str, key: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _check_sizes(v, where, str(k))
    elif isinstance(node, list):
        for v in node:
            _check_sizes(v, where, key)
    elif (
        isinstance(node, int)
        and not isinstance(node, bool)
        and _SIZE_KEY_RE.search(key)
        and not 0 <= node <= MAX_DIM
    ):
        raise ConfigError(
            f"{where}: `{clip(key, 80)}` is {clip(str(node), 40)}; canon builds sizes from 0 "
            f"to {MAX_DIM}"
        )


def adapter_name(config: Mapping[str, Any]) -> str:
    """The adapter a ``config.json`` object names: ``hf-transformers/<model_type>`` for a
    transformers config, ``timm/<model>`` for a timm one; else a ConfigError."""
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        return f"{TRANSFORMERS}/{_model_type(model_type)}"
    architecture = config.get("architecture")
    if isinstance(architecture, str):
        return f"{TIMM}/{_timm_model(architecture)}"
    raise ConfigError(
        "config.json names no `model_type` (transformers) nor `architecture` (timm); canon "
        "builds models of these two libraries from the Hub"
    )


def _model_type(text: str) -> str:
    if not _MODEL_TYPE_RE.fullmatch(text):
        raise UnknownNameError(
            f"`{clip(text, 80)}` is not a transformers model type (lower-case letters, "
            "digits, `_` and `-`)",
            name=text,
        )
    return text


def _timm_model(text: str) -> str:
    """A timm model name with its pretrained tag (``.a1_in1k``) taken off, checked."""
    base = text.split(".", 1)[0]
    if not _TIMM_MODEL_RE.fullmatch(base):
        raise UnknownNameError(
            f"`{clip(text, 80)}` is not a timm model name (lower-case letters, digits and `_`, "
            "then an optional .tag)",
            name=text,
        )
    return base


def _library(name: str, architecture: str) -> ModuleType:
    """Import ``name`` (transformers or timm) for ``architecture``; missing: how to install."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or whatever a broken install raises as it runs
        raise ConfigError(
            f"architecture `{architecture}` needs {name}, which does not import here "
            f"({type(exc).__name__}: {clip(str(exc), 120)}); {EXTRA}"
        ) from None


def _built(architecture: str, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()``; whatever the library raises on a config it refuses becomes a ConfigError."""
    try:
        return make()
    except CanonError:
        raise
    except Exception as exc:  # library code raises many kinds (ValueError, AssertionError, ...)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"architecture `{architecture}` cannot be built from this config.json: "
            f"{type(exc).__name__}: {clip(first, 200)}"
        ) from None


def _transformers_model(model_type: str, made: HubConfig) -> nn.Module:
    """A transformers model of ``model_type`` from its config, weights not loaded: the class
    ``architectures`` names when transformers maps it to this model type, else ``AutoModel``.
    Only transformers' own classes are used; a repository's code (``auto_map``) never is."""
    architecture = f"{TRANSFORMERS}/{model_type}"
    raw = made.config
    if raw.get("model_type") != model_type:
        raise ConfigError(
            f"architecture `{architecture}` needs a config with model_type `{model_type}`, got "
            f"{clip(json.dumps(raw.get('model_type')), 80)}"
        )
    transformers = _library("transformers", architecture)
    from transformers.models.auto import modeling_auto

    values = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map")}
    config = _built(architecture, lambda: transformers.AutoConfig.for_model(model_type, **values))
    if hasattr(config, "use_cache"):
        setattr(config, "use_cache", False)  # noqa: B010  # whole sequences: no key/value cache
    names = raw.get("architectures")
    wanted = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    known: set[str] = set()
    for key, table in vars(modeling_auto).items():
        if key.startswith("MODEL") and key.endswith("_MAPPING_NAMES") and model_type in table:
            found = table[model_type]
            known.update(found if isinstance(found, (tuple, list)) else (found,))
    if wanted is None:
        return _in_canon_layout(
            _built(
                architecture,
                lambda: transformers.AutoModel.from_config(
                    config, trust_remote_code=False, dtype=torch.float32
                ),
            ),
            config,
        )
    if wanted not in known:
        listed = ", ".join(sorted(n for n in known if isinstance(n, str))[:8]) or "none"
        raise ConfigError(
            f"config.json names the class `{clip(wanted, 80)}`, which transformers does not "
            f"have for model type `{model_type}` (it has: {listed})"
        )
    # the name comes from transformers' own tables, so the attribute is one of its classes
    cls = getattr(transformers, wanted)
    return _in_canon_layout(
        _built(architecture, lambda: cls._from_config(config, dtype=torch.float32)), config
    )


#: The attribute of a built transformers model that lists the weights its library's files
#: hold transposed (:func:`library_layout`).
_TRANSPOSED = "canon_library_transposed"
#: The attribute that lists its experts' weights, stacked in 3-D in the library's files.
_STACKED = "canon_library_stacked"
#: The tokens in the input canon traces a language model with.
_TRACE_TOKENS = 8


#: transformers' layers that are ``nn.Linear`` under a forward of their own, and whether
#: they hold the weight transposed: GPT-2's ``Conv1D`` (``x @ W + b``, W of shape
#: (in, out)) and Falcon's ``FalconLinear`` (``x @ W.T + b``: nn.Linear's own arithmetic).
_LINEAR_LAYERS = {"Conv1D": True, "FalconLinear": False}


def _in_canon_layout(net: nn.Module, config: Any) -> nn.Module:
    """``net`` with every layer of :data:`_LINEAR_LAYERS` replaced by the ``nn.Linear`` it
    is, every experts module by canon's (:mod:`canon.architectures._experts`), and the
    shape of the input canon traces it with. The weights keep their names; the library's
    files hold the transposed ones (out, in) swapped and the experts' weights in 3-D,
    which :func:`library_layout` lists."""
    transposed = []
    for path, module in list(net.named_modules()):
        for name, child in list(module.named_children()):
            kind = type(child).__name__
            if kind not in _LINEAR_LAYERS or not type(child).__module__.startswith("transformers."):
                continue
            flip = _LINEAR_LAYERS[kind]
            weight, bias = child.weight, getattr(child, "bias", None)
            out_features, in_features = weight.shape[::-1] if flip else weight.shape
            layer = nn.Linear(
                in_features, out_features, bias=bias is not None, device=weight.device,
                dtype=weight.dtype,
            )  # fmt: skip
            with torch.no_grad():
                layer.weight.copy_(weight.t() if flip else weight)
                if bias is not None:
                    layer.bias.copy_(bias)
            setattr(module, name, layer)
            if flip:
                transposed.append(f"{path}.{name}.weight" if path else f"{name}.weight")
    setattr(net, _TRANSPOSED, tuple(transposed))
    setattr(net, _STACKED, stack_library_experts(net))
    _record_masked_branch(net, config)
    shape = _traced_input(net, config)
    if shape is not None:
        setattr(net, INPUT_SHAPE, shape)  # read by canon's tracer (spec_from_module)
    return net


def _record_masked_branch(net: nn.Module, config: Any) -> None:
    """Give each of ``net``'s patch embeddings that take a ``bool_masked_pos`` (DINOv2's,
    BEiT's: masked patches replaced by a ``mask_token``) a mask of none of the patches
    when called without one: the same outputs, bit for bit, and a graph that reads the
    mask token where it is used (canon records the graph of one run, and refuses a
    parameter the run never read)."""
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, int) or patch < 1:
        return
    for module in net.modules():
        takes = "bool_masked_pos" in inspect.signature(module.forward).parameters
        if not takes or not isinstance(getattr(module, "mask_token", None), nn.Parameter):
            continue

        def none_masked(
            _: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            pixels = args[0] if args else kwargs.get("pixel_values")
            if kwargs.get("bool_masked_pos") is not None or not isinstance(pixels, Tensor):
                return None
            count = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
            mask = torch.zeros(pixels.shape[0], count, dtype=torch.bool, device=pixels.device)
            return args, {**kwargs, "bool_masked_pos": mask}

        module.register_forward_pre_hook(none_masked, with_kwargs=True)


def _traced_input(net: nn.Module, config: Any) -> tuple[int, ...] | None:
    """One input sample canon traces a transformers model with: a few token ids, or an
    image of the config's size (one side, or height and width); None when the config
    does not tell."""
    main = getattr(net, "main_input_name", None)
    if main == "input_ids":
        positions = [
            getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")
        ]
        limits = [p for p in positions if isinstance(p, int) and p > 0]
        return (min([_TRACE_TOKENS, *limits]),)
    # an image model's own config, or a vision tower's (SigLIP's and CLIP's classifiers)
    vision = getattr(config, "vision_config", None)
    held = config if getattr(config, "image_size", None) is not None else vision
    size, channels = getattr(held, "image_size", None), getattr(held, "num_channels", 3)
    sides = (size, size) if isinstance(size, int) else size
    sides = tuple(sides) if isinstance(sides, (list, tuple)) else ()
    known = len(sides) == 2 and all(isinstance(n, int) for n in sides)
    if main == "pixel_values" and known and isinstance(channels, int):
        return (channels, int(sides[0]), int(sides[1]))
    return None


@dataclass(frozen=True)
class LibraryLayout:
    """How a library's checkpoint files differ from canon's layout of the same network:
    ``transposed`` weights (stored (in, out)), ``tied`` names (another name's tensor: a
    language model's output layer that is its token embedding, which files may omit);
    ``prefix``, the base model's attribute (``transformer.``) that a file saved from the
    base model alone leaves off every name; ``ignored``, patterns of names the library
    itself skips when it loads a file (buffers of older versions, such as GPT-2's
    ``attn.bias`` causal masks; searched with ``re.search``); ``renamings``, the
    library's own renamings of a file's names (transformers' ``WeightRenaming``s:
    GPT-NeoX's ``embed_out`` is its ``lm_head``); ``converters``, its conversions that
    build a tensor from others (transformers' ``WeightConverter``s: one tensor per
    expert), which canon does not apply; ``stacked``, the experts' weights the files hold
    in 3-D (:data:`~canon.architectures._experts.Stacked`), which canon holds in 2-D."""

    transposed: frozenset[str] = frozenset()
    tied: frozenset[str] = frozenset()
    prefix: str = ""
    ignored: tuple[str, ...] = ()
    renamings: tuple[Any, ...] = ()
    converters: tuple[Any, ...] = ()
    stacked: tuple[tuple[str, Stacked, int], ...] = ()

    def name_in(self, name: str, expected: Mapping[str, object]) -> str | None:
        """The name a file's tensor ``name`` has in canon's layout (whose tensors are
        ``expected``), or None for an unexpected name the library ignores (as the library
        does, the patterns apply to unexpected names only: `attn.bias` is found in
        `c_attn.bias` too). A name the library would convert is refused."""
        if name in expected:
            return name
        renamed = _renamed(name, self.renamings)
        for candidate in (renamed, f"{self.prefix}{renamed}" if self.prefix else renamed):
            if candidate in expected:
                return candidate
        if any(re.search(pattern, name) for pattern in self.ignored):
            return None
        if self.converters and _renamed(name, (), self.converters) != name:
            raise CheckpointFormatError(
                f"tensor `{clip(name, 120)}` of this checkpoint is converted by the library "
                "when it loads (built from several tensors: stacked experts, fused "
                "projections), which canon does not do; save the model's own state dict "
                "(`model.state_dict()`) with safetensors and add that file"
            )
        return name

    def _stacked(self, name: str) -> tuple[Stacked, int] | None:
        """How the files hold canon's stacked weight ``name`` and its number of experts."""
        return next(((how, e) for n, how, e in self.stacked if n == name), None)

    def shape_in_canon(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape canon holds a file's tensor of ``shape`` in (canon's ``name``)."""
        stacked = self._stacked(name)
        if stacked is not None:
            return canon_shape(stacked[0], shape)
        return tuple(reversed(shape)) if name in self.transposed and len(shape) == 2 else shape

    def stacked_in_file(self, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
        """Whether a tensor ``name`` of ``shape``, where canon holds ``expected``, is one of
        the experts' weights as the library holds it (``model.state_dict()`` of a
        transformers mixture: 3-D): what :meth:`in_canon` turns into canon's."""
        stacked = self._stacked(name)
        return (
            stacked is not None
            and tuple(shape) != tuple(expected)
            and canon_shape(stacked[0], tuple(shape)) == tuple(expected)
        )

    def in_canon(self, name: str, t: Tensor) -> Tensor:
        """A file's tensor ``t`` as canon holds it (canon's ``name``)."""
        stacked = self._stacked(name)
        if stacked is not None and t.ndim == (2 if stacked[0].endswith("-bias") else 3):
            return in_canon_layout(stacked[0], t)
        return t.t().contiguous() if name in self.transposed and t.ndim == 2 else t

    def experts(self, name: str) -> int:
        """The number of experts of canon's stacked weight ``name`` (0 for another)."""
        stacked = self._stacked(name)
        return 0 if stacked is None else stacked[1]

    def piece_shape(self, piece: ExpertPiece, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape each piece of canon's stacked weight of ``shape`` must have."""
        how, experts = self._stacked(piece.target) or ("in", 1)
        return piece_shape(how, shape, experts, piece.parts)

    def joined(self, target: str, pieces: Mapping[tuple[int, int], Tensor]) -> Tensor:
        """canon's stacked weight ``target`` from all its pieces, by (expert, part)."""
        how, experts = self._stacked(target) or ("in", 1)
        return assembled(how, pieces, experts)

    def piece_of(self, name: str) -> ExpertPiece | None:
        """The part of a stacked experts' weight that a file's tensor ``name`` is: one
        expert's own weight (the Hub's Mixtral: ``experts.3.w1.weight``), which the
        library merges into the stacked one as it loads; None for any other name."""
        stacked = {n: (how, experts) for n, how, experts in self.stacked}
        renamed = _renamed(name, self.renamings)
        for converter in self.converters if stacked else ():
            try:
                target, matched = converter.rename_source_key(renamed)
                patterns = [str(p) for p in converter.source_patterns]
            except (AttributeError, TypeError, ValueError):  # another transformers version
                return None
            if matched is None:
                continue
            target = target if target in stacked else f"{self.prefix}{target}"
            if target not in stacked or matched not in patterns:
                return None
            how, experts = stacked[target]
            found = re.search(re.escape(matched).replace(r"\*", r"(\d+)"), renamed)
            if how not in ("in", "down") or not _merges(converter, len(patterns)) or not found:
                return None
            expert = int(found.group(1))
            if expert >= experts:
                raise CheckpointFormatError(
                    f"tensor `{clip(name, 120)}` is the weight of expert {expert}; the "
                    f"layer has {experts} experts"
                )
            return ExpertPiece(target, expert, patterns.index(matched), len(patterns))
        return None


def _merges(converter: Any, parts: int) -> bool:
    """Whether a transformers converter stacks one weight per expert (and, of ``parts`` >
    1 patterns, joins the parts along the rows): what :meth:`LibraryLayout.piece_of`
    takes apart."""
    ops = [(type(op).__name__, getattr(op, "dim", None)) for op in converter.operations]
    return ops == [("MergeModulelist", 0)] + ([("Concatenate", 1)] if parts > 1 else [])


def _renamed(name: str, renamings: tuple[Any, ...], converters: tuple[Any, ...] = ()) -> str:
    """``name`` after transformers' renamings (each in turn), then the first of its
    converters that matches, as its loader applies them; ``name`` itself where a
    transform's interface is not the one canon knows."""
    try:
        for renaming in renamings:
            name = renaming.rename_source_key(name)[0]
        for converter in converters:
            renamed, matched = converter.rename_source_key(name)
            if matched is not None:
                return str(renamed)
    except (AttributeError, TypeError, ValueError):  # another transformers version
        return name
    return str(name)


def _conversions(model: nn.Module) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """transformers' renamings and converters of a checkpoint's names for ``model`` (none
    for a model of another library, or a transformers version without them)."""
    if not type(model).__module__.startswith("transformers."):
        return (), ()
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:  # an older transformers: its names are the model's own
        return (), ()
    found = get_model_conversion_mapping(model)  # type: ignore[arg-type]
    renamings = tuple(t for t in found if isinstance(t, WeightRenaming))
    return renamings, tuple(t for t in found if not isinstance(t, WeightRenaming))


def library_layout(model: nn.Module) -> LibraryLayout:
    """The :class:`LibraryLayout` of a model an adapter built (tied names only, for any
    other model)."""
    base = getattr(model, "base_model_prefix", "")
    prefix = f"{base}." if isinstance(base, str) and base and hasattr(model, base) else ""
    ignored = {p for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()}
    if any(name.endswith("rotary_emb.inv_freq") for name, _ in model.named_buffers()):
        # older checkpoints hold each layer's rotary frequencies, which transformers now
        # computes once for the model and ignores in a file (as its loader does)
        ignored.add(r"rotary_emb\.inv_freq")
    return LibraryLayout(
        frozenset(getattr(model, _TRANSPOSED, ())),
        frozenset(tied_names(model)),
        prefix,
        tuple(sorted(p for p in ignored if isinstance(p, str))),
        *_conversions(model),
        tuple(getattr(model, _STACKED, ())),
    )


#: Where a timm config sets the shape of one input sample (what canon traces it with).
TIMM_INPUT_SHAPE_AT = ("config", "pretrained_cfg", "input_size")


def _timm_model_of(model: str, made: HubConfig) -> nn.Module:
    """A timm model from a timm ``config.json`` (``architecture``, default ``model``;
    ``num_classes``, ``model_args``, ``pretrained_cfg``), weights not loaded. Its input
    shape is ``pretrained_cfg.input_size`` when given (what canon traces it with)."""
    architecture = f"{TIMM}/{model}"
    raw = made.config
    named = raw.get("architecture", model)
    if not isinstance(named, str) or _timm_model(named) != model:
        raise ConfigError(
            f"architecture `{architecture}` needs a config whose `architecture` is `{model}` "
            f"(with an optional .tag), got {clip(json.dumps(named), 80)}"
        )
    args = raw.get("model_args") or {}
    pretrained = raw.get("pretrained_cfg") or {}
    if not isinstance(args, dict) or not isinstance(pretrained, dict):
        raise ConfigError("config.json: `model_args` and `pretrained_cfg` must be JSON objects")
    refused = sorted(k for k in args if not str(k).isidentifier() or k in _TIMM_REFUSED)
    if refused:
        listed = ", ".join(f"`{clip(k, 40)}`" for k in refused)
        raise ConfigError(
            f"config.json: `model_args` may not set {listed} (canon builds the network and "
            "loads the weights itself)"
        )
    kwargs = dict(args)
    classes = raw.get("num_classes", pretrained.get("num_classes"))
    if classes is not None:
        kwargs.setdefault("num_classes", classes)
    shape = pretrained.get("input_size")
    checked = _check_input_shape(shape, architecture) if shape is not None else None
    timm = _library("timm", architecture)
    if not timm.is_model(model):
        raise ConfigError(f"timm {timm.__version__} has no model `{model}`")
    net = _built(architecture, lambda: timm.create_model(model, pretrained=False, **kwargs))
    if checked is not None:
        setattr(net, INPUT_SHAPE, checked)  # read by canon's tracer (spec_from_module)
    return net


def _family(
    prefix: str,
    check: Callable[[str], str],
    build: Callable[[str, HubConfig], nn.Module],
    what: str,
    input_shape_at: tuple[str, ...] = (),
) -> Callable[[str], Architecture]:
    """The maker of ``prefix/<model>`` architectures for the registry's family hook."""

    @functools.lru_cache(maxsize=256)
    def make(model: str) -> Architecture:
        if check(model) != model:  # a bare name: `timm/resnet18`, not `timm/resnet18.tag`
            raise UnknownNameError(
                f"`{prefix}/{clip(model, 80)}` is not an adapter name; write {prefix}/MODEL",
                name=model,
            )
        return Architecture(
            f"{prefix}/{model}",
            HubConfig,
            functools.partial(build, model),
            f"{what} `{model}` built from a Hub repository's config.json",
            input_shape_at,
        )

    return make


register_family(
    TRANSFORMERS, _family(TRANSFORMERS, _model_type, _transformers_model, "transformers model type")
)
register_family(
    TIMM,
    _family(TIMM, _timm_model, _timm_model_of, "timm model", TIMM_INPUT_SHAPE_AT),
)
