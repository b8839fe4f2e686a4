"""Dependencies point downward only: the core imports no file, storage, hub or CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import canon

PACKAGE = Path(canon.__file__).parent
OUTER = ("sqlalchemy", "alembic", "huggingface_hub", "click", "safetensors", "tqdm", "matplotlib")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("layer", "allowed_canon"),
    [
        ("core", ("canon.core", "canon.errors")),
        ("architectures", ("canon.architectures", "canon.core", "canon.errors")),
        (
            "engine",
            (
                "canon.engine",
                "canon.architectures",
                "canon.core",
                "canon.data",
                "canon.device",
                "canon.errors",
            ),
        ),
    ],
)
def test_layer_imports_only_downward(layer, allowed_canon):
    """Modules of a layer import only their own layer, lower layers and errors."""
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    for path in files:
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in OUTER, f"{path.name} imports {name}"
            if top == "canon":
                assert name.startswith(allowed_canon), f"{path.name} imports {name}"
