"""Which architectures data may name: registered ones always, code only when trusted.

A ``module:function`` architecture makes canon import ``module`` and call
``function``. That is fine when the user typed it (``--arch``, a Python
argument), and never fine when it was read from data: a file's metadata, a
zoo's index or manifest, a Hub repository or a service request. There the
user must opt in (``--trust-code``, ``trust_code=True``), in the spirit of
``trust_remote_code``.
"""

from __future__ import annotations

from canon._limits import clip
from canon.errors import UntrustedCodeError

__all__ = ["check_trusted", "names_code"]


def names_code(architecture: str) -> bool:
    """Whether ``architecture`` names code (``module:function``) rather than a registered name."""
    return ":" in architecture


def check_trusted(architecture: str, *, trusted: bool, source: str) -> None:
    """Refuse a ``module:function`` architecture read from ``source`` unless ``trusted``."""
    if trusted or not names_code(architecture):
        return
    raise UntrustedCodeError(
        f"{source} names the architecture `{clip(architecture, 80)}`, which is code "
        "(module:function) that canon would import and run; nothing was run. If you trust "
        "its author, pass --trust-code (Python: trust_code=True), or register the "
        "architecture with canon.architectures.register_architecture",
        architecture=architecture,
    )
