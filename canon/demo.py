"""The canonicalization demo: symmetry-scrambled copies collapse onto their originals.

For each architecture, a randomly initialized network and a copy transformed
by a random element of its symmetry group (hidden units permuted, rescaled,
sign-flipped where allowed) compute the same function but look far apart in
parameter space; their canonical forms coincide.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from canon.architectures import Network, build_model
from canon.core import canonicalize, random_symmetry, spec_from_module

__all__ = ["DEMO_ARCHITECTURES", "DemoRow", "run_demo"]

DEMO_ARCHITECTURES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mlp", {"in_features": 64, "hidden": [256, 256], "classes": 10}),
    ("mlp", {"in_features": 64, "hidden": [128, 128], "classes": 10, "activation": "tanh"}),
    ("lenet", {"input_size": 16, "padding": 2}),
    ("vgg", {"layers": [32, "M", 64, "M", 64, "M"], "input_size": 16, "hidden": [128]}),
    ("binary_mlp", {"in_features": 64, "hidden": [201, 201], "classes": 10}),
    ("committee", {"in_features": 200, "hidden": 51}),
)


@dataclass(frozen=True)
class DemoRow:
    """One architecture's figures: how far the copy is before and after canonicalization."""

    architecture: str
    config: dict[str, Any]
    parameters: int
    raw_distance: float  # ||a - b|| / ||a|| on raw parameters
    canonical_distance: float  # the same on canonical forms
    same_predictions: float  # fraction of random inputs with the same predicted class
    seconds: float  # time to canonicalize the copy

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _relative_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    keys = [k for k, v in a.items() if v.is_floating_point()]
    diff = torch.cat([(a[k] - b[k]).flatten() for k in keys])
    ref = torch.cat([a[k].flatten() for k in keys])
    return float(diff.norm() / ref.norm())


def _predict(model: torch.nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    model.load_state_dict(state)
    with torch.inference_mode():
        logits = model(x)
    return torch.sign(logits).flatten() if logits.shape[1] == 1 else logits.argmax(1)


def run_demo(device: torch.device | str = "cpu", seed: int = 0) -> list[DemoRow]:
    """Run the demo on every architecture of :data:`DEMO_ARCHITECTURES`."""
    rows = []
    for name, config in DEMO_ARCHITECTURES:
        torch.manual_seed(seed)
        model = build_model(name, config).to(device).eval()
        spec = spec_from_module(model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        copy = random_symmetry(state, spec, seed=seed + 1)
        start = time.perf_counter()
        canon_copy = canonicalize(copy, spec, reference=state)
        seconds = time.perf_counter() - start
        canon_state = canonicalize(state, spec, reference=state)
        assert isinstance(model, Network)
        x = torch.randn((512, *model.input_shape), device=device)
        same = (_predict(model, state, x) == _predict(model, copy, x)).float().mean()
        rows.append(
            DemoRow(
                architecture=name,
                config=config,
                parameters=sum(v.numel() for v in state.values() if v.is_floating_point()),
                raw_distance=_relative_distance(state, copy),
                canonical_distance=_relative_distance(canon_state, canon_copy),
                same_predictions=float(same),
                seconds=seconds,
            )
        )
    return rows
