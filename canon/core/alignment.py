"""Alignment and canonical forms (the paper's Alg. 2, DESIGN §3 "Alignment",
"Sign fixing", "Canonical form").

``align`` and ``canonicalize`` compose normalization, a matching method
(:mod:`canon.core.matching`) and :func:`~canon.core.permutations.apply_alignment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor

from canon.core.matching import match
from canon.core.normalization import normalize
from canon.core.permutations import Alignment, apply_alignment
from canon.core.spec import Spec, check_state

__all__ = ["Aligned", "align", "canonicalize"]


class Aligned(NamedTuple):
    """The result of :func:`align`: the aligned state dict and the alignment applied."""

    state: dict[str, Tensor]
    alignment: Alignment


def align(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    method: str = "auto",
) -> Aligned:
    """Align ``state``'s hidden units to ``reference``'s.

    The alignment is computed by ``method`` (:func:`~canon.core.matching.match`)
    on normalized copies of both networks (so it does not depend on either
    one's per-unit scales) and applied to ``state`` as given: a raw state
    comes back aligned but not normalized, a normalized one comes back
    normalized and aligned. Returns the aligned state and the
    :class:`Alignment` (permutations and signs).
    """
    check_state(state, spec, "`state`")
    check_state(reference, spec, "`reference`")
    alignment = match(
        normalize(state, spec, check=False), normalize(reference, spec, check=False), spec, method
    )
    return Aligned(apply_alignment(state, alignment, spec), alignment)


def canonicalize(
    state: Mapping[str, Tensor],
    spec: Spec,
    reference: Mapping[str, Tensor] | None = None,
    method: str = "auto",
) -> dict[str, Tensor]:
    """The canonical form of ``state``: normalized, and sign-fixed and aligned to ``reference``.

    Without a reference the canonical form is the normalized network (as for
    a family's reference entry itself). The reference is normalized here
    (normalization is idempotent, so passing a normalized one is fine).
    """
    normalized = normalize(state, spec)
    if reference is None:
        return normalized
    check_state(reference, spec, "`reference`")
    alignment = match(normalized, normalize(reference, spec, check=False), spec, method)
    return apply_alignment(normalized, alignment, spec, in_place=True)  # a dict of our own
