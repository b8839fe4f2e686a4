"""Packaging: every package ships, and the migrations ship as canon.migrations."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    """Each folder of canon/ with an __init__.py, and migrations/, is a listed package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "canon").rglob("__init__.py")
    }
    found |= {
        "canon." + ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "migrations").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml: {sorted(found - listed)}"
    assert config["package-dir"]["canon.migrations"] == "migrations"
