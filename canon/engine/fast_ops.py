"""Exact, faster replacements for slow kernels, applied to a traced model before evaluation.

On CPU, PyTorch's 2x2 max-pooling kernel (stride 2, no padding) is several times
slower than two strided elementwise maxima, which give bitwise the same result
(measured 6x on 1000x8x16x16 inputs). The evaluator rewrites such pooling nodes
of its private copy of the model; the caller's module is never changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["max_pool_2x2", "optimize_graph"]


def max_pool_2x2(x: Tensor) -> Tensor:
    """2x2 max-pooling with stride 2 over the last two axes (floor mode): the exact values
    of ``F.max_pool2d(x, 2)``, as two strided maxima."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _pair(value: object) -> tuple[object, object]:
    return (value, value) if not isinstance(value, tuple) else (value[0], value[1])


def _is_plain_2x2(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.MaxPool2d)
        and _pair(module.kernel_size) == (2, 2)
        and _pair(module.stride) in ((2, 2), (None, None))
        and _pair(module.padding) == (0, 0)
        and _pair(module.dilation) == (1, 1)
        and not module.ceil_mode
        and not module.return_indices
    )


def _is_plain_2x2_call(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target is not F.max_pool2d:
        return False
    args = list(node.args[1:])
    kwargs = dict(node.kwargs)
    names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
    given = dict(zip(names, args, strict=False)) | kwargs
    return (
        _pair(given.get("kernel_size")) == (2, 2)
        and _pair(given.get("stride")) in ((2, 2), (None, None))
        and _pair(given.get("padding", 0)) == (0, 0)
        and _pair(given.get("dilation", 1)) == (1, 1)
        and not given.get("ceil_mode", False)
        and not given.get("return_indices", False)
    )


def optimize_graph(gm: fx.GraphModule, device: torch.device) -> fx.GraphModule:
    """Rewrite ``gm`` in place with the faster exact kernels that pay off on ``device``."""
    if device.type != "cpu":
        return gm
    changed = False
    for node in list(gm.graph.nodes):
        plain_module = node.op == "call_module" and _is_plain_2x2(
            gm.get_submodule(str(node.target))
        )
        if plain_module or _is_plain_2x2_call(node):
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(max_pool_2x2, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
