"""What the walk over a traced graph (:mod:`canon.core.unit_spaces`) knows about each
tensor: the unit spaces, where a tensor holds their units, and the helpers its
steps share."""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from canon.core.ops import Op
from canon.core.spec import BatchNormTensors, CarriedAxis, OutgoingAxis, Producer, Tap
from canon.errors import UnsupportedModuleError

ADD = {operator.add, operator.iadd, torch.add, "add", "add_", operator.sub, torch.sub, "sub"}
MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
DIV = {operator.truediv, torch.div, "div", "div_"}
CAT = (torch.cat, torch.concat, torch.concatenate)  # joining tensors along an axis
PERMUTE = {"permute", torch.permute, "transpose", torch.transpose}
CARVE = {"split", torch.split, "chunk", torch.chunk}  # one tensor cut into several
# ops that move, pad or flip positions along chosen axes (Swin's shifted windows)
POSITIONS = {F.pad, torch.constant_pad_nd, torch.roll, "roll", torch.flip, "flip"}
LAYERNORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm,) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


@dataclass(frozen=True, order=True)
class Made:
    """A layer whose outputs (from row ``start`` of ``weight``) are a space's units."""

    order: int  # the node's place in the graph: producers sort by it
    path: str  # the module: where a BatchNorm that follows it is found
    weight: str
    bias: str | None
    start: int = 0
    head: int = 1  # with a stride: rows in runs of ``head``, ``stride`` apart
    stride: int = 0
    bias_start: int | None = None  # the bias a tensor of its own (Producer.bias_start)
    # a bias joined from parts as the layer runs: (first row, rows, tensor or None for
    # zeros) each, taken apart with the layer's outputs (timm's BEiT q_bias, 0, v_bias)
    bias_parts: tuple[tuple[int, int, str | None], ...] = ()

    def producer(self, batchnorm: BatchNormTensors | None = None) -> Producer:
        """The spec's record of these rows as a group's producer (and the BatchNorm after)."""
        return Producer(
            self.weight,
            self.bias,
            batchnorm,
            self.start,
            self.head,
            self.stride,
            self.bias_start,
        )


@dataclass(eq=False)
class Space:
    """Units that permute together: a node of the union-find over unit spaces."""

    size: int
    pinned: bool = False  # the network's input: never permuted
    parent: Space | None = None
    producers: list[Made] = field(default_factory=list)
    batchnorms: dict[str, BatchNormTensors] = field(default_factory=dict)
    outgoing: list[tuple[int, OutgoingAxis]] = field(default_factory=list)
    carried: list[CarriedAxis] = field(default_factory=list)
    ops: list[tuple[int, Op]] = field(default_factory=list)
    taps: dict[str, Tap] = field(default_factory=dict)
    blocks: int = 1
    read_out: bool = False
    created: int = 0  # the order of the node that made the space: the groups' order
    origin: str = ""  # the module that made it (a layer, an embedding): the group's name
    carved: bool = False  # cut into parts (a fused projection's queries, keys, values)
    heads_only: bool = False  # dimensions pinned in their heads (rotary embeddings)
    free: frozenset[int] = frozenset()  # with heads_only: dimensions of a head still free
    heads_fixed: bool = False  # a per-head term on the scores (ALiBi): heads stay in place
    factor: bool = False  # one unit scaling every unit of a position (a gate): no group
    gated: bool = False  # carries the rows of a gate on attention's output (only permuted)
    heads: int = 1  # > 1: blocks that move as wholes, in one order for every ``link``
    link: str = ""  # (a mixture's experts and its router's rows)
    # cut into consecutive ranges of units (after norms or activations, or a stream):
    # (first unit, the range's space) each; every tensor of the space moves with each
    # range's units from there (canon.core.unit_ranges)
    pieces: list[tuple[int, Space]] = field(default_factory=list)

    def pin(self, free: frozenset[int] = frozenset()) -> None:
        """Pin the dimensions of the space's heads (only whole heads move), all but
        ``free`` (a head's dimensions a partial rotary embedding passes untouched)."""
        root = self.root()
        root.free = root.free & free if root.heads_only else free
        root.heads_only = True

    def root(self) -> Space:
        space = self
        while space.parent is not None:
            space = space.parent
        return space


@dataclass(frozen=True)
class Units:
    """A tensor whose ``axis`` holds a space's units (``block`` entries each; with
    ``repeat`` > 1, groups of ``head`` units each held ``repeat`` times: the output of
    grouped-query attention, one copy of a value head per query head that shares it)."""

    space: Space
    axis: int
    block: int = 1
    layer: str | None = None  # set on a layer's direct output: a BatchNorm may attach to it
    repeat: int = 1
    head: int = 1


@dataclass(frozen=True)
class Param:
    """A view of a parameter used directly in forward; its first axis sits at ``axis``."""

    name: str
    axis: int


@dataclass(frozen=True)
class Concat:
    """Several spaces' units side by side along ``axis`` (``torch.cat`` of different
    layers' outputs: DenseNet's features, Inception's branches, a U-Net's skip connection),
    each part in blocks of ``block`` entries: (its units, their first entry on the axis)."""

    parts: tuple[tuple[Units, int], ...]
    axis: int
    block: int = 1


@dataclass(frozen=True)
class Joined:
    """Parameters and zeros joined end to end along their one axis by ``torch.cat``: a
    bias a layer's forward builds as it runs (timm's BEiT and EVA: the query bias, zeros
    for the keys, the value bias). Each part: (first entry, entries, the parameter's
    name, or None for zeros)."""

    parts: tuple[tuple[int, int, str | None], ...]


@dataclass(frozen=True)
class Fixed:
    """A tensor computed from parameters and buffers (and the input) by ops other than
    views: a relative position bias gathered from its table by an index, rotary angles.
    No symmetry moves the parameters it reads (``names``), so it may meet attention
    scores (a term that keeps the heads in place, if it differs between them) or factor
    a head's dimensions; anything it meets with hidden units is refused."""

    names: tuple[str, ...]
    # the lookup in an embedding by a constant index it is (or a view of, alone): a table
    # of positions that becomes hidden units where it meets them (GPT-2's wpe)
    lookup: fx.Node | None = None


@dataclass(frozen=True)
class Positions:
    """A tuple of tensors that cut ``value`` along an axis of positions, not of units
    (``tensor_split`` over the tokens): each part holds the units as ``value`` does."""

    value: Units | Heads


@dataclass(frozen=True, eq=False)
class Unfollowed:
    """Units of ``spaces`` laid out in a way the walk does not follow (Qwen3.5's output gate
    viewed as rows of one head each), or met by parameters it cannot move with them (its
    decay rate, from ``-exp(A_log)``), kept for a function recorded whole: where it meets
    what such a function computed (:class:`Opaque`) its units are pinned; anywhere else
    the walk stops with ``error``."""

    spaces: tuple[Space, ...]
    error: UnsupportedModuleError


@dataclass(frozen=True)
class Opaque:
    """What a function recorded whole computed (:data:`~canon.core.record.OPAQUE_FUNCTIONS`),
    or anything computed from it before a layer reads it: no symmetry moves it, so every
    unit it meets stays where it is (pinned), and a layer reads it as the network's input."""


@dataclass(frozen=True)
class Ended:
    """What follows a sum over the units (a committee machine's read-out)."""


@dataclass(frozen=True)
class Heads:
    """A tensor whose ``space``'s units are split over two axes: unit ``h * d + j`` at
    index ``h`` of ``head_axis`` and ``j`` of ``dim_axis`` (attention heads of width d)."""

    space: Space
    head_axis: int
    dim_axis: int
    heads: int
    repeat: int = 1  # each of the space's heads appears this many times in a row (GQA)


@dataclass(frozen=True)
class Scores:
    """Attention scores (queries times keys): heads on ``head_axis``, no units; the
    query and key spaces they came from."""

    query: Space
    key: Space
    head_axis: int
    heads: int
    repeat: int = 1  # query heads per key head (grouped-query attention)
    sinks: int = 0  # columns of per-head constants joined after the keys (GPT-OSS's sinks)
    sink: str | None = None  # the parameter of one sink per query head, moving with the heads
    riders: tuple[Space, ...] = ()  # query parts against one shared key head (DeepSeek's)


@dataclass(frozen=True)
class Parts:
    """A tuple of tensors that cut ``space``'s units (on ``axis``) into consecutive parts
    of ``sizes`` units (``split``/``chunk`` of a fused projection)."""

    space: Space
    axis: int
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Pieces:
    """The tensors a ``split`` or ``chunk`` along the units gives, each a consecutive range
    of them: a range's own space (:class:`Units`), or several spaces side by side
    (:class:`Concat`)."""

    values: tuple[Units | Concat, ...]


@dataclass(frozen=True)
class Stacked:
    """A fused projection's output viewed as (parts, heads, d) on three axes: unit
    ``p * heads * d + h * d + j`` of ``space`` at index p, h, j of those axes (timm's
    ``qkv.reshape(B, N, 3, heads, d)``), ``source`` the node that holds it flat."""

    space: Space
    part_axis: int
    head_axis: int
    dim_axis: int
    parts: int
    heads: int
    source: str
    unbound: bool = False  # after ``unbind(part_axis)``: a tuple of the parts
    picked: bool = False  # after ``unbind(head_axis)``: a tuple of every head's parts


@dataclass(frozen=True)
class Sliced:
    """Dimensions ``dims`` (in this order) of every head's ``width`` (on
    ``heads.dim_axis``): the part of the queries or keys that a rotary embedding rotates,
    a half of it, or every other one (an interleaved rotary embedding's pairs)."""

    heads: Heads
    dims: tuple[int, ...]
    width: int
    turned: bool = False  # changed since it was sliced (negated, scaled, joined)


@dataclass(frozen=True)
class Woven:
    """Parts of every head's dimensions stacked on a new axis right after the dimension
    axis (``torch.stack((-x2, x1), dim=-1)``), to be flattened into one: their ``dims``,
    interleaved."""

    heads: Heads
    parts: tuple[tuple[int, ...], ...]
    width: int


@dataclass(frozen=True)
class Spread:
    """Heads with a new axis right after their head axis (``k[:, :, None]``), expanded to
    ``copies`` (transformers' ``repeat_kv``: each key/value head once per query head that
    shares it, before the two axes are merged)."""

    heads: Heads
    axis: int
    copies: int = 1


@dataclass(frozen=True)
class Grouped:
    """Heads laid out over two axes, ``groups`` on ``group_axis`` then the heads of each
    group on ``head_axis`` (right after it), dimensions on ``dim_axis``: unit
    ``(g * per + h) * d + j`` at index g, h, j (Falcon's query heads, grouped by the
    key/value head they share, before the two axes are merged)."""

    space: Space
    group_axis: int
    head_axis: int
    dim_axis: int
    groups: int
    per: int


@dataclass(frozen=True)
class HeadRanges:
    """A tuple of tensors that cut ``heads`` into consecutive ranges of ``sizes`` whole
    heads (``split`` along the head axis: Falcon's query heads, key head and value head)."""

    heads: Heads
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class HeadParts:
    """A tuple of tensors that cut every head of ``heads`` into consecutive parts of
    ``sizes`` dimensions (``chunk`` of a fused projection viewed as (heads, parts * d):
    GPT-NeoX's queries, keys and values, interleaved head by head; or, with ``halves``,
    the parts of every head's dimensions a rotary embedding turns: GPT-OSS's)."""

    heads: Heads
    sizes: tuple[int, ...]
    halves: bool = False


@dataclass(frozen=True)
class JoinedHeads:
    """Heads whose dimensions are several tensors' heads, one after the other on their
    common ``dim_axis`` (``torch.cat`` of heads of different layers, or of different cuts of
    one: DeepSeek's latent attention joins each query head's dimensions that no rotary
    embedding turns with those it turns, and each key head's with the one rotated key
    head that every query head shares). ``parts`` in order, laid out alike but for
    ``repeat``; ``widths``: their dimensions per head."""

    parts: tuple[Heads, ...]
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Attended:
    """What ``nn.MultiheadAttention`` returns: (its output, the attention weights)."""

    output: Units


Value = (
    Units
    | Param
    | Ended
    | Heads
    | Scores
    | Parts
    | Pieces
    | Stacked
    | Attended
    | Sliced
    | HeadParts
    | Woven
    | Spread
    | Grouped
    | HeadRanges
    | JoinedHeads
    | Fixed
    | Joined
    | Concat
    | Opaque
    | Positions
    | Unfollowed
)


#: Methods that make a new tensor of a given shape, reading only their tensor's dtype and
#: device (``x.new_zeros(shape)``).
NEW = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}


def spaces_in(value: object) -> list[Space]:
    """Every unit space a walk value holds (in its fields, tuples of them included)."""
    if isinstance(value, Space):
        return [value]
    if isinstance(value, (tuple, list)):
        return [s for v in value for s in spaces_in(v)]
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, (Param, Fixed, Made)):
        return [s for name in value.__dataclass_fields__ for s in spaces_in(getattr(value, name))]
    return []


def pin_all(value: object) -> None:
    """Keep every unit of the spaces ``value`` holds where it is (no permutation, no scale)."""
    for space in spaces_in(value):
        space.root().pinned = True
        for _, piece in space.root().pieces:
            piece.root().pinned = True


def location(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.keys())[-1] if stack else ""
    return f"module `{path}`" if path else "the top-level forward"


def shape_of(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def is_tensor(arg: object) -> bool:
    return isinstance(arg, fx.Node) and "tensor_meta" in arg.meta


def one_tensor(arg: object) -> bool:
    """Whether ``arg`` is a node that gives one tensor (not a tuple of them)."""
    return isinstance(arg, fx.Node) and hasattr(arg.meta.get("tensor_meta"), "shape")


#: Appended to every error about what canon cannot follow: what it can, and what to do.
WHAT_TO_DO = (
    "; canon follows Linear and Conv layers (grouped and depthwise too), embeddings, residual "
    "additions, products, BatchNorm/LayerNorm/GroupNorm, elementwise activations, pooling, "
    "reshapes and multi-head attention (scaled_dot_product_attention or softmax(q @ k^T) @ v): "
    "write this part of forward with those (`canon spec` shows what canon derived)"
)


def unsupported(message: str, op: str, path: str) -> UnsupportedModuleError:
    """The error for what the walk cannot follow: the op, where, and what to do."""
    hint = "" if "canon supports" in message or "; return" in message else WHAT_TO_DO
    return UnsupportedModuleError(message + hint, op=op, path=path)


def permuted_dims(node: fx.Node, ndim: int) -> list[int]:
    """For a ``permute`` or ``transpose`` node: the input axis at each output axis."""
    args: list[Any] = list(node.args[1:])
    if node.target in ("transpose", torch.transpose):
        a, b = (int(x) % ndim for x in args[:2])
        dims = list(range(ndim))
        dims[a], dims[b] = dims[b], dims[a]
        return dims
    flat = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    return [int(d) % ndim for d in flat]


def hidden_units(inputs: list[tuple[fx.Node, Value]]) -> list[tuple[fx.Node, Units]]:
    """The inputs that hold hidden units (not the network's input, not parameters)."""
    return [(n, v) for n, v in inputs if isinstance(v, Units) and not v.space.pinned]


def attribute(module: nn.Module, target: str) -> torch.Tensor | None:
    """The tensor at the dotted ``target`` under ``module``, or None."""
    found: object = module
    for part in target.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, torch.Tensor) else None


def probe_copy(module: nn.Module) -> nn.Module:
    """A float64, eval-mode copy of ``module`` on the CPU, to be run on random values (one
    traced without weights gets empty ones, drawn by the caller)."""
    probe = copy.deepcopy(module)
    if any(t.is_meta for t in probe.state_dict().values()):
        probe = probe.to_empty(device="cpu")
    return probe.to(torch.float64).eval()


def unit_axis_of(t: torch.Tensor) -> int:
    """The axis of a per-unit tensor that holds the units: its one axis longer than 1
    (``(1, 1, 1, dim)``: 3), or 0."""
    longer = [axis for axis, n in enumerate(t.shape) if n > 1]
    return longer[0] if len(longer) == 1 else 0


def check_commutes(
    module: nn.Module, path: str, shape: tuple[int, ...], axis: int, parameters: bool = True
) -> None:
    """Refuse a library's module known by its class name only (a norm layer, an
    activation) unless, run once on random inputs of ``shape`` with random weights, it
    commutes with a permutation of the units on ``axis`` (its parameters, one per unit,
    permuted alike; with ``parameters`` False, left in place: the axis holds attention
    heads, and the parameters a head's dimensions, or the parameters are single numbers
    that every unit shares): what canon assumes of it."""
    gen = torch.Generator().manual_seed(0)
    probe = probe_copy(module)
    x = torch.randn((1, *shape[1:]), generator=gen, dtype=torch.float64)
    perm = torch.randperm(shape[axis], generator=gen)
    with torch.no_grad():
        for p in probe.parameters():  # as trained: a fresh module's ones would hide it
            p.copy_(1 + torch.randn(p.shape, generator=gen, dtype=p.dtype))
        expected = probe(x).index_select(axis, perm)
        for p in probe.parameters() if parameters else ():
            p.copy_(p.index_select(unit_axis_of(p), perm))
        found = probe(x.index_select(axis, perm))
    if not torch.allclose(found, expected, rtol=1e-5, atol=1e-7):  # float32 internals
        kept = "with its weights permuted alike" if parameters else "its weights kept"
        raise unsupported(
            f"`{path}` ({type(module).__name__}) does not commute with a permutation of the "
            f"units it reads ({kept}), so canon cannot permute them",
            type(module).__name__,
            path,
        )
