"""Parsing of the options users type (CLI flags, HTTP query parameters) into canon's values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canon._limits import clip, loads_json
from canon.errors import ConfigError, InvalidEntryError

__all__ = ["MAX_JSON_OPTION_BYTES", "parse_json", "parse_tags"]

#: The longest JSON option accepted (a config is a few hundred bytes).
MAX_JSON_OPTION_BYTES = 2**16


def parse_json(text: str, option: str = "--config") -> dict[str, Any]:
    """A JSON object given as ``option`` (a CLI flag or an HTTP query parameter).

    Text that is not JSON, nested too deeply, longer than
    :data:`MAX_JSON_OPTION_BYTES` or not an object raises a one-line
    :class:`~canon.errors.ConfigError`.
    """
    value = loads_json(text, what=f"`{option}`", max_bytes=MAX_JSON_OPTION_BYTES)
    if not isinstance(value, dict):
        raise ConfigError(
            f"`{option}` must be a JSON object such as '{{\"hidden\": [64]}}', "
            f"got a {type(value).__name__}"
        )
    return value


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``--tag KEY=VALUE`` options as a dict (the zoo checks keys and values)."""
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidEntryError(f"`--tag` must be KEY=VALUE, got {clip(repr(item))}")
        tags[key.strip()] = value
    return tags
