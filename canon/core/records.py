"""A mixin for frozen result records that serialize to JSON-ready dicts and back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Self

__all__ = ["JsonRecord"]


class JsonRecord:
    """``to_dict`` / ``from_dict`` for dataclass records whose fields are JSON values."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse of :meth:`from_dict`)."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild the record from :meth:`to_dict` output."""
        return cls(**data)
