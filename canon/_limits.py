"""Bounds on what users and remote files may ask canon to parse, build or print.

Every input from outside (a ``--config`` flag, an HTTP query, a safetensors
header, a Hub manifest) passes through here before it can cost recursion,
memory or a garbled terminal:

- :func:`loads_json` refuses JSON nested deeper than ``max_depth`` (found by a
  linear scan, before Python's recursive parser could raise ``RecursionError``)
  or longer than ``max_bytes``, with one-line errors of the caller's type;
- :func:`clip` makes user text safe to echo in a message: one line, control
  characters and escapes visible, bounded length;
- the ``MAX_*`` constants bound sizes: every width, channel count or input size
  of an architecture config and the items in its lists, parameters per model,
  units per matched group, tensors, dimensions, bytes and metadata in a checkpoint
  header, and the points of a plane or a local energy.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from canon.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "MAX_DIM",
    "MAX_DRAWS",
    "MAX_GRID",
    "MAX_GROUP_UNITS",
    "MAX_HEADER_BYTES",
    "MAX_ITEMS",
    "MAX_METADATA_ITEMS",
    "MAX_METADATA_VALUE",
    "MAX_PARAMS",
    "MAX_RANK",
    "MAX_SIGMAS",
    "MAX_STRUCTURED_UNITS",
    "MAX_TENSORS",
    "clip",
    "json_depth",
    "loads_json",
]

#: JSON nesting canon parses (configs, headers and manifests need fewer than 10 levels).
MAX_DEPTH = 64
#: The largest single size in an architecture config: units per layer, channels, input side.
MAX_DIM = 2**20
#: The most items in a config list (layers of an MLP, say).
MAX_ITEMS = 1024
#: The most numbers (parameters and buffers) a registered architecture is built with (8 GiB of
#: float32); checked on the meta device, so the check itself allocates nothing.
MAX_PARAMS = 2**31
#: The most tensors a checkpoint header may list.
MAX_TENSORS = 2**16
#: The most dimensions a checkpoint tensor may have.
MAX_RANK = 16
#: The most hidden units one assignment pairs: a unit group's (the units that permute
#: together), or one head's or block's of a group that permutes as heads or in blocks.
#: Aligning H units builds an H x H cost matrix and solves an O(H^3) assignment, so this,
#: not :data:`MAX_DIM`, bounds what matching costs: 2**15 units make a 4 GiB float32 matrix.
#: Real networks fit: Llama-7B's MLP has 11008 units, the largest common LLM MLPs 28672; a
#: vocabulary embedding is an input, not a unit group.
MAX_GROUP_UNITS = 2**15
#: The most hidden units in a group that permutes as heads or in blocks (a mixture's
#: experts: 64 experts of 1,024 units in OLMoE, 128 of 768 in Qwen3-30B-A3B, 256 of 2,048
#: in DeepSeek-V3). Its similarity is read a block at a time, never whole, so memory grows
#: with one block's units times the group's; the assignments of every pair of heads are
#: kept, in 2 bytes per unit each.
MAX_STRUCTURED_UNITS = 2**20
#: The most bytes of a safetensors header (real checkpoints' headers are under ~10 MiB).
MAX_HEADER_BYTES = 16 * 2**20
#: The most ``__metadata__`` items a safetensors header may hold (canon writes three).
MAX_METADATA_ITEMS = 1024
#: The most characters of one safetensors metadata value (a config's JSON, say).
MAX_METADATA_VALUE = 2**20
#: The most grid points per axis of a plane through three networks (``canon plane --grid``).
MAX_GRID = 1025
#: The most noise draws per level of a local energy (``canon energy --draws``).
MAX_DRAWS = 10_000
#: The most noise levels (sigmas) of a local energy.
MAX_SIGMAS = 256

_BRACKETS = b"[]{}"
_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'[]{}"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEPS = bytes.maketrans(_BRACKETS, b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, outside strings.

    Linear in ``len(text)``, without recursion, in C loops only: escaped
    backslashes and quotes are dropped, then every byte but brackets and
    quotes, then pairs of adjacent quotes (the parity of the quotes before
    each bracket, which tells whether it is in a string, is unchanged); the
    rest is split at quotes (odd pieces lie in strings) and the running sum of
    +1 (open) and -1 (close) maximized. On text that is not JSON (say, an
    unterminated string) the count is finite but may be off; the parser
    rejects such text anyway.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    data = data.translate(None, _NOT_SYNTAX).replace(b'""', b"")
    outside = b"".join(data.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    return max(0, max(accumulate(array("b", outside.translate(_STEPS))), default=0))


def loads_json(
    text: str | bytes,
    *,
    what: str,
    error: Callable[[str], Exception] = ConfigError,
    max_depth: int = MAX_DEPTH,
    max_bytes: int | None = None,
) -> Any:
    """Parse JSON ``text``, refusing over-long, over-nested or malformed input.

    Every failure raises ``error(message)`` with a one-line message that
    starts with ``what`` (say ``"`--config`"``): text over ``max_bytes``
    (UTF-8 bytes; unbounded when None), bytes that are not UTF-8, nesting
    deeper than ``max_depth``, or text the ``json`` module rejects.
    """
    size = len(text)
    if max_bytes is not None and isinstance(text, str) and size <= max_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
    if max_bytes is not None and size > max_bytes:
        raise error(f"{what} is {size} bytes long; at most {max_bytes} are allowed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{what} is nested {depth} levels deep; at most {max_depth} levels are allowed")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        raise error(f"{what} is not valid JSON: {clip(str(exc), 160)}") from None
    except RecursionError:  # only with a max_depth beyond the interpreter's recursion limit
        raise error(f"{what} is nested too deeply to parse") from None


def clip(text: str, limit: int = 300) -> str:
    """``text`` made safe to echo in a one-line message.

    Characters that are not printable (newlines, tabs, the ESC of ANSI
    escape sequences, bidi overrides, ...) are written as Python writes them
    in a ``repr`` (``\\n``, ``\\x1b``, ``\\u202e``), and text longer than
    ``limit`` characters is cut, ending in ``… (N characters)`` with its
    original length. Work is bounded by ``limit``, not by ``len(text)``.
    """
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    if len(text) <= limit and len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}… ({len(text)} characters)"
