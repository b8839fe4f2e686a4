"""Helpers for tests: seeded random parameters and comparison of network functions."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from canon.core import Spec, canonicalize, normalize, random_symmetry, spec_from_module
from canon.core.trace import load_into


def randomize(model: nn.Module, seed: int, bn_eps: float | None = 0.0) -> nn.Module:
    """Give ``model`` seeded random float64 parameters and BN statistics; eval mode.

    BN gammas take both signs. ``bn_eps`` replaces BatchNorm's eps (0 by
    default, where BN's input-scale symmetry is exact; running variances are
    kept positive). ``None`` keeps the module's eps.
    """
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            if isinstance(module, _BatchNorm):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                if bn_eps is not None:
                    module.eps = bn_eps
    return model


def measure_batch_statistics(model: nn.Module, x: Tensor, batch_size: int) -> nn.Module:
    """Set every BatchNorm layer's running statistics to the cumulative average over the
    batches of ``x`` (``momentum=None``: the exact statistics of those batches, as a plain
    recomputation loop measures them); returns ``model`` in eval mode."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    return model.eval()


def state_of(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def outputs(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """The model's eval-mode outputs on ``x`` with ``state`` loaded."""
    model.load_state_dict(state)
    with torch.no_grad():
        return model(x)


def inputs(model: nn.Module, n: int = 32, seed: int = 0) -> Tensor:
    """Random float64 inputs of the model's input shape."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *model.input_shape), generator=gen, dtype=torch.float64)


def assert_same_function(y: Tensor, y_ref: Tensor, rtol: float = 1e-7) -> None:
    """Outputs equal up to one global positive factor, and the same predictions."""
    scale = y_ref.norm() / y.norm() if y.norm() > 0 else torch.tensor(1.0, dtype=y.dtype)
    assert scale > 0
    torch.testing.assert_close(y * scale, y_ref, rtol=rtol, atol=rtol * float(y_ref.abs().max()))
    if y.shape[1] == 1:
        assert torch.equal(torch.sign(y), torch.sign(y_ref))
    else:
        assert torch.equal(y.argmax(1), y_ref.argmax(1))


def assert_states_close(a: Mapping[str, Tensor], b: Mapping[str, Tensor], atol: float) -> None:
    """Same keys; float tensors within ``atol``; other tensors equal."""
    assert set(a) == set(b)
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(
                a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}"
            )
        else:
            assert torch.equal(a[k], b[k]), k


def traced(model: nn.Module) -> Spec:
    """The model's spec (shorthand)."""
    return spec_from_module(model)


def run(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """The model's outputs on ``x`` with ``state`` (a spec's tensors: a tied one under its
    first name only) loaded."""
    load_into(model, state)
    with torch.no_grad():
        out: Tensor = model(x)
    return out


def assert_symmetries_keep_the_function(
    model: nn.Module,
    spec: Spec,
    state: Mapping[str, Tensor],
    x: Tensor,
    seed: int,
    methods: tuple[str, ...] = ("weight",),
) -> None:
    """A random symmetry, normalization and the canonical form (by each matching
    ``method``) keep the model's outputs on ``x``, and the canonical forms of ``state``
    and of its moved copy agree."""
    y = run(model, state, x)
    moved = random_symmetry(state, spec, seed=seed)
    assert_same_function(run(model, moved, x), y, rtol=1e-9)
    assert_same_function(run(model, normalize(state, spec), x), y, rtol=1e-9)
    for method in methods:
        aligned = canonicalize(moved, spec, reference=state, method=method)
        assert_same_function(run(model, aligned, x), y, rtol=1e-9)
        reference = canonicalize(state, spec, reference=state, method=method)
        assert max(float((aligned[k] - reference[k]).abs().max()) for k in state) < 1e-8
