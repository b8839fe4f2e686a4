"""Seeded random perturbations of a network, as a lazily evaluated path of K points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from canon.core.paths import Constant, NetworkPath, TensorPath
from canon.core.spec import Spec

__all__ = ["perturbation_path"]


@dataclass(frozen=True, eq=False)
class _Perturbed:
    """Point k: base perturbed with strength ``strengths[k]``, from a generator seeded by
    (seed, k, index). Multiplicative Gaussian noise, or sign flips of binary weights."""

    base: Tensor
    strengths: Sequence[float]
    seed: int
    index: int
    flip: bool

    def at(self, k: int) -> Tensor:
        gen = torch.Generator().manual_seed(hash((self.seed, k, self.index)) & 0x7FFF_FFFF)
        strength = self.strengths[k]
        if self.flip:
            mask = torch.rand(self.base.shape, generator=gen) < strength
            return torch.where(mask.to(self.base.device), -self.base, self.base)
        z = torch.randn(self.base.shape, generator=gen, dtype=self.base.dtype)
        return self.base + strength * z.to(self.base.device) * self.base


def perturbation_path(
    state: Mapping[str, Tensor], spec: Spec, sigmas: Sequence[float], draws: int, seed: int
) -> NetworkPath:
    """``len(sigmas) * draws`` perturbed copies of ``state`` (sigma-major order).

    Networks with binary weights get a random fraction sigma of those weights
    flipped; others get every floating parameter w replaced by w + sigma z w,
    z ~ N(0, 1).
    """
    strengths = [float(s) for s in sigmas for _ in range(draws)]
    binary = set(spec.binary_weights)
    moved = binary or set(spec.parameters)
    tensors: dict[str, TensorPath] = {}
    for index, (name, tensor) in enumerate(state.items()):
        if name in moved:
            tensors[name] = _Perturbed(tensor, strengths, seed, index, flip=bool(binary))
        else:
            tensors[name] = Constant(tensor)
    x = torch.zeros(len(strengths), dtype=torch.float64)
    return NetworkPath(x, tensors)
