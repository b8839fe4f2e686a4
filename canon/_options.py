"""Parsing of the options users type (CLI flags, HTTP query parameters) into canon's values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from canon.errors import ConfigError, InvalidEntryError

__all__ = ["parse_json", "parse_tags"]


def parse_json(text: str, option: str = "--config") -> dict[str, Any]:
    """A JSON object given on the command line (one-line error otherwise)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"`{option}` is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"`{option}` must be a JSON object")
    return value


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``--tag KEY=VALUE`` options as a dict (the zoo checks keys and values)."""
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidEntryError(f"`--tag` must be KEY=VALUE, got {item!r}")
        tags[key.strip()] = value
    return tags
