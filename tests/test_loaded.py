"""Running a module with tensors passed in for a whole block (``canon.engine._modules.loaded``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from canon.engine._modules import loaded


class _Tied(nn.Module):
    """Embedding and output layer sharing one weight, with BatchNorm between."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.norm = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(tokens)))


def _own(module: nn.Module) -> dict[str, int]:
    return {n: id(t) for n, t in module.state_dict(keep_vars=True).items()}


def _other_tensors(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in module.state_dict().items():
        if name == "head.weight":
            continue  # tied: given once, under its first name
        out[name] = torch.rand(t.shape, generator=gen) + 0.5 if t.is_floating_point() else t.clone()
    return out


def test_a_loaded_module_computes_what_functional_call_does_and_gets_its_own_back():
    model = _Tied().eval()
    own = _own(model)
    tokens = torch.tensor([0, 3, 6, 1, 2, 5])
    tensors = _other_tensors(model, 0)
    expected = functional_call(model, tensors, (tokens,), tie_weights=True)
    with torch.no_grad(), loaded(model, tensors) as m:
        assert m.head.weight is tensors["embed.weight"]  # the tied name takes it too
        got = m(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert _own(model) == own
    assert not torch.equal(model(tokens), got)


def test_a_loaded_module_gets_its_own_tensors_back_after_an_error():
    model = _Tied()
    own = _own(model)
    with pytest.raises(RuntimeError, match="in the block"), loaded(model, _other_tensors(model, 1)):
        raise RuntimeError("in the block")
    assert _own(model) == own


def test_batchnorm_training_updates_land_in_the_loaded_buffers():
    model = _Tied().train()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    tensors = _other_tensors(model, 2)
    mean = torch.zeros(5)
    tensors["norm.running_mean"], tensors["norm.num_batches_tracked"] = mean, torch.tensor(0)
    with torch.no_grad(), loaded(model, tensors) as m:
        m(torch.tensor([0, 1, 2, 3]))
    assert int(tensors["norm.num_batches_tracked"]) == 1 and mean.abs().sum() > 0
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name


def test_a_tensor_the_module_does_not_have_is_refused_and_nothing_is_loaded():
    model = _Tied()
    own = _own(model)
    tensors = _other_tensors(model, 3) | {"head.bias": torch.zeros(7)}
    with pytest.raises(KeyError, match=r"head\.bias"), loaded(model, tensors):
        pass
    assert _own(model) == own
